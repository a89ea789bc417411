//! Buffers outcome rows per (journey, date) and writes Parquet files.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, SchemaRef, TimestampMillisecondType, UInt32Type};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use tacet_core::config::AttributeType;
use tacet_core::outcome::OutcomeSink;
use tacet_core::{AttrValue, Catalog, JourneyId, OutcomeRecord};

use crate::columns::{Bools, Primitives, StringLists, Strings};
use crate::schema::{outcome_schema, string_item, writer_properties};
use crate::{Result, StoreError};

const DAY_MS: i64 = 86_400_000;

/// Bytes of strings a partition's buffered rows may hold before its file is
/// written, whatever `flush_rows` says: Arrow's strings have 32-bit offsets,
/// so each string column of a file must stay under 2 GiB. Rows are checked
/// after each append, so a column holds less than this plus one row's
/// strings, and one row adds at most a line (a non-canonical trace id, a
/// service name) or the service names its shard keeps (its `services`
/// list); attribute strings are at most 32 KiB. Normal rows (~100 bytes of
/// strings) reach `flush_rows` long before this.
const FLUSH_STRING_BYTES: usize = 256 << 20;

const _: () = {
    use tacet_core::config::MAX_LINE_BYTES_LIMIT;
    use tacet_core::outcome::SERVICE_NAME_BYTES_CAP;
    let largest_row = if MAX_LINE_BYTES_LIMIT > SERVICE_NAME_BYTES_CAP {
        MAX_LINE_BYTES_LIMIT
    } else {
        SERVICE_NAME_BYTES_CAP
    };
    assert!(FLUSH_STRING_BYTES + largest_row < i32::MAX as usize);
};

/// Counters of one writer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    /// Write failures; each also logged. The rows of a failed file are kept
    /// and retried at the next flush.
    pub errors: u64,
}

impl WriterStats {
    /// Adds `other` into `self` (writers are disjoint).
    pub fn merge(&mut self, other: &WriterStats) {
        self.rows += other.rows;
        self.files += other.files;
        self.bytes += other.bytes;
        self.errors += other.errors;
    }
}

enum AttrColumn {
    Str(Strings),
    Float(Primitives<Float64Type>),
    Bool(Bools),
}

/// The columns of one partition's rows not yet in a file.
struct Builders {
    rows: usize,
    trace_id: Strings,
    outcome: Strings,
    started_at: Primitives<TimestampMillisecondType>,
    acked_at: Primitives<TimestampMillisecondType>,
    completed_at: Primitives<TimestampMillisecondType>,
    deadline_at: Primitives<TimestampMillisecondType>,
    decided_at: Primitives<TimestampMillisecondType>,
    latency_ms: Primitives<Int64Type>,
    missing_steps: StringLists,
    failed_steps: StringLists,
    last_step: Strings,
    last_service: Strings,
    services: StringLists,
    n_events: Primitives<UInt32Type>,
    n_duplicates: Primitives<UInt32Type>,
    attrs: Vec<AttrColumn>,
    since: Instant,
}

impl Builders {
    fn new(catalog: &Catalog) -> Self {
        Self {
            rows: 0,
            trace_id: Strings::default(),
            outcome: Strings::default(),
            started_at: Primitives::default(),
            acked_at: Primitives::default(),
            completed_at: Primitives::default(),
            deadline_at: Primitives::default(),
            decided_at: Primitives::default(),
            latency_ms: Primitives::default(),
            missing_steps: StringLists::default(),
            failed_steps: StringLists::default(),
            last_step: Strings::default(),
            last_service: Strings::default(),
            services: StringLists::default(),
            n_events: Primitives::default(),
            n_duplicates: Primitives::default(),
            attrs: catalog
                .columns()
                .iter()
                .map(|c| match c.kind {
                    AttributeType::String => AttrColumn::Str(Strings::default()),
                    AttributeType::Float => AttrColumn::Float(Primitives::default()),
                    AttributeType::Bool => AttrColumn::Bool(Bools::default()),
                })
                .collect(),
            since: Instant::now(),
        }
    }

    fn append(&mut self, r: &OutcomeRecord<'_>) {
        if self.rows == 0 {
            self.reserve_taken();
        }
        self.rows += 1;
        self.trace_id.push(r.trace_id);
        self.outcome.push(r.outcome.as_str());
        self.started_at.push_option(r.started_at);
        self.acked_at.push_option(r.acked_at);
        self.completed_at.push_option(r.completed_at);
        self.deadline_at.push_option(r.deadline_at);
        self.decided_at.push(r.decided_at);
        self.latency_ms.push_option(r.latency_ms);
        self.missing_steps.push(r.missing_steps);
        self.failed_steps.push(r.failed_steps);
        self.last_step.push_option(r.last_step);
        self.last_service.push_option(r.last_service);
        self.services.push(r.services);
        self.n_events.push(r.n_events);
        self.n_duplicates.push(r.n_duplicates);
        for (i, column) in self.attrs.iter_mut().enumerate() {
            let value = &r.attributes.get(i).copied().flatten();
            match column {
                AttrColumn::Str(c) => match value {
                    Some(AttrValue::Str(s)) => c.push(s),
                    Some(AttrValue::Num(n)) => c.push(&n.to_string()),
                    Some(AttrValue::Bool(v)) => c.push(&v.to_string()),
                    None => c.push_option(None),
                },
                AttrColumn::Float(c) => c.push_option(value.and_then(|v| v.as_number())),
                AttrColumn::Bool(c) => c.push_option(match value {
                    Some(AttrValue::Bool(v)) => Some(*v),
                    Some(AttrValue::Str(s)) => s.parse().ok(),
                    _ => None,
                }),
            }
        }
    }

    /// Room in every column for as many rows (and bytes) as the last file
    /// had: see the columns module.
    fn reserve_taken(&mut self) {
        for c in [
            &mut self.trace_id,
            &mut self.outcome,
            &mut self.last_step,
            &mut self.last_service,
        ] {
            c.reserve_taken();
        }
        for c in [
            &mut self.started_at,
            &mut self.acked_at,
            &mut self.completed_at,
            &mut self.deadline_at,
            &mut self.decided_at,
        ] {
            c.reserve_taken();
        }
        for c in [&mut self.missing_steps, &mut self.failed_steps, &mut self.services] {
            c.reserve_taken();
        }
        self.latency_ms.reserve_taken();
        self.n_events.reserve_taken();
        self.n_duplicates.reserve_taken();
        for c in &mut self.attrs {
            match c {
                AttrColumn::Str(c) => c.reserve_taken(),
                AttrColumn::Float(c) => c.reserve_taken(),
                AttrColumn::Bool(c) => c.reserve_taken(),
            }
        }
    }

    /// Bytes of the buffered rows' strings, all string columns together
    /// (so at least those of any one column).
    fn string_bytes(&self) -> usize {
        let attrs: usize = self
            .attrs
            .iter()
            .map(|c| match c {
                AttrColumn::Str(c) => c.bytes(),
                AttrColumn::Float(_) | AttrColumn::Bool(_) => 0,
            })
            .sum();
        self.trace_id.bytes()
            + self.outcome.bytes()
            + self.missing_steps.bytes()
            + self.failed_steps.bytes()
            + self.last_step.bytes()
            + self.last_service.bytes()
            + self.services.bytes()
            + attrs
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let utc = |c: &mut Primitives<TimestampMillisecondType>| Arc::new(c.finish().with_timezone("UTC"));
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.outcome.finish()),
            utc(&mut self.started_at),
            utc(&mut self.acked_at),
            utc(&mut self.completed_at),
            utc(&mut self.deadline_at),
            utc(&mut self.decided_at),
            Arc::new(self.latency_ms.finish()),
            Arc::new(self.missing_steps.finish(string_item())?),
            Arc::new(self.failed_steps.finish(string_item())?),
            Arc::new(self.last_step.finish()),
            Arc::new(self.last_service.finish()),
            Arc::new(self.services.finish(string_item())?),
            Arc::new(self.n_events.finish()),
            Arc::new(self.n_duplicates.finish()),
        ];
        for c in &mut self.attrs {
            columns.push(match c {
                AttrColumn::Str(c) => Arc::new(c.finish()),
                AttrColumn::Float(c) => Arc::new(c.finish()),
                AttrColumn::Bool(c) => Arc::new(c.finish()),
            });
        }
        self.rows = 0;
        self.since = Instant::now();
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// Writes outcome rows into `<root>/outcomes/journey=…/date=…/`. One writer
/// per shard: file names carry the writer's name so writers never collide.
pub struct OutcomeWriter {
    catalog: Arc<Catalog>,
    schema: SchemaRef,
    /// Parquet settings of every file, from the schema.
    props: WriterProperties,
    root: PathBuf,
    name: String,
    flush_rows: usize,
    /// [`FLUSH_STRING_BYTES`], lower in tests.
    flush_bytes: usize,
    /// Buffered rows by (journey, day). A hashbrown map (foldhash): std's
    /// SipHash cost ~195–210 more instructions per outcome row (callgrind,
    /// correlate bench at 20,000 journeys, measured twice: 440.4M against
    /// 444.7M on the correlator thread on 2026-12-05 late).
    open: hashbrown::HashMap<(JourneyId, i64), Builders>,
    /// Batches whose file could not be written, kept for the next flush.
    pending: Vec<((JourneyId, i64), RecordBatch)>,
    next_file: u64,
    stats: WriterStats,
}

impl OutcomeWriter {
    /// A writer under `root`; `name` (unique per run and shard) prefixes its files.
    pub fn new(catalog: Arc<Catalog>, root: &Path, name: &str, flush_rows: usize) -> Self {
        let schema = outcome_schema(&catalog);
        Self {
            props: writer_properties(&schema),
            schema,
            catalog,
            root: root.join("outcomes"),
            name: name.to_owned(),
            flush_rows: flush_rows.max(1),
            flush_bytes: FLUSH_STRING_BYTES,
            open: hashbrown::HashMap::new(),
            pending: Vec::new(),
            next_file: 0,
            stats: WriterStats::default(),
        }
    }

    /// The same writer with a lower string-bytes limit than
    /// [`FLUSH_STRING_BYTES`], so that tests reach it with small rows.
    #[cfg(test)]
    pub(crate) fn with_flush_bytes(mut self, bytes: usize) -> Self {
        self.flush_bytes = bytes;
        self
    }

    /// Counters so far.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Rows buffered and not yet in a file.
    pub fn buffered_rows(&self) -> usize {
        self.open.values().map(|b| b.rows).sum::<usize>()
            + self.pending.iter().map(|(_, b)| b.num_rows()).sum::<usize>()
    }

    /// Writes every partition buffered for at least `older_than` (all with `None`).
    pub fn flush_older(&mut self, older_than: Option<std::time::Duration>) -> Result<()> {
        let due: Vec<_> = self
            .open
            .iter()
            .filter(|(_, b)| b.rows > 0 && older_than.is_none_or(|d| b.since.elapsed() >= d))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.write_partition(key)?;
        }
        self.retry_pending()
    }

    /// Writes everything buffered.
    pub fn flush(&mut self) -> Result<()> {
        self.flush_older(None)
    }

    fn retry_pending(&mut self) -> Result<()> {
        for (key, batch) in std::mem::take(&mut self.pending) {
            if let Err(e) = self.write_file(key, &batch) {
                self.pending.push((key, batch));
                return Err(e);
            }
        }
        Ok(())
    }

    fn write_partition(&mut self, key: (JourneyId, i64)) -> Result<()> {
        let Some(builders) = self.open.get_mut(&key) else {
            return Ok(());
        };
        let batch = builders.finish(&self.schema)?;
        if let Err(e) = self.write_file(key, &batch) {
            self.stats.errors += 1;
            self.pending.push((key, batch));
            return Err(e);
        }
        Ok(())
    }

    fn partition_dir(&self, (journey, day): (JourneyId, i64)) -> PathBuf {
        let date = chrono::DateTime::from_timestamp_millis(day * DAY_MS)
            .map(|t| t.date_naive().to_string())
            .unwrap_or_else(|| "invalid".into());
        self.root
            .join(format!("journey={}", self.catalog.journey(journey).name))
            .join(format!("date={date}"))
    }

    fn write_file(&mut self, key: (JourneyId, i64), batch: &RecordBatch) -> Result<()> {
        let dir = self.partition_dir(key);
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let file_name = format!("part-{}-{:06}.parquet", self.name, self.next_file);
        self.next_file += 1;
        let tmp = dir.join(format!(".{file_name}.tmp"));
        let path = dir.join(&file_name);
        let pq = |source| StoreError::Parquet {
            path: tmp.display().to_string(),
            source,
        };
        let file = fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone())).map_err(pq)?;
        writer.write(batch).map_err(pq)?;
        let file = writer.into_inner().map_err(pq)?;
        file.sync_data().map_err(io(&tmp))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        self.stats.files += 1;
        self.stats.bytes += bytes;
        Ok(())
    }
}

impl OutcomeSink for OutcomeWriter {
    fn emit(&mut self, record: &OutcomeRecord<'_>) {
        let key = (record.journey, record.decided_at.div_euclid(DAY_MS));
        let builders = self.open.entry(key).or_insert_with(|| Builders::new(&self.catalog));
        builders.append(record);
        self.stats.rows += 1;
        if (builders.rows >= self.flush_rows || builders.string_bytes() >= self.flush_bytes)
            && let Err(e) = self.write_partition(key)
        {
            // Kept in `pending` and retried at the next flush; counted.
            tracing::error!(error = %e, "Could not write an outcome file; the rows are kept and retried.");
        }
    }
}

/// A completed journey's row with one service and nothing else, decided
/// (and started) at `decided_at`: for tests of the files.
#[cfg(test)]
pub(crate) fn completed_row(trace_id: &str, decided_at: i64) -> OutcomeRecord<'_> {
    OutcomeRecord {
        trace_id,
        journey: 0,
        outcome: tacet_core::outcome::Outcome::Completed,
        started_at: Some(decided_at),
        acked_at: None,
        completed_at: None,
        deadline_at: None,
        decided_at,
        latency_ms: None,
        missing_steps: &[],
        missing_groups: 0,
        failed_steps: &[],
        last_step: None,
        last_service: None,
        services: &["gw"],
        n_events: 1,
        n_duplicates: 0,
        attributes: &[],
    }
}

#[cfg(test)]
mod tests {
    use tacet_core::config::Config;

    use super::*;

    /// Once a partition's file is written, its next row reserves the room
    /// that file took, every column at once (see the columns module).
    #[test]
    fn a_partitions_next_file_reserves_the_last_ones_room() {
        let catalog = Arc::new(Catalog::new(&Config::embedded_default()).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let mut w = OutcomeWriter::new(catalog, dir.path(), "t0", 5);
        let decided_at = 1_795_342_503_000;
        for _ in 0..5 {
            w.emit(&completed_row("0af7651916cd43dd8448eb211c80319c", decided_at));
        }
        assert_eq!(w.stats().files, 1);
        let key = (0, decided_at.div_euclid(DAY_MS));
        assert_eq!(w.open[&key].trace_id.reserved().1, 0, "no bytes held while idle");
        w.emit(&completed_row("1af7651916cd43dd8448eb211c80319c", decided_at));
        let (rows, bytes) = w.open[&key].trace_id.reserved();
        assert!(
            rows >= 5 && bytes >= 5 * 32,
            "room for the last file's 5 rows: {rows}, {bytes}"
        );
        assert!(w.open[&key].services.reserved() >= (5, 5 * 2));
    }
}
