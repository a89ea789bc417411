//! `tacet run` against a real Kafka-protocol broker (nisshi, in memory), fed
//! by an independent client (kafka-python, `testdata/kafka/produce.py`):
//! outcomes equal the generator's truth after a clean run, after twenty SIGKILLs,
//! and after one of two instances in a group dies mid-stream.
//!
//! Needs `nisshi` on PATH or in ~/.cargo/bin and `kafka-python`; `.ci/run`
//! installs both (see `.ci/kafka-setup`).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One broker-heavy test at a time under `cargo test`: the machine has two
/// cores. (nextest runs each test in a process of its own and two of these
/// side by side: the `kafka` test group of .config/nextest.toml.)
static SERIAL: Mutex<()> = Mutex::new(());

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn nisshi() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let cached = home.join(".cargo/bin/nisshi");
    if cached.exists() {
        return cached;
    }
    PathBuf::from("nisshi")
}

/// A broker on a free loopback port, killed on drop.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        Broker::start_on(dir, free_port())
    }

    fn start_on(dir: &Path, port: u16) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let log = File::create(dir.join("nisshi.log")).unwrap();
        let child = Command::new(nisshi())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tacet/"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nisshi is not installed: run .ci/kafka-setup (cargo install nisshi ...)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nisshi did not start; see {}", dir.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        let broker = Broker { child, port };
        for topic in ["payments", "ledger", "notify", "tacet-incidents"] {
            let status = Command::new(nisshi())
                .args(["topic", "create", topic, "--partitions", "4", "--broker", &url])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "creating {topic}");
        }
        broker
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The default journeys with the three topics as Kafka sources.
fn write_config(dir: &Path, bootstrap: &str, group: &str, checkpoint: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo("config/tacet.toml")).unwrap();
    let start = text.find("[[source]]\nname = \"events\"").unwrap();
    let end = start + text[start..].find("[[journey]]").unwrap();
    let sources = format!(
        r#"[[source]]
name = "payments"
kind = "kafka"
partitioning = "copartitioned"
brokers = "{bootstrap}"
group_id = "{group}"
topics = ["payments", "ledger"]
[source.properties]
# Quick failure detection, so a SIGKILLed member's partitions move soon.
"session.timeout.ms" = "2000"
"heartbeat.interval.ms" = "300"

[[source]]
name = "notify"
kind = "kafka"
partitioning = "copartitioned"
brokers = "{bootstrap}"
group_id = "{group}"
topics = ["notify"]
[source.fields]
trace_id = "header:traceparent"

[checkpoint]
interval = "{checkpoint}"

"#
    );
    let path = dir.join("kafka.toml");
    std::fs::write(&path, format!("{}{sources}{}", &text[..start], &text[end..])).unwrap();
    path
}

/// Generated traffic and its truth under `dir`.
fn generate(dir: &Path, journeys: u64, seed: u64) {
    let status = Command::new(env!("CARGO_BIN_EXE_tacet"))
        .args([
            "gen",
            "--journeys",
            &journeys.to_string(),
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts the producer; `rate` events/s (0 = flat out).
fn produce(broker: &Broker, dir: &Path, rate: u32) -> Child {
    produce_with(broker, dir, rate, &[])
}

fn produce_with(broker: &Broker, dir: &Path, rate: u32, flags: &[&str]) -> Child {
    Command::new("python3")
        .arg(repo("testdata/kafka/produce.py"))
        .arg(broker.bootstrap())
        .arg(dir.join("events.ndjson"))
        .args(["--rate", &rate.to_string()])
        .args(flags)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with kafka-python")
}

fn tacet_run(config: &Path, out: &Path, stop_when_idle: Option<&str>, log: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tacet"));
    cmd.args(["run", "--config"]).arg(config).arg("--out").arg(out);
    if let Some(idle) = stop_when_idle {
        cmd.args(["--stop-when-idle", idle]);
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

/// Starts `tacet run` `kills` times, each SIGKILLed after `lifetime(kill)`
/// (it must still be running then).
fn run_and_kill(config: &Path, out: &Path, log: &Path, kills: u64, mut lifetime: impl FnMut(u64) -> Duration) {
    for kill in 0..kills {
        let mut child = tacet_run(config, out, None, log);
        std::thread::sleep(lifetime(kill));
        assert!(
            child.try_wait().unwrap().is_none(),
            "tacet exited early (kill {kill}); see {}",
            log.display()
        );
        unsafe_sigkill(&mut child);
    }
}

fn wait_ok(mut child: Child, what: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what} failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tacet verify` must call the outcomes exact (no loss, no duplicates).
fn assert_exact(dir: &Path, out: &Path) {
    let result = Command::new(env!("CARGO_BIN_EXE_tacet"))
        .args(["verify", "--truth"])
        .arg(dir.join("truth.ndjson"))
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(text.contains("exact"), "{text}");
}

#[test]
fn kafka_traffic_in_three_topics_gives_the_truth() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    generate(dir.path(), 20_000, 5);
    wait_ok(produce(&broker, dir.path(), 0), "producer", Duration::from_secs(180));
    let config = write_config(dir.path(), &broker.bootstrap(), "truth", "2s");
    // Incidents also go to a Kafka topic (brokers: the sources').
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[[alert_sink]]\nname = \"bus\"\nkind = \"kafka\"\ntopic = \"tacet-incidents\"\n");
    std::fs::write(&config, text).unwrap();
    let out = dir.path().join("out");
    let run = tacet_run(&config, &out, Some("6s"), &dir.path().join("tacet.log"));
    wait_ok(run, "tacet run", Duration::from_secs(180));
    assert_exact(dir.path(), &out);
    assert_routed(&std::fs::read_to_string(dir.path().join("tacet.log")).unwrap());

    // Malformed records: dead-lettered with topic/partition/offset, one each.
    let events = std::fs::read(dir.path().join("events.ndjson")).unwrap();
    let malformed = events
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter(|l| {
            serde_json::from_slice::<serde_json::Value>(l).map_or(true, |v| {
                !v.is_object() || v.get("trace_id").is_none() || v.get("ts").is_none() || v.get("event").is_none()
            })
        })
        .count();
    let letters: Vec<serde_json::Value> = BufReader::new(File::open(out.join("dead-letter.ndjson")).unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert!(malformed > 10, "the generator injects malformed lines");
    assert!(
        letters.len() >= malformed,
        "{} letters for {malformed} malformed lines",
        letters.len()
    );
    for letter in &letters {
        let position = letter["position"].as_str().unwrap();
        let parts: Vec<&str> = position.split('/').collect();
        assert_eq!(parts.len(), 3, "{position}");
        assert!(["payments", "ledger", "notify"].contains(&parts[0]), "{position}");
        parts[1].parse::<u32>().unwrap();
        parts[2].parse::<u64>().unwrap();
    }
    let mut positions: Vec<_> = letters.iter().map(|l| l["position"].as_str().unwrap()).collect();
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), letters.len(), "each bad record once");

    // The SLO rules ran live, in event time: the same incidents as a replay
    // of the same events, at the same minutes with the same counts, burn
    // rates and budgets. Sample trace ids and the most common last service
    // follow arrival order (samples are the first few per minute; service
    // tallies per minute are capped), so they are left out.
    let replayed = dir.path().join("replayed");
    let status = Command::new(env!("CARGO_BIN_EXE_tacet"))
        .args(["replay", "--config"])
        .arg(repo("config/tacet.toml"))
        .arg("--out")
        .arg(&replayed)
        .arg(dir.path().join("events.ndjson"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let live = incidents(&out);
    let replay = incidents(&replayed);

    // The kafka sink delivered every notification once, keyed by incident.
    let consumed = Command::new("python3")
        .arg(repo("testdata/kafka/consume.py"))
        .arg(broker.bootstrap())
        .arg("tacet-incidents")
        .output()
        .unwrap();
    assert!(
        consumed.status.success(),
        "{}",
        String::from_utf8_lossy(&consumed.stderr)
    );
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&consumed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let file_lines = std::fs::read_to_string(out.join("incidents.ndjson"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(records.len(), file_lines, "one record per notification");
    let mut keys: Vec<&str> = records
        .iter()
        .map(|r| {
            assert_eq!(r["key"], r["value"]["incident_id"]);
            r["headers"]["idempotency-key"].as_str().unwrap()
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), records.len(), "no notification twice");
    assert!(
        live.len() > 5,
        "the generated traffic burns budgets: {} incident records",
        live.len()
    );
    let only_live: Vec<_> = live.iter().filter(|r| !replay.contains(r)).take(3).collect();
    let only_replay: Vec<_> = replay.iter().filter(|r| !live.contains(r)).take(3).collect();
    assert!(
        only_live.is_empty() && only_replay.is_empty() && live.len() == replay.len(),
        "{} live vs {} replayed incident records\nonly live: {only_live:#?}\nonly replayed: {only_replay:#?}",
        live.len(),
        replay.len()
    );
}

/// Incident records, comparable: without what follows arrival order, money rounded to cents.
/// A service on one topic (ledger) that logs some of its events a second
/// time in epoch microseconds (SPEC §1): each such record is one
/// `time_in_future` dead letter and the outcomes are the truth, as if it
/// had never been sent. Its far-future time never reaches a watermark or a
/// snapshot.
#[test]
fn an_epoch_microseconds_producer_on_one_topic_costs_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    generate(dir.path(), 10_000, 17);
    let producer = produce_with(&broker, dir.path(), 0, &["--micros-every", "25"]);
    let out = producer.wait_with_output().unwrap();
    assert!(out.status.success());
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let micros = sent["micros"].as_u64().unwrap();
    assert!(micros > 100, "{sent}");
    let config = write_config(dir.path(), &broker.bootstrap(), "micros", "2s");
    let out = dir.path().join("out");
    let run = tacet_run(&config, &out, Some("6s"), &dir.path().join("tacet.log"));
    wait_ok(run, "tacet run", Duration::from_secs(180));
    assert_exact(dir.path(), &out);
    let future = BufReader::new(File::open(out.join("dead-letter.ndjson")).unwrap())
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(&l.unwrap()).unwrap())
        .filter(|l| l["reason"] == "time_in_future")
        .count() as u64;
    assert_eq!(future, micros, "one dead letter per microsecond record");
}

fn incidents(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out.join("incidents.ndjson")).unwrap();
    let mut records: Vec<String> = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("sample_trace_ids");
            o.remove("top_last_service");
            let money = o["money_at_risk"].as_f64().unwrap();
            o.insert("money_at_risk".into(), format!("{money:.2}").into());
            v.to_string()
        })
        .collect();
    records.sort();
    records
}

#[test]
fn twenty_sigkills_mid_stream_lose_and_repeat_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    generate(dir.path(), 12_000, 9);
    let config = write_config(dir.path(), &broker.bootstrap(), "crash", "300ms");
    let out = dir.path().join("out");
    let log = dir.path().join("tacet.log");
    // The producer trickles (~50 s) while tacet is killed at random points.
    let producer = produce(&broker, dir.path(), 1_000);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    // 2.5 to 5.5 s (joining the group takes 1-3 s): with a checkpoint
    // every 300 ms, kills land mid-stream, inside checkpoints (between a
    // commit and its files' moves too), now and then before the first
    // assignment.
    run_and_kill(&config, &out, &log, 20, |_| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Duration::from_millis(2_500 + seed % 3_000)
    });
    wait_ok(producer, "producer", Duration::from_secs(300));
    // A last run to the end, after a rejoin that waits out the killed member's session.
    wait_ok(
        tacet_run(&config, &out, Some("12s"), &log),
        "final tacet run",
        Duration::from_secs(300),
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("state restored from its snapshot"),
        "restarts restored state"
    );
    assert_exact(dir.path(), &out);
}

#[test]
fn a_survivor_takes_over_the_partitions_of_a_killed_instance() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    generate(dir.path(), 12_000, 21);
    let config = write_config(dir.path(), &broker.bootstrap(), "pair", "500ms");
    let out = dir.path().join("out");
    let producer = produce(&broker, dir.path(), 3_000);
    let mut first = tacet_run(&config, &out, None, &dir.path().join("first.log"));
    std::thread::sleep(Duration::from_secs(2));
    let survivor = tacet_run(&config, &out, Some("20s"), &dir.path().join("survivor.log"));
    std::thread::sleep(Duration::from_secs(6));
    unsafe_sigkill(&mut first);
    wait_ok(producer, "producer", Duration::from_secs(300));
    wait_ok(survivor, "survivor", Duration::from_secs(300));
    let first_log = std::fs::read_to_string(dir.path().join("first.log")).unwrap();
    let survivor_log = std::fs::read_to_string(dir.path().join("survivor.log")).unwrap();
    assert!(
        first_log.contains("Partition assigned"),
        "the first instance owned partitions"
    );
    assert!(
        survivor_log.contains("state restored from its snapshot"),
        "the survivor restored the partitions of the dead instance:\n{survivor_log}"
    );
    assert_routed(&survivor_log);
    assert_exact(dir.path(), &out);
}

/// Every record came off tacet's own fetch queue, in batches, also after a
/// rebalance: none reached the consumer queue unrouted.
fn assert_routed(log: &str) {
    assert!(log.contains("Consuming."), "a log of tacet run:\n{log}");
    assert!(!log.contains("unrouted"), "records bypassed the fetch queue:\n{log}");
}

/// SIGKILL: no chance to checkpoint or leave the group.
fn unsafe_sigkill(child: &mut Child) {
    // `Child::kill` sends SIGKILL on Unix.
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn unkeyed_traffic_is_repartitioned_by_trace_id_through_kills() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    generate(dir.path(), 10_000, 11);
    let config = write_config(dir.path(), &broker.bootstrap(), "rekey", "1s");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("partitioning = \"copartitioned\"\n", "partitioning = \"repartition\"\n"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("tacet.log");
    // Records without keys, on any partition: no partition holds a whole journey.
    let producer = produce_with(&broker, dir.path(), 5_000, &["--unkeyed"]);
    run_and_kill(&config, &out, &log, 4, |kill| Duration::from_millis(3_000 + kill * 700));
    wait_ok(producer, "producer", Duration::from_secs(300));
    wait_ok(
        tacet_run(&config, &out, Some("6s"), &log),
        "final tacet run",
        Duration::from_secs(300),
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("Created the internal repartition topic"),
        "{log_text}"
    );
    assert!(log_text.contains("Repartitioning by trace id"), "{log_text}");
    assert_exact(dir.path(), &out);
    // Dead letters name the position the producer wrote, not the internal topic.
    let letters = std::fs::read_to_string(out.join("dead-letter.ndjson")).unwrap();
    assert!(!letters.is_empty());
    for line in letters.lines() {
        let letter: serde_json::Value = serde_json::from_str(line).unwrap();
        let position = letter["position"].as_str().unwrap();
        assert!(!position.contains("repartition"), "{position}");
    }
}

#[test]
fn a_broker_down_at_start_is_waited_for_and_consumed_without_a_restart() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 3_000, 2);
    let port = free_port();
    let config = write_config(dir.path(), &format!("127.0.0.1:{port}"), "late-broker", "2s");
    let out = dir.path().join("out");
    let log = dir.path().join("tacet.log");
    let run = tacet_run(&config, &out, Some("6s"), &log);
    // Nothing listens yet: tacet must keep retrying, not exit.
    std::thread::sleep(Duration::from_secs(4));
    let broker = Broker::start_on(dir.path(), port);
    wait_ok(produce(&broker, dir.path(), 0), "producer", Duration::from_secs(120));
    wait_ok(run, "tacet run", Duration::from_secs(180));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("librdkafka keeps retrying"), "{log_text}");
    // Every retried error is counted, not only logged.
    assert!(log_text.contains("Errors retried: client"), "{log_text}");
    assert_exact(dir.path(), &out);
}

/// `[output] flush_interval` means in `tacet run` what it means in a
/// replay: no decided row waits longer than that to be written where SQL
/// reads it. Rows are published at checkpoints, so with a checkpoint
/// interval of an hour the run checkpoints at the flush interval instead.
#[test]
fn tacet_run_publishes_rows_within_the_flush_interval() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    generate(dir.path(), 2_000, 29);
    wait_ok(produce(&broker, dir.path(), 0), "producer", Duration::from_secs(120));
    let config = write_config(dir.path(), &broker.bootstrap(), "flush", "1h");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[output]\nflush_interval = \"2s\"\n");
    std::fs::write(&config, text).unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("tacet.log");
    let mut run = tacet_run(&config, &out, None, &log);
    let started = Instant::now();
    while outcome_files(&out).is_empty() && started.elapsed() < Duration::from_secs(60) {
        assert!(
            run.try_wait().unwrap().is_none(),
            "tacet run exited; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let waited = started.elapsed();
    let _ = run.kill();
    let _ = run.wait();
    assert!(
        !outcome_files(&out).is_empty(),
        "no outcome file within 60 s; see {}",
        log.display()
    );
    // Joining the group and reading the backlog take a few seconds; an
    // hour-long checkpoint interval would publish nothing before the stop.
    assert!(waited < Duration::from_secs(30), "first rows after {waited:?}");
}

/// A producer that keys one topic by the trace field as its service logs
/// it (a full `traceparent`, where the others key by the bare id): its
/// records land on other partitions than the rest of their traces. With
/// the default partitioning (repartition) the outcomes are exact; told the
/// topics are co-partitioned, tacet notices traces on two partitions and
/// stops with a message that says to repartition, instead of deciding
/// journeys from halves of their traces.
#[test]
fn mis_keyed_traffic_is_exact_by_default_and_stops_a_copartitioned_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    generate(dir.path(), 5_000, 31);
    wait_ok(
        produce_with(&broker, dir.path(), 0, &["--mis-keyed"]),
        "producer",
        Duration::from_secs(120),
    );
    let text = std::fs::read_to_string(write_config(dir.path(), &broker.bootstrap(), "miskeyed", "2s")).unwrap();

    // The default: repartitioned by trace id, whatever the producers' keys.
    let default = dir.path().join("default.toml");
    std::fs::write(&default, text.replace("partitioning = \"copartitioned\"\n", "")).unwrap();
    let out = dir.path().join("out-default");
    let log = dir.path().join("default.log");
    wait_ok(
        tacet_run(&default, &out, Some("6s"), &log),
        "tacet run (default)",
        Duration::from_secs(180),
    );
    assert_exact(dir.path(), &out);

    // Co-partitioned by choice: caught, loudly.
    let copartitioned = dir.path().join("copartitioned.toml");
    std::fs::write(&copartitioned, text.replace("\"miskeyed\"", "\"miskeyed-co\"")).unwrap();
    let out = dir.path().join("out-co");
    let log = dir.path().join("co.log");
    let mut run = tacet_run(&copartitioned, &out, Some("6s"), &log);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = run.kill();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            panic!("tacet run did not stop:\n{}", tail.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{log_text}");
    assert!(
        log_text.contains("sampled trace ids were seen on two partitions"),
        "{log_text}"
    );
    assert!(log_text.contains("partitioning = \"repartition\""), "{log_text}");
}

/// Internal headers are tacet's alone: a producer's own `tacet-origin`
/// header (claiming the largest source offset) on the first record would,
/// if forwarded, make every later record of its source partition look like
/// a copy the repartitioner wrote twice. The repartitioner writes its own
/// and the outcomes are exact.
#[test]
fn a_producers_spoofed_origin_header_skips_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    generate(dir.path(), 3_000, 37);
    wait_ok(
        produce_with(&broker, dir.path(), 0, &["--spoof-origin"]),
        "producer",
        Duration::from_secs(120),
    );
    let config = write_config(dir.path(), &broker.bootstrap(), "spoof", "2s");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("partitioning = \"copartitioned\"\n", "")).unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("tacet.log");
    wait_ok(
        tacet_run(&config, &out, Some("6s"), &log),
        "tacet run",
        Duration::from_secs(180),
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("Repartitioning by trace id"), "{log_text}");
    assert_exact(dir.path(), &out);
}

/// How many lines of `log` contain `needle`.
fn count_in_log(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits (up to 120 s) until `log` has `count` lines containing `needle`.
fn wait_for_log(log: &Path, needle: &str, count: usize) {
    let started = Instant::now();
    while count_in_log(log, needle) < count {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no {count} × {needle:?} in {}:\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `signal` (`STOP`, `CONT`) to a child process with kill(1).
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

/// Fencing: two instances in one group on one state folder, traffic
/// arriving live. A is paused (SIGSTOP) past its session timeout while B
/// takes its partitions over, then woken: its checkpoints of the
/// partitions B now owns are refused (counted and logged) instead of
/// overwriting B's state, and the outcomes equal the truth — nothing lost,
/// nothing decided twice.
#[test]
fn a_paused_instance_woken_after_a_takeover_is_fenced() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    generate(dir.path(), 12_000, 41);
    let config = write_config(dir.path(), &broker.bootstrap(), "fence", "500ms");
    let out = dir.path().join("out");
    let producer = produce(&broker, dir.path(), 3_000);
    let (a_log, b_log) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let a = tacet_run(&config, &out, Some("15s"), &a_log);
    wait_for_log(&a_log, "Partition assigned", 1);
    let b = tacet_run(&config, &out, Some("15s"), &b_log);
    // Both own partitions: the group has rebalanced.
    wait_for_log(&b_log, "Partition assigned", 1);
    std::thread::sleep(Duration::from_secs(2));
    // Past the 2 s session timeout of write_config: B is given A's partitions.
    let b_before = count_in_log(&b_log, "Partition assigned");
    signal(&a, "STOP");
    wait_for_log(&b_log, "Partition assigned", b_before + 1);
    std::thread::sleep(Duration::from_secs(2));
    signal(&a, "CONT");
    wait_ok(producer, "producer", Duration::from_secs(300));
    wait_ok(a, "instance A", Duration::from_secs(300));
    wait_ok(b, "instance B", Duration::from_secs(300));
    let a_text = std::fs::read_to_string(&a_log).unwrap();
    let b_text = std::fs::read_to_string(&b_log).unwrap();
    assert!(
        a_text.contains("Another instance took this partition over"),
        "A's stale checkpoints were refused:\n{a_text}\n\nB:\n{b_text}"
    );
    assert!(a_text.contains("fenced"), "and counted:\n{a_text}");
    assert_exact(dir.path(), &out);
}

/// Every `.parquet` file under `out/outcomes`, sorted.
fn outcome_files(out: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&out.join("outcomes"), &mut files);
    files.sort();
    files
}

/// Recovery never deletes a published outcome. A run killed mid-stream is
/// restarted after an SLO and a description were edited: the snapshots
/// still fit (only what shapes the state counts) and the outcomes equal
/// the truth. Then the state folder is moved away: the next start is
/// refused with what to do, and not one published file disappears.
#[test]
fn restarts_after_an_slo_edit_and_without_the_state_folder_lose_no_published_outcome() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    generate(dir.path(), 8_000, 43);
    let config = write_config(dir.path(), &broker.bootstrap(), "restart", "1s");
    let out = dir.path().join("out");
    let log = dir.path().join("tacet.log");
    let producer = produce(&broker, dir.path(), 3_000);
    run_and_kill(&config, &out, &log, 1, |_| Duration::from_secs(6));
    let published = outcome_files(&out);
    assert!(!published.is_empty(), "the first run published outcomes");

    let text = std::fs::read_to_string(&config).unwrap();
    let edited =
        text.replacen("slo = 0.999", "slo = 0.99", 1)
            .replacen("description = \"", "description = \"Edited. ", 1);
    assert_ne!(edited, text);
    std::fs::write(&config, edited).unwrap();
    wait_ok(producer, "producer", Duration::from_secs(300));
    wait_ok(
        tacet_run(&config, &out, Some("6s"), &log),
        "tacet run after the edit",
        Duration::from_secs(300),
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("state restored from its snapshot"), "{log_text}");
    assert_exact(dir.path(), &out);
    let all = outcome_files(&out);
    assert!(
        published.iter().all(|f| all.contains(f)),
        "a published file disappeared"
    );

    std::fs::rename(out.join("state"), dir.path().join("state-moved")).unwrap();
    let refused_log = dir.path().join("refused.log");
    let mut run = tacet_run(&config, &out, Some("6s"), &refused_log);
    let status = run.wait().unwrap();
    let refused = std::fs::read_to_string(&refused_log).unwrap();
    assert!(!status.success(), "{refused}");
    assert!(refused.contains("has outcomes published up to checkpoint"), "{refused}");
    assert!(refused.contains("Put the state folder back"), "{refused}");
    assert_eq!(outcome_files(&out), all, "no published file disappears");
}
