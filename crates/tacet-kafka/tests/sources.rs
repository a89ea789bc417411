//! One engine, two sources: the same input through `tacet replay`'s
//! pipeline and through `tacet run`'s Kafka engine (fed in process from
//! memory, no broker) gives the same outcome rows, dead letters and
//! in-flight journeys.
//!
//! - Golden scenarios: every folder under `testdata/scenarios/` holds
//!   `events.ndjson` (and optionally its own `config.toml`); its
//!   `expected.ndjson` lists every outcome row, dead letter and in-flight
//!   journey, in full, and both sources must produce exactly that.
//!   Regenerate after a deliberate change with
//!   `TACET_BLESS=1 cargo test --release -p tacet-kafka --test sources`,
//!   then read the diff: it is the behaviour change.
//! - The model-based property test: random streams through both sources,
//!   each compared row for row with the reference model of
//!   `tacet-correlate/tests/support/model.rs`.

#[path = "../../tacet-correlate/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};
use tacet_core::{Config, OutcomeRow};
use tacet_engine::{PreparedReplay, ReplayOptions};
use tacet_kafka::engine::{Engine, EngineOptions, Layout, Record};
use tacet_kafka::errors::RunErrors;

use support::model::run_model;
use support::streams::stream;
use support::{TestEvent, sort_rows};

/// The topic the Kafka source reads in these tests.
const TOPIC: &str = "payments";

/// `config` with a Kafka source reading [`TOPIC`], co-partitioned, that
/// never goes idle while a test runs.
fn with_kafka_source(config: &Config) -> Config {
    let mut config = config.clone();
    let mapping = config.sources.first().map(|s| s.fields.clone()).unwrap_or_default();
    config.sources = vec![tacet_core::config::SourceConfig {
        name: "events".into(),
        kind: Some(tacet_core::config::SourceKind::Kafka),
        brokers: Some("127.0.0.1:9".into()),
        topics: vec![TOPIC.into()],
        group_id: Some("sources-test".into()),
        properties: Default::default(),
        partitioning: tacet_core::config::Partitioning::Copartitioned,
        fields: mapping,
    }];
    config.engine.idle_timeout = Duration::from_secs(3600);
    config
}

/// Replays `lines` (one file) into `out` through `shards` shards.
fn through_replay(config: &Config, lines: &[Vec<u8>], out: &Path, shards: usize) {
    let input = out.join("input.ndjson");
    let mut bytes = lines.join(&b'\n');
    bytes.push(b'\n');
    std::fs::write(&input, bytes).unwrap();
    let mut opts = ReplayOptions::from_config(config, out.to_path_buf());
    opts.shards = shards;
    opts.decoders = 2;
    opts.chunk_bytes = 1024; // many chunks even for small files
    let files = [input.display().to_string()];
    PreparedReplay::open(config, None, &files, &opts)
        .unwrap()
        .run(&opts)
        .unwrap();
}

/// Feeds `lines` as records of partition 0 of [`TOPIC`] (offset = line
/// index) to the Kafka engine, then ends the run as `tacet run
/// --stop-when-idle` does: decide what is due, checkpoint, stop.
fn through_kafka(config: &Config, lines: &[Vec<u8>], out: &Path, workers: usize) {
    let config = with_kafka_source(config);
    let plan = config.kafka_plan().unwrap();
    let mut opts = EngineOptions::from_config(&config, out.to_path_buf(), out.join("state"));
    opts.workers = workers;
    let errors = Arc::new(RunErrors::new(None));
    let mut engine = Engine::new(&config, &plan, &Layout::Copartitioned, opts, None, errors).unwrap();
    engine.assign(&[(0, 0)]).unwrap();
    for (offset, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue; // a file's blank line is no record
        }
        let record = Record {
            topic: 0,
            partition: 0,
            offset: offset as i64,
            payload: Some(line),
        };
        engine.record(record, std::iter::empty(), Instant::now()).unwrap();
    }
    engine.finish().unwrap();
    engine.checkpoint().unwrap();
    engine.close_alerts().unwrap();
}

/// Which source a run goes through.
#[derive(Debug, Clone, Copy)]
enum Source {
    Replay { shards: usize },
    Kafka { workers: usize },
}

fn run(source: Source, config: &Config, lines: &[Vec<u8>]) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    match source {
        Source::Replay { shards } => through_replay(config, lines, out.path(), shards),
        Source::Kafka { workers } => through_kafka(config, lines, out.path(), workers),
    }
    out
}

fn outcome_rows(out: &Path) -> Vec<OutcomeRow> {
    let mut rows = tacet_store::read_outcomes(out).unwrap();
    in_total_order(&mut rows);
    rows
}

/// Sorted by every field: rows of one trace tie on the usual keys.
fn in_total_order(rows: &mut [OutcomeRow]) {
    sort_rows(rows);
    rows.sort_by_cached_key(|r| format!("{r:?}"));
}

/// Every `state/in-flight*.ndjson` line (replay writes one file, Kafka one
/// per partition), sorted by trace id.
fn in_flight(out: &Path) -> Vec<Value> {
    let mut all = Vec::new();
    let Ok(dir) = std::fs::read_dir(out.join("state")) else {
        return all;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("in-flight") && name.ends_with(".ndjson") {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            all.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
        }
    }
    all.sort_by(|a, b| a["trace_id"].as_str().cmp(&b["trace_id"].as_str()));
    all
}

// ---------------------------------------------------------------- golden

fn scenarios_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scenarios")
}

fn time(v: &Value) -> Value {
    match v.as_i64().and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        None => v.clone(),
    }
}

/// The input line a dead letter names: `file:LINE` from a replay,
/// `payments/0/OFFSET` (offset = line index) from the Kafka source.
fn line_of(position: &str) -> String {
    match position.strip_prefix(&format!("{TOPIC}/0/")) {
        Some(offset) => (offset.parse::<u64>().unwrap() + 1).to_string(),
        None => position.rsplit(':').next().unwrap().to_owned(),
    }
}

/// Everything a scenario produced, one JSON object per line, in a stable order.
fn produce(dir: &Path, source: Source) -> Vec<String> {
    let config_path = if dir.join("config.toml").exists() {
        dir.join("config.toml")
    } else {
        dir.parent().unwrap().join("config.toml")
    };
    let config = Config::from_file(&config_path).unwrap();
    let events = format!(
        "testdata/scenarios/{}/events.ndjson",
        dir.file_name().unwrap().to_string_lossy()
    );
    let bytes = std::fs::read(dir.join("events.ndjson")).unwrap();
    let mut lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.last().is_some_and(Vec::is_empty) {
        lines.pop(); // the final newline ends the last line
    }
    let out = run(source, &config, &lines);
    let out = out.path();

    let mut produced = Vec::new();
    for row in outcome_rows(out) {
        let mut v = serde_json::to_value(&row).unwrap();
        for key in ["started_at", "acked_at", "completed_at", "deadline_at", "decided_at"] {
            v[key] = time(&v[key]);
        }
        v["attributes"] = Value::Object(
            row.attributes
                .iter()
                .map(|(k, x)| (k.clone(), Value::String(x.clone())))
                .collect(),
        );
        let mut line = json!({"kind": "outcome"});
        line.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
        produced.push(line.to_string());
    }
    let letters = std::fs::read_to_string(out.join("dead-letter.ndjson")).unwrap_or_default();
    let mut dead: Vec<String> = letters
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let line = line_of(v["position"].as_str().unwrap());
            v["source"] = Value::String(events.clone());
            v["position"] = Value::String(format!("{events}:{line}"));
            let mut letter = json!({"kind": "dead_letter"});
            letter.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
            letter.to_string()
        })
        .collect();
    dead.sort();
    produced.extend(dead);
    for mut v in in_flight(out) {
        for key in ["first_seen", "started_at", "acked_at", "decides_at"] {
            v[key] = time(&v[key]);
        }
        let mut line = json!({"kind": "in_flight"});
        line.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
        produced.push(line.to_string());
    }
    produced
}

fn diff(expected: &[String], produced: &[String]) -> String {
    let mut out = String::new();
    for l in expected.iter().filter(|l| !produced.contains(l)) {
        out += &format!("- {l}\n");
    }
    for l in produced.iter().filter(|l| !expected.contains(l)) {
        out += &format!("+ {l}\n");
    }
    out
}

#[test]
fn golden_scenarios_through_both_sources() {
    let bless = std::env::var("TACET_BLESS").is_ok_and(|v| v == "1");
    let mut dirs: Vec<_> = std::fs::read_dir(scenarios_root())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("events.ndjson").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 7, "scenarios found: {dirs:?}");
    let sources = [
        Source::Replay { shards: 2 },
        Source::Replay { shards: 5 },
        Source::Kafka { workers: 1 },
        Source::Kafka { workers: 2 },
    ];
    let mut failures = Vec::new();
    for dir in &dirs {
        let expected_path = dir.join("expected.ndjson");
        if bless {
            let produced = produce(dir, sources[0]);
            std::fs::write(&expected_path, produced.join("\n") + "\n").unwrap();
            continue;
        }
        // Compared as sets of lines: rows of one trace may tie in any order.
        let mut expected: Vec<String> = std::fs::read_to_string(&expected_path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        expected.sort();
        for source in sources {
            let mut produced = produce(dir, source);
            produced.sort();
            if produced != expected {
                failures.push(format!(
                    "\n== {} through {source:?} ==\n{}",
                    dir.display(),
                    diff(&expected, &produced)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden scenarios differ (TACET_BLESS=1 to accept):{}",
        failures.concat()
    );
}

// ----------------------------------------------------------------- model

/// `e` as a producer writes it, in the reference field names.
fn ndjson(e: &TestEvent) -> String {
    let mut v = json!({
        "ts": e.time,
        "trace_id": e.trace,
        "event": e.name,
        "service": e.service,
        "status": if e.ok { "ok" } else { "error" },
    });
    if let Some(id) = &e.event_id {
        v["event_id"] = Value::String(id.clone());
    }
    if let Some(amount) = e.amount {
        v["amount"] = json!(amount);
    }
    v.to_string()
}

proptest! {
    // Each case runs both pipelines end to end, threads and Parquet
    // included: fewer cases than the shard-level model check, which covers
    // the rules themselves.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn both_sources_match_the_model(
        (events, shards) in stream(),
        short_horizon in any::<bool>(),
        event_cap in prop::option::weighted(0.25, 2usize..6),
    ) {
        let text = support::streams::config_with(short_horizon, event_cap);
        let config = Config::from_toml(&text, Path::new("model.toml")).unwrap();
        let catalog = support::streams::catalog_with(short_horizon, event_cap);
        let model = run_model(&catalog, &events);
        let mut model_rows = model.rows.clone();
        in_total_order(&mut model_rows);
        let lines: Vec<Vec<u8>> = events.iter().map(|e| ndjson(e).into_bytes()).collect();
        for source in [Source::Replay { shards }, Source::Kafka { workers: 1 + shards % 2 }] {
            let out = run(source, &config, &lines);
            prop_assert_eq!(&outcome_rows(out.path()), &model_rows, "{:?}", source);
            let in_flight: Vec<String> = in_flight(out.path())
                .iter()
                .map(|v| v["trace_id"].as_str().unwrap().to_owned())
                .collect();
            prop_assert_eq!(&in_flight, &model.in_flight, "{:?}", source);
        }
    }
}
