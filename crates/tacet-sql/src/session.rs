//! The DataFusion session analysts query.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
pub use datafusion::prelude::SessionContext;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionConfig};
use tacet_core::Config;
use tacet_core::config::TableFormat;

/// What can go wrong opening or querying.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// A query or planning error, as DataFusion words it (points at the SQL).
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    #[error("no outcomes under {0}: run `tacet demo` or `tacet replay --out {0} ...` first")]
    NoOutcomes(String),
    #[error("table {name} ({path}): {message}")]
    Table {
        name: String,
        path: String,
        message: String,
    },
}

/// Statements a reader may run: queries, `EXPLAIN`, `SHOW`; never DDL, DML
/// or statements such as `SET` and `BEGIN` that would change the session
/// (on the wire server, a client's `SET` would otherwise reconfigure
/// memory limits or spilling for its session).
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Runs one read-only statement and collects its batches.
pub async fn run_query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
    let df = ctx.sql_with_options(sql, read_only()).await?;
    Ok(df.collect().await?)
}

fn url_of(path: &Path) -> Result<ListingTableUrl, SqlError> {
    let abs = std::fs::canonicalize(path).map_err(|_| SqlError::NoOutcomes(path.display().to_string()))?;
    let mut text = abs.display().to_string();
    if !text.ends_with('/') {
        text.push('/');
    }
    Ok(ListingTableUrl::parse(text)?)
}

/// A session over the outcomes under `data` (the `--out` of a replay), the
/// business tables and SLOs of `config` (the embedded default when `None`).
pub async fn open(data: &Path, config: Option<&Config>) -> Result<SessionContext, SqlError> {
    let default;
    let config = match config {
        Some(c) => c,
        None => {
            default = Config::embedded_default();
            &default
        }
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let ctx = SessionContext::new_with_config(
        SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(cores)
            .with_default_catalog_and_schema("tacet", "public"),
    );
    for udf in crate::udf::all() {
        ctx.register_udf(udf);
    }

    let outcomes_dir = data.join("outcomes");
    if !outcomes_dir.is_dir() {
        return Err(SqlError::NoOutcomes(data.display().to_string()));
    }
    let table_url = url_of(&outcomes_dir)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![
            ("journey".to_owned(), DataType::Utf8),
            ("date".to_owned(), DataType::Utf8),
        ]);
    let schema = options
        .infer_schema(&ctx.state(), &table_url)
        .await
        .map_err(|_| SqlError::NoOutcomes(data.display().to_string()))?;
    let listing = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .with_schema(schema.clone());
    ctx.register_table("outcomes", Arc::new(ListingTable::try_new(listing)?))?;
    let amount = if schema.field_with_name("amount").is_ok() {
        "amount"
    } else {
        "CAST(0 AS DOUBLE)"
    };

    // A config read from a file has made its tables' paths absolute
    // (`Config::from_file`); the CSVs found below are under `data`.
    for t in &config.tables {
        register_table(&ctx, t).await?;
    }
    // CSV files beside the outcomes (as `tacet gen` writes its business
    // metrics) are tables too, unless the config names one the same.
    for csv in csv_files(data) {
        let Some(stem) = csv.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let name: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if config.tables.iter().any(|t| t.name == name) || ctx.table_exist(name.as_str())? {
            continue;
        }
        let header = std::fs::read_to_string(&csv).unwrap_or_default();
        let has_minute = header
            .lines()
            .next()
            .is_some_and(|h| h.split(',').any(|c| c.trim() == "minute"));
        let t = tacet_core::config::TableConfig {
            name,
            path: csv,
            format: TableFormat::Csv,
            time_column: has_minute.then(|| "minute".to_owned()),
        };
        register_table(&ctx, &t).await?;
    }

    let slos: Vec<String> = config
        .journeys
        .iter()
        .map(|j| format!("('{}', CAST({} AS DOUBLE))", j.name.replace('\'', "''"), j.slo))
        .collect();
    ctx.sql(&format!(
        "CREATE VIEW journey_slo AS SELECT * FROM (VALUES {}) AS t(journey, slo)",
        slos.join(", ")
    ))
    .await?;
    // One count column per outcome, shared by the per-journey and per-minute views.
    let per_outcome = [
        "completed",
        "silent_failure",
        "failed",
        "stalled",
        "orphan",
        "late_completion",
    ]
    .map(|o| format!("SUM(CASE WHEN outcome = '{o}' THEN 1 ELSE 0 END) AS {o}"))
    .join(", ");
    ctx.sql(&format!(
        "CREATE VIEW journey_sli AS
         WITH c AS (
           SELECT journey,
             SUM(CASE WHEN outcome <> 'late_completion' THEN 1 ELSE 0 END) AS decided,
             {per_outcome},
             COALESCE(SUM(CASE WHEN outcome = 'silent_failure' THEN {amount} END), 0)
               - COALESCE(SUM(CASE WHEN outcome = 'late_completion' THEN {amount} END), 0) AS money_at_risk
           FROM outcomes GROUP BY journey)
         SELECT c.journey, decided, completed, silent_failure, failed, stalled, orphan, late_completion,
           CAST(completed AS DOUBLE) / NULLIF(completed + silent_failure + stalled, 0) AS sli,
           CAST(silent_failure AS DOUBLE) / NULLIF(completed + silent_failure, 0) AS silent_rate,
           money_at_risk,
           s.slo AS slo_target,
           error_budget_left(silent_failure + stalled, completed + silent_failure + stalled, s.slo) AS error_budget_left
         FROM c LEFT JOIN journey_slo s ON c.journey = s.journey",
    ))
    .await?;
    ctx.sql(&format!(
        "CREATE VIEW outcomes_per_minute AS
         SELECT journey, CAST(date_trunc('minute', decided_at) AS TIMESTAMP) AS minute,
           COUNT(*) AS decided,
           {per_outcome},
           COALESCE(SUM(CASE WHEN outcome = 'silent_failure' THEN {amount} END), 0) AS money_at_risk
         FROM outcomes GROUP BY journey, CAST(date_trunc('minute', decided_at) AS TIMESTAMP)",
    ))
    .await?;
    ctx.sql(
        "CREATE VIEW journey_missing_steps AS
         SELECT journey, step, silent_failures,
           RANK() OVER (PARTITION BY journey ORDER BY silent_failures DESC) AS rank
         FROM (SELECT journey, step, COUNT(*) AS silent_failures
               FROM (SELECT journey, unnest(missing_steps) AS step FROM outcomes WHERE outcome = 'silent_failure')
               GROUP BY journey, step)",
    )
    .await?;
    ctx.sql(
        "CREATE VIEW journey_last_services AS
         SELECT journey, last_service, silent_failures,
           RANK() OVER (PARTITION BY journey ORDER BY silent_failures DESC) AS rank
         FROM (SELECT journey, last_service, COUNT(*) AS silent_failures
               FROM outcomes WHERE outcome = 'silent_failure' AND last_service IS NOT NULL
               GROUP BY journey, last_service)",
    )
    .await?;
    Ok(ctx)
}

fn csv_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "csv"))
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .collect();
    out.sort();
    out
}

async fn register_table(ctx: &SessionContext, t: &tacet_core::config::TableConfig) -> Result<(), SqlError> {
    let path = &t.path;
    let shown = path.display().to_string();
    let fail = |message: String| SqlError::Table {
        name: t.name.clone(),
        path: shown.clone(),
        message,
    };
    if !path.exists() {
        return Err(fail("no such file or folder".into()));
    }
    let raw = if t.time_column.is_some() {
        format!("{}_raw", t.name)
    } else {
        t.name.clone()
    };
    let result = match t.format {
        TableFormat::Csv => {
            ctx.register_csv(&raw, &shown, CsvReadOptions::new().has_header(true))
                .await
        }
        TableFormat::Parquet => ctx.register_parquet(&raw, &shown, ParquetReadOptions::default()).await,
        TableFormat::Ndjson => ctx.register_json(&raw, &shown, JsonReadOptions::default()).await,
    };
    result.map_err(|e| fail(e.to_string()))?;
    if let Some(col) = &t.time_column {
        // `minute` is the time truncated to the minute, as a plain TIMESTAMP
        // like outcomes_per_minute.minute; a column already called minute is replaced.
        let keep = if col == "minute" {
            "* EXCLUDE (minute)".to_owned()
        } else {
            "*".to_owned()
        };
        ctx.sql(&format!(
            "CREATE VIEW \"{}\" AS SELECT {keep}, CAST(date_trunc('minute', CAST(\"{col}\" AS TIMESTAMP)) AS TIMESTAMP) AS minute FROM \"{raw}\"",
            t.name
        ))
        .await
        .map_err(|e| fail(e.to_string()))?;
    }
    Ok(())
}
