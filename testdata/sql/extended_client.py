#!/usr/bin/env python3
"""Query `tacet serve-sql` the way drivers behind Grafana and notebooks do:
the extended protocol (Parse/Bind/Execute) with parameters, and binary results.

psycopg 3 (PyPI: psycopg[binary]) is an independent client built on libpq.
Usage: extended_client.py PORT PASSWORD
Prints one JSON object with what each query returned.
"""

import json
import sys

import psycopg


def main() -> int:
    port, password = sys.argv[1], sys.argv[2]
    dsn = f"host=127.0.0.1 port={port} user=analyst dbname=tacet password={password}"
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        text = conn.cursor()
        text.execute("SELECT journey, decided FROM journey_sli WHERE journey = %s", ["funds_transfer"])
        out["param_text"] = text.fetchall()
        text.execute("SELECT COUNT(*) FROM journey_sli WHERE decided > %s", [0])
        out["param_int"] = text.fetchall()[0][0]
        binary = conn.cursor(binary=True)
        binary.execute("SELECT journey, decided, sli FROM journey_sli ORDER BY journey")
        out["binary_sli"] = [[j, d, s] for j, d, s in binary.fetchall()]
        binary.execute(
            "SELECT minute, SUM(decided) FROM outcomes_per_minute GROUP BY minute ORDER BY minute LIMIT 1"
        )
        minute, decided = binary.fetchone()
        out["binary_minute"] = [minute.isoformat(), decided]
        try:
            text.execute("DROP TABLE outcomes")
            out["drop"] = "accepted"
        except psycopg.Error as e:
            out["drop"] = str(e).splitlines()[0]
    try:
        psycopg.connect(f"host=127.0.0.1 port={port} user=analyst dbname=tacet password=wrong").close()
        out["wrong_password"] = "accepted"
    except psycopg.OperationalError:
        out["wrong_password"] = "refused"
    json.dump(out, sys.stdout, default=str)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
