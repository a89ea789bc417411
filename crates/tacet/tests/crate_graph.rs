//! The crate graph keeps each heavy C/C++-backed or slow-to-build
//! dependency in the one crate that needs it (docs/ARCHITECTURE.md,
//! "Crates"): librdkafka (rdkafka) only under `tacet-kafka`, DataFusion
//! only under `tacet-sql`. Replay, the alert rules and the SQL tests then
//! never wait for librdkafka to compile, nor the engine for DataFusion.

use std::process::Command;

/// The normal (non-dev) dependencies of `package`, one crate name per line.
fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The library crates of the workspace.
const LIBRARIES: [&str; 8] = [
    "tacet-core",
    "tacet-ingest",
    "tacet-correlate",
    "tacet-store",
    "tacet-alert",
    "tacet-engine",
    "tacet-kafka",
    "tacet-sql",
];

/// Asserts that `dependency` is in the graph of `owner` and of no other library.
fn only_under(dependency: &str, owner: &str) {
    for package in LIBRARIES.iter().filter(|p| **p != owner) {
        let deps = dependencies(package);
        assert!(deps.len() > 1, "{package}: {deps:?}");
        assert!(
            !deps.iter().any(|d| d == dependency),
            "{package} depends on {dependency}: {deps:?}"
        );
    }
    assert!(dependencies(owner).iter().any(|d| d == dependency));
}

#[test]
fn librdkafka_is_built_only_for_the_kafka_crate() {
    only_under("rdkafka-sys", "tacet-kafka");
}

#[test]
fn datafusion_is_built_only_for_the_sql_crate() {
    only_under("datafusion", "tacet-sql");
}
