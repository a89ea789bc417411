//! End to end through the real pipeline: generated traffic → files → decoder
//! threads → shards → Parquet, compared with the generator's truth.
//!
//! `TACET_TRUTH_JOURNEYS` sets the size of the main truth test (CI: 1,000,000).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use tacet_core::{Catalog, Config, OutcomeRow};
use tacet_engine::{PreparedReplay, ReplayOptions, RunReport};
use tacet_gen::{GenOptions, GenReport, Shape, TruthRow, compare};

struct Generated {
    report: GenReport,
    truth: Vec<TruthRow>,
}

/// The far-future record of SPEC §1 (one producer logging epoch
/// microseconds would write such times): it must cost nothing.
const FAR_FUTURE: &str = r#"{"ts":9223372036854775807,"trace_id":"ffffffffffffffffffffffffffffffff","service":"api-gateway","event":"transfer.requested","status":"ok"}"#;

/// Writes through to `inner`, inserting `line` after the `after`-th line.
struct InsertLine<W> {
    inner: W,
    line: &'static str,
    after: usize,
    seen: usize,
}

impl<W: Write> Write for InsertLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let newline = buf.iter().position(|&b| b == b'\n');
        if let Some(i) = newline.filter(|_| self.seen < self.after) {
            self.seen += 1;
            self.inner.write_all(&buf[..=i])?;
            if self.seen == self.after {
                self.inner.write_all(self.line.as_bytes())?;
                self.inner.write_all(b"\n")?;
            }
            return Ok(i + 1);
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn generate(config: &Config, dir: &Path, opts: GenOptions) -> Generated {
    generate_with(config, dir, opts, None)
}

/// Generates traffic, with `poison` inserted after line 1,000 when given.
fn generate_with(config: &Config, dir: &Path, opts: GenOptions, poison: Option<&'static str>) -> Generated {
    let catalog = Catalog::new(config).unwrap();
    let file = BufWriter::new(File::create(dir.join("events.ndjson")).unwrap());
    let mut events = InsertLine {
        inner: file,
        line: poison.unwrap_or_default(),
        after: if poison.is_some() { 1000 } else { usize::MAX },
        seen: 0,
    };
    let mut truth = Vec::new();
    let report = tacet_gen::generate(&catalog, &opts, &mut events, &mut truth).unwrap();
    events.flush().unwrap();
    let truth = truth
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    Generated { report, truth }
}

struct Replayed {
    report: RunReport,
    rows: Vec<OutcomeRow>,
    in_flight: Vec<(String, String)>,
}

fn run(config: &Config, files: &[String], out: &Path, shards: usize, decoders: usize, chunk_bytes: usize) -> Replayed {
    let mut opts = ReplayOptions::from_config(config, out.to_path_buf());
    opts.shards = shards;
    opts.decoders = decoders;
    opts.chunk_bytes = chunk_bytes;
    let report = PreparedReplay::open(config, None, files, &opts)
        .unwrap()
        .run(&opts)
        .unwrap();
    let mut rows = tacet_store::read_outcomes(out).unwrap();
    rows.sort_by(|a, b| (&a.trace_id, a.outcome).cmp(&(&b.trace_id, b.outcome)));
    let in_flight = BufReader::new(File::open(out.join("state/in-flight.ndjson")).unwrap())
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
            (
                v["trace_id"].as_str().unwrap().to_owned(),
                v["journey"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    Replayed {
        report,
        rows,
        in_flight,
    }
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// The generator's truth, exactly, with one far-future record after line
/// 1,000: the record is one dead letter (`time_in_future`) and changes no
/// outcome.
#[test]
fn generator_truth_is_reproduced_exactly_with_1_and_4_shards() {
    let journeys = std::env::var("TACET_TRUTH_JOURNEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let config = Config::embedded_default();
    let dir = tempfile::tempdir().unwrap();
    let g = generate_with(
        &config,
        dir.path(),
        GenOptions {
            journeys,
            seed: 42,
            ..Default::default()
        },
        Some(FAR_FUTURE),
    );
    let mut first_rows = None;
    for shards in [1, 4] {
        let out = dir.path().join(format!("out-{shards}"));
        let r = run(&config, &[path(dir.path(), "events.ndjson")], &out, shards, 2, 1 << 20);
        let v = compare(&g.truth, &r.rows, &r.in_flight);
        assert!(v.is_exact(), "{shards} shards: {v:#?}");
        let summary = r.report.summary(&Catalog::new(&config).unwrap());
        let malformed: u64 = g.report.malformed.values().sum();
        assert_eq!(
            summary.dead_letters,
            malformed + 1,
            "the generator's malformed lines and the far-future record, nothing else"
        );
        assert_eq!(summary.decode_errors.get("time_in_future"), Some(&1));
        for (outcome, score) in &v.outcomes {
            eprintln!(
                "{journeys} journeys, {shards} shards: {outcome}: precision {} recall {} ({} rows)",
                score.precision, score.recall, score.expected
            );
        }
        match &first_rows {
            None => first_rows = Some(r.rows),
            Some(rows) => assert!(rows == &r.rows, "every column equal whatever the shard count"),
        }
    }
}

#[test]
fn results_do_not_depend_on_chunking_or_thread_counts() {
    let config = Config::embedded_default();
    let dir = tempfile::tempdir().unwrap();
    let g = generate(
        &config,
        dir.path(),
        GenOptions {
            journeys: 20_000,
            seed: 3,
            ..Default::default()
        },
    );
    let files = [path(dir.path(), "events.ndjson")];
    let a = run(&config, &files, &dir.path().join("a"), 1, 1, 1 << 22);
    let b = run(&config, &files, &dir.path().join("b"), 3, 4, 8 << 10);
    assert!(compare(&g.truth, &a.rows, &a.in_flight).is_exact());
    assert!(a.rows == b.rows);
    assert_eq!(a.report.correlate.duplicates, b.report.correlate.duplicates);
}

#[test]
fn an_entirely_different_field_shape_gives_the_same_outcomes() {
    let reference = Config::embedded_default();
    let alt_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/alt-shape.toml");
    let alt = Config::from_file(&alt_path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ref_dir, alt_dir) = (dir.path().join("ref"), dir.path().join("alt"));
    std::fs::create_dir_all(&ref_dir).unwrap();
    std::fs::create_dir_all(&alt_dir).unwrap();
    let opts = GenOptions {
        journeys: 20_000,
        seed: 11,
        ..Default::default()
    };
    let g = generate(&reference, &ref_dir, opts.clone());
    generate(
        &alt,
        &alt_dir,
        GenOptions {
            shape: Shape::Alt,
            ..opts
        },
    );
    let bytes = std::fs::read(alt_dir.join("events.ndjson")).unwrap();
    let first = String::from_utf8_lossy(bytes.split(|&b| b == b'\n').next().unwrap()).into_owned();
    assert!(first.contains("traceparent") && first.contains("epoch_ms"), "{first}");
    let a = run(
        &reference,
        &[path(&ref_dir, "events.ndjson")],
        &ref_dir.join("out"),
        2,
        2,
        1 << 20,
    );
    let b = run(
        &alt,
        &[path(&alt_dir, "events.ndjson")],
        &alt_dir.join("out"),
        2,
        2,
        1 << 20,
    );
    assert!(compare(&g.truth, &b.rows, &b.in_flight).is_exact());
    assert_eq!(a.rows.len(), b.rows.len());
    for (x, y) in a.rows.iter().zip(&b.rows) {
        assert_eq!(x, y, "every column, attributes included");
    }
}

#[test]
fn malformed_lines_never_stop_the_run_and_are_dead_lettered_with_positions() {
    let config = Config::embedded_default();
    let dir = tempfile::tempdir().unwrap();
    let g = generate(
        &config,
        dir.path(),
        GenOptions {
            journeys: 20_000,
            seed: 5,
            malformed_rate: 0.02,
            ..Default::default()
        },
    );
    let out = dir.path().join("out");
    let r = run(&config, &[path(dir.path(), "events.ndjson")], &out, 2, 2, 64 << 10);
    assert!(compare(&g.truth, &r.rows, &r.in_flight).is_exact());
    let summary = r.report.summary(&Catalog::new(&config).unwrap());
    let expected: u64 = g.report.malformed.values().sum();
    assert!(expected > 300);
    assert_eq!(summary.decode_errors, g.report.malformed, "counted by reason");
    assert_eq!(summary.dead_letters, expected);
    // Each dead letter names its file and line, and that line is the bad one.
    let events: Vec<String> = BufReader::new(File::open(dir.path().join("events.ndjson")).unwrap())
        .lines()
        .map(|l| String::from_utf8_lossy(l.unwrap_or_default().as_bytes()).into_owned())
        .collect();
    let letters = BufReader::new(File::open(out.join("dead-letter.ndjson")).unwrap()).lines();
    let mut n = 0;
    for l in letters {
        let v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
        let position = v["position"].as_str().unwrap();
        let line: usize = position.rsplit(':').next().unwrap().parse().unwrap();
        if v["reason"] != "invalid_utf8" {
            assert_eq!(v["record"].as_str().unwrap(), events[line - 1], "{position}");
        }
        n += 1;
    }
    assert_eq!(n, expected);
}

#[test]
fn per_service_files_are_partitions_read_side_by_side() {
    let config = Config::embedded_default();
    let dir = tempfile::tempdir().unwrap();
    let g = generate(
        &config,
        dir.path(),
        GenOptions {
            journeys: 20_000,
            seed: 9,
            malformed_rate: 0.0,
            ..Default::default()
        },
    );
    // Split the stream the way per-service logs arrive: one file per service group.
    let mut files: Vec<BufWriter<File>> = (0..3)
        .map(|i| BufWriter::new(File::create(dir.path().join(format!("part-{i}.ndjson"))).unwrap()))
        .collect();
    for line in BufReader::new(File::open(dir.path().join("events.ndjson")).unwrap()).lines() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let service = v["service"].as_str().unwrap_or("");
        let i = service.bytes().map(|b| b as usize).sum::<usize>() % 3;
        writeln!(files[i], "{line}").unwrap();
    }
    drop(files);
    let parts: Vec<_> = (0..3).map(|i| path(dir.path(), &format!("part-{i}.ndjson"))).collect();
    let r = run(&config, &parts, &dir.path().join("out"), 2, 2, 32 << 10);
    let v = compare(&g.truth, &r.rows, &r.in_flight);
    assert!(v.is_exact(), "{v:#?}");
}

#[test]
fn journeys_whose_deadline_is_ahead_at_the_end_stay_in_flight() {
    // Orphans are decided 20h after their first step: past the end of the stream.
    let text = tacet_core::config::EMBEDDED_DEFAULT.replace(
        "late_horizon = \"24h\"",
        "late_horizon = \"24h\"\norphan_timeout = \"20h\"",
    );
    let config = Config::from_toml(&text, Path::new("long-orphans.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let g = generate(
        &config,
        dir.path(),
        GenOptions {
            journeys: 20_000,
            seed: 13,
            ..Default::default()
        },
    );
    let expected_in_flight = g.truth.iter().filter(|t| t.outcome == "in_flight").count();
    assert!(expected_in_flight > 30, "{expected_in_flight}");
    let r = run(
        &config,
        &[path(dir.path(), "events.ndjson")],
        &dir.path().join("out"),
        2,
        2,
        1 << 20,
    );
    let v = compare(&g.truth, &r.rows, &r.in_flight);
    assert!(v.is_exact(), "{v:#?}");
    assert_eq!(r.in_flight.len(), expected_in_flight);
    assert_eq!(r.report.correlate.pending_in_flight as usize, expected_in_flight);
}

#[test]
fn the_open_journey_cap_evicts_to_the_dead_letter_file_and_counts() {
    let text = tacet_core::config::EMBEDDED_DEFAULT.replace("max_open_journeys = 20000000", "max_open_journeys = 300");
    let config = Config::from_toml(&text, Path::new("small-cap.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    generate(
        &config,
        dir.path(),
        GenOptions {
            journeys: 5_000,
            seed: 21,
            malformed_rate: 0.0,
            ..Default::default()
        },
    );
    let out = dir.path().join("out");
    let r = run(&config, &[path(dir.path(), "events.ndjson")], &out, 2, 2, 64 << 10);
    let evicted = r.report.correlate.evicted;
    assert!(evicted > 0);
    assert!(r.report.correlate.peak_open <= 300, "{}", r.report.correlate.peak_open);
    let letters = std::fs::read_to_string(out.join("dead-letter.ndjson")).unwrap();
    let in_file = letters
        .lines()
        .filter(|l| l.contains("\"state_limit_evicted\""))
        .count() as u64;
    assert_eq!(in_file, evicted, "every evicted journey is in the dead-letter file");
    assert_eq!(r.report.dead_letters, evicted);
}

/// One trace id on thousands of unrelated events (an all-zero id from
/// broken instrumentation): its journey passes `max_events_per_journey`
/// (default 1,000), is evicted to the dead-letter file with its own reason
/// and counted, and every other journey is decided as before.
#[test]
fn a_trace_id_on_every_event_is_evicted_by_the_event_cap() {
    let config = Config::embedded_default();
    let dir = tempfile::tempdir().unwrap();
    let g = generate(
        &config,
        dir.path(),
        GenOptions {
            journeys: 2_000,
            seed: 5,
            malformed_rate: 0.0,
            ..Default::default()
        },
    );
    let before = run(
        &config,
        &[path(dir.path(), "events.ndjson")],
        &dir.path().join("before"),
        2,
        2,
        1 << 20,
    );
    let events = std::fs::read_to_string(dir.path().join("events.ndjson")).unwrap();
    let last: serde_json::Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    let ts = last["ts"].as_str().unwrap().to_owned();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("events.ndjson"))
        .unwrap();
    for i in 0..3_000 {
        writeln!(
            file,
            r#"{{"ts":"{ts}","trace_id":"00000000000000000000000000000000","service":"payments-api","event":"transfer.accepted","status":"ok","event_id":"hot-{i}"}}"#
        )
        .unwrap();
    }
    drop(file);
    let out = dir.path().join("out");
    let r = run(&config, &[path(dir.path(), "events.ndjson")], &out, 2, 2, 1 << 20);
    assert_eq!(r.report.correlate.evicted, 1);
    let letters = std::fs::read_to_string(out.join("dead-letter.ndjson")).unwrap();
    let evicted: Vec<&str> = letters
        .lines()
        .filter(|l| l.contains("\"event_limit_evicted\""))
        .collect();
    assert_eq!(evicted.len(), 1, "{letters}");
    assert!(evicted[0].contains("\"n_events\":1001"), "{}", evicted[0]);
    assert_eq!(
        r.report.correlate.late_events,
        before.report.correlate.late_events + 3_000 - 1_001,
        "the hot trace's events after its eviction are late"
    );
    let v = compare(&g.truth, &r.rows, &r.in_flight);
    assert!(v.is_exact(), "{v:#?}");
}

/// Service names are input: past a shard's 100,000 names the rest read
/// `(other)`, and each is counted in the summary.
#[test]
fn service_names_past_the_cap_are_counted_in_the_summary() {
    let config = Config::embedded_default();
    let dir = tempfile::tempdir().unwrap();
    let mut file = BufWriter::new(File::create(dir.path().join("events.ndjson")).unwrap());
    // Two of the 100,000 ids are the empty name and `(other)`.
    for i in 0..100_005 {
        writeln!(
            file,
            r#"{{"ts":"2026-11-22T08:00:00.000Z","trace_id":"t-{i}","service":"s-{i}","event":"transfer.requested","status":"ok"}}"#
        )
        .unwrap();
    }
    drop(file);
    let r = run(
        &config,
        &[path(dir.path(), "events.ndjson")],
        &dir.path().join("out"),
        1,
        1,
        1 << 20,
    );
    let summary = r.report.summary(&Catalog::new(&config).unwrap());
    assert_eq!(summary.services_overflow, 100_005 - 99_998);
    assert_eq!(summary.in_flight, 100_005, "nothing else changes");
}
