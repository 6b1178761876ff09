//! Where the report's tables go: a table on the terminal, or CSV, JSON or Parquet files.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::Context;
use datafusion::arrow::csv;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;

/// Rows per row group of a Parquet output. The writer holds a whole row group in memory
/// before it flushes it; Parquet's default (1 Mi rows) made that buffer the largest one of
/// the report, and one that grew with the input up to a million rows.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// The output format chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables on the terminal (the payments cut to --limit rows).
    Table,
    Csv,
    /// A JSON array of objects per output.
    Json,
    Parquet,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Table => "txt",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Parquet => "parquet",
        }
    }
}

/// A file being written batch by batch.
pub enum Sink {
    Csv(csv::Writer<BufWriter<File>>),
    Json(json::ArrayWriter<BufWriter<File>>),
    Parquet(ArrowWriter<File>),
}

impl Sink {
    /// Creates `<dir>/<name>.<ext>`, replacing an older one.
    pub fn create(
        dir: &Path,
        name: &str,
        format: Format,
        schema: SchemaRef,
    ) -> anyhow::Result<Sink> {
        let path: PathBuf = dir.join(format!("{name}.{}", format.extension()));
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(match format {
            Format::Csv => Sink::Csv(csv::Writer::new(BufWriter::new(file))),
            Format::Json => Sink::Json(json::ArrayWriter::new(BufWriter::new(file))),
            Format::Parquet => {
                let properties = WriterProperties::builder()
                    .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                    .build();
                Sink::Parquet(ArrowWriter::try_new(file, schema, Some(properties))?)
            }
            Format::Table => unreachable!("tables go to the terminal"),
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        match self {
            Sink::Csv(w) => w.write(batch)?,
            Sink::Json(w) => w.write(batch)?,
            Sink::Parquet(w) => w.write(batch)?,
        }
        Ok(())
    }

    pub fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Csv(w) => {
                w.into_inner()
                    .into_inner()
                    .map_err(|e| e.into_error())?
                    .sync_all()?;
            }
            Sink::Json(mut w) => {
                w.finish()?;
                w.into_inner()
                    .into_inner()
                    .map_err(|e| e.into_error())?
                    .sync_all()?;
            }
            Sink::Parquet(w) => {
                w.close()?;
            }
        }
        Ok(())
    }
}
