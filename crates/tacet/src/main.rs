//! `tacet`: finds silent failures in payment journeys.
//!
//! A thin binary: argument parsing, logging, progress and the report table.
//! The work happens in the library crates (see docs/ARCHITECTURE.md).

mod report;
mod sql;

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tacet_core::{Catalog, Config};
use tacet_engine::{PreparedReplay, ReplayOptions, RunReport};
use tacet_gen::{GenOptions, Shape, TruthRow};

/// mimalloc, as it comes (built without transparent huge pages, see the
/// workspace Cargo.toml); its `MIMALLOC_*` variables tune it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Finds silent failures: customer journeys told "success" whose work never happened.
///
/// tacet correlates transaction events by trace id across services, decides every
/// journey in event time (completed, silent_failure, failed, stalled,
/// late_completion, orphan) and writes the outcomes as Parquet for SQL.
///
/// Start with `tacet demo`, then try `tacet gen` and `tacet replay` on your own config.
#[derive(Parser)]
#[command(
    name = "tacet",
    version,
    propagate_version = true,
    after_help = "Exit codes: 0 success; 1 a failure at run time (input, disk, network, \
                  outcomes that differ from the truth); 2 a mistake in the command line \
                  or the config (the message names the file and the key)."
)]
struct Cli {
    /// More log output (-v info, -vv debug). TACET_LOG overrides, e.g. TACET_LOG=tacet=debug.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a day of bank traffic with injected silent failures, run the
    /// engine on it and print the report. Needs no Kafka and no config.
    ///
    /// Example: tacet demo --journeys 100000 --out tacet-out
    Demo {
        /// Folder for the events, outcomes (Parquet) and summary.
        #[arg(long, default_value = "tacet-out")]
        out: PathBuf,
        /// Number of journeys to generate.
        #[arg(long, default_value_t = 200_000)]
        journeys: u64,
        /// Random seed: the same seed gives the same traffic.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Config with the journeys (default: the embedded config/tacet.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Replay NDJSON event files (or `-` for stdin) through the engine.
    ///
    /// Several files are separate partitions read side by side. Outcomes go to
    /// OUT/outcomes/journey=*/date=*/*.parquet, bad lines to
    /// OUT/dead-letter.ndjson, journeys still open to OUT/state/in-flight.ndjson
    /// and the run summary to OUT/summary.json.
    ///
    /// Example: tacet replay --config config/tacet.toml --out out data/events.ndjson
    Replay {
        /// The config file (journeys, engine settings, field mapping).
        #[arg(long)]
        config: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Which [[source]] mapping to decode with, when the config has several.
        #[arg(long)]
        source: Option<String>,
        /// Event files, NDJSON; `-` reads stdin.
        #[arg(required = true)]
        events: Vec<String>,
        /// Print the summary as JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Consume the config's Kafka sources until SIGINT/SIGTERM, deciding
    /// journeys per partition and checkpointing outcomes, state and offsets.
    ///
    /// Restart it at any time: it resumes from the last checkpoint, neither
    /// losing nor repeating a decision. Run several with the same group id to
    /// share the partitions.
    ///
    /// Example, with the journeys of config/tacet.toml and the Kafka sources
    /// of docker/kafka-sources.toml (set `brokers` to yours first):
    ///
    ///   cat config/tacet.toml docker/kafka-sources.toml > kafka.toml
    ///
    ///   tacet run --config kafka.toml --out /var/lib/tacet
    Run {
        /// The config: [[source]] kind = "kafka" tables, journeys, [checkpoint].
        #[arg(long)]
        config: PathBuf,
        /// Output folder: outcomes/, dead-letter.ndjson, state/ (snapshots,
        /// unless [checkpoint] state_dir points elsewhere).
        #[arg(long)]
        out: PathBuf,
        /// Exit after this long without input, deciding what is due and
        /// writing the journeys still in flight (tests and backfills), e.g. 30s.
        #[arg(long, value_parser = humantime::parse_duration)]
        stop_when_idle: Option<Duration>,
        /// Serve Prometheus metrics (consumer lag included) on this address, e.g. 127.0.0.1:9464.
        #[arg(long)]
        metrics_listen: Option<String>,
    },
    /// Write synthetic traffic (OUT/events.ndjson) and its truth (OUT/truth.ndjson).
    ///
    /// Example: tacet gen --config config/tacet.toml --out data --journeys 100000 --seed 42
    Gen {
        /// The config whose journeys to generate.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Number of journeys.
        #[arg(long, default_value_t = 100_000)]
        journeys: u64,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Field layout: `reference`, or `alt` (nested, traceparent, epoch ms,
        /// HTTP codes; replay it with config/alt-shape.toml).
        #[arg(long, value_enum, default_value_t = ShapeArg::Reference)]
        shape: ShapeArg,
        /// Journeys started per second of event time.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
    },
    /// Query outcomes with SQL (DataFusion): one statement, or an interactive
    /// prompt with history and \\d when none is given.
    ///
    /// Tables: outcomes (partitioned by journey and date), the config's
    /// [[table]]s; views: journey_sli, outcomes_per_minute,
    /// journey_missing_steps, journey_last_services; functions:
    /// burn_rate(bad, total, slo), error_budget_left(bad, total, slo).
    ///
    /// Example: tacet sql --data tacet-out "SELECT * FROM journey_sli"
    Sql {
        /// Output folder of a replay or demo.
        #[arg(long, default_value = "tacet-out")]
        data: PathBuf,
        /// Config with [[table]]s and journey SLOs (default: the embedded one).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Result format.
        #[arg(long, value_enum, default_value_t = FormatArg::Table)]
        format: FormatArg,
        /// The statement; omit for the interactive prompt.
        query: Option<String>,
    },
    /// Serve the SQL session over the PostgreSQL wire protocol (psql, Grafana,
    /// BI tools). Read-only.
    ///
    /// Example: tacet serve-sql --data tacet-out --listen 127.0.0.1:5433
    ServeSql {
        /// Output folder of a replay or demo.
        #[arg(long, default_value = "tacet-out")]
        data: PathBuf,
        /// Config with [[table]]s, SLOs and [sql] settings.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:5433")]
        listen: String,
        /// Environment variable holding the password clients must give.
        #[arg(long)]
        password_env: Option<String>,
    },
    /// Validate a config and list the journeys it defines.
    ///
    /// Example: tacet check --config config/tacet.toml
    Check {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Score the outcomes in OUT against a truth file: precision and recall per outcome.
    /// Exits 1 unless both are 1.0 for every outcome.
    ///
    /// Example: tacet verify --truth data/truth.ndjson --out out
    Verify {
        /// Truth written by `tacet gen`.
        #[arg(long)]
        truth: PathBuf,
        /// Output folder of a replay.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Engine sizing and live endpoints, shared by demo and replay.
#[derive(clap::Args)]
struct Tuning {
    /// Serve Prometheus /metrics and /health on this address while running,
    /// e.g. 127.0.0.1:9898.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Correlator shards (default: config, else one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// Decoder threads (default: config, else one per core).
    #[arg(long)]
    decoders: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Table,
    Csv,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ShapeArg {
    Reference,
    Alt,
}

fn main() {
    let cli = Cli::parse();
    // A long-running consumer reports progress and rebalances by default.
    let floor = if matches!(cli.command, Command::Run { .. }) {
        1
    } else {
        0
    };
    init_logging(cli.verbose.max(floor));
    if let Err(e) = run(cli) {
        eprintln!("error: {}", error_text(&e));
        std::process::exit(exit_code(&e));
    }
}

/// The error and its causes on one line, each said once: many errors
/// already include their cause's text, which `{:#}` would print again.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// 2 for a mistake in the config or the command line (fix it and run
/// again), 1 for a failure at run time. Clap exits 2 for usage errors itself.
fn exit_code(e: &anyhow::Error) -> i32 {
    let is_config = |cause: &(dyn std::error::Error + 'static)| {
        cause.is::<tacet_core::ConfigError>()
            || matches!(
                cause.downcast_ref::<tacet_engine::EngineError>(),
                Some(tacet_engine::EngineError::Config(_))
            )
            || matches!(
                cause.downcast_ref::<tacet_kafka::RunError>(),
                Some(tacet_kafka::RunError::Config(_))
            )
            || matches!(
                cause.downcast_ref::<tacet_sql::session::SqlError>(),
                Some(tacet_sql::session::SqlError::Table { .. })
            )
            || matches!(
                cause.downcast_ref::<tacet_sql::server::ServeError>(),
                Some(tacet_sql::server::ServeError::PasswordRequired { .. })
            )
    };
    if e.chain().any(is_config) { 2 } else { 1 }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TACET_LOG").unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo {
            out,
            journeys,
            seed,
            config,
            tuning,
        } => demo(&out, journeys, seed, config.as_deref(), &tuning),
        Command::Run {
            config,
            out,
            stop_when_idle,
            metrics_listen,
        } => run_kafka(&config, &out, stop_when_idle, metrics_listen.as_deref()),
        Command::Replay {
            config,
            out,
            source,
            events,
            json,
            tuning,
        } => {
            let config = Config::from_file(&config)?;
            let report = replay(&config, source.as_deref(), &events, &out, &tuning)?;
            let catalog = Catalog::new(&config)?;
            let summary = report.summary(&catalog);
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", report::render(&summary));
                println!(
                    "\nOutcomes: {}/outcomes   Summary: {}/summary.json",
                    out.display(),
                    out.display()
                );
            }
            Ok(())
        }
        Command::Gen {
            config,
            out,
            journeys,
            seed,
            shape,
            rate,
        } => {
            let config = load_or_default(config.as_deref())?;
            let shape = match shape {
                ShapeArg::Reference => Shape::Reference,
                ShapeArg::Alt => Shape::Alt,
            };
            let report = gen_files(&config, &out, journeys, seed, shape, rate)?;
            println!(
                "Wrote {} journeys as {} lines ({:.1} MB) to {}",
                report.journeys,
                report.lines,
                report.bytes as f64 / 1e6,
                out.join("events.ndjson").display()
            );
            println!("Truth: {} ({:?})", out.join("truth.ndjson").display(), report.truth);
            Ok(())
        }
        Command::Sql {
            data,
            config,
            format,
            query,
        } => {
            let format = match format {
                FormatArg::Table => tacet_sql::format::Format::Table,
                FormatArg::Csv => tacet_sql::format::Format::Csv,
                FormatArg::Json => tacet_sql::format::Format::Json,
            };
            sql::sql(&data, config.as_deref(), query.as_deref(), format)
        }
        Command::ServeSql {
            data,
            config,
            listen,
            password_env,
        } => sql::serve(&data, config.as_deref(), &listen, password_env.as_deref()),
        Command::Check { config } => check(&config),
        Command::Verify { truth, out } => verify(&truth, &out),
    }
}

fn load_or_default(path: Option<&Path>) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::from_file(p)?,
        None => Config::embedded_default(),
    })
}

fn gen_files(
    config: &Config,
    out: &Path,
    journeys: u64,
    seed: u64,
    shape: Shape,
    rate: f64,
) -> Result<tacet_gen::GenReport> {
    let catalog = Catalog::new(config)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let events_path = out.join("events.ndjson");
    let truth_path = out.join("truth.ndjson");
    let mut events =
        BufWriter::new(File::create(&events_path).with_context(|| format!("creating {}", events_path.display()))?);
    let mut truth =
        BufWriter::new(File::create(&truth_path).with_context(|| format!("creating {}", truth_path.display()))?);
    let opts = GenOptions {
        journeys,
        seed,
        shape,
        per_second: rate,
        ..GenOptions::default()
    };
    let bar = ProgressBar::new(journeys).with_style(
        ProgressStyle::with_template("{spinner} generate [{bar:30}] {pos}/{len} journeys eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let report = tacet_gen::generate_with_progress(&catalog, &opts, &mut events, &mut truth, &|n| bar.set_position(n))?;
    bar.finish_and_clear();
    events.flush()?;
    truth.flush()?;
    let mut payments = BufWriter::new(File::create(out.join("payment_volume.csv"))?);
    let mut calls = BufWriter::new(File::create(out.join("contact_centre_calls.csv"))?);
    tacet_gen::write_business_metrics(&report, seed, &mut payments, &mut calls)?;
    payments.flush()?;
    calls.flush()?;
    let summary_path = out.join("truth-summary.json");
    std::fs::write(&summary_path, serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}

fn replay(config: &Config, source: Option<&str>, events: &[String], out: &Path, tuning: &Tuning) -> Result<RunReport> {
    let mut opts = ReplayOptions::from_config(config, out.to_path_buf());
    opts.sink_kinds = sink_kinds(config);
    if let Some(n) = tuning.shards {
        opts.shards = n.max(1);
    }
    if let Some(n) = tuning.decoders {
        opts.decoders = n.max(1);
    }
    let _server = match &tuning.metrics_listen {
        Some(addr) => {
            let metrics = tacet_engine::Metrics::new();
            opts.metrics = Some(metrics.clone());
            let server = tacet_engine::MetricsServer::start(addr, metrics)
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            eprintln!("Metrics on http://{}/metrics", server.addr());
            Some(server)
        }
        None => None,
    };
    let prepared = PreparedReplay::open(config, source, events, &opts)?;
    let catalog = prepared.catalog.clone();
    let reader = &prepared.reader;
    let progress = reader.progress();
    let bar = match reader.total_bytes() {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{spinner} replay [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} replay {bytes} {bytes_per_sec}").expect("valid template"),
        ),
    };
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (bar, done) = (bar.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                bar.set_position(progress.load(Ordering::Relaxed));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let result = prepared.run(&opts);
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    bar.finish_and_clear();
    let report = result?;
    let summary = report.summary(&catalog);
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(
        events = summary.events,
        rows = summary.outcome_rows,
        seconds = summary.elapsed_s,
        "Replay finished."
    );
    Ok(report)
}

fn demo(out: &Path, journeys: u64, seed: u64, config: Option<&Path>, tuning: &Tuning) -> Result<()> {
    let config = load_or_default(config)?;
    if out.join("outcomes").exists() {
        // A demo starts clean so its report matches its data.
        std::fs::remove_dir_all(out.join("outcomes"))
            .with_context(|| format!("clearing {}/outcomes", out.display()))?;
    }
    eprintln!("Generating {journeys} journeys of bank traffic (seed {seed}) ...");
    let generated = gen_files(&config, out, journeys, seed, Shape::Reference, 200.0)?;
    eprintln!(
        "Replaying {} lines ({:.0} MB) through the engine ...",
        generated.lines,
        generated.bytes as f64 / 1e6
    );
    let events = vec![out.join("events.ndjson").display().to_string()];
    let report = replay(&config, None, &events, out, tuning)?;
    let catalog = Catalog::new(&config)?;
    let summary = report.summary(&catalog);
    print!("{}", report::render(&summary));
    let data = out.display();
    println!();
    println!("Data is in {data}/:");
    println!("  outcomes/journey=*/date=*/*.parquet   one row per decided journey");
    println!("  summary.json                          the figures above");
    println!("  dead-letter.ndjson                    malformed lines, with file:line and reason");
    println!("  state/in-flight.ndjson                journeys whose deadline was still ahead");
    println!("  incidents.ndjson                      the pages and tickets the SLO rules raised, in event time");
    println!("  events.ndjson, truth.ndjson           the generated traffic and what really happened");
    println!();
    println!("Next:");
    let next = [
        (
            format!("tacet sql --data {data} \"SELECT * FROM journey_sli\""),
            "ask the outcomes in SQL",
        ),
        (
            format!("tacet serve-sql --data {data} &"),
            "serve them to psql, Grafana or a BI tool, then",
        ),
        (
            "psql -h 127.0.0.1 -p 5433 -c 'SELECT journey, sli, money_at_risk FROM journey_sli'".to_owned(),
            "",
        ),
        (
            format!("cat {data}/incidents.ndjson"),
            "the incidents the SLO rules raised",
        ),
    ];
    let width = next
        .iter()
        .filter(|(_, what)| !what.is_empty())
        .map(|(command, _)| command.len())
        .max()
        .unwrap_or(0);
    for (command, what) in next {
        if what.is_empty() {
            println!("  {command}");
        } else {
            println!("  {command:width$}  # {what}");
        }
    }
    Ok(())
}

fn check(path: &Path) -> Result<()> {
    let config = Config::from_file(path)?;
    let catalog = Catalog::new(&config)?;
    let kafka = config
        .sources
        .iter()
        .any(|s| s.kind == Some(tacet_core::config::SourceKind::Kafka))
        .then(|| config.kafka_plan())
        .transpose()?;
    println!("{} is valid: {} journeys", path.display(), catalog.journeys().len());
    if let Some(plan) = kafka {
        let topics: Vec<_> = plan
            .topics
            .iter()
            .map(|t| format!("{} ({})", t.topic, t.source))
            .collect();
        println!(
            "Kafka: group {} on {}, topics {}",
            plan.group_id,
            plan.brokers,
            topics.join(", ")
        );
    }
    print!("{}", report::render_journeys(&config, &catalog));
    Ok(())
}

fn verify(truth_path: &Path, out: &Path) -> Result<()> {
    let file = File::open(truth_path).with_context(|| format!("opening {}", truth_path.display()))?;
    let mut truth = Vec::new();
    for (i, line) in std::io::BufRead::lines(BufReader::new(file)).enumerate() {
        let line = line?;
        let row: TruthRow =
            serde_json::from_str(&line).with_context(|| format!("{}:{}", truth_path.display(), i + 1))?;
        truth.push(row);
    }
    let rows = tacet_store::read_outcomes(out)?;
    // Replay writes state/in-flight.ndjson; `tacet run` one file per partition.
    let mut in_flight_paths: Vec<PathBuf> = std::fs::read_dir(out.join("state"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("in-flight") && n.ends_with(".ndjson"))
        })
        .collect();
    in_flight_paths.sort();
    let mut in_flight = Vec::new();
    for in_flight_path in in_flight_paths {
        let file = File::open(&in_flight_path)?;
        for line in std::io::BufRead::lines(BufReader::new(file)) {
            let v: serde_json::Value = serde_json::from_str(&line?)?;
            in_flight.push((
                v["trace_id"].as_str().unwrap_or_default().to_owned(),
                v["journey"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    let report = tacet_gen::compare(&truth, &rows, &in_flight);
    print!("{}", report::render_verify(&report));
    if !report.is_exact() {
        bail!("outcomes differ from the truth");
    }
    Ok(())
}

/// The alert sink kinds the alert crate does not build itself.
fn sink_kinds(config: &Config) -> tacet_alert::sink::SinkKinds {
    tacet_kafka::alert_sink::register(Default::default(), config)
}

/// `tacet run`: the Kafka consumer until a signal or the idle limit.
fn run_kafka(
    config_path: &Path,
    out: &Path,
    stop_when_idle: Option<Duration>,
    metrics_listen: Option<&str>,
) -> Result<()> {
    let config = Config::from_file(config_path)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing the signal handler")?;
    }
    let (metrics, _server) = match metrics_listen {
        Some(addr) => {
            let metrics = tacet_engine::Metrics::new();
            let server = tacet_engine::MetricsServer::start(addr, metrics.clone())
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            eprintln!("Metrics on http://{}/metrics", server.addr());
            (Some(metrics), Some(server))
        }
        None => (None, None),
    };
    let state_dir = match &config.checkpoint.state_dir {
        Some(dir) if dir.is_absolute() => dir.clone(),
        Some(dir) => out.join(dir),
        None => out.join("state"),
    };
    let mut engine = tacet_kafka::EngineOptions::from_config(&config, out.to_path_buf(), state_dir);
    engine.sink_kinds = sink_kinds(&config);
    let opts = tacet_kafka::RunOptions {
        engine,
        checkpoint_interval: config.checkpoint.interval,
        flush_interval: config.output.flush_interval,
        stop_when_idle,
        stop,
        metrics,
    };
    let report = tacet_kafka::run(&config, opts)?;
    let catalog = Catalog::new(&config)?;
    let summary = report.summary(&catalog);
    // stdout may carry a `stdout` alert sink's notifications: the report goes to stderr.
    eprint!("{}", report::render(&summary));
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("\nOutcomes: {}/outcomes   Summary: {}", out.display(), path.display());
    Ok(())
}
