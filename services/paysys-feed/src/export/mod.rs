//! `paysys-feed export`: payments from PostgreSQL to day-partitioned Parquet files.
//!
//! One read-only REPEATABLE READ transaction gives a consistent snapshot; rows stream from the
//! server ordered by creation time, so only one day's file is open at a time and memory stays
//! bounded by one batch plus one row group, whatever the size of the table.

mod columns;
mod partition;
mod watermark;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use sqlx::Connection;

use columns::BatchBuilder;
pub use columns::{PaymentRow, SCHEMA};
use partition::DayWriter;

use crate::key::KeySource;
use crate::progress;

/// Rows per Arrow batch handed to the Parquet writer.
const BATCH_ROWS: usize = 8192;
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
    let key = args.key.require()?;
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
    let (rows, written) = export_days(&mut tx, &key, &args.out, &days, &bar).await?;
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

/// Streams the payments of `days` into their files; returns the rows and the days written.
async fn export_days(
    conn: &mut sqlx::PgConnection,
    key: &fernet::Fernet,
    out: &std::path::Path,
    days: &[NaiveDate],
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(u64, BTreeSet<NaiveDate>)> {
    let mut rows = sqlx::query_as::<_, PaymentRow>(
        "SELECT id, amount_minor, currency::text AS currency, user_id, payee_id, status,
                decision->>'outcome' AS decision_outcome,
                (decision->>'decided_at')::timestamptz AS decided_at, created_at
         FROM payments WHERE (created_at AT TIME ZONE 'UTC')::date = ANY($1)
         ORDER BY created_at",
    )
    .bind(days)
    .fetch(conn);

    let mut builder = BatchBuilder::new();
    let mut writer: Option<DayWriter> = None;
    let mut written = BTreeSet::new();
    let mut total = 0u64;
    while let Some(row) = rows.try_next().await? {
        let day = row.created_at.date_naive();
        if writer.as_ref().is_none_or(|w| w.day() != day) {
            if let Some(done) = writer.take() {
                total += finish_day(done, &mut builder)?;
            }
            writer = Some(DayWriter::create(out, day)?);
            written.insert(day);
        }
        builder.push(&row, key)?;
        if builder.len() == BATCH_ROWS {
            let w = writer.as_mut().expect("a day is open");
            w.write(&builder.finish())?;
            bar.inc(BATCH_ROWS as u64);
        }
    }
    if let Some(done) = writer.take() {
        total += finish_day(done, &mut builder)?;
    }
    bar.set_position(total);
    Ok((total, written))
}

fn finish_day(mut writer: DayWriter, builder: &mut BatchBuilder) -> anyhow::Result<u64> {
    if builder.len() > 0 {
        writer.write(&builder.finish())?;
    }
    writer.commit()
}
