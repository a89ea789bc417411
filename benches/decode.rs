//! Decoding alone: generated events in the reference shape, one
//! `Decoder::decode` per record (the call `tacet run` makes per Kafka
//! message: UTF-8 check, field capture, time, status, fingerprint), on one
//! thread. Prints the median of `TACET_BENCH_RUNS` passes (default 7) in
//! ns per record and MB/s.
//!
//! Run: `cargo bench -p tacet-bench --bench decode`

use std::sync::Arc;
use std::time::{Duration, Instant};

use tacet_bench::{env_or, generated_events, median};
use tacet_core::{Catalog, Config};
use tacet_ingest::Decoder;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let journeys: u64 = env_or("TACET_BENCH_JOURNEYS", 50_000);
    let runs: usize = env_or("TACET_BENCH_RUNS", 7);
    let config = Config::embedded_default();
    let catalog = Arc::new(Catalog::new(&config).unwrap());
    let events = generated_events(&catalog, journeys, 5);
    let lines: Vec<&[u8]> = events.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let (_, mapping) = config.replay_mapping(None).unwrap();
    let decoder = Decoder::new(catalog, &mapping);

    let mut times = Vec::new();
    let mut decoded = 0usize;
    for _ in 0..runs {
        let started = Instant::now();
        for line in &lines {
            if let Ok(event) = decoder.decode(line, &|_| None) {
                decoded += std::hint::black_box(event).attrs.len() + 1;
            }
        }
        times.push(started.elapsed());
    }
    std::hint::black_box(decoded);
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let per = |d: Duration| d.as_nanos() as f64 / lines.len() as f64;
    let (min, max) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
    let mid = median(times);
    println!(
        "decode benchmark ({} records, {:.0} bytes/record, one thread, {runs} runs)",
        lines.len(),
        bytes as f64 / lines.len() as f64
    );
    println!(
        "  median {:>6.0} ns/record  {:>6.0} MB/s   (min {:.0}, max {:.0} ns/record)",
        per(mid),
        bytes as f64 / mid.as_secs_f64() / 1e6,
        per(min),
        per(max)
    );
}
