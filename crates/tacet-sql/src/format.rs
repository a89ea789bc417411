//! Query results as text: a table for people, CSV and JSON for programs.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::error::Result;

/// How `tacet sql` prints results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Csv,
    Json,
}

/// Renders `batches` in `format`.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    Ok(match format {
        Format::Table => format!("{}\n", pretty_format_batches(batches)?),
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for b in batches {
                    w.write(b)?;
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        Format::Json => {
            let mut out = Vec::new();
            {
                let mut w = datafusion::arrow::json::ArrayWriter::new(&mut out);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            let mut text = String::from_utf8_lossy(&out).into_owned();
            if text.is_empty() {
                text.push_str("[]");
            }
            text.push('\n');
            text
        }
    })
}
