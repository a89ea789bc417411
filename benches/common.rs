//! Helpers shared by the benchmarks: sizes from the environment, medians,
//! resident memory, generated traffic.

use std::time::Duration;

/// `name` from the environment, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Median of durations (the middle one; the lower middle for even counts).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() - 1) / 2]
}

/// Resident set size of this process, in bytes (Linux /proc).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Clock ticks per second of /proc's CPU times: 100 on every kernel tacet
/// supports (USER_HZ).
const TICKS_PER_S: f64 = 100.0;

/// The name, user time and system time in a /proc `stat` line (proc(5)).
pub fn stat_times(stat: &str) -> Option<(&str, Duration, Duration)> {
    // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat(5); `state` is the 3rd.
    let ticks = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let time = |n: usize| Duration::from_secs_f64(ticks(n) as f64 / TICKS_PER_S);
    Some((stat.get(open + 1..close)?, time(14), time(15)))
}

/// CPU time (user + system) a process has used so far, its finished
/// threads included: `pid` is a number or `self`. Zero if unreadable.
pub fn process_cpu(pid: &str) -> Duration {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .as_deref()
        .and_then(stat_times)
        .map_or(Duration::ZERO, |(_, user, system)| user + system)
}

/// `journeys` generated journeys as NDJSON event lines (truth discarded).
pub fn generated_events(catalog: &tacet_core::Catalog, journeys: u64, seed: u64) -> Vec<u8> {
    let mut events = Vec::new();
    tacet_gen::generate(
        catalog,
        &tacet_gen::GenOptions {
            journeys,
            seed,
            ..Default::default()
        },
        &mut events,
        &mut std::io::sink(),
    )
    .expect("generating into memory cannot fail");
    events
}

/// The topics of the Kafka benchmarks: one per step family, as each
/// service writes its own.
pub const TOPICS: [&str; 3] = ["payments", "ledger", "notify"];

/// The index in [`TOPICS`] of the topic an event named `event` is written to.
pub fn topic_of(event: &str) -> usize {
    if event.starts_with("ledger.") {
        1
    } else if event.starts_with("notify.") {
        2
    } else {
        0
    }
}

/// `config` reading [`TOPICS`] from `brokers` as consumer group `group`.
pub fn with_kafka_source(config: &tacet_core::Config, brokers: &str, group: &str) -> tacet_core::Config {
    let mut config = config.clone();
    config.sources = vec![tacet_core::config::SourceConfig {
        name: "events".into(),
        kind: Some(tacet_core::config::SourceKind::Kafka),
        brokers: Some(brokers.into()),
        topics: TOPICS.iter().map(|t| t.to_string()).collect(),
        group_id: Some(group.into()),
        properties: Default::default(),
        // The benchmark's producer keys every topic by trace id.
        partitioning: tacet_core::config::Partitioning::Copartitioned,
        fields: Default::default(),
    }];
    config
}
