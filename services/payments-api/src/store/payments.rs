//! Payments and their audit trail.

use std::time::Duration;

use chrono::{DateTime, Utc};
use paysys_core::{Currency, DecisionMessage, Money, PaymentStatus};
use sqlx::{Acquire, FromRow, PgConnection};
use uuid::Uuid;

use super::velocity;
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
    pub status: String,
    pub velocity_window_seconds: i32,
    pub velocity_count: i64,
    pub velocity_total_minor: i64,
    pub decision: Option<sqlx::types::Json<DecisionMessage>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
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

    pub fn status(&self) -> PaymentStatus {
        self.status
            .parse()
            .expect("the status column is constrained to known statuses")
    }
}

/// One recorded status change.
#[derive(Debug, Clone, FromRow)]
pub struct PaymentEvent {
    pub from_status: Option<String>,
    pub to_status: String,
    pub cause: String,
    pub detail: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

const COLUMNS: &str = "id, principal, amount_minor, currency, user_id, payee_id, \
    payment_method_id, status, velocity_window_seconds, velocity_count, velocity_total_minor, \
    decision, created_at, updated_at";

/// A validated payment ready to be inserted under its id and owner.
#[derive(Debug, Clone)]
pub struct Insert {
    pub id: Uuid,
    pub principal: String,
    pub payment: NewPayment,
}

/// Inserts payments with their first audit events and outbox rows, and adds them to their
/// payers' running totals, in one transaction (a savepoint inside the caller's, if any):
/// one statement locks the payers (see [`super::velocity`]), one writes everything. Each
/// payment's velocity over `window` counts the payer's earlier payments, committed or earlier
/// in `rows`, exactly, at a cost independent of the payer's history. Returns each payment's
/// creation time, in the order of `rows`.
pub async fn insert_many(
    conn: &mut PgConnection,
    rows: &[Insert],
    window: Duration,
) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let users = column(rows, |r| r.payment.user_id);
    velocity::lock_payers(&mut tx, &users).await?;
    let created = insert_locked(&mut tx, rows, window).await?;
    tx.commit().await?;
    Ok(created)
}

fn column(rows: &[Insert], f: fn(&Insert) -> Uuid) -> Vec<Uuid> {
    rows.iter().map(f).collect()
}

/// The insert proper; the payers of `rows` must be locked by this transaction.
async fn insert_locked(
    conn: &mut PgConnection,
    rows: &[Insert],
    window: Duration,
) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
    let window_seconds = i32::try_from(window.as_secs()).unwrap_or(i32::MAX);
    let created: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "WITH input AS (
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::uuid[],
                                 $6::uuid[], $7::uuid[])
                WITH ORDINALITY AS t(id, principal, amount_minor, currency, user_id, payee_id,
                                     payment_method_id, ord)
        ), clock AS MATERIALIZED (
            -- After the payers' locks were granted: creation times follow the lock order.
            SELECT clock_timestamp() AS now
        ), payer AS (
            SELECT v.user_id, v.payments, v.since, greatest(clock.now, v.last_at) AS at
            FROM velocity_payers v CROSS JOIN clock
            WHERE v.user_id IN (SELECT user_id FROM input)
        ), seq_before_window AS (
            -- The payer's running count before its first payment inside the window (any
            -- currency: the earliest of each currency's first), or before this group.
            SELECT p.user_id, coalesce(min(f.velocity_seq), p.payments) AS seq
            FROM payer p
            LEFT JOIN velocity_totals t ON t.user_id = p.user_id
            LEFT JOIN LATERAL (
                SELECT q.velocity_seq FROM payments q
                WHERE q.user_id = t.user_id AND q.currency = t.currency
                  AND q.created_at > p.at - make_interval(secs => $8)
                  AND q.created_at >= p.since
                ORDER BY q.created_at, q.velocity_seq LIMIT 1
            ) f ON true
            GROUP BY p.user_id, p.payments
        ), total_before_window AS (
            -- The same for the total in each currency of this group.
            SELECT c.user_id, c.currency, coalesce(t.total, 0) AS total,
                   coalesce(f.velocity_running_total, t.total, 0) AS before_window
            FROM (SELECT DISTINCT user_id, currency FROM input) c
            JOIN payer p USING (user_id)
            LEFT JOIN velocity_totals t ON t.user_id = c.user_id AND t.currency = c.currency
            LEFT JOIN LATERAL (
                SELECT q.velocity_running_total FROM payments q
                WHERE q.user_id = c.user_id AND q.currency = c.currency
                  AND q.created_at > p.at - make_interval(secs => $8)
                  AND q.created_at >= p.since
                ORDER BY q.created_at, q.velocity_seq LIMIT 1
            ) f ON true
        ), ranked AS (
            SELECT i.*, p.at, s.seq AS seq_before_window, t.before_window AS total_before_window,
                   p.payments + count(*) OVER (PARTITION BY i.user_id ORDER BY i.ord
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS seq,
                   t.total + coalesce(sum(i.amount_minor) OVER (PARTITION BY i.user_id, i.currency
                                  ORDER BY i.ord
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                       AS running_total
            FROM input i
            JOIN payer p USING (user_id)
            JOIN seq_before_window s USING (user_id)
            JOIN total_before_window t USING (user_id, currency)
        ), payment AS (
            INSERT INTO payments (id, principal, amount_minor, currency, user_id, payee_id,
                payment_method_id, status, velocity_window_seconds, velocity_count,
                velocity_total_minor, velocity_seq, velocity_running_total, created_at,
                updated_at)
            SELECT id, principal, amount_minor, currency, user_id, payee_id, payment_method_id,
                   'pending', $8, seq - seq_before_window,
                   (running_total - total_before_window)::bigint, seq, running_total::bigint,
                   at, at
            FROM ranked
            ORDER BY ord
            RETURNING id, created_at
        ), event AS (
            INSERT INTO payment_events (payment_id, from_status, to_status, cause)
            SELECT id, NULL, 'pending', 'created' FROM payment
        ), queued AS (
            INSERT INTO outbox (payment_id)
            SELECT i.id FROM input i JOIN payment USING (id) ORDER BY i.ord
        ), payer_counted AS (
            UPDATE velocity_payers v SET payments = v.payments + g.n, last_at = g.at
            FROM (SELECT user_id, count(*) AS n, max(at) AS at FROM ranked GROUP BY user_id) g
            WHERE v.user_id = g.user_id
        ), total_counted AS (
            INSERT INTO velocity_totals (user_id, currency, total)
            SELECT user_id, currency, sum(amount_minor)::bigint FROM input
            GROUP BY user_id, currency
            ORDER BY user_id, currency
            ON CONFLICT (user_id, currency)
                DO UPDATE SET total = velocity_totals.total + excluded.total
        )
        SELECT i.ord, p.created_at FROM payment p JOIN input i USING (id) ORDER BY i.ord",
    )
    .bind(column(rows, |r| r.id))
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
    .bind(column(rows, |r| r.payment.user_id))
    .bind(column(rows, |r| r.payment.payee_id))
    .bind(column(rows, |r| r.payment.payment_method_id))
    .bind(window_seconds)
    .fetch_all(conn)
    .await?;
    Ok(created.into_iter().map(|(_, at)| at).collect())
}

/// Payments waiting for their risk decision.
#[derive(Debug, Clone, Copy, PartialEq, FromRow)]
pub struct Undecided {
    pub count: i64,
    /// Age of the oldest one; 0 when there is none.
    pub oldest_age_seconds: f64,
}

/// The undecided backlog, from the partial index `payments_undecided` (cost proportional to
/// the backlog, which admission bounds).
pub async fn undecided(conn: &mut PgConnection) -> Result<Undecided, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) AS count,
                coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8
                    AS oldest_age_seconds
         FROM payments WHERE status = 'pending'",
    )
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
        "SELECT {COLUMNS} FROM payments WHERE id = $1 AND principal = $2"
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
        "SELECT {COLUMNS} FROM payments
         WHERE principal = $1
           AND ($2::uuid IS NULL OR id < $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::uuid IS NULL OR user_id = $4)
         ORDER BY id DESC
         LIMIT $5"
    )))
    .bind(principal)
    .bind(query.before)
    .bind(query.status.map(PaymentStatus::as_str))
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
    let sources: Vec<&str> = PaymentStatus::sources_of(to)
        .into_iter()
        .map(PaymentStatus::as_str)
        .collect();
    let row: Option<(String, i64)> = sqlx::query_as(
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
    .bind(to.as_str())
    .bind(&sources)
    .bind(cause)
    .bind(detail)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        None => Transition::NotFound,
        Some((_, 1)) => Transition::Done,
        Some((current, _)) => Transition::Refused {
            current: current.parse().expect("constrained status"),
        },
    })
}
