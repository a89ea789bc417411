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
    assert_eq!(out.status.code(), Some(2));
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

/// A config with one mistake, checked as `tacet check` would meet it: exit
/// code 2, the file and the key named, the message said once.
fn assert_config_mistake(name: &str, edit: impl Fn(String) -> String, key: &str, message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, edit(std::fs::read_to_string(repo("config/tacet.toml")).unwrap())).unwrap();
    let out = tacet().args(["check", "--config"]).arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name}: {err}");
    assert!(
        err.contains(&format!("{name}.toml")),
        "{name}: the file is named: {err}"
    );
    assert!(err.contains(key), "{name}: the key {key} is named: {err}");
    assert_eq!(err.matches(message).count(), 1, "{name}: said once: {err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{name}: {err}"
    );
}

#[test]
fn each_kind_of_config_mistake_is_one_message_naming_file_and_key_with_exit_code_2() {
    assert_config_mistake(
        "unknown-key",
        |c| c.replace("[engine]\n", "[engine]\nshard = 3\n"),
        "shard",
        "unknown field",
    );
    assert_config_mistake(
        "bad-duration",
        |c| c.replacen("deadline = \"2m\"", "deadline = \"2 parsecs\"", 1),
        "deadline",
        "is not a duration",
    );
    assert_config_mistake(
        "bad-pointer",
        |c| c.replace("time = \"/ts\"", "time = \"ts\""),
        "source.events.fields.time",
        "must start with '/'",
    );
    assert_config_mistake(
        "ambiguous-step",
        |c| {
            c.replacen(
                "ack_ok = [\"transfer.accepted\"]",
                "ack_ok = [\"billpay.confirmed\"]",
                1,
            )
        },
        "billpay.confirmed",
        "billpay.confirmed",
    );
    // No table names a journey: a [[table]] that tries is an unknown key there.
    assert_config_mistake(
        "journey-in-a-table",
        |c| {
            format!(
                "{c}\n[[table]]\nname = \"volume\"\npath = \"v.csv\"\nformat = \"csv\"\njourney = \"no_such_journey\"\n"
            )
        },
        "journey",
        "unknown field",
    );
    assert_config_mistake(
        "two-unnamed-sinks",
        |c| format!("{c}\n[[alert_sink]]\nkind = \"stdout\"\n[[alert_sink]]\nkind = \"stdout\"\n"),
        "alert_sink.name",
        "number 1 and number 2 are both unnamed stdout",
    );
    // Same config, same meaning: a setting `tacet run` has no use for is
    // refused there, not ignored.
    assert_config_mistake(
        "decoders-in-a-kafka-config",
        |c| {
            c.replace("[engine]\n", "[engine]\ndecoders = 2\n")
                + "\n[[source]]\nname = \"live\"\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ngroup_id = \"g\"\ntopics = [\"payments\"]\n"
        },
        "engine.decoders",
        "applies to `tacet replay` only",
    );
    assert_config_mistake(
        "cooperative-rebalancing",
        |c| {
            c + "\n[[source]]\nname = \"live\"\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ngroup_id = \"g\"\ntopics = [\"payments\"]\n[source.properties]\n\"partition.assignment.strategy\" = \"cooperative-sticky\"\n"
        },
        "properties.partition.assignment.strategy",
        "cooperative rebalancing is not supported",
    );
    assert_config_mistake(
        "two-unnamed-sources",
        |c| c.replace("name = \"events\"\n", "") + "\n[[source]]\n",
        "source.name",
        "both unnamed events",
    );
}

#[test]
fn one_source_and_sinks_of_different_kinds_need_no_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unnamed.toml");
    let text = std::fs::read_to_string(repo("config/tacet.toml"))
        .unwrap()
        .replace("name = \"events\"\n", "")
        + "\n[[alert_sink]]\nkind = \"stdout\"\n[[alert_sink]]\nkind = \"file\"\npath = \"alerts.ndjson\"\n";
    std::fs::write(&path, text).unwrap();
    let out = tacet().args(["check", "--config"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_missing_table_file_is_a_config_error_naming_the_resolved_path() {
    let data = scenario_outcomes();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tables.toml");
    let text = std::fs::read_to_string(repo("testdata/scenarios/config.toml")).unwrap()
        + "\n[[table]]\nname = \"volume\"\npath = \"no-such-volume.csv\"\nformat = \"csv\"\n";
    std::fs::write(&config, text).unwrap();
    let out = tacet()
        .args(["sql", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(data.path())
        .arg("SELECT 1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // Relative to the config's folder, not the working folder.
    let expected = dir.path().join("no-such-volume.csv");
    assert!(err.contains(&expected.display().to_string()), "{err}");
}

#[test]
fn relative_paths_in_a_config_resolve_against_its_folder() {
    let data = scenario_outcomes();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("metrics")).unwrap();
    std::fs::write(
        dir.path().join("metrics/volume.csv"),
        "minute,payments\n2026-11-22T10:00:00,7\n",
    )
    .unwrap();
    let config = dir.path().join("tables.toml");
    let text = std::fs::read_to_string(repo("testdata/scenarios/config.toml")).unwrap()
        + "\n[[table]]\nname = \"volume\"\npath = \"metrics/volume.csv\"\nformat = \"csv\"\n";
    std::fs::write(&config, text).unwrap();
    // Run from another folder, naming the config relatively to it.
    let elsewhere = tempfile::tempdir().unwrap();
    let relative_config = Path::new("..")
        .join(dir.path().file_name().unwrap())
        .join("tables.toml");
    assert!(elsewhere.path().parent() == dir.path().parent());
    let out = tacet()
        .current_dir(elsewhere.path())
        .args(["sql", "--format", "csv", "--config"])
        .arg(&relative_config)
        .arg("--data")
        .arg(data.path())
        .arg("SELECT payments FROM volume")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "payments\n7\n");
}

/// A sink that cannot start fails the start with its reason, instead of
/// alerting being silently off until shutdown.
#[test]
fn an_alert_sink_that_cannot_start_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = std::fs::read_to_string(repo("testdata/scenarios/config.toml")).unwrap();
    let cases = [
        (
            "kind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_env = \"TACET_TEST_UNSET_SECRET\"",
            "TACET_TEST_UNSET_SECRET",
        ),
        (
            "kind = \"file\"\npath = \"/proc/no-such-dir/alerts.ndjson\"",
            "alerts.ndjson",
        ),
    ];
    for (sink, named) in cases {
        let config = dir.path().join("sink.toml");
        std::fs::write(&config, format!("{scenario}\n[[alert_sink]]\n{sink}\n")).unwrap();
        let out = tacet()
            .args(["replay", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(dir.path().join("out"))
            .arg(repo("testdata/scenarios/retries_and_errors/events.ndjson"))
            .env_remove("TACET_TEST_UNSET_SECRET")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("alert sink cannot start") && err.contains(named), "{err}");
    }
}

#[test]
fn the_dead_letter_file_rotates_at_its_cap_and_the_summary_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.toml");
    let text = std::fs::read_to_string(repo("testdata/scenarios/config.toml")).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[output]\ndead_letter_max_bytes = 65536\ndead_letter_files = 2\n"),
    )
    .unwrap();
    let events = dir.path().join("garbage.ndjson");
    let garbage: String = (0..5000)
        .map(|i| format!("not json {i} {}\n", "x".repeat(60)))
        .collect();
    std::fs::write(&events, garbage).unwrap();
    let out = tacet()
        .args(["replay", "--json", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg(&events)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["dead_letters"], 5000);
    assert_eq!(summary["decode_errors"]["not_json"], 5000);
    let rotations = summary["dead_letter_file"]["rotations"].as_u64().unwrap();
    assert!(rotations >= 5, "{summary}");
    assert_eq!(
        summary["dead_letter_file"]["files_dropped"].as_u64(),
        Some(rotations - 2)
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("dead-letter"))
        .collect();
    assert_eq!(files.len(), 3, "the live file and two rotated ones");
    for f in files {
        assert!(f.metadata().unwrap().len() <= 65536);
    }
}

/// `engine.idle_timeout` means in a replay of stdin what it means for a
/// Kafka partition: an input that pauses stops holding the watermark
/// back, and the watermark moves on by the wall clock, so a journey whose
/// deadline passes during the pause is decided (and written, within
/// `flush_interval`) while stdin is still open.
#[test]
fn a_paused_stdin_replay_decides_by_the_wall_clock_after_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("live.toml");
    std::fs::write(
        &config,
        r#"[engine]
allowed_lateness = "1s"
idle_timeout = "1s"

[output]
flush_interval = "1s"

[[journey]]
name = "transfer"
start = "t.req"
ack_ok = ["t.ok"]
complete = ["ledger"]
deadline = "2s"
ack_timeout = "1s"
slo = 0.99
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut child = tacet()
        .args(["replay", "--json", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"{\"ts\":\"2026-11-22T10:00:00.000Z\",\"trace_id\":\"t1\",\"service\":\"app\",\"event\":\"t.req\"}\n\
              {\"ts\":\"2026-11-22T10:00:00.500Z\",\"trace_id\":\"t1\",\"service\":\"app\",\"event\":\"t.ok\"}\n",
        )
        .unwrap();
    stdin.flush().unwrap();
    // The ledger step never comes; stdin stays open.
    let outcomes = out.join("outcomes/journey=transfer");
    let started = std::time::Instant::now();
    while !outcomes.is_dir() && started.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let decided_after = started.elapsed();
    drop(stdin);
    let done = child.wait_with_output().unwrap();
    assert!(done.status.success());
    assert!(
        decided_after < std::time::Duration::from_secs(20),
        "nothing was decided while stdin paused"
    );
    let summary: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(summary["journeys"][0]["silent_failure"], 1, "{summary}");
}
