//! PostgreSQL access: every query of the service is here. Each submodule owns the queries of
//! one concern; handlers and workers call them and write no SQL themselves.

/// A statement's text as a `&str` constant: the `$then!` of the `*_statement!` macros that
/// write a statement once for both `sqlx`'s checked macros and the tests of its plan.
macro_rules! sql_text {
    ($sql:literal $(,)?) => {
        $sql
    };
}

pub mod decisions;
pub mod disputes;
pub mod events;
pub mod history;
pub mod idempotency;
pub mod outbox;
pub mod payments;
pub mod refunds;
pub mod velocity;
pub mod webhooks;

use std::time::Duration;

use paysys_runtime::backoff::{self, Retryable};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Migrations embedded in the binary, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Whether the database answers (readiness).
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT 1 AS one")
        .fetch_one(pool)
        .await
        .map(drop)
}

/// Opens the pool, waiting with backoff while the database is unreachable (pods start in any
/// order), then applies pending migrations.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options = PgPoolOptions::new()
        .max_connections(max_connections)
        // Bounded waits: a request that cannot get a connection promptly answers 503 rather
        // than queueing without limit.
        .acquire_timeout(Duration::from_secs(3));
    // No JIT: every query here is short, and PostgreSQL compiles any plan whose estimate passes
    // jit_above_cost before running it: the dispatcher's claim over 1,000 endpoints spent
    // ~170 ms compiling for well under 1 ms of work.
    let connect_options = url.parse::<PgConnectOptions>()?.options([("jit", "off")]);
    let pool = (|| options.clone().connect_with(connect_options.clone()))
        .retry(backoff::policy())
        .sleep(tokio::time::sleep)
        .when(is_transient)
        .notify(|error, wait| {
            tracing::warn!(url = %paysys_runtime::config::redact_url(url), %error, retry_in_ms = wait.as_millis() as u64, "PostgreSQL unreachable");
        })
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// Everything but a malformed URL is worth waiting out at start-up: in a cluster the database
/// may be starting, its Service not yet routed, or its credentials Secret not yet mounted.
fn is_transient(error: &sqlx::Error) -> bool {
    !matches!(error, sqlx::Error::Configuration(_))
}
