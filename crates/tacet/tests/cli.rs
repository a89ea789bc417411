//! The binary as a user meets it: exit codes, error messages, files written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn tacet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tacet"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

#[test]
fn check_lists_the_journeys_of_a_valid_config() {
    let out = tacet()
        .args(["check", "--config"])
        .arg(repo("config/tacet.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("6 journeys") && text.contains("account_opening") && text.contains("notify.sms|notify.push"));
}

#[test]
fn a_config_typo_fails_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    let text = std::fs::read_to_string(repo("config/tacet.toml"))
        .unwrap()
        .replace("late_horizon", "late_horizn");
    std::fs::write(&path, text).unwrap();
    let out = tacet().args(["check", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("typo.toml") && err.contains("late_horizn"), "{err}");
}

#[test]
fn replay_of_a_missing_file_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = tacet()
        .args(["replay", "--config"])
        .arg(repo("config/tacet.toml"))
        .arg("--out")
        .arg(dir.path())
        .arg("no-such-events.ndjson")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-events.ndjson"));
}

#[test]
fn replay_reads_stdin_and_writes_outcomes_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let events = std::fs::read(repo("testdata/scenarios/retries_and_errors/events.ndjson")).unwrap();
    let mut child = tacet()
        .args(["replay", "--json", "--config"])
        .arg(repo("testdata/scenarios/config.toml"))
        .arg("--out")
        .arg(dir.path())
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&events).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["outcome_rows"], 2);
    let transfer = &summary["journeys"][0];
    assert_eq!(
        (transfer["completed"].as_u64(), transfer["silent_failure"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(dir.path().join("summary.json").exists());
    assert!(dir.path().join("outcomes/journey=funds_transfer").is_dir());
}

#[test]
fn help_teaches_the_commands() {
    let out = tacet().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for command in ["demo", "replay", "gen", "check", "verify"] {
        assert!(text.contains(command), "{command} missing from --help");
    }
}

#[test]
fn gen_then_replay_then_verify_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let generated = tacet()
        .args(["gen", "--journeys", "3000", "--seed", "4", "--out"])
        .arg(data)
        .output()
        .unwrap();
    assert!(generated.status.success());
    let replay = tacet()
        .args(["replay", "--config"])
        .arg(repo("config/tacet.toml"))
        .arg("--out")
        .arg(data.join("out"))
        .arg(data.join("events.ndjson"))
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let verify = tacet()
        .args(["verify", "--truth"])
        .arg(data.join("truth.ndjson"))
        .arg("--out")
        .arg(data.join("out"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

/// Replays the retries scenario into a temporary folder for the SQL tests.
fn scenario_outcomes() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = tacet()
        .args(["replay", "--config"])
        .arg(repo("testdata/scenarios/config.toml"))
        .arg("--out")
        .arg(dir.path())
        .arg(repo("testdata/scenarios/retries_and_errors/events.ndjson"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

#[test]
fn sql_answers_one_query_in_each_format() {
    let dir = scenario_outcomes();
    let run = |format: &str| {
        let out = tacet()
            .args(["sql", "--format", format, "--config"])
            .arg(repo("testdata/scenarios/config.toml"))
            .arg("--data")
            .arg(dir.path())
            .arg("SELECT journey, completed, silent_failure FROM journey_sli ORDER BY journey")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run("table").contains("| funds_transfer | 1         | 1              |"));
    assert_eq!(run("csv"), "journey,completed,silent_failure\nfunds_transfer,1,1\n");
    let json: serde_json::Value = serde_json::from_str(run("json").trim()).unwrap();
    assert_eq!(json[0]["journey"], "funds_transfer");
    assert_eq!(json[0]["silent_failure"], 1);
}

#[test]
fn sql_errors_point_at_the_sql_and_writes_are_refused() {
    let dir = scenario_outcomes();
    let run = |sql: &str| {
        tacet()
            .args(["sql", "--data"])
            .arg(dir.path())
            .arg(sql)
            .output()
            .unwrap()
    };
    let out = run("SELECT no_such_column FROM outcomes");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no_such_column") && !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    let out = run("DROP TABLE outcomes");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("ddl"), "{err}");
    // The data is untouched.
    assert!(run("SELECT COUNT(*) FROM outcomes").status.success());
}

#[test]
fn sql_prompt_lists_tables_and_survives_errors() {
    let dir = scenario_outcomes();
    let mut child = tacet()
        .args(["sql", "--data"])
        .arg(dir.path())
        .env("HOME", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\\d\nSELECT nope;\nSELECT COUNT(*) AS n\n  FROM outcomes;\n\\q\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "outcomes",
        "journey_sli",
        "outcomes_per_minute",
        "journey_missing_steps",
    ] {
        assert!(text.contains(name), "{name} not listed:\n{text}");
    }
    assert!(
        text.contains("| 2 |"),
        "the statement after an error still runs:\n{text}"
    );
    let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("nope"), "the error names the bad identifier:\n{all}");
}
