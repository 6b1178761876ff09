//! The data feed's layout, written from simulated payments: `<out>/day=YYYY-MM-DD/
//! payments.parquet` with exactly the export's schema.
//!
//! The schema is not repeated here: every column of the schema given (the export's own
//! `paysys_feed::export::SCHEMA` at run time) is filled by its name, and a column this file
//! does not know stops the run with that name, so the simulator can never write a feed the
//! export would not.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use paysys_core::{FEATURES_VERSION, FeatureVector, Money, Outcome};
use uuid::Uuid;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Decimal128Builder, Float64Builder, Int32Builder,
    Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondArray, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::story::DisputeReason;

/// Name of each day's file, as the export names it.
pub const FILE_NAME: &str = "payments.parquet";

/// One exported payment, as the export would show it at the end of the simulated period.
#[derive(Debug, Clone)]
pub struct FeedRow {
    pub payment_id: Uuid,
    /// The Fernet token of the user id's text.
    pub encoded_user_id: Vec<u8>,
    pub payee_id: Uuid,
    pub money: Money,
    pub outcome: Outcome,
    pub rules_outcome: Outcome,
    pub created_at: DateTime<Utc>,
    pub decided_at: DateTime<Utc>,
    pub features: FeatureVector,
    /// Recorded before the end of the period (later disputes are not in the feed yet).
    pub dispute: Option<(DateTime<Utc>, DisputeReason)>,
}

/// The columns of the schema this file knows how to fill, in no particular order.
pub const KNOWN_COLUMNS: [&str; 24] = [
    "date",
    "currency",
    "amount",
    "encoded_user_id",
    "payment_id",
    "amount_minor",
    "currency_exponent",
    "amount_decimal",
    "payee_id",
    "status",
    "decision_outcome",
    "created_at",
    "decided_at",
    "disputed_at",
    "dispute_reason",
    "rules_outcome",
    "features_version",
    "features",
    "model_version",
    "model_score",
    "model_threshold",
    "shadow_model_version",
    "shadow_score",
    "refunded_amount_minor",
];

/// The rows as one batch of `schema`, each column filled by its name.
pub fn batch(schema: &SchemaRef, rows: &[FeedRow]) -> anyhow::Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = column(field, rows)?;
            if column.data_type() != field.data_type() {
                bail!(
                    "feed column `{}`: the simulator makes {} but the schema says {}",
                    field.name(),
                    column.data_type(),
                    field.data_type()
                );
            }
            Ok(column)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn strings<'a>(rows: &'a [FeedRow], value: impl Fn(&'a FeedRow) -> Option<&'a str>) -> ArrayRef {
    let mut b = StringBuilder::new();
    for row in rows {
        b.append_option(value(row));
    }
    Arc::new(b.finish())
}

fn uuids(rows: &[FeedRow], value: impl Fn(&FeedRow) -> Uuid) -> ArrayRef {
    let mut b = StringBuilder::new();
    let mut text = Uuid::encode_buffer();
    for row in rows {
        b.append_value(value(row).hyphenated().encode_lower(&mut text));
    }
    Arc::new(b.finish())
}

fn doubles(rows: &[FeedRow], value: impl Fn(&FeedRow) -> Option<f64>) -> ArrayRef {
    let mut b = Float64Builder::new();
    for row in rows {
        b.append_option(value(row));
    }
    Arc::new(b.finish())
}

fn micros(
    field: &Field,
    rows: &[FeedRow],
    value: impl Fn(&FeedRow) -> Option<DateTime<Utc>>,
) -> ArrayRef {
    let timezone = match field.data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let values: Vec<Option<i64>> = rows
        .iter()
        .map(|r| value(r).map(|t| t.timestamp_micros()))
        .collect();
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone_opt(timezone))
}

fn exponent(money: Money) -> i32 {
    money.currency.exponent() as i32
}

/// One column, by the schema field's name.
fn column(field: &Field, rows: &[FeedRow]) -> anyhow::Result<ArrayRef> {
    Ok(match field.name().as_str() {
        "date" => {
            let timezone = match field.data_type() {
                DataType::Timestamp(_, tz) => tz.clone(),
                _ => None,
            };
            let values: Vec<i64> = rows
                .iter()
                .map(|r| r.created_at.timestamp_micros() * 1000)
                .collect();
            Arc::new(TimestampNanosecondArray::from(values).with_timezone_opt(timezone))
        }
        "currency" => strings(rows, |r| Some(r.money.currency.code())),
        // The demo's display double; the exact columns follow.
        "amount" => doubles(rows, |r| {
            Some(r.money.minor as f64 / 10f64.powi(exponent(r.money)))
        }),
        "encoded_user_id" => {
            let mut b = BinaryBuilder::new();
            for row in rows {
                b.append_value(&row.encoded_user_id);
            }
            Arc::new(b.finish())
        }
        "payment_id" => uuids(rows, |r| r.payment_id),
        "payee_id" => uuids(rows, |r| r.payee_id),
        "amount_minor" => {
            let mut b = Int64Builder::new();
            rows.iter().for_each(|r| b.append_value(r.money.minor));
            Arc::new(b.finish())
        }
        // The story ends at the decision: nothing is captured, so nothing is refunded.
        "refunded_amount_minor" => {
            let mut b = Int64Builder::new();
            rows.iter().for_each(|_| b.append_value(0));
            Arc::new(b.finish())
        }
        "currency_exponent" => {
            let mut b = Int32Builder::new();
            rows.iter().for_each(|r| b.append_value(exponent(r.money)));
            Arc::new(b.finish())
        }
        "amount_decimal" => {
            let DataType::Decimal128(precision, scale) = *field.data_type() else {
                bail!("feed column `amount_decimal` is not a decimal128");
            };
            let mut b = Decimal128Builder::new().with_precision_and_scale(precision, scale)?;
            for r in rows {
                let shift = i32::from(scale) - exponent(r.money);
                anyhow::ensure!(
                    shift >= 0,
                    "{} has more decimals than `amount_decimal`",
                    r.money.currency
                );
                b.append_value(i128::from(r.money.minor) * 10i128.pow(shift as u32));
            }
            Arc::new(b.finish())
        }
        // Decided, not captured or canceled: the story ends at the decision.
        "status" | "decision_outcome" => strings(rows, |r| Some(r.outcome.as_str())),
        "rules_outcome" => strings(rows, |r| Some(r.rules_outcome.as_str())),
        "created_at" => micros(field, rows, |r| Some(r.created_at)),
        "decided_at" => micros(field, rows, |r| Some(r.decided_at)),
        "disputed_at" => micros(field, rows, |r| r.dispute.map(|d| d.0)),
        "dispute_reason" => strings(rows, |r| r.dispute.map(|d| d.1.as_str())),
        "features_version" => strings(rows, |_| Some(FEATURES_VERSION)),
        "features" => {
            let DataType::List(item) = field.data_type() else {
                bail!("feed column `features` is not a list");
            };
            let mut b = ListBuilder::new(Float64Builder::new()).with_field(item.clone());
            for r in rows {
                b.values().append_slice(&r.features.0);
                b.append(true);
            }
            Arc::new(b.finish())
        }
        // Rules mode: no model decided and none ran in shadow.
        "model_version" | "shadow_model_version" => strings(rows, |_| None),
        "model_score" | "model_threshold" | "shadow_score" => doubles(rows, |_| None),
        other => bail!(
            "the feed schema has a column `{other}` that paysys-sim does not know how to fill \
             (services/paysys-sim/src/feed.rs)"
        ),
    })
}

/// Rows per batch handed to a Parquet writer.
const BATCH_ROWS: usize = 64 * 1024;

fn parquet_writer(path: &Path, schema: SchemaRef) -> anyhow::Result<ArrowWriter<File>> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    Ok(ArrowWriter::try_new(file, schema, Some(properties))?)
}

/// Closes a file written under `temp` and puts it at `target` whole.
fn commit(writer: ArrowWriter<File>, temp: &Path, target: &Path) -> anyhow::Result<()> {
    let file = writer
        .into_inner()
        .with_context(|| format!("finishing {}", temp.display()))?;
    file.sync_all()?;
    std::fs::rename(temp, target).with_context(|| format!("cannot write {}", target.display()))
}

/// The folder of one day, as the export names it.
pub fn day_dir(out: &Path, day: NaiveDate) -> PathBuf {
    out.join(format!("day={}", day.format("%Y-%m-%d")))
}

/// One day's file being written.
struct OpenDay {
    day: NaiveDate,
    temp: PathBuf,
    writer: ArrowWriter<File>,
    rows: u64,
}

/// Writes rows, in creation order, into day partitions (UTC day of `created_at`): each day
/// is one file, written under a hidden name and renamed into place when complete.
pub struct DayWriter {
    out: PathBuf,
    schema: SchemaRef,
    open: Option<OpenDay>,
    pending: Vec<FeedRow>,
    /// Days written and their row counts.
    pub days: Vec<(NaiveDate, u64)>,
}

impl DayWriter {
    /// Refuses a folder that already holds day partitions: the feed written must be this
    /// run's only, not mixed with an older story's days.
    pub fn create(out: &Path, schema: SchemaRef) -> anyhow::Result<Self> {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        for entry in std::fs::read_dir(out)? {
            let name = entry?.file_name();
            if name.to_string_lossy().starts_with("day=") {
                bail!(
                    "{} already holds day partitions ({}): give an empty or new folder",
                    out.display(),
                    name.to_string_lossy()
                );
            }
        }
        Ok(Self {
            out: out.to_owned(),
            schema,
            open: None,
            pending: Vec::with_capacity(BATCH_ROWS),
            days: Vec::new(),
        })
    }

    pub fn push(&mut self, row: FeedRow) -> anyhow::Result<()> {
        let day = row.created_at.date_naive();
        if self.open.as_ref().is_some_and(|open| open.day > day) {
            bail!("rows must come in creation order: {day} after a later day");
        }
        if self.open.as_ref().is_none_or(|open| open.day != day) {
            self.close_day()?;
            let dir = day_dir(&self.out, day);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let temp = dir.join(format!(".{FILE_NAME}.tmp"));
            self.open = Some(OpenDay {
                day,
                writer: parquet_writer(&temp, self.schema.clone())?,
                temp,
                rows: 0,
            });
        }
        self.pending.push(row);
        if self.pending.len() == BATCH_ROWS {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> anyhow::Result<()> {
        let Some(open) = &mut self.open else {
            return Ok(());
        };
        if !self.pending.is_empty() {
            open.writer.write(&batch(&self.schema, &self.pending)?)?;
            open.rows += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(())
    }

    fn close_day(&mut self) -> anyhow::Result<()> {
        self.write_pending()?;
        if let Some(open) = self.open.take() {
            commit(
                open.writer,
                &open.temp,
                &day_dir(&self.out, open.day).join(FILE_NAME),
            )?;
            self.days.push((open.day, open.rows));
        }
        Ok(())
    }

    /// Completes the last day; returns the days written and their rows.
    pub fn finish(mut self) -> anyhow::Result<Vec<(NaiveDate, u64)>> {
        self.close_day()?;
        Ok(self.days)
    }
}

/// The truth file's schema: what each payment really was.
pub fn truth_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("payment_id", DataType::Utf8, false),
        Field::new("is_fraud", DataType::Boolean, false),
        Field::new("pattern", DataType::Utf8, false),
    ]))
}

/// Writes the truth file (payment id, is_fraud, pattern), for evaluating simulated hold-outs
/// only: training never reads it.
pub struct TruthWriter {
    temp: PathBuf,
    target: PathBuf,
    writer: ArrowWriter<File>,
    pending: Vec<(Uuid, crate::story::Pattern)>,
}

impl TruthWriter {
    pub fn create(target: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let name = target
            .file_name()
            .context("the truth file needs a file name")?
            .to_string_lossy();
        let temp = target.with_file_name(format!(".{name}.tmp"));
        Ok(Self {
            writer: parquet_writer(&temp, truth_schema())?,
            temp,
            target: target.to_owned(),
            pending: Vec::with_capacity(BATCH_ROWS),
        })
    }

    pub fn push(&mut self, payment_id: Uuid, pattern: crate::story::Pattern) -> anyhow::Result<()> {
        self.pending.push((payment_id, pattern));
        if self.pending.len() == BATCH_ROWS {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut ids = StringBuilder::new();
        let mut fraud = BooleanBuilder::new();
        let mut patterns = StringBuilder::new();
        let mut text = Uuid::encode_buffer();
        for (id, pattern) in self.pending.drain(..) {
            ids.append_value(id.hyphenated().encode_lower(&mut text));
            fraud.append_value(pattern.is_fraud());
            patterns.append_value(pattern.as_str());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ids.finish()),
            Arc::new(fraud.finish()),
            Arc::new(patterns.finish()),
        ];
        self.writer
            .write(&RecordBatch::try_new(truth_schema(), columns)?)?;
        Ok(())
    }

    pub fn finish(mut self) -> anyhow::Result<()> {
        self.write_pending()?;
        commit(self.writer, &self.temp, &self.target)
    }
}
