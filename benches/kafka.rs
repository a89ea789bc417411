//! End-to-end Kafka throughput: `tacet run` (decode, correlate, Parquet,
//! checkpoints every 5 s) against a bare rdkafka consumer that only counts
//! the records of the same topics. The ratio is the figure.
//!
//! Starts its own nisshi broker on 127.0.0.1 (memory storage; `.ci/kafka-setup`
//! installs it), produces `TACET_BENCH_JOURNEYS` generated journeys (default
//! 100,000, ~430K events) into three topics of 4 partitions with librdkafka,
//! then alternates bare and tacet consumers `TACET_BENCH_RUNS` times (default
//! 3), each in a fresh consumer group from the earliest offset
//! (`TACET_BENCH_ONLY=tacet` skips the bare consumer, for profiling;
//! `TACET_BENCH_PARTITIONING=repartition` measures the default mode). Rates count
//! from a consumer's first record to its last, so group joins and the idle
//! wait at the end are not in them. At the default size that window is
//! ~0.4 s and holds the bare consumer's ramp-up; `TACET_BENCH_JOURNEYS=400000`
//! (~1.5 s) gives the sustained ratio, about four points lower
//! (docs/PERFORMANCE.md, 2026-12-05 evening).
//!
//! It also prints the CPU each consumer used per record, this process and
//! the broker's (from /proc, 10 ms ticks), over its whole run: for tacet
//! that includes deciding what is in flight at the end and writing the
//! outcome files, and the broker's share includes serving the idle wait's
//! long polls. tacet's rate is bounded by its CPU (both cores are busy from
//! its first fetch to its last batch), the bare consumer's by fetch latency.
//!
//! Run: `cargo bench -p tacet-bench --bench kafka`

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tacet_bench::{TOPICS, env_or, generated_events, median, process_cpu, topic_of, with_kafka_source};
use tacet_core::{Catalog, Config};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nisshi() -> PathBuf {
    let cached = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/nisshi");
    if cached.exists() {
        cached
    } else {
        PathBuf::from("nisshi")
    }
}

fn main() {
    // `TACET_LOG=debug` (an env filter) shows tacet's and librdkafka's logs.
    if let Ok(filter) = std::env::var("TACET_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let journeys: u64 = env_or("TACET_BENCH_JOURNEYS", 100_000);
    let runs: usize = env_or("TACET_BENCH_RUNS", 3);
    // Correlator threads of `tacet run`; 0 = one per core, as `[engine] shards = 0`.
    let workers: usize = env_or("TACET_BENCH_WORKERS", 0);
    // `tacet` skips the bare consumer (for profiling tacet alone).
    let only: String = env_or("TACET_BENCH_ONLY", String::new());
    // `repartition` measures the default mode (a re-keying stage first);
    // otherwise co-partitioned, as the benchmark's producer keys by trace id.
    let repartition = env_or("TACET_BENCH_PARTITIONING", String::new()) == "repartition";
    // Extra librdkafka properties for both consumers, `key=value,key=value`.
    let props: Vec<(String, String)> = env_or("TACET_BENCH_PROPERTIES", String::new())
        .split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("TACET_BENCH_PROPERTIES: {kv:?} is not key=value"));
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let bootstrap = format!("127.0.0.1:{port}");
    let broker = Broker(
        Command::new(nisshi())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tacet/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nisshi is not installed: run .ci/kafka-setup"),
    );
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    for topic in TOPICS {
        let ok = Command::new(nisshi())
            .args(["topic", "create", topic, "--partitions", "4", "--broker", &url])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "creating {topic}");
    }

    // Traffic: generated events, keyed by trace id, routed by step family.
    let config = Config::embedded_default();
    let catalog = Catalog::new(&config).unwrap();
    let events = generated_events(&catalog, journeys, 3);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let started = Instant::now();
    let mut total = 0u64;
    for line in events.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let value: Option<serde_json::Value> = serde_json::from_slice(line).ok();
        let key = value
            .as_ref()
            .and_then(|v| v.get("trace_id"))
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_owned();
        let name = value
            .as_ref()
            .and_then(|v| v.get("event"))
            .and_then(|t| t.as_str())
            .unwrap_or("");
        let topic = TOPICS[topic_of(name)];
        let mut record = BaseRecord::to(topic).key(key.as_bytes()).payload(line);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
            }
        }
        total += 1;
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    eprintln!(
        "produced {total} records ({:.1} MB) in {:.1}s",
        events.len() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let out = tempfile::tempdir().unwrap();
    let mut bare_rates = Vec::new();
    let mut tacet_rates = Vec::new();
    // CPU per record (consumer process, broker) of each run, in µs.
    let broker_pid = broker.0.id().to_string();
    let cpu = || (process_cpu("self"), process_cpu(&broker_pid));
    let per_record = |(own0, broker0): (Duration, Duration), (own1, broker1): (Duration, Duration)| {
        let us = |d: Duration| d.as_secs_f64() * 1e6 / total as f64;
        (us(own1 - own0), us(broker1 - broker0))
    };
    let mut bare_cpu = Vec::new();
    let mut tacet_cpu = Vec::new();
    for run in 0..runs {
        // Bare: poll and count, nothing else.
        if only != "tacet" {
            let before = cpu();
            bare_rates.push(bare_run(&bootstrap, run, total, &props));
            bare_cpu.push(per_record(before, cpu()));
        }

        // tacet run, in process, in its own group and output folder.
        let mut cfg = with_kafka_source(&config, &bootstrap, &format!("tacet-{run}"));
        cfg.sources[0].properties.extend(props.iter().cloned());
        if repartition {
            cfg.sources[0].partitioning = tacet_core::config::Partitioning::Repartition;
        }
        let dir = out.path().join(format!("run{run}"));
        let mut engine = tacet_kafka::EngineOptions::from_config(&cfg, dir.clone(), dir.join("state"));
        engine.workers = workers;
        let opts = tacet_kafka::RunOptions {
            engine,
            checkpoint_interval: Duration::from_secs(5),
            flush_interval: cfg.output.flush_interval,
            stop_when_idle: Some(Duration::from_secs(3)),
            stop: Arc::new(AtomicBool::new(false)),
            metrics: None,
        };
        let before = cpu();
        let report = tacet_kafka::run(&cfg, opts).unwrap();
        tacet_cpu.push(per_record(before, cpu()));
        assert_eq!(report.decode.records, total, "tacet read every record");
        tacet_rates.push(rate_time(total, report.active));
        let cpu_text = |c: Option<&(f64, f64)>| {
            c.map_or(String::new(), |(own, broker)| {
                format!(" [CPU {own:.2} + broker {broker:.2} µs/record]")
            })
        };
        eprintln!(
            "run {run}: bare {:.0} rec/s{}, tacet {:.0} rec/s{} ({} outcome rows, {} checkpoints)",
            bare_rates.last().map_or(0.0, |d| total as f64 / d.as_secs_f64()),
            cpu_text(bare_cpu.last()),
            total as f64 / report.active.as_secs_f64(),
            cpu_text(tacet_cpu.last()),
            report.writer.rows,
            report.source.checkpoints
        );
    }
    // Medians of each column on its own.
    let median_cpu = |runs: &[(f64, f64)]| {
        let mid = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
        };
        (
            mid(runs.iter().map(|r| r.0).collect()),
            mid(runs.iter().map(|r| r.1).collect()),
        )
    };
    let (tacet_own, tacet_broker) = median_cpu(&tacet_cpu);
    if bare_rates.is_empty() {
        let tacet = median(tacet_rates);
        println!(
            "tacet run {:.0} records/s (median of {runs}); CPU {tacet_own:.2} µs/record + broker {tacet_broker:.2}",
            total as f64 / tacet.as_secs_f64()
        );
        return;
    }
    let bare = median(bare_rates);
    let tacet = median(tacet_rates);
    let per_s = |d: Duration| total as f64 / d.as_secs_f64();
    println!("Kafka benchmark ({total} records in 3 topics x 4 partitions, nisshi in memory, {runs} runs, medians)");
    let (bare_own, bare_broker) = median_cpu(&bare_cpu);
    println!(
        "  bare rdkafka consumer  {:>10.0} records/s   CPU {bare_own:.2} µs/record + broker {bare_broker:.2}",
        per_s(bare)
    );
    println!(
        "  tacet run              {:>10.0} records/s   CPU {tacet_own:.2} µs/record + broker {tacet_broker:.2} (whole run: with the final decisions and outcome files)",
        per_s(tacet)
    );
    println!(
        "  ratio                  {:>10.1} %",
        100.0 * per_s(tacet) / per_s(bare)
    );
}

/// One bare consumer in its own group: poll and count, nothing else.
/// Returns the time from its first record to its last.
fn bare_run(bootstrap: &str, run: usize, total: u64, props: &[(String, String)]) -> Duration {
    let mut settings = ClientConfig::new();
    settings
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bare-{run}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("queued.max.messages.kbytes", "16384");
    for (k, v) in props {
        settings.set(k, v);
    }
    let consumer: BaseConsumer = settings.create().unwrap();
    consumer.subscribe(&TOPICS).unwrap();
    let (mut n, mut first, mut last) = (0u64, None, Instant::now());
    let mut bytes = 0usize;
    while n < total {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            bytes += m.payload().map_or(0, |p| p.len());
            n += 1;
            last = Instant::now();
            first.get_or_insert(last);
        }
    }
    std::hint::black_box(bytes);
    rate_time(total, last.duration_since(first.unwrap()))
}

/// The time per run, kept as a duration so `median` applies.
fn rate_time(_records: u64, d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}
