//! Tables people put on a wall.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};
use tacet_core::{Catalog, Config};
use tacet_engine::RunSummary;
use tacet_gen::VerifyReport;

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header.iter().map(Cell::new).collect::<Vec<_>>());
    t
}

fn right(v: impl ToString) -> Cell {
    Cell::new(v.to_string()).set_alignment(CellAlignment::Right)
}

fn money(v: f64) -> String {
    let whole = v.round() as i64;
    let digits = whole.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if whole < 0 { format!("-{out}") } else { out }
}

/// The per-journey report and run totals.
pub fn render(s: &RunSummary) -> String {
    let mut t = table(&[
        "journey",
        "decided",
        "completed",
        "silent",
        "silent rate",
        "failed",
        "stalled",
        "orphan",
        "late done",
        "money at risk",
        "most missing step",
        "last service",
        "in flight",
    ]);
    for j in &s.journeys {
        t.add_row(vec![
            Cell::new(&j.journey),
            right(j.decided),
            right(j.completed),
            right(j.silent_failure),
            right(format!("{:.2}%", j.silent_rate * 100.0)),
            right(j.failed),
            right(j.stalled),
            right(j.orphan),
            right(j.late_completion),
            right(money(j.money_at_risk)),
            Cell::new(match &j.top_missing_step {
                Some(step) => format!("{step} ({})", j.top_missing_count),
                None => "-".into(),
            }),
            Cell::new(j.top_last_service.as_deref().unwrap_or("-")),
            right(j.in_flight),
        ]);
    }
    let errors: u64 = s.decode_errors.values().sum();
    let reasons: Vec<String> = s.decode_errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let mut out = format!("\nSilent failures by journey\n{t}\n");
    out += &format!(
        "{} records, {} events in {:.2}s: {:.0} events/s, {:.1} MB/s ({} shards, {} decoders)\n",
        s.records, s.events, s.elapsed_s, s.events_per_s, s.mb_per_s, s.shards, s.decoders
    );
    out += &format!(
        "{} unmatched, {} duplicates, {} late events, {} bad records{} -> {} dead letters; {} evicted\n",
        s.unmatched,
        s.duplicates,
        s.late_events,
        errors,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        s.dead_letters,
        s.evicted
    );
    let i = &s.incidents;
    out += &format!(
        "incidents: {} opened, {} updated, {} resolved, {} open at the end (incidents.ndjson)\n",
        i.opened, i.updated, i.resolved, i.open
    );
    for sink in s.alert_sinks.iter().filter(|k| k.failed + k.dropped > 0) {
        out += &format!(
            "alert sink {}: {} failed, {} dropped\n",
            sink.name, sink.failed, sink.dropped
        );
    }
    let k = &s.source;
    if k.checkpoints > 0 {
        out += &format!(
            "{} checkpoints; {} outcome files of unfinished checkpoints discarded at recovery; {} records the \
             repartitioner had written twice skipped\n",
            k.checkpoints, k.discarded_files, k.repartition_duplicates
        );
    }
    if k.misrouted_traces > 0 {
        out += &format!(
            "{} sampled trace ids were on two partitions: the topics are not co-partitioned by trace id\n",
            k.misrouted_traces
        );
    }
    if !k.retried_errors.is_empty() {
        let errors: Vec<String> = k.retried_errors.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
        out += &format!("Errors retried: {}\n", errors.join(", "));
    }
    out += &format!(
        "{} outcome rows in {} Parquet files; {} journeys in flight at the end (watermark {})\n",
        s.outcome_rows,
        s.outcome_files,
        s.in_flight,
        s.final_watermark.as_deref().unwrap_or("-")
    );
    out
}

/// The journeys a config defines.
pub fn render_journeys(config: &Config, catalog: &Catalog) -> String {
    let mut t = table(&[
        "journey",
        "start",
        "ack ok / error",
        "required steps",
        "deadline",
        "ack timeout",
        "slo",
        "attributes",
    ]);
    for (j, spec) in config.journeys.iter().zip(catalog.journeys()) {
        t.add_row(vec![
            Cell::new(&j.name),
            Cell::new(j.start.join(", ")),
            Cell::new(format!("{} / {}", j.ack_ok.join(", "), j.ack_error.join(", "))),
            Cell::new(spec.groups.join("\n")),
            Cell::new(humantime::format_duration(j.deadline).to_string()),
            Cell::new(humantime::format_duration(j.ack_timeout).to_string()),
            right(j.slo),
            Cell::new(j.attributes.keys().cloned().collect::<Vec<_>>().join(", ")),
        ]);
    }
    format!(
        "{t}\nlateness {}, idle timeout {}, late horizon {}, orphan timeout {}\n",
        humantime::format_duration(config.engine.allowed_lateness),
        humantime::format_duration(config.engine.idle_timeout),
        humantime::format_duration(config.engine.late_horizon),
        humantime::format_duration(config.orphan_timeout()),
    )
}

/// Precision and recall per outcome.
pub fn render_verify(r: &VerifyReport) -> String {
    let mut t = table(&["outcome", "expected", "produced", "matched", "precision", "recall"]);
    for (label, s) in &r.outcomes {
        t.add_row(vec![
            Cell::new(label),
            right(s.expected),
            right(s.actual),
            right(s.true_positives),
            right(format!("{:.6}", s.precision)),
            right(format!("{:.6}", s.recall)),
        ]);
    }
    let mut out = format!("{t}\n");
    if r.duplicated_rows > 0 {
        out += &format!("{} rows were produced more than once\n", r.duplicated_rows);
    }
    for m in &r.missing_examples {
        out += &format!("missing:    {} {} {}\n", m.trace_id, m.journey, m.outcome);
    }
    for u in &r.unexpected_examples {
        out += &format!("unexpected: {} {} {}\n", u.trace_id, u.journey, u.outcome);
    }
    out += if r.is_exact() {
        "exact: precision and recall 1.0 for every outcome\n"
    } else {
        "NOT exact\n"
    };
    out
}
