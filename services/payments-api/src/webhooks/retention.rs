//! Retention: events and delivery attempts are kept for a while, then deleted, so that the
//! tables do not grow forever. A task of every API process deletes, every
//! `WEBHOOK_RETENTION_INTERVAL_SECONDS`, what is older than its retention, in batches of
//! `WEBHOOK_RETENTION_BATCH_SIZE` rows (each batch its own short statement, so neither a
//! replica's pool nor the tables are held for long; replicas running at once skip each
//! other's rows).
//!
//! An event still owed to an endpoint (a delivery row refers to it) is never deleted,
//! whatever its age. Retention must exceed the retry window (`WEBHOOK_RETRY_WINDOW_SECONDS`,
//! 3 days by default), which the configuration enforces: an event is retried that long, and
//! `GET /v1/events` must still hold it for a merchant replaying what was given up.

use std::time::Duration;

use paysys_runtime::config::{self, ConfigError, Source};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// How long events and attempts are kept, and how the deletion runs.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Events older than this are deleted (unless still owed to an endpoint).
    pub events: Duration,
    /// Delivery attempts older than this are deleted.
    pub attempts: Duration,
    /// Time between two runs of the deletion.
    pub interval: Duration,
    /// Rows deleted per statement at most.
    pub batch_size: i64,
}

impl Retention {
    /// From `WEBHOOK_EVENTS_RETENTION_DAYS` and `WEBHOOK_ATTEMPTS_RETENTION_DAYS` (30 each),
    /// both longer than `retry_window`; `WEBHOOK_RETENTION_INTERVAL_SECONDS` (3600) and
    /// `WEBHOOK_RETENTION_BATCH_SIZE` (1000).
    pub fn from_source(source: &dyn Source, retry_window: Duration) -> Result<Self, ConfigError> {
        let days = |name: &str| -> Result<Duration, ConfigError> {
            let days: u32 = config::parse_or(source, name, 30)?;
            let kept = DAY * days;
            if kept <= retry_window {
                return Err(ConfigError::new(
                    name,
                    format!(
                        "must exceed the retry window (WEBHOOK_RETRY_WINDOW_SECONDS = {} s, {:.1} days): \
                         events are retried that long, and replayed from GET /v1/events after",
                        retry_window.as_secs(),
                        retry_window.as_secs_f64() / DAY.as_secs_f64()
                    ),
                ));
            }
            Ok(kept)
        };
        let interval: u64 = config::parse_or(source, "WEBHOOK_RETENTION_INTERVAL_SECONDS", 3600)?;
        let batch_size: i64 = config::parse_or(source, "WEBHOOK_RETENTION_BATCH_SIZE", 1000)?;
        if interval == 0 {
            return Err(ConfigError::new(
                "WEBHOOK_RETENTION_INTERVAL_SECONDS",
                "must be greater than zero",
            ));
        }
        if batch_size <= 0 {
            return Err(ConfigError::new(
                "WEBHOOK_RETENTION_BATCH_SIZE",
                "must be greater than zero",
            ));
        }
        Ok(Self {
            events: days("WEBHOOK_EVENTS_RETENTION_DAYS")?,
            attempts: days("WEBHOOK_ATTEMPTS_RETENTION_DAYS")?,
            interval: Duration::from_secs(interval),
            batch_size,
        })
    }
}

/// What one run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    pub events: u64,
    pub attempts: u64,
}

/// Deletes what is past its retention until `stop`: at once, then every `interval`. A
/// failure (the database away) is logged and the next run tries again.
pub async fn run(pool: PgPool, retention: Retention, stop: CancellationToken) {
    loop {
        match purge(&pool, &retention, &stop).await {
            Ok(Deleted {
                events: 0,
                attempts: 0,
            }) => {}
            Ok(deleted) => tracing::info!(
                events = deleted.events,
                attempts = deleted.attempts,
                "webhook events and attempts past their retention deleted"
            ),
            Err(error) => {
                tracing::warn!(%error, "cannot delete webhook events and attempts past their retention")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retention.interval) => {}
        }
    }
}

/// One run: batch after batch until a batch comes back short (or `stop`).
pub async fn purge(
    pool: &PgPool,
    retention: &Retention,
    stop: &CancellationToken,
) -> Result<Deleted, sqlx::Error> {
    let mut deleted = Deleted::default();
    loop {
        // A connection per batch: requests get their turn in between.
        let mut conn = pool.acquire().await?;
        let events =
            store::events::delete_expired(&mut conn, retention.events, retention.batch_size)
                .await?;
        let attempts = store::webhooks::delete_expired_attempts(
            &mut conn,
            retention.attempts,
            retention.batch_size,
        )
        .await?;
        deleted.events += events;
        deleted.attempts += attempts;
        let full = retention.batch_size as u64;
        if (events < full && attempts < full) || stop.is_cancelled() {
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn retention(pairs: &[(&str, &str)], window_days: u64) -> Result<Retention, ConfigError> {
        let source: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Retention::from_source(&source, DAY * window_days as u32)
    }

    #[test]
    fn defaults_keep_30_days_and_retention_must_exceed_the_retry_window() {
        let defaults = retention(&[], 3).unwrap();
        assert_eq!(defaults.events, DAY * 30);
        assert_eq!(defaults.attempts, DAY * 30);
        assert_eq!(defaults.interval, Duration::from_secs(3600));
        assert_eq!(defaults.batch_size, 1000);

        let error = retention(&[("WEBHOOK_EVENTS_RETENTION_DAYS", "3")], 3).unwrap_err();
        assert_eq!(error.name, "WEBHOOK_EVENTS_RETENTION_DAYS");
        assert!(error.to_string().contains("retry window"), "{error}");
        let error = retention(
            &[
                ("WEBHOOK_EVENTS_RETENTION_DAYS", "40"),
                ("WEBHOOK_ATTEMPTS_RETENTION_DAYS", "10"),
            ],
            30,
        )
        .unwrap_err();
        assert_eq!(error.name, "WEBHOOK_ATTEMPTS_RETENTION_DAYS");
        assert!(retention(&[("WEBHOOK_EVENTS_RETENTION_DAYS", "4")], 3).is_ok());
        for (name, value) in [
            ("WEBHOOK_RETENTION_INTERVAL_SECONDS", "0"),
            ("WEBHOOK_RETENTION_BATCH_SIZE", "0"),
            ("WEBHOOK_EVENTS_RETENTION_DAYS", "a month"),
        ] {
            assert_eq!(retention(&[(name, value)], 3).unwrap_err().name, name);
        }
    }
}
