#!/usr/bin/env python3
"""Writes the poison corpus: records a hostile or broken producer sends.

Each file holds one kind of poison; expected.json gives, per file, the dead
letters by reason a replay must count (and nothing may panic or stall).
Run it again after changing it: `python3 testdata/poison/make.py`.
"""
import json
import os

here = os.path.dirname(os.path.abspath(__file__))
TS = "2026-11-22T10:00:00.000Z"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def event(**fields):
    base = {"ts": TS, "trace_id": TRACE, "service": "api-gateway", "event": "transfer.requested", "status": "ok"}
    base.update(fields)
    return json.dumps(base, separators=(",", ":")).encode()


files = {}
expected = {}

files["time_in_future.ndjson"] = [
    b'{"ts":9223372036854775807,"trace_id":"ffffffffffffffffffffffffffffffff","service":"api-gateway","event":"transfer.requested","status":"ok"}',
    event(ts=1795334400000000),  # epoch microseconds
    event(ts="9999-12-31T23:59:59Z"),
    event(ts="2126-11-22T10:00:00Z"),
]
expected["time_in_future.ndjson"] = {"time_in_future": 4}

files["trace_ids.ndjson"] = [
    event(trace_id="t" * 257),
    event(trace_id="x" * 1024),
    event(trace_id="y" * 256, event="ledger.posted"),  # the longest allowed
    event(trace_id=TRACE.upper(), event="transfer.accepted"),  # the same trace as TRACE
    event(trace_id="00-" + TRACE.upper() + "-00F067AA0BA902B7-01", event="ledger.posted"),
]
expected["trace_ids.ndjson"] = {"trace_id_too_long": 2}

files["not_json.ndjson"] = [
    b"{",
    b"[1,2,3]",
    b"null",
    b'"just a string"',
    event() + b" trailing",
    b'{"ts":"' + TS.encode() + b'","trace_id":"a","event":"x","amount":NaN}',
    b'{"trace_id":"a\x00b","ts":1,"event":"x"}',  # a raw NUL is no JSON
    b"\xef\xbb\xbf" + event(),  # a byte-order mark before the object
    b'{"a":' * 5 + b"1" + b"}" * 4,  # unbalanced
]
expected["not_json.ndjson"] = {"not_json": 9}

depth = 100_000
files["deep_nesting.ndjson"] = [
    b'{"a":' + b"[" * depth + b"]" * depth + b"}",
    b'{"trace_id":"a","ts":1,"event":"x","meta":' + b'{"b":' * depth + b"1" + b"}" * depth + b"}",
    event(extra=[[[[[[[[1]]]]]]]]),  # shallow nesting in an unmapped field is fine
]
# Valid JSON however deep: the scanner skips unmapped values without
# recursing, so the first line is only missing its trace id and the second
# is an unmatched event.
expected["deep_nesting.ndjson"] = {"missing_trace_id": 1}

files["numbers.ndjson"] = [
    event(ts=1e400 if False else 0).replace(b'"ts":0', b'"ts":1e400'),
    event().replace(b'"status":"ok"', b'"status":"ok","amount":1e999'),
    event().replace(b'"ts":"' + TS.encode() + b'"', b'"ts":123456789012345678901234567890'),
    event(amount="NaN", event="transfer.accepted"),
    event(amount="-inf", event="transfer.accepted"),
    event(ts=-9223372036854775808),
]
# Numbers past f64's range are no JSON numbers to serde_json: the record is
# refused whole (not_json) rather than carrying an infinity. A time of
# 1.2e29 ms is a number but no time (bad_time). The time at i64::MIN is
# valid and decided (a stall), and must not make the alert engine walk every
# minute since then; "NaN"/"-inf" amounts are stored as null.
expected["numbers.ndjson"] = {"not_json": 2, "bad_time": 1}

files["strings.ndjson"] = [
    event(event="e" * 900_000),  # an unknown step: unmatched, not stored
    event(service="s" * 200_000),
    event(trace_id="a\u0000b"),  # an escaped NUL is a character like any other
    event(event="ledger.posted", customer_id="\u202e\ud83d\ude00" * 1000),
    b'{"ts":"' + TS.encode() + b'","trace_id":"\xff\xfe","event":"x"}',  # not UTF-8
]
expected["strings.ndjson"] = {"invalid_utf8": 1}

files["crlf.ndjson"] = [event() + b"\r", event(event="transfer.accepted") + b"\r", b"\r", b""]
expected["crlf.ndjson"] = {}

files["missing_fields.ndjson"] = [
    b'{"ts":"' + TS.encode() + b'","event":"transfer.requested"}',
    b'{"trace_id":"a","event":"transfer.requested"}',
    b'{"trace_id":"a","ts":"' + TS.encode() + b'"}',
    b'{"trace_id":"a","ts":"yesterday","event":"x"}',
    b'{"trace_id":"a","ts":"' + TS.encode() + b'","event":"x","status":"maybe"}',
    b'{"trace_id":"","ts":1,"event":"x"}',
    b'{"trace_id":null,"ts":1,"event":"x"}',
    b'{"trace_id":{"a":1},"ts":1,"event":"x"}',
]
expected["missing_fields.ndjson"] = {
    "missing_trace_id": 4,
    "missing_time": 1,
    "missing_event": 1,
    "bad_time": 1,
    "bad_status": 1,
}

for name, lines in files.items():
    with open(os.path.join(here, name), "wb") as f:
        for line in lines:
            f.write(line + b"\n")
with open(os.path.join(here, "expected.json"), "w") as f:
    json.dump(expected, f, indent=2, sort_keys=True)
    f.write("\n")
