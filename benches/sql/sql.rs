//! SQL over a large outcome dataset: `journey_sli` and a per-minute join with
//! a business-metric table.
//!
//! Writes `TACET_BENCH_ROWS` outcome rows (default 10,000,000) over six
//! journeys and seven days through the real Parquet writer, checks the row
//! count through SQL, then times each query `TACET_BENCH_RUNS` times (default 5).
//!
//! Run: `cargo bench -p tacet-bench-sql`

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use tacet_bench::{env_or, median};
use tacet_core::outcome::OutcomeSink;
use tacet_core::{AttrValue, Catalog, Config, Outcome, OutcomeRecord};
use tacet_store::OutcomeWriter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const START: i64 = 1_795_334_400_000;
const DAY: i64 = 86_400_000;

fn main() {
    let rows: u64 = env_or("TACET_BENCH_ROWS", 10_000_000);
    let runs: usize = env_or("TACET_BENCH_RUNS", 5);
    let config = Config::embedded_default();
    let catalog = Arc::new(Catalog::new(&config).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let amount_col = catalog.columns().iter().position(|c| c.name == "amount").unwrap();
    let customer_col = catalog.columns().iter().position(|c| c.name == "customer").unwrap();

    eprintln!("writing {rows} outcome rows ...");
    let started = Instant::now();
    let mut writer = OutcomeWriter::new(catalog.clone(), dir.path(), "bench", 262_144);
    let mut trace = String::new();
    let customers: Vec<String> = (0..90_000).map(|c| format!("c-{}", 10_000 + c)).collect();
    let mut attrs = vec![None; catalog.columns().len()];
    let span = 7 * DAY;
    for i in 0..rows {
        let decided = START + (i as i64 * span / rows as i64);
        let outcome = match i % 100 {
            0..=5 => Outcome::SilentFailure,
            6..=7 => Outcome::Failed,
            8 => Outcome::Stalled,
            9 => Outcome::LateCompletion,
            _ => Outcome::Completed,
        };
        trace.clear();
        use std::fmt::Write as _;
        let _ = write!(trace, "{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        attrs[amount_col] = Some(AttrValue::Num(50.0 + (i % 997) as f64));
        attrs[customer_col] = Some(AttrValue::Str(&customers[(i % 90_000) as usize]));
        let missing: &[&str] = if outcome == Outcome::SilentFailure {
            &["ledger.posted"]
        } else {
            &[]
        };
        writer.emit(&OutcomeRecord {
            trace_id: &trace,
            journey: (i % 6) as u16,
            outcome,
            started_at: Some(decided - 5_000),
            acked_at: Some(decided - 4_000),
            completed_at: (outcome == Outcome::Completed).then_some(decided),
            deadline_at: Some(decided + 60_000),
            decided_at: decided,
            latency_ms: Some(5_000),
            missing_steps: missing,
            missing_groups: if missing.is_empty() { 0 } else { 1 },
            failed_steps: &[],
            last_step: Some("transfer.accepted"),
            last_service: Some("payments-api"),
            services: &["mobile-bff", "payments-api"],
            n_events: 3,
            n_duplicates: 0,
            attributes: &attrs,
        });
    }
    writer.flush().unwrap();
    eprintln!(
        "wrote {} files ({:.0} MB) in {:.1}s",
        writer.stats().files,
        writer.stats().bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    // A business-metric table: payments per minute over the same week.
    {
        let mut csv = std::io::BufWriter::new(std::fs::File::create(dir.path().join("payment_volume.csv")).unwrap());
        writeln!(csv, "minute,payments").unwrap();
        for m in 0..(span / 60_000) {
            let t = minute_text(START + m * 60_000);
            writeln!(csv, "{t},{}", 900 + m % 200).unwrap();
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = tacet_sql::open(dir.path(), Some(&config)).await.unwrap();
        let count = tacet_sql::run_query(&ctx, "SELECT COUNT(*) FROM outcomes")
            .await
            .unwrap();
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::Int64Type;
        assert_eq!(
            count[0].column(0).as_primitive::<Int64Type>().value(0) as u64,
            rows,
            "every row is queryable"
        );
        let queries = [
            ("journey_sli", "SELECT * FROM journey_sli ORDER BY journey"),
            (
                "per-minute join",
                "SELECT o.minute, SUM(o.silent_failure) AS silent, MAX(p.payments) AS payments
                 FROM outcomes_per_minute o JOIN payment_volume p ON o.minute = p.minute
                 GROUP BY o.minute ORDER BY silent DESC LIMIT 10",
            ),
        ];
        println!(
            "SQL benchmark ({rows} outcome rows, 6 journeys x 7 days, {} cores)",
            std::thread::available_parallelism().map_or(2, |n| n.get())
        );
        for (label, sql) in queries {
            let mut times = Vec::new();
            for _ in 0..runs {
                let t = Instant::now();
                let batches = tacet_sql::run_query(&ctx, sql).await.unwrap();
                assert!(batches.iter().map(|b| b.num_rows()).sum::<usize>() > 0);
                times.push(t.elapsed());
            }
            let med = median(times.clone());
            println!(
                "  {label:<16} median {:.3}s  min {:.3}s  max {:.3}s  ({:.1}M rows/s)",
                med.as_secs_f64(),
                times.iter().min().unwrap().as_secs_f64(),
                times.iter().max().unwrap().as_secs_f64(),
                rows as f64 / med.as_secs_f64() / 1e6
            );
        }
    });
}

/// `YYYY-MM-DDTHH:MM:00Z` for an epoch-ms minute.
fn minute_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:00Z").to_string())
        .unwrap_or_default()
}
