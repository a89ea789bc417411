//! The session and the wire server: pruning, the business join, psql.

mod common;

use std::process::Command;
use std::sync::Arc;

use datafusion::physical_plan::displayable;
use tacet_gen::GenOptions;

/// 2026-11-22T23:50:00Z: generated traffic crosses midnight.
const LATE_EVENING: i64 = 1_795_391_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_on_one_journey_and_day_reads_only_those_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::generated_outcomes(
        dir.path(),
        GenOptions {
            journeys: 20_000,
            seed: 12,
            per_second: 20.0,
            start_ms: LATE_EVENING,
            ..Default::default()
        },
    );
    let out = dir.path().join("out");
    let all = tacet_store::reader::outcome_files(&out).unwrap();
    let dates: std::collections::BTreeSet<_> = all
        .iter()
        .filter_map(|p| p.parent()?.file_name()?.to_str().map(str::to_owned))
        .collect();
    assert!(dates.len() >= 2, "the data spans two days: {dates:?}");
    let ctx = tacet_sql::open(&out, Some(&config)).await.unwrap();
    // Grouped by a data column so the answer cannot come from file statistics alone.
    let sql = "SELECT outcome, COUNT(*) AS n FROM outcomes WHERE journey = 'funds_transfer' AND date = '2026-11-23' \
               GROUP BY outcome ORDER BY outcome";
    let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
    let shown = displayable(plan.as_ref()).indent(true).to_string();
    let wanted: Vec<_> = all
        .iter()
        .filter(|p| p.to_string_lossy().contains("journey=funds_transfer/date=2026-11-23"))
        .collect();
    assert!(!wanted.is_empty());
    // Only the wanted folder's files are scanned: no other day, no other journey.
    assert!(!shown.contains("date=2026-11-22"), "{shown}");
    for other in [
        "bill_payment",
        "check_deposit",
        "international_wire",
        "trade_confirmation",
        "account_opening",
    ] {
        assert!(
            !shown.contains(&format!("journey={other}")),
            "{other} in plan:\n{shown}"
        );
    }
    for file in &wanted {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            shown.contains(&name),
            "{} missing from the plan:\n{shown}",
            file.display()
        );
    }
    // And the answer equals a count over everything.
    let pruned = tacet_sql::run_query(&ctx, sql).await.unwrap();
    let full = tacet_sql::run_query(
        &ctx,
        "SELECT outcome, COUNT(*) AS n FROM outcomes WHERE journey = 'funds_transfer' \
         AND CAST(decided_at AS DATE) = DATE '2026-11-23' GROUP BY outcome ORDER BY outcome",
    )
    .await
    .unwrap();
    assert_eq!(
        datafusion::arrow::util::pretty::pretty_format_batches(&pruned)
            .unwrap()
            .to_string(),
        datafusion::arrow::util::pretty::pretty_format_batches(&full)
            .unwrap()
            .to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_failures_track_contact_centre_calls() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::generated_outcomes(
        dir.path(),
        GenOptions {
            journeys: 60_000,
            seed: 31,
            per_second: 20.0,
            ..Default::default()
        },
    );
    let ctx = tacet_sql::open(&dir.path().join("out"), Some(&config)).await.unwrap();
    let batches = tacet_sql::run_query(
        &ctx,
        "SELECT corr(CAST(COALESCE(o.silent, 0) AS DOUBLE), CAST(c.calls AS DOUBLE)) AS r, COUNT(*) AS minutes
         FROM contact_centre_calls c
         LEFT JOIN (SELECT minute, SUM(silent_failure) AS silent FROM outcomes_per_minute GROUP BY minute) o
           ON o.minute = c.minute",
    )
    .await
    .unwrap();
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};
    let r = batches[0].column(0).as_primitive::<Float64Type>().value(0);
    let minutes = batches[0].column(1).as_primitive::<Int64Type>().value(0);
    eprintln!("correlation of silent failures and calls per minute: {r:.3} over {minutes} minutes");
    // The generator adds three calls per silent failure to a noisy base load:
    // a strong positive correlation, well above chance.
    assert!(minutes > 40, "{minutes}");
    assert!(r > 0.6 && r <= 1.0, "r = {r}");
}

fn psql(port: u16, password: Option<&str>, sql: &str) -> std::process::Output {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "analyst",
        "-d",
        "tacet",
        "-w",
        "-A",
        "-t",
        "-c",
        sql,
    ]);
    cmd.env_remove("PGPASSWORD");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    cmd.output().expect("psql is installed (postgresql-client)")
}

#[test]
fn psql_queries_the_views_and_cannot_write_or_get_in_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::scenario_outcomes(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = rt.block_on(async {
        let ctx = Arc::new(tacet_sql::open(dir.path(), Some(&config)).await.unwrap());
        let opts = tacet_sql::server::ServeOptions::from_config(&Default::default(), Some("correct horse".into()));
        let (addr, serve) = tacet_sql::server::bind(ctx, "127.0.0.1:0", opts).await.unwrap();
        tokio::spawn(serve);
        addr.port()
    });
    let out = psql(
        port,
        Some("correct horse"),
        "SELECT journey, completed FROM journey_sli ORDER BY journey",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("funds_transfer|"), "{text}");

    let out = psql(port, Some("correct horse"), "SELECT COUNT(*) FROM outcomes_per_minute");
    assert!(out.status.success());
    let out = psql(
        port,
        Some("correct horse"),
        "SELECT step FROM journey_missing_steps WHERE rank = 1 ORDER BY journey, step LIMIT 1",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = psql(port, Some("correct horse"), "DROP TABLE outcomes");
    assert!(!out.status.success(), "DROP TABLE must be refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ERROR"), "{err}");
    let out = psql(port, Some("correct horse"), "SELECT COUNT(*) FROM outcomes");
    assert!(out.status.success(), "outcomes is still there");

    let out = psql(port, Some("wrong"), "SELECT 1");
    assert!(!out.status.success(), "a wrong password is refused");
    let out = psql(port, None, "SELECT 1");
    assert!(!out.status.success(), "no password is refused");

    let out = psql(port, Some("correct horse"), "SELECT nope FROM outcomes");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope"), "errors point at the SQL: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_functions_compute_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::scenario_outcomes(dir.path());
    let ctx = tacet_sql::open(dir.path(), Some(&config)).await.unwrap();
    let batches = tacet_sql::run_query(
        &ctx,
        "SELECT burn_rate(144, 10000, 0.999) AS page, burn_rate(3, 100, 0.99) AS ticket, \
         error_budget_left(5, 1000, 0.999) AS overspent, burn_rate(0, 0, 0.999) AS idle",
    )
    .await
    .unwrap();
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Float64Type;
    let v = |c: usize| batches[0].column(c).as_primitive::<Float64Type>().value(0);
    assert!((v(0) - 14.4).abs() < 1e-9 && (v(1) - 3.0).abs() < 1e-9 && (v(2) + 4.0).abs() < 1e-9);
    assert!(batches[0].column(3).is_null(0), "no traffic: NULL, not a burn");
}

/// The extended protocol with parameters and binary results, from psycopg 3
/// (libpq), as drivers behind Grafana and notebooks use it.
#[test]
fn an_extended_protocol_client_gets_typed_results_and_the_same_rules() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::scenario_outcomes(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (port, ctx) = rt.block_on(async {
        let ctx = Arc::new(tacet_sql::open(dir.path(), Some(&config)).await.unwrap());
        let opts = tacet_sql::server::ServeOptions::from_config(&Default::default(), Some("s3cret".into()));
        let (addr, serve) = tacet_sql::server::bind(ctx.clone(), "127.0.0.1:0", opts).await.unwrap();
        tokio::spawn(serve);
        (addr.port(), ctx)
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/sql/extended_client.py");
    let out = Command::new("python3")
        .args([script, &port.to_string(), "s3cret"])
        .output()
        .expect("python3 with psycopg (pip install 'psycopg[binary]')");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // The same questions through the session directly.
    let query = |sql: &str| rt.block_on(tacet_sql::run_query(&ctx, sql)).unwrap();
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default();
    let sli = query("SELECT journey, decided, sli FROM journey_sli ORDER BY journey");
    let mut expected_sli = Vec::new();
    for b in &sli {
        let journeys = ArrayFormatter::try_new(b.column(0).as_ref(), &options).unwrap();
        for i in 0..b.num_rows() {
            expected_sli.push(serde_json::json!([
                journeys.value(i).to_string(),
                b.column(1).as_primitive::<Int64Type>().value(i),
                b.column(2).as_primitive::<Float64Type>().value(i),
            ]));
        }
    }
    assert_eq!(got["binary_sli"], serde_json::Value::Array(expected_sli.clone()));
    let funds = expected_sli.iter().find(|r| r[0] == "funds_transfer").unwrap();
    assert_eq!(got["param_text"], serde_json::json!([[funds[0], funds[1]]]));
    let with_decisions = expected_sli.iter().filter(|r| r[1].as_i64().unwrap() > 0).count();
    assert_eq!(got["param_int"], with_decisions);

    let first = query("SELECT minute, SUM(decided) FROM outcomes_per_minute GROUP BY minute ORDER BY minute LIMIT 1");
    let minute = ArrayFormatter::try_new(first[0].column(0).as_ref(), &options)
        .unwrap()
        .value(0)
        .to_string();
    let decided = first[0].column(1).as_primitive::<Int64Type>().value(0);
    assert_eq!(got["binary_minute"], serde_json::json!([minute, decided]));

    assert!(
        got["drop"].as_str().unwrap().contains("DDL not supported"),
        "{}",
        got["drop"]
    );
    assert_eq!(got["wrong_password"], "refused");
}
