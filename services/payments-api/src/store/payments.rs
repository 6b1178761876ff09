//! Payments and their audit trail.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use paysys_core::{Currency, DecisionMessage, Money, PaymentStatus};
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use super::disputes::Dispute;
use super::history::{self, StoredHistory};
use crate::validation::NewPayment;

/// A payment row.
#[derive(Debug, Clone, FromRow)]
pub struct PaymentRecord {
    pub id: Uuid,
    pub principal: String,
    pub amount_minor: i64,
    pub currency: String,
    pub user_id: Uuid,
    pub payee_id: Uuid,
    pub payment_method_id: Uuid,
    pub status: PaymentStatus,
    pub velocity_window_seconds: i32,
    pub velocity_count: i64,
    pub velocity_total_minor: i64,
    pub decision: Option<sqlx::types::Json<DecisionMessage>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What the risk engine was told of the payer, payee and method ([`super::history`]).
    #[sqlx(flatten)]
    pub history: StoredHistory,
    /// `paysys_core::FEATURES_VERSION` of the features the decision was made on (the values
    /// themselves, `decision_features`, are read by the data feed only).
    pub decision_features_version: Option<String>,
    pub dispute_reason: Option<String>,
    pub dispute_note: Option<String>,
    pub disputed_at: Option<DateTime<Utc>>,
    /// The sum of the payment's refunds ([`super::refunds`]).
    pub refunded_minor: i64,
}

impl PaymentRecord {
    pub fn money(&self) -> Money {
        Money {
            minor: self.amount_minor,
            currency: self
                .currency
                .parse::<Currency>()
                .expect("stored currencies were validated on the way in"),
        }
    }

    /// The payment's dispute, if any.
    pub fn dispute(&self) -> Option<Dispute> {
        Dispute::from_columns(
            self.dispute_reason.as_deref(),
            self.dispute_note.as_deref(),
            self.disputed_at,
        )
    }
}

/// One recorded status change.
#[derive(Debug, Clone, FromRow)]
pub struct PaymentEvent {
    pub from_status: Option<PaymentStatus>,
    pub to_status: PaymentStatus,
    pub cause: String,
    pub detail: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

/// The columns of [`PaymentRecord`].
pub static COLUMNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "id, principal, amount_minor, currency, user_id, payee_id, payment_method_id, status, \
         velocity_window_seconds, velocity_count, velocity_total_minor, decision, created_at, \
         updated_at, {}, decision_features_version, dispute_reason, dispute_note, disputed_at, \
         refunded_minor",
        history::COLUMNS
    )
});

/// A validated payment ready to be inserted under its id and owner.
#[derive(Debug, Clone)]
pub struct Insert {
    pub id: Uuid,
    pub principal: String,
    pub payment: NewPayment,
}

/// Inserts payments with their first audit events and outbox rows, and adds them to their
/// payers' running totals, in one call of `paysys_insert_payments` (migrations 0004 and 0005:
/// one round trip, and one commit when the connection is not in a transaction; its statements
/// reach rows by key whatever the planner believes about the tables). Each payment's velocity
/// over `window` counts the payer's earlier payments, committed by any replica or earlier in
/// `rows`, exactly, at a cost independent of the payer's history ([`super::velocity`]).
/// Returns each payment's creation time, in the order of `rows`.
pub async fn insert_many(
    conn: &mut PgConnection,
    rows: &[Insert],
    window: Duration,
) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
    let window_seconds = i32::try_from(window.as_secs()).unwrap_or(i32::MAX);
    let column = |f: fn(&Insert) -> Uuid| rows.iter().map(f).collect::<Vec<Uuid>>();
    let created: Vec<(i64, DateTime<Utc>)> =
        sqlx::query_as("SELECT * FROM paysys_insert_payments($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(column(|r| r.id))
            .bind(
                rows.iter()
                    .map(|r| r.principal.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| r.payment.money.minor)
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| r.payment.money.currency.code())
                    .collect::<Vec<_>>(),
            )
            .bind(column(|r| r.payment.user_id))
            .bind(column(|r| r.payment.payee_id))
            .bind(column(|r| r.payment.payment_method_id))
            .bind(window_seconds)
            .fetch_all(conn)
            .await?;
    Ok(created.into_iter().map(|(_, at)| at).collect())
}

/// Counts the payments in the status bound as `$1`; public for the test of its plan.
pub const UNDECIDED: &str = "SELECT count(*) AS count,
        coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8
            AS oldest_age_seconds
    FROM payments WHERE status = $1";

/// Payments waiting for their risk decision.
#[derive(Debug, Clone, Copy, PartialEq, FromRow)]
pub struct Undecided {
    pub count: i64,
    /// Age of the oldest one; 0 when there is none.
    pub oldest_age_seconds: f64,
}

/// The undecided backlog, from the partial index `payments_undecided` (cost proportional to
/// the backlog, which admission bounds). The status is bound, not spelled: PostgreSQL plans
/// a bound value as the literal it holds (custom plans; a generic plan would cost a scan of
/// the table, so the planner keeps the custom one), and so still matches the index's
/// `WHERE status = 'pending'` (`undecided_uses_the_partial_index` checks).
pub async fn undecided(conn: &mut PgConnection) -> Result<Undecided, sqlx::Error> {
    sqlx::query_as(UNDECIDED)
        .bind(PaymentStatus::Pending)
        .fetch_one(conn)
        .await
}

/// The payment if it exists and belongs to `principal`.
pub async fn find(
    conn: &mut PgConnection,
    principal: &str,
    id: Uuid,
) -> Result<Option<PaymentRecord>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM payments WHERE id = $1 AND principal = $2",
        *COLUMNS
    )))
    .bind(id)
    .bind(principal)
    .fetch_optional(conn)
    .await
}

/// The payment's status changes, oldest first.
pub async fn history(conn: &mut PgConnection, id: Uuid) -> Result<Vec<PaymentEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT from_status, to_status, cause, detail, at
         FROM payment_events WHERE payment_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(conn)
    .await
}

/// Filters and page position for listing.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub status: Option<PaymentStatus>,
    pub user_id: Option<Uuid>,
    /// Only payments created before this one (the cursor; ids are time-ordered UUIDv7).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// A principal's payments, newest first; one more row than `limit` tells whether more exist.
pub async fn list(
    conn: &mut PgConnection,
    principal: &str,
    query: &ListQuery,
) -> Result<(Vec<PaymentRecord>, bool), sqlx::Error> {
    let mut rows: Vec<PaymentRecord> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM payments
         WHERE principal = $1
           AND ($2::uuid IS NULL OR id < $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::uuid IS NULL OR user_id = $4)
         ORDER BY id DESC
         LIMIT $5",
        *COLUMNS
    )))
    .bind(principal)
    .bind(query.before)
    .bind(query.status)
    .bind(query.user_id)
    .bind(query.limit + 1)
    .fetch_all(conn)
    .await?;
    let has_more = rows.len() as i64 > query.limit;
    rows.truncate(query.limit as usize);
    Ok((rows, has_more))
}

/// What a requested status change came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Done,
    /// The machine does not allow it from the current status.
    Refused {
        current: PaymentStatus,
    },
    NotFound,
}

/// Moves the principal's payment to `to` if its current status allows it, recording the
/// change with `cause` and `detail`, in one statement. The row lock makes concurrent
/// requests for the same payment serialize: the second sees the first's result.
pub async fn transition(
    conn: &mut PgConnection,
    principal: &str,
    id: Uuid,
    to: PaymentStatus,
    cause: &str,
    detail: Option<serde_json::Value>,
) -> Result<Transition, sqlx::Error> {
    let row: Option<(PaymentStatus, i64)> = sqlx::query_as(
        "WITH current AS (
            SELECT id, status FROM payments WHERE id = $1 AND principal = $2 FOR UPDATE
        ), changed AS (
            UPDATE payments p SET status = $3, updated_at = now()
            FROM current c WHERE p.id = c.id AND c.status = ANY($4)
            RETURNING p.id
        ), event AS (
            INSERT INTO payment_events (payment_id, from_status, to_status, cause, detail)
            SELECT c.id, c.status, $3, $5, $6 FROM current c JOIN changed ON changed.id = c.id
        )
        SELECT c.status, (SELECT count(*) FROM changed) FROM current c",
    )
    .bind(id)
    .bind(principal)
    .bind(to)
    .bind(PaymentStatus::sources_of(to))
    .bind(cause)
    .bind(detail)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        None => Transition::NotFound,
        Some((_, 1)) => Transition::Done,
        Some((current, _)) => Transition::Refused { current },
    })
}
