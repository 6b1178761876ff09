//! The undecided backlog: payments accepted (`201`) whose risk decision is not recorded yet.
//!
//! Admission can outrun the decision path (relay, broker, risk engine, decision consumer);
//! then the backlog, and with it the time from `201` to a decision, would grow without bound
//! while clients see nothing wrong. Each API replica reads the backlog (shared by all
//! replicas: it is read from PostgreSQL) a few times a second, exports it as metrics, and
//! refuses new payments with `503` + `Retry-After` while it is above `MAX_UNDECIDED`, so the
//! time to a decision stays bounded by about `MAX_UNDECIDED` / decision rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::store::payments;

/// How often the backlog is read: the admission bound reacts within this delay.
const REFRESH: Duration = Duration::from_millis(200);
/// `Retry-After` when refusing: about the time the decision path needs to drain a full bound.
const RETRY_AFTER_SECS: u64 = 1;

pub struct Backlog {
    /// Payments refused while more than this many are undecided (0: never).
    limit: i64,
    undecided: AtomicI64,
}

impl Backlog {
    pub fn new(limit: u64) -> Self {
        Self {
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            undecided: AtomicI64::new(0),
        }
    }

    /// `503` + `Retry-After` while the backlog is above the bound.
    pub fn admit(&self) -> Result<(), ApiError> {
        if self.limit > 0 && self.undecided.load(Ordering::Relaxed) > self.limit {
            return Err(ApiError::Unavailable {
                message: "too many payments are waiting for a risk decision; retry shortly".into(),
                retry_after_secs: RETRY_AFTER_SECS,
            });
        }
        Ok(())
    }

    /// Reads the backlog every [`REFRESH`] until `stop`. While the database is unreachable the
    /// last reading stays (writes fail with `503` anyway).
    pub async fn run(
        self: Arc<Self>,
        pool: PgPool,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) {
        loop {
            if let Ok(mut conn) = pool.acquire().await {
                match payments::undecided(&mut conn).await {
                    Ok(backlog) => {
                        self.undecided.store(backlog.count, Ordering::Relaxed);
                        metrics.undecided.set(backlog.count);
                        metrics
                            .undecided_oldest_seconds
                            .set(backlog.oldest_age_seconds);
                    }
                    Err(error) => tracing::debug!(%error, "cannot read the undecided backlog"),
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
    }
}
