//! End-to-end replay throughput: NDJSON file → decode → correlate → Parquet.
//!
//! Generates `TACET_BENCH_JOURNEYS` journeys (default 500,000, about 2.2M
//! events in the reference shape) once, checks that a replay reproduces the
//! generator's truth exactly, then times `TACET_BENCH_RUNS` replays (default 5)
//! and prints the median, min and max in events/s and MB/s.
//!
//! Run: `cargo bench -p tacet-bench --bench replay`

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use tacet_bench::{env_or, median};
use tacet_core::{Catalog, Config};
use tacet_engine::{PreparedReplay, ReplayOptions, RunReport};
use tacet_gen::{GenOptions, TruthRow, compare};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run(config: &Config, events: &Path, out: &Path, shards: usize, decoders: usize) -> RunReport {
    let mut opts = ReplayOptions::from_config(config, out.to_path_buf());
    opts.shards = shards;
    opts.decoders = decoders;
    let files = [events.display().to_string()];
    PreparedReplay::open(config, None, &files, &opts)
        .unwrap()
        .run(&opts)
        .unwrap()
}

fn main() {
    let journeys: u64 = env_or("TACET_BENCH_JOURNEYS", 500_000);
    let runs: usize = env_or("TACET_BENCH_RUNS", 5);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let shards: usize = env_or("TACET_BENCH_SHARDS", cores);
    let decoders: usize = env_or("TACET_BENCH_DECODERS", cores);
    let config = Config::embedded_default();
    let catalog = Catalog::new(&config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");

    eprintln!("generating {journeys} journeys ...");
    let mut truth_buf = Vec::new();
    let gen_report = {
        let mut w = BufWriter::new(File::create(&events).unwrap());
        let r = tacet_gen::generate(
            &catalog,
            &GenOptions {
                journeys,
                seed: 2026,
                ..Default::default()
            },
            &mut w,
            &mut truth_buf,
        )
        .unwrap();
        w.flush().unwrap();
        r
    };
    let truth: Vec<TruthRow> = truth_buf
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();

    // Correct first: the result must equal the truth before it is timed.
    let check_out = dir.path().join("check");
    let report = run(&config, &events, &check_out, shards, decoders);
    let rows = tacet_store::read_outcomes(&check_out).unwrap();
    let verify = compare(&truth, &rows, &[]);
    assert!(
        verify.is_exact() && report.in_flight.is_empty(),
        "replay does not reproduce the truth: {verify:#?}"
    );
    std::fs::remove_dir_all(&check_out).unwrap();

    let mut times = Vec::new();
    for i in 0..runs {
        let out = dir.path().join(format!("run-{i}"));
        let started = Instant::now();
        let r = run(&config, &events, &out, shards, decoders);
        let took = started.elapsed();
        assert_eq!(r.writer.rows, report.writer.rows);
        eprintln!("run {i}: {:.3}s", took.as_secs_f64());
        times.push(took);
        std::fs::remove_dir_all(&out).unwrap();
    }
    let records = report.decode.records as f64;
    let mb = gen_report.bytes as f64 / 1e6;
    let rate = |d: Duration| (records / d.as_secs_f64(), mb / d.as_secs_f64());
    let (med, min, max) = (
        median(times.clone()),
        *times.iter().min().unwrap(),
        *times.iter().max().unwrap(),
    );
    println!(
        "replay benchmark (reference shape, Parquet output on, {shards} shards, {decoders} decoders, {cores} cores)"
    );
    println!(
        "  input: {journeys} journeys, {} lines, {:.1} MB ({:.0} bytes/line); output: {} rows",
        report.decode.records,
        mb,
        gen_report.bytes as f64 / records,
        report.writer.rows
    );
    for (label, d) in [("median", med), ("min", min), ("max", max)] {
        let (eps, mbps) = rate(d);
        println!(
            "  {label:>6}: {:.3}s  {:>10.0} events/s  {:>7.1} MB/s",
            d.as_secs_f64(),
            eps,
            mbps
        );
    }
    println!("  runs: {runs}; correctness checked against the generator's truth first");
}
