//! `paysys-feed export`: payments from PostgreSQL to day-partitioned Parquet files.
//!
//! One read-only REPEATABLE READ transaction gives a consistent snapshot; rows stream from the
//! server (binary COPY) ordered by creation time, so only one day's file is open at a time and
//! memory stays bounded by a few batches plus one row group, whatever the size of the table.

mod columns;
mod copy;
mod partition;
mod watermark;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use sqlx::Connection;

pub use columns::{BatchBuilder, ModelScore, PaymentRow, SCHEMA, ShadowScore};
use copy::CopyReader;
use datafusion::arrow::record_batch::RecordBatch;
use partition::DayWriter;

use crate::key::{KeySource, TokenMaker};
use crate::progress;

/// Rows per Arrow batch handed to the Parquet writer.
const BATCH_ROWS: usize = 8192;
/// Batches on their way from the reading task to the writing thread.
const CHANNEL_BATCHES: usize = 4;
/// How far before the watermark an incremental export looks again. A transaction stamps its
/// changes with its start time but may commit after a concurrent export's snapshot began;
/// the payments API's transactions last milliseconds, so this margin covers them many times.
const WATERMARK_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// PostgreSQL URL of the payments API's database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Folder of the day partitions (made when missing).
    #[arg(long, env = "PAYSYS_FEED_OUT")]
    pub out: PathBuf,
    #[command(flatten)]
    pub key: KeySource,
    /// First day (UTC) to export. With --to, exports exactly these days and leaves the
    /// watermark alone; without both, exports every day changed since the last export.
    #[arg(long, requires = "to")]
    pub from: Option<NaiveDate>,
    /// Last day (UTC, inclusive) to export.
    #[arg(long, requires = "from")]
    pub to: Option<NaiveDate>,
    /// Keep this many days of files, counted back from today (UTC, today included): older
    /// day folders are deleted and not exported again. Without it every day is kept.
    #[arg(long, env = "PAYSYS_FEED_RETAIN_DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub retain_days: Option<u32>,
}

/// What one export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub rows: u64,
    pub days_written: usize,
    pub days_removed: usize,
    /// Day folders deleted because they are older than `--retain-days`.
    pub days_expired: usize,
}

pub async fn run(args: &ExportArgs) -> anyhow::Result<Summary> {
    let mut tokens = args.key.require_token_maker()?;
    if let (Some(from), Some(to)) = (args.from, args.to)
        && from > to
    {
        anyhow::bail!("--from {from} is after --to {to}");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    partition::remove_leftovers(&args.out)?;

    let mut conn = sqlx::PgConnection::connect(&args.database_url)
        .await
        .context("cannot connect to PostgreSQL")?;
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let (snapshot_start,): (DateTime<Utc>,) =
        sqlx::query_as("SELECT now()").fetch_one(&mut *tx).await?;

    let days: Vec<NaiveDate> = match (args.from, args.to) {
        (Some(from), Some(to)) => from.iter_days().take_while(|d| *d <= to).collect(),
        _ => {
            let since = watermark::read(&args.out)?.map(|at| at - WATERMARK_OVERLAP);
            changed_days(&mut tx, since).await?
        }
    };
    // The first day kept; a day before it would be deleted at the end of this very run.
    let first_kept = args
        .retain_days
        .map(|days| snapshot_start.date_naive() - chrono::TimeDelta::days(i64::from(days) - 1));
    let days: Vec<NaiveDate> = days
        .into_iter()
        .filter(|day| first_kept.is_none_or(|first| *day >= first))
        .collect();

    let started = Instant::now();
    let bar = progress::rows("exporting");
    let (rows, written) = export_days(&mut tx, &mut tokens, &args.out, &days, &bar).await?;
    tx.commit().await?;
    bar.finish_and_clear();

    if args.from.is_none() {
        watermark::write(&args.out, snapshot_start)?;
    }
    // Days asked for that had no payments: an older file of theirs no longer holds.
    let empty: Vec<NaiveDate> = days.into_iter().filter(|d| !written.contains(d)).collect();
    for day in &empty {
        partition::remove_day(&args.out, *day)?;
    }
    let days_expired = match first_kept {
        Some(first) => partition::remove_days_before(&args.out, first)?,
        None => 0,
    };
    let summary = Summary {
        rows,
        days_written: written.len(),
        days_removed: empty.len(),
        days_expired,
    };
    eprintln!(
        "exported {} payments into {} day files in {:.2} s",
        summary.rows,
        summary.days_written,
        started.elapsed().as_secs_f64()
    );
    if let Some(first) = first_kept {
        eprintln!(
            "retention: deleted {} day folders before {first}",
            summary.days_expired
        );
    }
    Ok(summary)
}

/// Days (UTC) holding a payment created or changed since `since` (every day when `None`).
async fn changed_days(
    conn: &mut sqlx::PgConnection,
    since: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<NaiveDate>> {
    let days: Vec<(NaiveDate,)> = sqlx::query_as(
        "SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM payments
         WHERE $1::timestamptz IS NULL OR updated_at >= $1 OR created_at >= $1 ORDER BY 1",
    )
    .bind(since)
    .fetch_all(conn)
    .await?;
    Ok(days.into_iter().map(|(day,)| day).collect())
}

/// What the reading side hands the writing thread.
enum ToWriter {
    /// Start the file of this day (the previous one is complete).
    Open(NaiveDate),
    Batch(RecordBatch),
    /// The open day is complete: put its file in place.
    Commit,
}

/// Streams the payments of `days` into their files; returns the rows and the days written.
///
/// Two stages overlap: this task reads the rows (binary COPY), encrypts the user ids and
/// builds Arrow batches, while a thread encodes and compresses them into Parquet. Between
/// them is a channel of [`CHANNEL_BATCHES`] batches, so memory stays bounded by a few batches
/// plus the writer's row group. A day's file is put in place only on `Commit`: when either
/// stage fails, no day is replaced by a partial file.
async fn export_days(
    conn: &mut sqlx::PgConnection,
    tokens: &mut TokenMaker,
    out: &Path,
    days: &[NaiveDate],
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(u64, BTreeSet<NaiveDate>)> {
    let (send, receive) = tokio::sync::mpsc::channel(CHANNEL_BATCHES);
    let writer = {
        let out = out.to_owned();
        std::thread::Builder::new()
            .name("parquet-writer".into())
            .spawn(move || write_days(&out, receive))
            .context("cannot start the writer thread")?
    };
    let read = read_days(conn, tokens, days, bar, &send).await;
    drop(send);
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the Parquet writer thread panicked"))?;
    // A failed writer closes the channel, which makes the reader fail too: its error is the
    // cause.
    let (total, written) = written?;
    read?;
    bar.set_position(total);
    Ok((total, written))
}

/// The days' rows in creation order, as batches of one day each, ending every day with
/// `Commit`.
async fn read_days(
    conn: &mut sqlx::PgConnection,
    tokens: &mut TokenMaker,
    days: &[NaiveDate],
    bar: &indicatif::ProgressBar,
    send: &tokio::sync::mpsc::Sender<ToWriter>,
) -> anyhow::Result<()> {
    let closed = || anyhow::anyhow!("the Parquet writer stopped");
    if days.is_empty() {
        return Ok(());
    }
    // Days are plain dates (digits and dashes): safe to write into the statement, which the
    // COPY sub-protocol takes without parameters.
    let days: Vec<String> = days.iter().map(|day| format!("'{day}'")).collect();
    let statement = format!(
        "COPY (SELECT {}
               FROM payments
               WHERE (created_at AT TIME ZONE 'UTC')::date = ANY(ARRAY[{}]::date[])
               ORDER BY created_at)
         TO STDOUT (FORMAT binary)",
        copy::SELECT,
        days.join(", ")
    );
    let mut stream = conn.copy_out_raw(&statement).await?;
    let mut reader = CopyReader::default();
    let mut builder = BatchBuilder::new();
    let mut open: Option<NaiveDate> = None;
    while let Some(chunk) = stream.try_next().await? {
        reader.feed(&chunk);
        while let Some(row) = reader.next_row()? {
            let day = DateTime::from_timestamp_micros(row.created_at)
                .context("created_at out of range")?
                .date_naive();
            if open != Some(day) {
                if open.is_some() {
                    finish_day(send, &mut builder).await?;
                }
                send.send(ToWriter::Open(day)).await.map_err(|_| closed())?;
                open = Some(day);
            }
            builder.push(&row, tokens)?;
            if builder.len() == BATCH_ROWS {
                send.send(ToWriter::Batch(builder.finish()))
                    .await
                    .map_err(|_| closed())?;
                bar.inc(BATCH_ROWS as u64);
            }
        }
    }
    anyhow::ensure!(reader.finished(), "the COPY stream ended early");
    if open.is_some() {
        finish_day(send, &mut builder).await?;
    }
    Ok(())
}

/// Hands the open day's last rows to the writer, then has it put the day's file in place.
async fn finish_day(
    send: &tokio::sync::mpsc::Sender<ToWriter>,
    builder: &mut BatchBuilder,
) -> anyhow::Result<()> {
    let closed = |_| anyhow::anyhow!("the Parquet writer stopped");
    if !builder.is_empty() {
        send.send(ToWriter::Batch(builder.finish()))
            .await
            .map_err(closed)?;
    }
    send.send(ToWriter::Commit).await.map_err(closed)
}

/// The writing thread: one day file at a time, put in place on `Commit`.
fn write_days(
    out: &Path,
    mut receive: tokio::sync::mpsc::Receiver<ToWriter>,
) -> anyhow::Result<(u64, BTreeSet<NaiveDate>)> {
    let mut writer: Option<DayWriter> = None;
    let mut written = BTreeSet::new();
    let mut total = 0u64;
    while let Some(message) = receive.blocking_recv() {
        match message {
            ToWriter::Open(day) => {
                anyhow::ensure!(
                    writer.is_none(),
                    "day {day} opened before the last one ended"
                );
                writer = Some(DayWriter::create(out, day)?);
                written.insert(day);
            }
            ToWriter::Batch(batch) => writer
                .as_mut()
                .context("a batch outside of a day")?
                .write(&batch)?,
            ToWriter::Commit => {
                total += writer.take().context("no day to commit")?.commit()?;
            }
        }
    }
    // Closed with a day still open: the reader failed, and the day's file stays as it was.
    Ok((total, written))
}
