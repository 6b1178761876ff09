//! Payments and their audit trail.

use std::time::Duration;

use chrono::{DateTime, Utc};
use paysys_core::{Currency, DecisionMessage, Money, PaymentStatus};
use sqlx::types::Json;
use sqlx::{PgConnection, query_as};
use uuid::Uuid;

use super::disputes::Dispute;
use crate::validation::NewPayment;

/// A payment row, as [`query_payments`] reads it, or from the row's JSON (`to_jsonb`) that
/// an event keeps (`webhooks::events`).
#[derive(Debug, Clone, serde::Deserialize)]
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
    pub decision: Option<Json<DecisionMessage>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    // What the risk engine was told of the payer, payee and method: NULL for payments
    // accepted before the history existed (migration 0006); read through `history()`
    // ([`super::history`]).
    pub history_payer_payment_count: Option<i64>,
    pub history_payer_first_payment_at: Option<DateTime<Utc>>,
    pub history_payer_currency_count: Option<i64>,
    pub history_payer_currency_total_minor: Option<i64>,
    pub history_new_payee: Option<bool>,
    pub history_new_payment_method: Option<bool>,
    pub history_method_payment_count: Option<i64>,
    pub history_payee_window_count: Option<i64>,
    /// `paysys_core::FEATURES_VERSION` of the features the decision was made on (the values
    /// themselves, `decision_features`, are read by the data feed only).
    pub decision_features_version: Option<String>,
    pub dispute_reason: Option<String>,
    pub dispute_note: Option<String>,
    pub disputed_at: Option<DateTime<Utc>>,
    /// The sum of the payment's refunds ([`super::refunds`]). Absent from the row snapshots
    /// of events written before migration 0008.
    #[serde(default)]
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
#[derive(Debug, Clone)]
pub struct PaymentEvent {
    pub from_status: Option<PaymentStatus>,
    pub to_status: PaymentStatus,
    pub cause: String,
    pub detail: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

/// Reads payment rows as [`PaymentRecord`]s: `$head`, the record's columns (of `payments p`),
/// `$tail`, then the bound arguments. The one place that lists the columns: every statement
/// reading payments is checked against the schema by `sqlx` at build time (offline data in
/// `.sqlx/`), so a renamed or retyped column fails the build.
macro_rules! query_payments {
    ($head:tt, $tail:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::store::payments::PaymentRecord,
            $head
                + r#"p.id, p.principal, p.amount_minor, p.currency, p.user_id, p.payee_id,
                p.payment_method_id, p.status AS "status: paysys_core::PaymentStatus",
                p.velocity_window_seconds, p.velocity_count, p.velocity_total_minor,
                p.decision AS "decision: sqlx::types::Json<paysys_core::DecisionMessage>",
                p.created_at, p.updated_at,
                p.history_payer_payment_count, p.history_payer_first_payment_at,
                p.history_payer_currency_count, p.history_payer_currency_total_minor,
                p.history_new_payee, p.history_new_payment_method,
                p.history_method_payment_count, p.history_payee_window_count,
                p.decision_features_version, p.dispute_reason, p.dispute_note, p.disputed_at,
                p.refunded_minor "#
                + $tail
            $(, $arg)*
        )
    };
}
pub(crate) use query_payments;

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
    let principals: Vec<&str> = rows.iter().map(|r| r.principal.as_str()).collect();
    let amounts: Vec<i64> = rows.iter().map(|r| r.payment.money.minor).collect();
    let currencies: Vec<&str> = rows
        .iter()
        .map(|r| r.payment.money.currency.code())
        .collect();
    let created = sqlx::query_scalar!(
        r#"SELECT created AS "created!" FROM paysys_insert_payments($1, $2, $3, $4, $5, $6, $7, $8)"#,
        &column(|r| r.id),
        &principals as &[&str],
        &amounts,
        &currencies as &[&str],
        &column(|r| r.payment.user_id),
        &column(|r| r.payment.payee_id),
        &column(|r| r.payment.payment_method_id),
        window_seconds,
    )
    .fetch_all(conn)
    .await?;
    Ok(created)
}

/// The statement of [`undecided`] (the status bound as `$1`), handed to `$then!`: `sqlx`'s
/// macro there, [`sql_text`] for [`UNDECIDED`], so that it is written once.
macro_rules! undecided_statement {
    ($then:ident ! ($($before:tt)*) $($after:tt)*) => {
        $then!($($before)* r#"SELECT count(*) AS "count!",
                coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8
                    AS "oldest_age_seconds!"
            FROM payments WHERE status = $1"# $($after)*)
    };
}

/// The statement of [`undecided`]; public for the test of its plan.
pub const UNDECIDED: &str = undecided_statement!(sql_text!());

/// Payments waiting for their risk decision.
#[derive(Debug, Clone, Copy, PartialEq)]
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
    undecided_statement!(query_as!(Undecided,), PaymentStatus::Pending.as_str())
        .fetch_one(conn)
        .await
}

/// The payment if it exists and belongs to `principal`.
pub async fn find(
    conn: &mut PgConnection,
    principal: &str,
    id: Uuid,
) -> Result<Option<PaymentRecord>, sqlx::Error> {
    query_payments!(
        "SELECT ",
        "FROM payments p WHERE p.id = $1 AND p.principal = $2",
        id,
        principal
    )
    .fetch_optional(conn)
    .await
}

/// The payment's status changes, oldest first.
pub async fn history(conn: &mut PgConnection, id: Uuid) -> Result<Vec<PaymentEvent>, sqlx::Error> {
    sqlx::query_as!(
        PaymentEvent,
        r#"SELECT from_status AS "from_status: PaymentStatus",
                  to_status AS "to_status: PaymentStatus", cause, detail, at
           FROM payment_events WHERE payment_id = $1 ORDER BY id"#,
        id
    )
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
    let mut rows = query_payments!(
        "SELECT ",
        "FROM payments p
         WHERE p.principal = $1
           AND ($2::uuid IS NULL OR p.id < $2)
           AND ($3::text IS NULL OR p.status = $3)
           AND ($4::uuid IS NULL OR p.user_id = $4)
         ORDER BY p.id DESC
         LIMIT $5",
        principal,
        query.before,
        query.status.map(PaymentStatus::as_str),
        query.user_id,
        query.limit + 1
    )
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
    let sources: Vec<&str> = PaymentStatus::sources_of(to)
        .into_iter()
        .map(PaymentStatus::as_str)
        .collect();
    let row = sqlx::query!(
        r#"WITH current AS (
            SELECT id, status FROM payments WHERE id = $1 AND principal = $2 FOR UPDATE
        ), changed AS (
            UPDATE payments p SET status = $3, updated_at = now()
            FROM current c WHERE p.id = c.id AND c.status = ANY($4)
            RETURNING p.id
        ), event AS (
            INSERT INTO payment_events (payment_id, from_status, to_status, cause, detail)
            SELECT c.id, c.status, $3, $5, $6 FROM current c JOIN changed ON changed.id = c.id
        )
        SELECT c.status AS "status!: PaymentStatus",
               (SELECT count(*) FROM changed) AS "changed!"
        FROM current c"#,
        id,
        principal,
        to.as_str(),
        &sources as &[&str],
        cause,
        detail
    )
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        None => Transition::NotFound,
        Some(row) if row.changed == 1 => Transition::Done,
        Some(row) => Transition::Refused {
            current: row.status,
        },
    })
}
