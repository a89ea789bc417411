//! Shared fixtures: outcomes from the golden scenarios, and from generated traffic.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tacet_core::{Catalog, Config};
use tacet_engine::{PreparedReplay, ReplayOptions};
use tacet_gen::GenOptions;

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// The config of the golden scenarios plus the calls table.
pub fn scenario_config() -> Config {
    let text = format!(
        "{}\n[[table]]\nname = \"contact_centre_calls\"\npath = \"{}\"\nformat = \"csv\"\ntime_column = \"minute\"\n",
        std::fs::read_to_string(repo("testdata/scenarios/config.toml")).unwrap(),
        repo("testdata/metrics/contact_centre_calls.csv").display()
    );
    Config::from_toml(&text, &repo("testdata/scenarios/config.toml")).unwrap()
}

/// Replays every golden scenario into `out`.
pub fn scenario_outcomes(out: &Path) -> Config {
    let config = scenario_config();
    let mut dirs: Vec<_> = std::fs::read_dir(repo("testdata/scenarios"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("events.ndjson").exists())
        .collect();
    dirs.sort();
    for (i, dir) in dirs.iter().enumerate() {
        let mut opts = ReplayOptions::from_config(&config, out.to_path_buf());
        opts.run_name = format!("scenario{i}");
        let files = [dir.join("events.ndjson").display().to_string()];
        PreparedReplay::open(&config, None, &files, &opts)
            .unwrap()
            .run(&opts)
            .unwrap();
    }
    config
}

/// Generates and replays traffic into `dir/out`, with the business metrics beside it.
pub fn generated_outcomes(dir: &Path, opts: GenOptions) -> Config {
    let config = Config::embedded_default();
    let catalog = Catalog::new(&config).unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut events = BufWriter::new(File::create(dir.join("events.ndjson")).unwrap());
    let report = tacet_gen::generate(&catalog, &opts, &mut events, &mut std::io::sink()).unwrap();
    events.flush().unwrap();
    let mut payments = File::create(out.join("payment_volume.csv")).unwrap();
    let mut calls = File::create(out.join("contact_centre_calls.csv")).unwrap();
    tacet_gen::write_business_metrics(&report, opts.seed, &mut payments, &mut calls).unwrap();
    let ropts = ReplayOptions::from_config(&config, out.clone());
    let files = [dir.join("events.ndjson").display().to_string()];
    PreparedReplay::open(&config, None, &files, &ropts)
        .unwrap()
        .run(&ropts)
        .unwrap();
    config
}
