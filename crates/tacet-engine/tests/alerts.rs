//! Alerts end to end: generated traffic with a silent-failure burst, replayed
//! through the engine; incidents in event time, a real webhook receiver.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tacet_core::{Catalog, Config};
use tacet_engine::{PreparedReplay, ReplayOptions, RunReport};
use tacet_gen::{Burst, GenOptions};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
/// The transfer burst: 6h30m to 6h50m after the first journey.
const BURST: (i64, i64) = (6 * HOUR + 30 * MINUTE, 6 * HOUR + 50 * MINUTE);

/// Eight hours of a healthy bank at 5 journeys/s, an 8% silent-failure burst
/// on funds transfers for 20 minutes, and one single silent failure on the
/// low-volume international wires.
fn burst_traffic(config: &Config, dir: &Path) {
    let catalog = Catalog::new(config).unwrap();
    let opts = GenOptions {
        journeys: 5 * 8 * 3600,
        seed: 77,
        per_second: 5.0,
        malformed_rate: 0.0,
        healthy: true,
        bursts: vec![
            Burst {
                journey: "funds_transfer".into(),
                from_ms: BURST.0,
                until_ms: BURST.1,
                silent_rate: 0.08,
                limit: None,
            },
            Burst {
                journey: "international_wire".into(),
                from_ms: 3 * HOUR,
                until_ms: 4 * HOUR,
                silent_rate: 1.0,
                limit: Some(1),
            },
        ],
        ..Default::default()
    };
    let mut events = BufWriter::new(File::create(dir.join("events.ndjson")).unwrap());
    tacet_gen::generate(&catalog, &opts, &mut events, &mut std::io::sink()).unwrap();
    events.flush().unwrap();
}

fn replay(config: &Config, dir: &Path, out: &Path) -> RunReport {
    let opts = ReplayOptions::from_config(config, out.to_path_buf());
    let files = [dir.join("events.ndjson").display().to_string()];
    PreparedReplay::open(config, None, &files, &opts)
        .unwrap()
        .run(&opts)
        .unwrap()
}

fn incidents(out: &Path) -> Vec<Value> {
    BufReader::new(File::open(out.join("incidents.ndjson")).unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

const START_MS: i64 = 1_795_334_400_000;

#[test]
fn a_silent_burst_opens_one_page_updates_it_and_resolves_it() {
    let config = Config::embedded_default();
    let dir = tempfile::tempdir().unwrap();
    burst_traffic(&config, dir.path());
    let out = dir.path().join("out");
    let report = replay(&config, dir.path(), &out);
    let all = incidents(&out);
    for n in &all {
        eprintln!(
            "{} {} {} {} burn {:.1}/{:.1} decided {} silent {}",
            n["at"],
            n["journey"],
            n["rule"],
            n["event"],
            n["burn_rate"]["long"].as_f64().unwrap(),
            n["burn_rate"]["short"].as_f64().unwrap(),
            n["counts"]["decided"],
            n["counts"]["silent_failure"]
        );
    }

    // The quiet journeys, and the single wire failure, open nothing.
    let journeys: Vec<&str> = all.iter().map(|n| n["journey"].as_str().unwrap()).collect();
    assert!(journeys.iter().all(|j| *j == "funds_transfer"), "{journeys:?}");

    let pages: Vec<&Value> = all.iter().filter(|n| n["severity"] == "page").collect();
    let ids: std::collections::BTreeSet<&str> = pages.iter().map(|n| n["incident_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "exactly one page incident: {pages:#?}");
    let events: Vec<&str> = pages.iter().map(|n| n["event"].as_str().unwrap()).collect();
    assert_eq!(events.first(), Some(&"opened"));
    assert_eq!(events.last(), Some(&"resolved"));
    assert!(events.iter().filter(|e| **e == "updated").count() >= 1, "{events:?}");
    let opened = pages[0];
    let resolved = pages.last().unwrap();
    let at = |n: &Value| n["at_ms"].as_i64().unwrap() - START_MS;
    assert!(at(opened) > BURST.0 && at(opened) < BURST.1, "opened within the burst");
    assert!(
        at(resolved) > BURST.1 && at(resolved) <= BURST.1 + 10 * MINUTE,
        "resolved soon after it"
    );
    // Updates come at most every update_interval (5m) of event time.
    for w in pages.windows(2) {
        if w[1]["event"] == "updated" {
            assert!(at(w[1]) - at(w[0]) >= 5 * MINUTE);
        }
    }
    assert_eq!(opened["rule"], "page_fast");
    assert_eq!(opened["top_missing_step"], "ledger.posted");
    assert!(opened["money_at_risk"].as_f64().unwrap() > 0.0);
    assert!(opened["burn_rate"]["short"].as_f64().unwrap() >= 14.4);
    assert!(!opened["sample_trace_ids"].as_array().unwrap().is_empty());
    assert_eq!(
        opened["idempotency_key"],
        format!("{}-0", opened["incident_id"].as_str().unwrap())
    );
    let summary = report.summary(&Catalog::new(&config).unwrap());
    assert_eq!(
        summary.incidents.opened as usize,
        ids.len()
            + all
                .iter()
                .filter(|n| n["severity"] == "ticket" && n["event"] == "opened")
                .count()
    );
}

/// A webhook receiver on loopback: records each request's idempotency key and
/// whether its signature verifies; answers 503 while `down`.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<(String, bool)>>>,
    down: Arc<AtomicBool>,
    refused: Arc<Mutex<u64>>,
}

fn receiver(secret: &'static [u8]) -> Receiver {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", server.server_addr().to_ip().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let down = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(Mutex::new(0));
    let (s, d, r) = (seen.clone(), down.clone(), refused.clone());
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            if d.load(Ordering::SeqCst) {
                *r.lock().unwrap() += 1;
                let _ = req.respond(tiny_http::Response::empty(503));
                continue;
            }
            let mut body = Vec::new();
            req.as_reader().read_to_end(&mut body).unwrap();
            let header = |name: &'static str| {
                req.headers()
                    .iter()
                    .find(|h| h.field.equiv(name))
                    .map(|h| h.value.as_str().to_owned())
                    .unwrap_or_default()
            };
            let valid = header("X-Tacet-Signature") == tacet_alert::sink::signature(secret, &body);
            s.lock().unwrap().push((header("Idempotency-Key"), valid));
            let _ = req.respond(tiny_http::Response::empty(200));
        }
    });
    Receiver {
        url,
        seen,
        down,
        refused,
    }
}

#[test]
fn webhook_deliveries_are_signed_retried_and_never_duplicated_across_restarts() {
    let rx = receiver(b"s3cret");
    let text = format!(
        "{}\n[[alert_sink]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"s3cret\"\nmax_attempts = 20\n",
        tacet_core::config::EMBEDDED_DEFAULT,
        rx.url
    );
    let config = Config::from_toml(&text, Path::new("webhook.toml")).unwrap();
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "the secret never reaches Debug output"
    );
    let dir = tempfile::tempdir().unwrap();
    burst_traffic(&config, dir.path());
    let out = dir.path().join("out");

    // The receiver is down for the first two seconds of the run.
    rx.down.store(true, Ordering::SeqCst);
    let down = rx.down.clone();
    let revive = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        down.store(false, Ordering::SeqCst);
    });
    let report = replay(&config, dir.path(), &out);
    revive.join().unwrap();
    let expected: Vec<String> = incidents(&out)
        .iter()
        .map(|n| n["idempotency_key"].as_str().unwrap().to_owned())
        .collect();
    assert!(!expected.is_empty());
    let seen = rx.seen.lock().unwrap().clone();
    assert!(*rx.refused.lock().unwrap() > 0, "the receiver really was down");
    assert!(seen.iter().all(|(_, valid)| *valid), "every signature verifies");
    let keys: Vec<String> = seen.iter().map(|(k, _)| k.clone()).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for k in &keys {
        *counts.entry(k).or_default() += 1;
    }
    assert!(counts.values().all(|&c| c == 1), "no duplicates: {counts:?}");
    let mut sorted_keys = keys.clone();
    sorted_keys.sort();
    let mut sorted_expected = expected.clone();
    sorted_expected.sort();
    assert_eq!(sorted_keys, sorted_expected, "every notification arrived once");
    let oncall = report.sinks.iter().find(|s| s.name == "oncall").unwrap();
    assert!(
        oncall.retries > 0 && oncall.failed == 0 && oncall.dropped == 0,
        "{oncall:?}"
    );

    // A restart over the same state: nothing is sent twice.
    let again = replay(&config, dir.path(), &out);
    assert_eq!(
        rx.seen.lock().unwrap().len(),
        seen.len(),
        "no duplicates across a restart"
    );
    let oncall = again.sinks.iter().find(|s| s.name == "oncall").unwrap();
    assert_eq!(oncall.skipped_delivered as usize, expected.len());
}

#[test]
fn sli_state_stays_bounded_under_a_ten_fold_burst() {
    use tacet_alert::{AlertEngine, Note};
    use tacet_core::Outcome;
    let config = Config::embedded_default();
    let catalog = Arc::new(Catalog::new(&config).unwrap());
    let mut engine = AlertEngine::new(catalog, &config);
    let mut t = START_MS;
    let feed = |engine: &mut AlertEngine, per_minute: i64, minutes: i64, t: &mut i64| {
        for _ in 0..minutes {
            for i in 0..per_minute {
                let outcome = if i % 10 == 0 {
                    Outcome::SilentFailure
                } else {
                    Outcome::Completed
                };
                engine.add(&Note {
                    journey: (i % 6) as u16,
                    outcome,
                    decided_at: *t + i * 60_000 / per_minute,
                    amount: 100.0,
                    missing: 1,
                    last_service: Some(format!("svc-{}", i % 7).into()),
                    trace_id: Some(format!("{:032x}", i).into()),
                    synthetic: false,
                });
            }
            *t += MINUTE;
            engine.advance(*t);
        }
    };
    // Three days at the normal rate fill every window.
    feed(&mut engine, 600, 3 * 24 * 60, &mut t);
    let normal = engine.state_bytes();
    // Then an hour at ten times the rate.
    feed(&mut engine, 6_000, 60, &mut t);
    let burst = engine.state_bytes();
    eprintln!("SLI state: {normal} bytes at 600 decisions/min, {burst} bytes at 6,000/min");
    assert!(burst <= normal + normal / 20, "{burst} vs {normal}");
}

#[test]
fn metrics_are_served_in_prometheus_format_and_match_the_summary() {
    use tacet_engine::{Metrics, MetricsServer};
    let config = Config::embedded_default();
    let catalog = Catalog::new(&config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = GenOptions {
        journeys: 30_000,
        seed: 8,
        malformed_rate: 0.01,
        ..Default::default()
    };
    let mut events = BufWriter::new(File::create(dir.path().join("events.ndjson")).unwrap());
    tacet_gen::generate(&catalog, &opts, &mut events, &mut std::io::sink()).unwrap();
    events.flush().unwrap();

    let metrics = Metrics::new();
    let server = MetricsServer::start("127.0.0.1:0", metrics.clone()).unwrap();
    let out = dir.path().join("out");
    let mut ropts = ReplayOptions::from_config(&config, out.clone());
    ropts.metrics = Some(metrics);
    let files = [dir.path().join("events.ndjson").display().to_string()];
    let report = PreparedReplay::open(&config, None, &files, &ropts)
        .unwrap()
        .run(&ropts)
        .unwrap();
    let summary = report.summary(&catalog);

    let base = format!("http://{}", server.addr());
    assert_eq!(
        ureq::get(&format!("{base}/health"))
            .call()
            .unwrap()
            .into_string()
            .unwrap(),
        "ok\n"
    );
    let text = ureq::get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .sum()
    };
    assert_eq!(
        value("tacet_events_total", &[("source", "events")]) as u64,
        summary.records
    );
    for (reason, n) in &summary.decode_errors {
        assert_eq!(
            value("tacet_decode_errors_total", &[("reason", reason)]) as u64,
            *n,
            "{reason}"
        );
    }
    for j in &summary.journeys {
        for (outcome, n) in [
            ("completed", j.completed),
            ("silent_failure", j.silent_failure),
            ("failed", j.failed),
            ("stalled", j.stalled),
            ("orphan", j.orphan),
            ("late_completion", j.late_completion),
        ] {
            let got = value("tacet_journeys_total", &[("journey", &j.journey), ("outcome", outcome)]) as u64;
            assert_eq!(got, n, "{} {outcome}", j.journey);
        }
        let left = value("tacet_error_budget_left", &[("journey", &j.journey)]);
        assert!(
            (left - j.error_budget_left).abs() < 1e-9,
            "{} {left} {}",
            j.journey,
            j.error_budget_left
        );
    }
    assert_eq!(
        value("tacet_open_journeys", &[]) as u64,
        summary.in_flight + summary.pending_in_flight
    );
    // The correlators' counts, from every shard thread, once each.
    assert!(summary.duplicates > 0, "the traffic has duplicates to count");
    for (reason, n) in [
        ("duplicate", summary.duplicates),
        ("late", summary.late_events),
        ("conflicting_opener", report.correlate.conflicting_openers),
        ("services_overflow", summary.services_overflow),
    ] {
        assert_eq!(
            value("tacet_correlator_events_total", &[("reason", reason)]) as u64,
            n,
            "{reason}"
        );
    }
    let delivered = value(
        "tacet_alerts_total",
        &[("sink", "replay-incidents"), ("result", "delivered")],
    ) as u64;
    assert_eq!(delivered, incidents(&out).len() as u64);
    assert_eq!(delivered, summary.alert_sinks[0].delivered);
    assert!(scrape.samples.iter().any(|s| s.metric == "tacet_burn_rate"));
    assert!(
        scrape.samples.iter().all(|s| s.labels.get("trace_id").is_none()),
        "no high-cardinality labels"
    );
}
