//! The poison corpus (`testdata/poison/`, written by its make.py): every
//! file is replayed by the real binary; nothing panics or stalls, and the
//! refused records are counted by reason exactly as `expected.json` says.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// The child's output, or a failed test (and the child killed) if it runs
/// past `limit`: one record must never stall the engine.
fn wait_at_most(mut child: Child, limit: Duration, what: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn every_poison_file_is_refused_by_reason_and_nothing_else_breaks() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("testdata/poison/expected.json")).unwrap()).unwrap();
    let files = expected.as_object().unwrap();
    assert!(files.len() >= 8);
    let mut wrong = Vec::new();
    for (file, reasons) in files {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_tacet"))
            .args(["replay", "--json", "--config"])
            .arg(repo("config/tacet.toml"))
            .arg("--out")
            .arg(dir.path())
            .arg(repo(&format!("testdata/poison/{file}")))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_at_most(child, Duration::from_secs(30), file);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{file}: {err}");
        assert!(!err.contains("panicked"), "{file}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{file} took {:?}",
            started.elapsed()
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let counted: serde_json::Map<String, serde_json::Value> = summary["decode_errors"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, n)| n.as_u64() != Some(0))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let total: u64 = reasons.as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
        if &serde_json::Value::Object(counted.clone()) != reasons || summary["dead_letters"].as_u64() != Some(total) {
            wrong.push(format!("{file}: expected {reasons}, counted {counted:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Upper- and lower-case spellings of one W3C trace id are one trace: the
/// corpus's trace_ids file opens a transfer under the upper-case id and
/// posts its ledger step under a traceparent in upper case.
#[test]
fn a_w3c_trace_id_in_upper_case_is_the_same_trace() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("mixed-case.ndjson");
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let line = |trace: &str, event: &str, ts: &str| {
        format!(
            r#"{{"ts":"2026-11-22T10:00:{ts}.000Z","trace_id":"{trace}","service":"svc","event":"{event}","status":"ok","amount":10}}"#
        )
    };
    let text = [
        line(id, "transfer.requested", "00"),
        line(&id.to_uppercase(), "transfer.accepted", "01"),
        line(
            &format!("00-{}-00F067AA0BA902B7-01", id.to_uppercase()),
            "ledger.posted",
            "02",
        ),
        line(id, "notify.sms", "03"),
    ]
    .join("\n");
    std::fs::write(&events, text + "\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tacet"))
        .args(["replay", "--json", "--config"])
        .arg(repo("config/tacet.toml"))
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg(&events)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["outcome_rows"], 1, "one journey, not three: {summary:#}");
    let transfer = summary["journeys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["journey"] == "funds_transfer")
        .unwrap();
    assert_eq!(transfer["completed"], 1, "{summary:#}");
}
