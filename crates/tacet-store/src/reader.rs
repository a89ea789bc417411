//! Reads an outcome dataset back into rows.

use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMillisecondType, UInt32Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tacet_core::{Outcome, OutcomeRow};

use crate::schema::FIXED_COLUMNS;
use crate::{Result, StoreError};

/// Every `*.parquet` file under `<root>/outcomes`, sorted (files being written
/// are dot-named and skipped).
pub fn outcome_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("outcomes")];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(StoreError::Io {
                    path: dir.display().to_string(),
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".parquet") && !name.starts_with('.') {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// All rows of the dataset under `root`, with `journey` from the partition path.
pub fn read_outcomes(root: &Path) -> Result<Vec<OutcomeRow>> {
    let mut rows = Vec::new();
    for path in outcome_files(root)? {
        let journey = path
            .ancestors()
            .filter_map(|p| p.file_name()?.to_str()?.strip_prefix("journey=").map(str::to_owned))
            .next()
            .unwrap_or_default();
        let shown = path.display().to_string();
        let file = fs::File::open(&path).map_err(|source| StoreError::Io {
            path: shown.clone(),
            source,
        })?;
        let pq = |source| StoreError::Parquet {
            path: shown.clone(),
            source,
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(pq)?
            .build()
            .map_err(pq)?;
        for batch in reader {
            let batch = batch?;
            append_rows(&batch, &journey, &shown, &mut rows)?;
        }
    }
    Ok(rows)
}

fn append_rows(batch: &RecordBatch, journey: &str, path: &str, rows: &mut Vec<OutcomeRow>) -> Result<()> {
    let bad = |column: &str| StoreError::Schema {
        path: path.to_owned(),
        column: column.to_owned(),
    };
    let col = |name: &str| batch.column_by_name(name).ok_or_else(|| bad(name));
    let strings = |name: &str| -> Result<Vec<Option<String>>> {
        let c = col(name)?;
        let a = c.as_string_opt::<i32>().ok_or_else(|| bad(name))?;
        Ok((0..a.len())
            .map(|i| a.is_valid(i).then(|| a.value(i).to_owned()))
            .collect())
    };
    let times = |name: &str| -> Result<Vec<Option<i64>>> {
        let c = col(name)?;
        let a = c
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| bad(name))?;
        Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect())
    };
    let lists = |name: &str| -> Result<Vec<Vec<String>>> {
        let c = col(name)?;
        let a = c.as_list_opt::<i32>().ok_or_else(|| bad(name))?;
        Ok((0..a.len())
            .map(|i| {
                let v = a.value(i);
                let s = v.as_string::<i32>();
                (0..s.len()).map(|j| s.value(j).to_owned()).collect()
            })
            .collect())
    };
    let u32s = |name: &str| -> Result<Vec<u32>> {
        let c = col(name)?;
        let a = c.as_primitive_opt::<UInt32Type>().ok_or_else(|| bad(name))?;
        Ok(a.values().to_vec())
    };
    let trace_id = strings("trace_id")?;
    let outcome = strings("outcome")?;
    let (started, acked, completed, deadline, decided) = (
        times("started_at")?,
        times("acked_at")?,
        times("completed_at")?,
        times("deadline_at")?,
        times("decided_at")?,
    );
    let latency = {
        let c = col("latency_ms")?;
        let a = c.as_primitive_opt::<Int64Type>().ok_or_else(|| bad("latency_ms"))?;
        (0..a.len())
            .map(|i| a.is_valid(i).then(|| a.value(i)))
            .collect::<Vec<_>>()
    };
    let (missing, failed, services) = (lists("missing_steps")?, lists("failed_steps")?, lists("services")?);
    let (last_step, last_service) = (strings("last_step")?, strings("last_service")?);
    let (n_events, n_duplicates) = (u32s("n_events")?, u32s("n_duplicates")?);
    let schema = batch.schema();
    let attribute_columns: Vec<_> = schema.fields().iter().skip(FIXED_COLUMNS).collect();
    for i in 0..batch.num_rows() {
        let mut attributes = Vec::new();
        for field in &attribute_columns {
            let c = col(field.name())?;
            if !c.is_valid(i) {
                continue;
            }
            let text = match field.data_type() {
                DataType::Utf8 => c.as_string::<i32>().value(i).to_owned(),
                DataType::Float64 => c.as_primitive::<Float64Type>().value(i).to_string(),
                DataType::Boolean => c.as_boolean().value(i).to_string(),
                _ => return Err(bad(field.name())),
            };
            attributes.push((field.name().clone(), text));
        }
        rows.push(OutcomeRow {
            trace_id: trace_id[i].clone().unwrap_or_default(),
            journey: journey.to_owned(),
            outcome: outcome[i]
                .as_deref()
                .and_then(Outcome::parse)
                .ok_or_else(|| bad("outcome"))?,
            started_at: started[i],
            acked_at: acked[i],
            completed_at: completed[i],
            deadline_at: deadline[i],
            decided_at: decided[i].ok_or_else(|| bad("decided_at"))?,
            latency_ms: latency[i],
            missing_steps: missing[i].clone(),
            failed_steps: failed[i].clone(),
            last_step: last_step[i].clone(),
            last_service: last_service[i].clone(),
            services: services[i].clone(),
            n_events: n_events[i],
            n_duplicates: n_duplicates[i],
            attributes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use tacet_core::outcome::OutcomeSink;
    use tacet_core::{AttrValue, Catalog, Config, Outcome, OutcomeRecord};

    use super::*;
    use crate::OutcomeWriter;

    /// The index of attribute column `name` in the catalog.
    fn column(catalog: &Catalog, name: &str) -> usize {
        catalog.columns().iter().position(|c| c.name == name).unwrap()
    }

    #[test]
    fn rows_round_trip_through_partitioned_parquet() {
        let catalog = Arc::new(Catalog::new(&Config::embedded_default()).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let mut w = OutcomeWriter::new(catalog.clone(), dir.path(), "t0", 2);
        let columns = catalog.columns().len();
        let mut attrs = vec![None; columns];
        let amount = column(&catalog, "amount");
        let customer = column(&catalog, "customer");
        attrs[amount] = Some(AttrValue::Num(250.5));
        attrs[customer] = Some(AttrValue::Str("c-1"));
        let record = |trace: &'static str, decided: i64, outcome: Outcome| OutcomeRecord {
            trace_id: trace,
            journey: 0,
            outcome,
            started_at: Some(decided - 10),
            acked_at: None,
            completed_at: None,
            deadline_at: Some(decided),
            decided_at: decided,
            latency_ms: None,
            missing_steps: &["ledger.posted"],
            missing_groups: 1,
            failed_steps: &[],
            last_step: Some("transfer.accepted"),
            last_service: None,
            services: &["gw", "core"],
            n_events: 2,
            n_duplicates: 1,
            attributes: &[],
        };
        let mut a = record("a", 1_795_342_503_123, Outcome::SilentFailure);
        a.attributes = &attrs;
        w.emit(&a);
        w.emit(&record("b", 1_795_342_503_124, Outcome::Completed));
        w.emit(&record("c", 1_795_342_503_124 + 86_400_000, Outcome::Stalled));
        assert_eq!(w.stats().files, 1, "flush_rows = 2 wrote the first partition");
        w.flush().unwrap();
        assert_eq!(w.stats().files, 2);
        let files = outcome_files(dir.path()).unwrap();
        let shown: Vec<_> = files
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .parent()
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            shown,
            [
                "outcomes/journey=funds_transfer/date=2026-11-22",
                "outcomes/journey=funds_transfer/date=2026-11-23"
            ]
        );
        let rows = read_outcomes(dir.path()).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].trace_id, "a");
        assert_eq!(rows[0].journey, "funds_transfer");
        assert_eq!(rows[0].outcome, Outcome::SilentFailure);
        assert_eq!(rows[0].missing_steps, ["ledger.posted"]);
        assert_eq!(rows[0].services, ["gw", "core"]);
        assert_eq!(
            rows[0].attributes,
            [
                ("amount".to_string(), "250.5".to_string()),
                ("customer".to_string(), "c-1".to_string())
            ]
        );
        assert_eq!((rows[1].n_duplicates, rows[1].acked_at), (1, None));
        assert!(!Path::new(&dir.path().join("outcomes")).join(".tmp").exists());
    }

    /// A partition is written once its rows' strings pass the writer's
    /// byte limit, however few rows it has: long (non-canonical) trace ids
    /// must never push a string column past Arrow's 2 GiB.
    #[test]
    fn partitions_are_written_by_string_bytes_as_well_as_rows() {
        let catalog = Arc::new(Catalog::new(&Config::embedded_default()).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let mut w = OutcomeWriter::new(catalog, dir.path(), "t0", 1_000_000).with_flush_bytes(1_000);
        let traces: Vec<String> = (0..10).map(|i| format!("{i}{}", "x".repeat(299))).collect();
        for (i, trace) in traces.iter().enumerate() {
            w.emit(&crate::writer::completed_row(trace, 1_795_342_503_000 + i as i64));
        }
        // ~310 bytes of strings a row: a file every fourth row.
        assert_eq!(w.stats().files, 2, "8 rows written by bytes, 2 still buffered");
        assert_eq!(w.buffered_rows(), 2);
        w.flush().unwrap();
        assert_eq!(w.stats().files, 3);
        let mut read: Vec<String> = read_outcomes(dir.path())
            .unwrap()
            .into_iter()
            .map(|r| r.trace_id)
            .collect();
        read.sort();
        assert_eq!(read, traces, "every row, whole, once");
    }

    #[test]
    fn only_columns_whose_values_repeat_are_dictionary_encoded_and_trace_ids_are_not_compressed() {
        use parquet::basic::Compression;
        use parquet::file::reader::{FileReader, SerializedFileReader};

        let catalog = Arc::new(Catalog::new(&Config::embedded_default()).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let mut w = OutcomeWriter::new(catalog.clone(), dir.path(), "t0", 1_000);
        let amount = column(&catalog, "amount");
        let region = column(&catalog, "region");
        let traces: Vec<String> = (0..100).map(|i| format!("{i:032x}")).collect();
        for (i, trace) in traces.iter().enumerate() {
            let mut attrs = vec![None; catalog.columns().len()];
            attrs[amount] = Some(AttrValue::Num(i as f64 + 0.25));
            attrs[region] = Some(AttrValue::Str("eu-west"));
            let decided = 1_795_342_503_000 + i as i64;
            w.emit(&OutcomeRecord {
                trace_id: trace,
                journey: 0,
                outcome: Outcome::Completed,
                started_at: Some(decided - 100),
                acked_at: Some(decided - 50),
                completed_at: Some(decided - 10),
                deadline_at: Some(decided),
                decided_at: decided,
                latency_ms: Some(90 + i as i64),
                missing_steps: &[],
                missing_groups: 0,
                failed_steps: &[],
                last_step: Some("ledger.posted"),
                last_service: Some("core"),
                services: &["gw", "core"],
                n_events: 3,
                n_duplicates: 0,
                attributes: &attrs,
            });
        }
        w.flush().unwrap();
        let files = outcome_files(dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        let file = SerializedFileReader::new(std::fs::File::open(&files[0]).unwrap()).unwrap();
        let group = file.metadata().row_group(0);
        let dictionary = |name: &str| {
            let column = (0..group.num_columns())
                .map(|i| group.column(i))
                .find(|c| c.column_path().string() == name)
                .unwrap_or_else(|| panic!("no column {name}"));
            column.dictionary_page_offset().is_some()
        };
        for plain in ["trace_id", "started_at", "decided_at", "latency_ms", "amount"] {
            assert!(!dictionary(plain), "{plain} has a dictionary");
        }
        for repeated in ["outcome", "last_step", "n_events", "region"] {
            assert!(dictionary(repeated), "{repeated} has no dictionary");
        }
        // Random trace ids stored as they are; everything else Snappy.
        for i in 0..group.num_columns() {
            let column = group.column(i);
            let name = column.column_path().string();
            let expected = if name == "trace_id" {
                Compression::UNCOMPRESSED
            } else {
                Compression::SNAPPY
            };
            assert_eq!(column.compression(), expected, "{name}");
        }
        // And the rows read back as written.
        let rows = read_outcomes(dir.path()).unwrap();
        assert_eq!(rows.len(), 100);
        assert_eq!(rows[7].trace_id, traces[7]);
        assert_eq!(rows[7].latency_ms, Some(97));
    }
}
