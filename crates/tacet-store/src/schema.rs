//! The outcome table's Arrow schema.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use tacet_core::Catalog;
use tacet_core::config::AttributeType;

/// Timestamps are milliseconds, UTC.
pub fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The field of a string list's items.
pub(crate) fn string_item() -> FieldRef {
    Arc::new(Field::new("item", DataType::Utf8, true))
}

fn string_list() -> DataType {
    DataType::List(string_item())
}

/// The columns written to every outcome file. `journey` and `date` are not in
/// the files: they are the hive partition folders.
pub fn outcome_schema(catalog: &Catalog) -> SchemaRef {
    let mut fields = vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("started_at", timestamp(), true),
        Field::new("acked_at", timestamp(), true),
        Field::new("completed_at", timestamp(), true),
        Field::new("deadline_at", timestamp(), true),
        Field::new("decided_at", timestamp(), false),
        Field::new("latency_ms", DataType::Int64, true),
        Field::new("missing_steps", string_list(), false),
        Field::new("failed_steps", string_list(), false),
        Field::new("last_step", DataType::Utf8, true),
        Field::new("last_service", DataType::Utf8, true),
        Field::new("services", string_list(), false),
        Field::new("n_events", DataType::UInt32, false),
        Field::new("n_duplicates", DataType::UInt32, false),
    ];
    for column in catalog.columns() {
        let kind = match column.kind {
            AttributeType::String => DataType::Utf8,
            AttributeType::Float => DataType::Float64,
            AttributeType::Bool => DataType::Boolean,
        };
        fields.push(Field::new(&column.name, kind, true));
    }
    Arc::new(Schema::new(fields))
}

/// How outcome files are written: Snappy except for trace ids, and a
/// dictionary only for the columns whose values repeat.
///
/// Parquet dictionary-encodes every column by default, which hashes each
/// value into a dictionary as it is written. For a trace id (one per row),
/// a timestamp, a latency or an amount the dictionary is about as large as
/// the column, so that work buys nothing: those columns are written plain.
/// Outcomes, step and service names and string attributes keep theirs.
///
/// Trace ids are random hex: Snappy shrank their plain pages by 9.4 %, and
/// only by the 4-byte length before each value, while compressing them was
/// ~2.5 % of a correlator thread in `tacet run` (callgrind, Kafka bench at
/// 20,000 journeys, two runs each). DELTA_LENGTH_BYTE_ARRAY, uncompressed,
/// is smaller still but cost as much to encode. So that column is stored
/// as it is.
pub fn writer_properties(schema: &Schema) -> WriterProperties {
    let mut props = WriterProperties::builder().set_compression(Compression::SNAPPY);
    for field in schema.fields() {
        let mostly_distinct = field.name() == "trace_id"
            || field.name() == "latency_ms"
            || matches!(field.data_type(), DataType::Timestamp(..) | DataType::Float64);
        if mostly_distinct {
            props = props.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
        }
        if field.name() == "trace_id" {
            props = props.set_column_compression(ColumnPath::from("trace_id"), Compression::UNCOMPRESSED);
        }
    }
    props.build()
}

/// Number of fixed (non-attribute) columns.
pub const FIXED_COLUMNS: usize = 15;
