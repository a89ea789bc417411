//! The correlator threads of `tacet run`, without a broker: what one record
//! costs after the poll thread handed it over (decode, join, timers, outcome
//! rows, alert feed).
//!
//! The Kafka benchmark's ratio is bounded by this figure: on two cores the
//! correlators share the CPU with librdkafka and the broker, so every
//! nanosecond here is throughput there. Measured alone it is far steadier
//! than the end-to-end rate, which makes it the figure to tune against.
//!
//! Generates `TACET_BENCH_JOURNEYS` journeys (default 300,000, ~1.3M
//! records), routes them as the Kafka benchmark does (three topics by step
//! family, four partitions by trace id), then `TACET_BENCH_RUNS` times
//! (default 5) hands every record to a fresh [`tacet_kafka::engine::Engine`]
//! on `TACET_BENCH_WORKERS` correlator threads (default 1) and waits until
//! they have applied all of them. Prints wall time and the correlator
//! threads' CPU time per record (from /proc), medians.
//!
//! Run: `cargo bench -p tacet-bench --bench correlate`

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tacet_bench::{TOPICS, env_or, generated_events, median, stat_times, topic_of, with_kafka_source};
use tacet_core::{Catalog, Config};
use tacet_kafka::engine::{Engine, Layout};
use tacet_kafka::errors::RunErrors;
use tacet_kafka::group::Record;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: i32 = 4;

/// One record as a broker would hand it over.
struct Routed {
    topic: usize,
    partition: i32,
    offset: i64,
    line: std::ops::Range<usize>,
}

/// CPU time (user, system) of this process's threads named `prefix*`.
fn thread_cpu(prefix: &str) -> (Duration, Duration) {
    let (mut user, mut system) = (Duration::ZERO, Duration::ZERO);
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, u, s)) = stat_times(&stat)
            && name.starts_with(prefix)
        {
            user += u;
            system += s;
        }
    }
    (user, system)
}

fn main() {
    let journeys: u64 = env_or("TACET_BENCH_JOURNEYS", 300_000);
    let runs: usize = env_or("TACET_BENCH_RUNS", 5);
    let workers: usize = env_or("TACET_BENCH_WORKERS", 1);

    let config = with_kafka_source(&Config::embedded_default(), "127.0.0.1:9", "bench");
    let plan = config.kafka_plan().unwrap();
    let catalog = Catalog::new(&config).unwrap();
    let events = generated_events(&catalog, journeys, 3);

    // Route as a producer keying by trace id would: step family → topic,
    // trace id → partition, offsets counted per partition.
    let mut offsets = [[0i64; PARTITIONS as usize]; TOPICS.len()];
    let mut records = Vec::new();
    let mut start = 0;
    for line in events.split(|&b| b == b'\n') {
        let range = start..start + line.len();
        start += line.len() + 1;
        if line.is_empty() {
            continue;
        }
        // The generator writes some malformed lines on purpose: they are
        // routed like any record and end in the dead-letter sink.
        let value: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
        let name = value["event"].as_str().unwrap_or("");
        let topic = topic_of(name);
        // A fixed-key hasher: the same routing every run.
        let mut h = std::hash::DefaultHasher::new();
        value["trace_id"].as_str().unwrap_or("").hash(&mut h);
        let partition = (h.finish() % PARTITIONS as u64) as i32;
        let offset = &mut offsets[topic][partition as usize];
        records.push(Routed {
            topic,
            partition,
            offset: *offset,
            line: range,
        });
        *offset += 1;
    }
    let total = records.len() as u64;
    eprintln!(
        "{total} records ({:.1} MB) of {journeys} journeys; {workers} correlator thread(s)",
        events.len() as f64 / 1e6
    );

    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for run in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let mut opts =
            tacet_kafka::EngineOptions::from_config(&config, dir.path().to_path_buf(), dir.path().join("state"));
        opts.workers = workers;
        let mut engine = Engine::new(
            &config,
            &plan,
            &Layout::Copartitioned,
            opts,
            None,
            Arc::new(RunErrors::default()),
        )
        .unwrap();
        let owned: Vec<(usize, i32)> = (0..TOPICS.len())
            .flat_map(|t| (0..PARTITIONS).map(move |p| (t, p)))
            .collect();
        engine.assign(&owned).unwrap();
        // Threads are up and groups adopted: time only the records.
        engine.counters().unwrap();
        let cpu_before = thread_cpu("tacet-correlat");
        let started = Instant::now();
        for r in &records {
            let record = Record {
                topic: r.topic,
                partition: r.partition,
                offset: r.offset,
                payload: Some(&events[r.line.clone()]),
            };
            engine.record(record, std::iter::empty(), started).unwrap();
        }
        engine.flush().unwrap();
        // Answered after every batch sent before it: all records applied.
        let counters = engine.counters().unwrap();
        let wall = started.elapsed();
        let cpu_after = thread_cpu("tacet-correlat");
        let user = cpu_after.0.saturating_sub(cpu_before.0);
        let system = cpu_after.1.saturating_sub(cpu_before.1);
        let cpu = user + system;
        assert_eq!(counters.decode.records, total, "every record applied");
        engine.close_alerts().unwrap();
        let per = |d: Duration| d.as_nanos() as f64 / total as f64;
        eprintln!(
            "run {run}: {:.0} ns/record wall, {:.0} ns/record correlator CPU ({:.0} user, {:.0} system)",
            per(wall),
            per(cpu),
            per(user),
            per(system)
        );
        walls.push(wall);
        cpus.push(cpu);
    }
    let per = |d: Duration| d.as_nanos() as f64 / total as f64;
    let wall = median(walls);
    let cpu = median(cpus);
    println!(
        "Correlator benchmark ({total} records, 3 topics x 4 partitions, {workers} thread(s), {runs} runs, medians)"
    );
    println!(
        "  wall                    {:>8.0} ns/record ({:.0} records/s)",
        per(wall),
        total as f64 / wall.as_secs_f64()
    );
    println!("  correlator CPU          {:>8.0} ns/record", per(cpu));
}
