//! Arrow record batches as PostgreSQL rows, in text or binary format.
//!
//! Each Arrow type maps to one PostgreSQL type (integers to `int8`, floats
//! to `float8`, timestamps to `timestamp` in UTC, dates to `date`, the rest
//! to `text`), and each value is encoded as that type, so clients that ask
//! for binary results (pgx behind Grafana, asyncpg, JDBC) read real numbers
//! and times, and text clients read PostgreSQL's own text forms.

use std::error::Error;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Date32Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions as PgFormatOptions;
use postgres_types::{IsNull, ToSql, to_sql_checked};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from the Unix epoch to PostgreSQL's.
const PG_EPOCH_DAYS: i32 = 10_957;

/// The PostgreSQL type a column of `t` is sent as.
pub fn pg_type(t: &DataType) -> Type {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Type::INT8,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Type::FLOAT8,
        DataType::Boolean => Type::BOOL,
        DataType::Timestamp(_, _) => Type::TIMESTAMP,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        _ => Type::TEXT,
    }
}

/// Field descriptions of `schema`'s columns in the formats `format` asks for.
/// A column the client sent no format code for is text (see [`check_codes`]).
pub fn fields(schema: &datafusion::arrow::datatypes::Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type(f.data_type()),
                format_at(format, i),
            )
        })
        .collect()
}

/// The format of item `i`. pgwire's own `Format::format_for` indexes the
/// client's codes unchecked; a Bind with fewer codes than items must be an
/// error, not a panic.
pub fn format_at(format: &Format, i: usize) -> FieldFormat {
    match format {
        Format::Individual(codes) if i >= codes.len() => FieldFormat::Text,
        f => f.format_for(i),
    }
}

/// Checks that a Bind gave one format code per item (or one, or none, which
/// pgwire turns into a unified format), as the protocol requires.
pub fn check_codes(format: &Format, items: usize, what: &str) -> Result<(), String> {
    match format {
        Format::Individual(codes) if codes.len() != items => Err(format!(
            "bind message has {} {what} format codes for {items} {what}s",
            codes.len()
        )),
        _ => Ok(()),
    }
}

/// A `timestamp` value: microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy)]
struct Timestamp(i64);

impl ToSql for Timestamp {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_i64(self.0 - PG_EPOCH_MICROS);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMP
    }

    to_sql_checked!();
}

impl ToSqlText for Timestamp {
    fn to_sql_text(
        &self,
        _: &Type,
        out: &mut BytesMut,
        _: &PgFormatOptions,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let t = chrono::DateTime::from_timestamp_micros(self.0).ok_or("timestamp out of range")?;
        out.put_slice(t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string().as_bytes());
        Ok(IsNull::No)
    }
}

/// A `date` value: days since the Unix epoch.
#[derive(Debug, Clone, Copy)]
struct Date(i32);

impl ToSql for Date {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_i32(self.0 - PG_EPOCH_DAYS);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::DATE
    }

    to_sql_checked!();
}

impl ToSqlText for Date {
    fn to_sql_text(
        &self,
        _: &Type,
        out: &mut BytesMut,
        _: &PgFormatOptions,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
        let d = epoch
            .checked_add_signed(chrono::Duration::days(self.0.into()))
            .ok_or("date out of range")?;
        out.put_slice(d.format("%Y-%m-%d").to_string().as_bytes());
        Ok(IsNull::No)
    }
}

/// One column, cast once to the Arrow type its PostgreSQL type is read from.
enum Column<'a> {
    Int(ArrayRef),
    Float(ArrayRef),
    Bool(&'a ArrayRef),
    Timestamp(ArrayRef),
    Date(ArrayRef),
    Text(&'a ArrayRef, ArrayFormatter<'a>),
}

fn cast_error(e: impl std::fmt::Display) -> pgwire::error::PgWireError {
    crate::server::user_error(format!("cannot encode a result column: {e}"))
}

impl<'a> Column<'a> {
    fn new(array: &'a ArrayRef, options: &'a FormatOptions<'a>) -> PgWireResult<Self> {
        let to = |t: &DataType| cast(array, t).map_err(cast_error);
        Ok(match pg_type(array.data_type()) {
            Type::INT8 => Column::Int(to(&DataType::Int64)?),
            Type::FLOAT8 => Column::Float(to(&DataType::Float64)?),
            Type::BOOL => Column::Bool(array),
            Type::TIMESTAMP => Column::Timestamp(to(&DataType::Timestamp(TimeUnit::Microsecond, None))?),
            Type::DATE => Column::Date(to(&DataType::Date32)?),
            _ => Column::Text(
                array,
                ArrayFormatter::try_new(array.as_ref(), options).map_err(cast_error)?,
            ),
        })
    }

    fn encode(&self, row: usize, encoder: &mut DataRowEncoder) -> PgWireResult<()> {
        let null = match self {
            Column::Int(a) | Column::Float(a) | Column::Timestamp(a) | Column::Date(a) => a.is_null(row),
            Column::Bool(a) | Column::Text(a, _) => a.is_null(row),
        };
        match self {
            Column::Int(a) => encoder.encode_field(&(!null).then(|| a.as_primitive::<Int64Type>().value(row))),
            Column::Float(a) => encoder.encode_field(&(!null).then(|| a.as_primitive::<Float64Type>().value(row))),
            Column::Bool(a) => encoder.encode_field(&(!null).then(|| a.as_boolean().value(row))),
            Column::Timestamp(a) => encoder
                .encode_field(&(!null).then(|| Timestamp(a.as_primitive::<TimestampMicrosecondType>().value(row)))),
            Column::Date(a) => encoder.encode_field(&(!null).then(|| Date(a.as_primitive::<Date32Type>().value(row)))),
            Column::Text(_, f) => encoder.encode_field(&(!null).then(|| f.value(row).to_string())),
        }
    }
}

/// Every row of `batches`, encoded as `fields` say.
pub fn rows(batches: &[RecordBatch], fields: &Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<PgWireResult<DataRow>>> {
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in batches {
        let columns = batch
            .columns()
            .iter()
            .map(|c| Column::new(c, &options))
            .collect::<PgWireResult<Vec<_>>>()?;
        for row in 0..batch.num_rows() {
            let mut encoder = DataRowEncoder::new(fields.clone());
            for column in &columns {
                column.encode(row, &mut encoder)?;
            }
            rows.push(Ok(encoder.take_row()));
        }
    }
    Ok(rows)
}

/// Text format for every column (the simple query protocol).
pub fn all_text() -> Format {
    Format::UnifiedText
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Date32Array, Float64Array, Int32Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    fn one_row(format: Format) -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int32, true),
            Field::new("x", DataType::Float64, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new("d", DataType::Date32, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int32Array::from(vec![Some(7)])),
                Arc::new(Float64Array::from(vec![None])),
                Arc::new(TimestampMillisecondArray::from(vec![Some(1_700_000_000_123)]).with_timezone("UTC")),
                Arc::new(Date32Array::from(vec![Some(19_676)])),
                Arc::new(StringArray::from(vec![Some("funds_transfer")])),
            ],
        )
        .unwrap();
        let fields = Arc::new(fields(&schema, &format));
        let rows = rows(&[batch], &fields).unwrap();
        let mut out = BytesMut::new();
        let row = rows.into_iter().next().unwrap().unwrap();
        out.put_slice(&row.data);
        out.to_vec()
    }

    /// Length-prefixed fields of a data row body.
    fn split(mut data: &[u8]) -> Vec<Option<Vec<u8>>> {
        let mut fields = Vec::new();
        while data.len() >= 4 {
            let len = i32::from_be_bytes(data[..4].try_into().unwrap());
            data = &data[4..];
            if len < 0 {
                fields.push(None);
            } else {
                fields.push(Some(data[..len as usize].to_vec()));
                data = &data[len as usize..];
            }
        }
        fields
    }

    #[test]
    fn too_few_format_codes_are_an_error_not_a_panic() {
        let codes = Format::Individual(vec![1, 0]);
        assert_eq!(format_at(&codes, 5), FieldFormat::Text);
        assert!(check_codes(&codes, 2, "result column").is_ok());
        let err = check_codes(&codes, 3, "result column").unwrap_err();
        assert!(err.contains("2 result column format codes for 3"), "{err}");
        assert!(check_codes(&Format::UnifiedBinary, 7, "parameter").is_ok());
        let schema = Schema::new(vec![Field::new("a", DataType::Int64, true); 3]);
        assert_eq!(fields(&schema, &codes).len(), 3);
    }

    #[test]
    fn text_rows_use_postgres_text_forms() {
        let fields = split(&one_row(Format::UnifiedText));
        let text: Vec<Option<String>> = fields
            .into_iter()
            .map(|f| f.map(|b| String::from_utf8(b).unwrap()))
            .collect();
        assert_eq!(
            text,
            vec![
                Some("7".into()),
                None,
                Some("2023-11-14 22:13:20.123".into()),
                Some("2023-11-15".into()),
                Some("funds_transfer".into()),
            ]
        );
    }

    #[test]
    fn binary_rows_use_postgres_binary_forms() {
        let fields = split(&one_row(Format::UnifiedBinary));
        assert_eq!(fields[0].as_deref(), Some(&7i64.to_be_bytes()[..]));
        assert_eq!(fields[1], None);
        let micros = 1_700_000_000_123_000i64 - PG_EPOCH_MICROS;
        assert_eq!(fields[2].as_deref(), Some(&micros.to_be_bytes()[..]));
        assert_eq!(fields[3].as_deref(), Some(&(19_676 - PG_EPOCH_DAYS).to_be_bytes()[..]));
        assert_eq!(fields[4].as_deref(), Some(&b"funds_transfer"[..]));
    }
}
