#!/usr/bin/env python3
"""Read every record of a topic with kafka-python (an independent client) and
print one JSON object per record: key, value (parsed JSON) and headers.

Usage: consume.py BOOTSTRAP TOPIC
Stops after 5 s without a new record.
"""

import json
import sys

from kafka import KafkaConsumer


def main() -> int:
    consumer = KafkaConsumer(
        sys.argv[2],
        bootstrap_servers=sys.argv[1],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    for record in consumer:
        print(
            json.dumps(
                {
                    "key": record.key.decode() if record.key else None,
                    "value": json.loads(record.value),
                    "headers": {k: v.decode() for k, v in record.headers},
                }
            )
        )
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
