#!/usr/bin/env python3
"""Produce generated tacet traffic to Kafka the way other teams' services would.

An independent client (kafka-python), not tacet's librdkafka: each event goes
to the topic of the service family that emits it, keyed by trace id so that
partition p of every topic holds the same traces:

  <prefix>payments  everything else (requests, acks, and malformed lines)
  <prefix>ledger    ledger.* steps
  <prefix>notify    notify.* steps, with the trace id only in a W3C
                    `traceparent` record header (the body has no trace_id)

With --unkeyed, records carry no key and land on any partition, as from
producers that do not key by trace id (tacet's repartition mode).

With --mis-keyed, the ledger service keys its records by the trace field
as it logs it, a full W3C `traceparent` (and logs that in its body too):
tacet reads the same trace id from it, but Kafka's partitioner sends the
record to another partition than the rest of its trace.

With --spoof-origin, the first record carries a `tacet-origin` header of
its own claiming the largest source offset: a producer must never be able
to make tacet's repartition stage skip what follows.

With --micros-every K, every K-th ledger event is sent a second time with
its time in epoch microseconds, as a misconfigured service would log it
(tacet must refuse those as time_in_future and decide as if they were
never sent).

Usage: produce.py BOOTSTRAP EVENTS.ndjson [--prefix P] [--rate EVENTS_PER_S] [--unkeyed] [--mis-keyed] [--spoof-origin] [--micros-every K]
Prints the number of records sent per topic as JSON (and "micros", the
number of microsecond records among them).
"""

import argparse
import datetime
import json
import sys
import time

from kafka import KafkaProducer


def traceparent(trace_id: str) -> bytes:
    hexid = trace_id if len(trace_id) == 32 and all(c in "0123456789abcdef" for c in trace_id) else None
    if hexid is None:
        # Not a W3C id: carry it as is (tacet accepts a bare id in the header).
        return trace_id.encode()
    return f"00-{hexid}-00f067aa0ba902b7-01".encode()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("events")
    ap.add_argument("--prefix", default="")
    ap.add_argument("--rate", type=float, default=0.0, help="events per second; 0 = as fast as possible")
    ap.add_argument("--unkeyed", action="store_true", help="send every record without a key")
    ap.add_argument("--mis-keyed", action="store_true", help="the ledger service keys by its logged traceparent")
    ap.add_argument("--spoof-origin", action="store_true", help="a tacet-origin header on the first record")
    ap.add_argument("--micros-every", type=int, default=0, help="resend every K-th ledger event in epoch microseconds")
    args = ap.parse_args()

    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        acks="all",
        linger_ms=5,
        batch_size=256 * 1024,
        max_in_flight_requests_per_connection=1,
    )
    topics = {name: args.prefix + name for name in ("payments", "ledger", "notify")}
    sent = {t: 0 for t in topics.values()}
    micros = 0
    ledger_seen = 0
    started = time.monotonic()
    n = 0
    with open(args.events, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError("not an object")
            except ValueError:
                # Malformed input as a broken producer would send it.
                producer.send(topics["payments"], value=line)
                sent[topics["payments"]] += 1
                n += 1
                continue
            name = str(event.get("event", ""))
            trace = event.get("trace_id")
            key = str(trace).encode() if trace is not None and not args.unkeyed else None
            headers = []
            if name.startswith("ledger."):
                topic = topics["ledger"]
                value = line
                if args.mis_keyed and trace is not None:
                    logged = traceparent(str(trace))
                    event["trace_id"] = logged.decode()
                    value = json.dumps(event, separators=(",", ":")).encode()
                    key = logged
            elif name.startswith("notify.") and trace is not None:
                topic = topics["notify"]
                headers = [("traceparent", traceparent(str(trace)))]
                del event["trace_id"]
                value = json.dumps(event, separators=(",", ":")).encode()
            else:
                topic = topics["payments"]
                value = line
            if args.spoof_origin and n == 0:
                headers = headers + [("tacet-origin", b"0/9223372036854775807")]
            producer.send(topic, key=key, value=value, headers=headers)
            sent[topic] += 1
            n += 1
            if topic == topics["ledger"] and args.micros_every > 0:
                ledger_seen += 1
                if ledger_seen % args.micros_every == 0 and isinstance(event.get("ts"), str):
                    at = datetime.datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
                    event["ts"] = int(at.timestamp() * 1_000_000)
                    wrong = json.dumps(event, separators=(",", ":")).encode()
                    producer.send(topic, key=key, value=wrong, headers=headers)
                    sent[topic] += 1
                    micros += 1
            if args.rate > 0 and n % 100 == 0:
                ahead = n / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    producer.flush(timeout=120)
    producer.close()
    sent["micros"] = micros
    json.dump(sent, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
