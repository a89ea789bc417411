//! The decoder against SPEC §1: field mapping, traceparent, time and status
//! forms, and every refusal reason.

use std::path::Path;
use std::sync::Arc;

use tacet_core::config::Config;
use tacet_core::{Catalog, TraceKey};
use tacet_ingest::decode::AttrCow;
use tacet_ingest::{Chunk, DecodeError, DecodeStats, Decoder};

const JOURNEY: &str = include_str!("../../../testdata/decode/transfer-journey.toml");

const NESTED: &str = include_str!("../../../testdata/decode/nested-source.toml");

fn decoder(extra: &str, journey: &str) -> Decoder {
    let config = Config::from_toml(&format!("{journey}{extra}"), Path::new("t.toml")).unwrap();
    let catalog = Arc::new(Catalog::new(&config).unwrap());
    let (_, mapping) = config.replay_mapping(None).unwrap();
    Decoder::new(catalog, &mapping)
}

fn reference() -> Decoder {
    decoder("", JOURNEY)
}

#[test]
fn reference_shape() {
    let d = reference();
    let line = br#"{"ts":"2026-11-22T10:15:03.123Z","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","service":"api-gateway","event":"transfer.accepted","status":"ok","amount":250.00,"currency":"EUR","customer_id":"c-10293","channel":"mobile","level":"info","host":{"a":[1,2,{"b":null}]}}"#;
    let e = d.decode(line, &|_| None).unwrap();
    assert_eq!(e.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(e.time, 1_795_342_503_123);
    assert_eq!(e.event, "transfer.accepted");
    assert!(e.name.is_some() && e.ok);
    assert_eq!(e.service, "api-gateway");
    assert!(
        matches!(e.trace_id, std::borrow::Cow::Borrowed(_)),
        "no copy for unescaped strings"
    );
    let attrs: Vec<_> = e.attrs.iter().map(|(_, v)| v.clone()).collect();
    assert!(attrs.contains(&AttrCow::Num(250.0)));
    assert!(attrs.contains(&AttrCow::Str("c-10293".into())));
}

#[test]
fn one_field_feeding_several_targets_fills_each() {
    // `/service` is both the service and an attribute: one pointer, two targets.
    let journey = JOURNEY.replace(
        r#"region = "/geo/region" }"#,
        r#"region = "/geo/region", emitter = "/service" }"#,
    );
    let d = decoder("", &journey);
    let line =
        br#"{"ts":1,"trace_id":"t-1","service":"api-gateway","event":"transfer.requested","geo":{"region":"eu-west"}}"#;
    let e = d.decode(line, &|_| None).unwrap();
    assert_eq!(e.service, "api-gateway");
    let mut attrs: Vec<_> = e.attrs.iter().map(|(_, v)| v.clone()).collect();
    attrs.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(
        attrs,
        [AttrCow::Str("api-gateway".into()), AttrCow::Str("eu-west".into())]
    );
}

#[test]
fn nested_mapping_with_traceparent_epoch_ms_and_http_codes() {
    let d = decoder(NESTED, JOURNEY);
    let line = br#"{"meta":{"type":"ledger.posted","epoch_ms":1795342503123,"emitter":{"name":"core-ledger"},"ids":["ev-1","x"]},"ctx":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},"http":{"code":503}}"#;
    let e = d.decode(line, &|_| None).unwrap();
    assert_eq!(e.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(e.time, 1_795_342_503_123);
    assert_eq!(e.service, "core-ledger");
    assert!(!e.ok, "503 is an error");
    let same_id = br#"{"meta":{"type":"ledger.posted","epoch_ms":1,"ids":["ev-1"]},"ctx":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}"#;
    assert_eq!(
        d.decode(same_id, &|_| None).unwrap().fingerprint,
        e.fingerprint,
        "event_id is the dedup key"
    );
    let ok = br#"{"meta":{"type":"ledger.posted","epoch_ms":1},"ctx":{"traceparent":"t-1"},"http":{"code":201}}"#;
    assert!(d.decode(ok, &|_| None).unwrap().ok);
}

#[test]
fn header_trace_ids() {
    let d = decoder(
        "[[source]]\nname = \"k\"\n[source.fields]\ntrace_id = \"header:traceparent\"\n",
        JOURNEY,
    );
    let line = br#"{"ts":1000,"event":"ledger.posted"}"#;
    let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let e = d
        .decode(line, &|name| (name == "traceparent").then_some(&tp[..]))
        .unwrap();
    assert_eq!(e.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(d.decode(line, &|_| None).unwrap_err(), DecodeError::MissingTraceId);
}

#[test]
fn status_forms() {
    let d = reference();
    let status = |s: &str| {
        let line = format!(r#"{{"trace_id":"a","ts":1,"event":"ledger.posted","status":{s}}}"#);
        d.decode(line.as_bytes(), &|_| None).map(|e| e.ok)
    };
    for ok in [
        r#""ok""#,
        r#""OK""#,
        r#""Success""#,
        "200",
        "399",
        r#""204""#,
        "null",
        "true",
    ] {
        assert_eq!(status(ok), Ok(true), "{ok}");
    }
    for err in [
        r#""error""#,
        r#""ERROR""#,
        r#""failure""#,
        "400",
        "500",
        r#""503""#,
        "false",
    ] {
        assert_eq!(status(err), Ok(false), "{err}");
    }
    assert_eq!(status(r#""maybe""#), Err(DecodeError::BadStatus));
    let missing = br#"{"trace_id":"a","ts":1,"event":"ledger.posted"}"#;
    assert!(d.decode(missing, &|_| None).unwrap().ok, "missing status = ok");
}

#[test]
fn time_forms() {
    let d = reference();
    let time = |t: &str| {
        let line = format!(r#"{{"trace_id":"a","ts":{t},"event":"x"}}"#);
        d.decode(line.as_bytes(), &|_| None).map(|e| e.time)
    };
    assert_eq!(time(r#""1970-01-01T00:00:01Z""#), Ok(1000));
    assert_eq!(time(r#""1970-01-01T01:00:01.5+01:00""#), Ok(1500));
    assert_eq!(time("1795342503123"), Ok(1_795_342_503_123));
    assert_eq!(time("1500.7"), Ok(1500));
    assert_eq!(time(r#""yesterday""#), Err(DecodeError::BadTime));
    assert_eq!(time(r#""2026-13-01T00:00:00Z""#), Err(DecodeError::BadTime));
    assert_eq!(time("{}"), Err(DecodeError::BadTime));
    assert_eq!(time("null"), Err(DecodeError::MissingTime));
}

#[test]
fn escaped_strings_are_unescaped() {
    let d = reference();
    let line = br#"{"trace_id":"tr\u0061ce-\"1\"","ts":1,"event":"ledger\u002eposted","service":"caf\u00e9"}"#;
    let e = d.decode(line, &|_| None).unwrap();
    assert_eq!(e.trace_id, "trace-\"1\"");
    assert_eq!(e.event, "ledger.posted");
    assert_eq!(e.service, "café");
    assert!(e.name.is_some());
}

#[test]
fn refusal_reasons() {
    let d = reference();
    let cases: [(&[u8], DecodeError); 9] = [
        (b"not json", DecodeError::NotJson),
        (b"[1,2]", DecodeError::NotJson),
        (br#"{"trace_id":"a","ts":1,"event":"x"} trailing"#, DecodeError::NotJson),
        (br#"{"trace_id":"a","ts":1,"event":"x""#, DecodeError::NotJson),
        (br#"{"ts":1,"event":"x"}"#, DecodeError::MissingTraceId),
        (br#"{"trace_id":"","ts":1,"event":"x"}"#, DecodeError::MissingTraceId),
        (br#"{"trace_id":"a","event":"x"}"#, DecodeError::MissingTime),
        (br#"{"trace_id":"a","ts":1}"#, DecodeError::MissingEvent),
        (
            br#"{"trace_id":"a","ts":9223372036854775807,"event":"x"}"#,
            DecodeError::TimeInFuture,
        ),
    ];
    for (line, reason) in cases {
        assert_eq!(
            d.decode(line, &|_| None).unwrap_err(),
            reason,
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn chunks_route_by_trace_and_dead_letter_with_positions() {
    let d = reference().with_max_line(200);
    let good = |t: &str, ts: i64| format!(r#"{{"trace_id":"{t}","ts":{ts},"event":"ledger.posted"}}"#);
    let mut text = String::new();
    text += &good("4bf92f3577b34da6a3ce929d0e0e4736", 5000);
    text += "\n\n{broken\n";
    text += &good("order-7", 3000);
    text += "\n";
    text += r#"{"trace_id":"x","ts":1,"event":"heartbeat"}"#;
    text += "\n";
    text += &format!(r#"{{"trace_id":"a","ts":1,"event":"{}"}}"#, "e".repeat(300));
    text += "\n";
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"{\"trace_id\":\"\xff\"}\n");
    let chunk = Chunk {
        seq: 3,
        partition: 0,
        source: "events.ndjson".into(),
        first_line: 10,
        bytes: Arc::new(bytes.into()),
        last: true,
    };
    let (mut stats, mut dead) = (DecodeStats::default(), Vec::new());
    let batches = d.decode_chunk(&chunk, 4, &mut stats, &mut dead);
    assert_eq!(batches.len(), 4);
    assert_eq!((stats.records, stats.events, stats.unmatched), (6, 2, 1));
    let positions: Vec<_> = dead.iter().map(|d| (d.position.as_str(), d.reason)).collect();
    assert_eq!(
        positions,
        [
            ("events.ndjson:12", DecodeError::NotJson),
            ("events.ndjson:15", DecodeError::OversizedLine),
            ("events.ndjson:16", DecodeError::InvalidUtf8),
        ]
    );
    let mut seen = Vec::new();
    for (shard, b) in batches.iter().enumerate() {
        assert_eq!((b.seq, b.chunk_max, b.last_of_partition), (3, 5000, true));
        b.for_each(|e, running| {
            assert_eq!(e.trace.shard(4), shard);
            seen.push((e.trace_text.map(str::to_owned), e.time, running));
        });
    }
    seen.sort();
    assert_eq!(seen, [(None, 5000, 5000), (Some("order-7".into()), 3000, 5000)]);
    let (key, canonical) = TraceKey::from_text("order-7");
    assert!(!canonical && key.shard(4) < 4);
}

/// A fixed wall clock for the future-time tests: 2026-11-22T10:00:00Z.
fn fixed_clock() -> i64 {
    1_795_341_600_000
}

#[test]
fn a_time_past_the_wall_clock_and_its_skew_is_refused() {
    let d = reference().with_future_limit(std::time::Duration::from_secs(15 * 60), fixed_clock);
    let at = |ts: i64| format!(r#"{{"trace_id":"a","ts":{ts},"event":"ledger.posted"}}"#);
    let limit = fixed_clock() + 15 * 60 * 1000;
    assert!(
        d.decode(at(limit).as_bytes(), &|_| None).is_ok(),
        "the limit itself is allowed"
    );
    for future in [limit + 1, i64::MAX, fixed_clock() * 1000] {
        assert_eq!(
            d.decode(at(future).as_bytes(), &|_| None).unwrap_err(),
            DecodeError::TimeInFuture,
            "{future}"
        );
    }
    let rfc = br#"{"trace_id":"a","ts":"2027-01-01T00:00:00Z","event":"ledger.posted"}"#;
    assert_eq!(d.decode(rfc, &|_| None).unwrap_err(), DecodeError::TimeInFuture);
    // The default limit is the real wall clock + 15 minutes.
    let now = tacet_ingest::decode::wall_clock_ms();
    assert!(reference().decode(at(now).as_bytes(), &|_| None).is_ok());
    assert_eq!(
        reference()
            .decode(at(now + 3_600_000).as_bytes(), &|_| None)
            .unwrap_err(),
        DecodeError::TimeInFuture
    );
}

#[test]
fn trace_ids_are_bounded_and_w3c_ids_case_insensitive() {
    let d = reference();
    let with_trace = |t: &str| format!(r#"{{"trace_id":"{t}","ts":1,"event":"ledger.posted"}}"#);
    let longest = "t".repeat(tacet_ingest::decode::MAX_TRACE_ID_BYTES);
    assert!(d.decode(with_trace(&longest).as_bytes(), &|_| None).is_ok());
    let too_long = with_trace(&format!("{longest}t"));
    assert_eq!(
        d.decode(too_long.as_bytes(), &|_| None).unwrap_err(),
        DecodeError::TraceIdTooLong
    );
    let lower = "4bf92f3577b34da6a3ce929d0e0e4736";
    let upper = lower.to_ascii_uppercase();
    let parent = format!("00-{upper}-00F067AA0BA902B7-01");
    for id in [upper.as_str(), parent.as_str()] {
        let line = with_trace(id);
        let e = d.decode(line.as_bytes(), &|_| None).unwrap();
        assert_eq!(e.trace_id, lower, "{id} is the same trace as its lower-case spelling");
    }
    // Ids that are not W3C ids keep their case.
    let line = with_trace("Order-7");
    let e = d.decode(line.as_bytes(), &|_| None).unwrap();
    assert_eq!(e.trace_id, "Order-7");
}

#[test]
fn non_finite_numbers_are_no_attribute_value() {
    let d = reference();
    // serde_json reads 1e999 as no number; the decoder's own scanner must
    // not turn it into an infinity either.
    for amount in ["1e999", "-1e999"] {
        let line =
            format!(r#"{{"trace_id":"a","ts":1,"event":"transfer.accepted","amount":{amount},"currency":"EUR"}}"#);
        if let Ok(e) = d.decode(line.as_bytes(), &|_| None) {
            assert!(
                e.attrs
                    .iter()
                    .all(|(_, v)| !matches!(v, AttrCow::Num(n) if !n.is_finite())),
                "{amount}: {:?}",
                e.attrs
            );
        }
    }
}
