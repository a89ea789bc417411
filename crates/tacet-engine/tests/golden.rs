//! Golden scenarios: every folder under `testdata/scenarios/` holds
//! `events.ndjson` (and optionally its own `config.toml`); its `expected.ndjson`
//! lists every outcome row, dead letter and in-flight journey the engine must
//! produce, in full. Regenerate after a deliberate change with
//! `TACET_BLESS=1 cargo test --release -p tacet-engine --test golden`, then
//! read the diff: it is the behaviour change.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tacet_core::Config;
use tacet_engine::{PreparedReplay, ReplayOptions};

fn scenarios_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scenarios")
}

fn time(v: &Value) -> Value {
    match v.as_i64().and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        None => v.clone(),
    }
}

/// Everything a scenario produced, one JSON object per line, in a stable order.
fn produce(dir: &Path, shards: usize) -> Vec<String> {
    let config_path = if dir.join("config.toml").exists() {
        dir.join("config.toml")
    } else {
        dir.parent().unwrap().join("config.toml")
    };
    let config = Config::from_file(&config_path).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut opts = ReplayOptions::from_config(&config, out.path().to_path_buf());
    opts.shards = shards;
    opts.decoders = 2;
    opts.chunk_bytes = 1024; // many chunks even for small files
    let events = format!(
        "testdata/scenarios/{}/events.ndjson",
        dir.file_name().unwrap().to_string_lossy()
    );
    let files = [dir.join("events.ndjson").display().to_string()];
    PreparedReplay::open(&config, None, &files, &opts)
        .unwrap()
        .run(&opts)
        .unwrap();

    let mut lines = Vec::new();
    let mut rows = tacet_store::read_outcomes(out.path()).unwrap();
    rows.sort_by(|a, b| (&a.trace_id, a.outcome).cmp(&(&b.trace_id, b.outcome)));
    for row in rows {
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
        lines.push(line.to_string());
    }
    let read = |name: &str| std::fs::read_to_string(out.path().join(name)).unwrap_or_default();
    let mut dead: Vec<String> = read("dead-letter.ndjson")
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let position = v["position"].as_str().unwrap().rsplit(':').next().unwrap().to_owned();
            v["source"] = Value::String(events.clone());
            v["position"] = Value::String(format!("{events}:{position}"));
            let mut line = json!({"kind": "dead_letter"});
            line.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
            line.to_string()
        })
        .collect();
    dead.sort();
    lines.extend(dead);
    for l in read("state/in-flight.ndjson").lines() {
        let mut v: Value = serde_json::from_str(l).unwrap();
        for key in ["first_seen", "started_at", "acked_at", "decides_at"] {
            v[key] = time(&v[key]);
        }
        let mut line = json!({"kind": "in_flight"});
        line.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
        lines.push(line.to_string());
    }
    lines
}

#[test]
fn golden_scenarios() {
    let bless = std::env::var("TACET_BLESS").is_ok_and(|v| v == "1");
    let mut dirs: Vec<_> = std::fs::read_dir(scenarios_root())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("events.ndjson").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 7, "scenarios found: {dirs:?}");
    let mut failures = Vec::new();
    for dir in &dirs {
        let produced = produce(dir, 2);
        assert_eq!(
            produced,
            produce(dir, 5),
            "{}: shard count changed the result",
            dir.display()
        );
        let expected_path = dir.join("expected.ndjson");
        if bless {
            std::fs::write(&expected_path, produced.join("\n") + "\n").unwrap();
            continue;
        }
        let expected: Vec<String> = std::fs::read_to_string(&expected_path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if produced != expected {
            let mut diff = format!("\n== {} ==\n", dir.display());
            for l in expected.iter().filter(|l| !produced.contains(l)) {
                diff += &format!("- {l}\n");
            }
            for l in produced.iter().filter(|l| !expected.contains(l)) {
                diff += &format!("+ {l}\n");
            }
            failures.push(diff);
        }
    }
    assert!(
        failures.is_empty(),
        "golden scenarios differ (TACET_BLESS=1 to accept):{}",
        failures.concat()
    );
}
