//! Day partitions: `<out>/day=YYYY-MM-DD/payments.parquet`, one file per day, replaced whole.
//!
//! A day is written to a hidden temporary file beside its final name and renamed over it once
//! complete and synced, so a reader sees either the old file or the new one, never a part.
//! Readers skip the temporary files: Spark ignores names starting with `.`, DataFusion lists
//! only names ending in `.parquet`.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::NaiveDate;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;

use super::columns::SCHEMA;

/// Name of each day's file.
pub const FILE_NAME: &str = "payments.parquet";
const TEMP_PREFIX: &str = ".payments.parquet.tmp-";
/// Columns with few distinct values, stored as dictionaries.
const DICTIONARY_COLUMNS: [&str; 4] = [
    "currency",
    "currency_exponent",
    "status",
    "decision_outcome",
];
/// Rows per Parquet row group: bounds the writer's buffer (a few tens of MB at most).
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// The folder of one day.
pub fn day_dir(out: &Path, day: NaiveDate) -> PathBuf {
    out.join(format!("day={}", day.format("%Y-%m-%d")))
}

/// A day's file being written.
pub struct DayWriter {
    temp: PathBuf,
    target: PathBuf,
    writer: ArrowWriter<File>,
    rows: u64,
}

impl DayWriter {
    pub fn create(out: &Path, day: NaiveDate) -> anyhow::Result<Self> {
        let dir = day_dir(out, day);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let temp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let file =
            File::create(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
        let mut properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            // Dictionaries only where values repeat: for the ids, tokens, amounts and times
            // the writer would build one per row group, find it too large and fall back to
            // plain encoding, after hashing every value (an eighth of the export's time).
            .set_dictionary_enabled(false);
        for column in DICTIONARY_COLUMNS {
            properties =
                properties.set_column_dictionary_enabled(ColumnPath::from(column.to_owned()), true);
        }
        let properties = properties.build();
        let writer = ArrowWriter::try_new(file, SCHEMA.clone(), Some(properties))?;
        Ok(Self {
            temp,
            target: dir.join(FILE_NAME),
            writer,
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .with_context(|| format!("writing {}", self.temp.display()))
    }

    /// Completes the file and puts it in place of the day's previous one; returns its rows.
    pub fn commit(self) -> anyhow::Result<u64> {
        let file = self
            .writer
            .into_inner()
            .with_context(|| format!("finishing {}", self.temp.display()))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.temp, &self.target)
            .with_context(|| format!("cannot replace {}", self.target.display()))?;
        sync_dir(self.target.parent().expect("a day folder"))?;
        Ok(self.rows)
    }
}

/// Removes a day's file: the day has no payments (any more) in the exported range.
pub fn remove_day(out: &Path, day: NaiveDate) -> anyhow::Result<()> {
    let dir = day_dir(out, day);
    match std::fs::remove_file(dir.join(FILE_NAME)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
    let _ = std::fs::remove_dir(&dir);
    Ok(())
}

/// Deletes the folders of the days before `first` (retention); returns how many. Only
/// folders named `day=YYYY-MM-DD` are touched: anything else in `out` is not the export's.
pub fn remove_days_before(out: &Path, first: NaiveDate) -> anyhow::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(out).with_context(|| format!("cannot list {}", out.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(day) = name
            .to_str()
            .and_then(|name| name.strip_prefix("day="))
            .and_then(|day| NaiveDate::parse_from_str(day, "%Y-%m-%d").ok())
        else {
            continue;
        };
        if day < first && entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(out)?;
    }
    Ok(removed)
}

/// Deletes temporary files an interrupted export left behind.
pub fn remove_leftovers(out: &Path) -> anyhow::Result<()> {
    let Ok(days) = std::fs::read_dir(out) else {
        return Ok(());
    };
    for day in days.flatten() {
        if !day.file_name().to_string_lossy().starts_with("day=") {
            continue;
        }
        for file in std::fs::read_dir(day.path())?.flatten() {
            if file.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                std::fs::remove_file(file.path())?;
            }
        }
    }
    Ok(())
}

/// Makes a rename durable: the directory entry itself must reach the disk.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}
