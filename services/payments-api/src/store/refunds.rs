//! Refunds: money given back from a captured payment, whole or in parts.
//!
//! A refund is two statements in one transaction: [`lock`] reads the payment under its row
//! lock, the caller decides (the amount against the currency and against what is left), and
//! [`record`] writes the refund, the payment's new total and status, and the audit event.
//! The lock serializes refunds of the same payment, so their sum never exceeds the captured
//! amount however many race (the CHECK `payments_refunded_within_amount` would refuse it
//! anyway). The payment row is updated exactly once per refund and by nothing else once
//! refunded: a trigger on `payments` reports each such update as one refund.

use chrono::{DateTime, Utc};
use paysys_core::{Currency, Money, PaymentStatus};
use sqlx::PgConnection;
use uuid::Uuid;

/// A recorded refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub amount_minor: i64,
    pub created_at: DateTime<Utc>,
}

/// The payment a refund is asked for, locked until the transaction ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refundable {
    pub status: PaymentStatus,
    pub amount_minor: i64,
    pub refunded_minor: i64,
    pub currency: String,
}

impl Refundable {
    pub fn currency(&self) -> Currency {
        self.currency
            .parse()
            .expect("stored currencies were validated on the way in")
    }

    /// What can still be refunded.
    pub fn left(&self) -> Money {
        Money {
            minor: self.amount_minor - self.refunded_minor,
            currency: self.currency(),
        }
    }
}

/// The principal's payment, locked for a refund, if it exists.
pub async fn lock(
    conn: &mut PgConnection,
    principal: &str,
    id: Uuid,
) -> Result<Option<Refundable>, sqlx::Error> {
    sqlx::query_as!(
        Refundable,
        r#"SELECT status AS "status: PaymentStatus", amount_minor, refunded_minor,
                  currency AS "currency!"
           FROM payments WHERE id = $1 AND principal = $2 FOR UPDATE"#,
        id,
        principal,
    )
    .fetch_optional(conn)
    .await
}

/// A refund to record: of `amount_minor`, moving the payment from `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub refund_id: Uuid,
    pub payment_id: Uuid,
    pub amount_minor: i64,
    pub from: PaymentStatus,
    pub to: PaymentStatus,
}

/// Records the refund of a payment [`lock`]ed in this transaction with the payment's one
/// update and the audit event (cause `refunded`, `detail` as given), in one statement.
pub async fn record(
    conn: &mut PgConnection,
    change: Change,
    detail: serde_json::Value,
) -> Result<Refund, sqlx::Error> {
    sqlx::query_as!(
        Refund,
        r#"WITH refund AS (
               INSERT INTO refunds (id, payment_id, amount_minor) VALUES ($1, $2, $3)
               RETURNING id, payment_id, amount_minor, created_at
           ), payment AS (
               UPDATE payments
               SET refunded_minor = refunded_minor + $3, status = $5, updated_at = now()
               WHERE id = $2
               RETURNING id
           ), event AS (
               INSERT INTO payment_events (payment_id, from_status, to_status, cause, detail)
               SELECT id, $4, $5, 'refunded', $6 FROM payment
           )
           SELECT id AS "id!", payment_id AS "payment_id!", amount_minor AS "amount_minor!",
                  created_at AS "created_at!"
           FROM refund"#,
        change.refund_id,
        change.payment_id,
        change.amount_minor,
        change.from as _,
        change.to as _,
        detail,
    )
    .fetch_one(conn)
    .await
}

/// The payment's refunds, oldest first.
pub async fn list(conn: &mut PgConnection, payment_id: Uuid) -> Result<Vec<Refund>, sqlx::Error> {
    sqlx::query_as!(
        Refund,
        "SELECT id, payment_id, amount_minor, created_at FROM refunds
         WHERE payment_id = $1 ORDER BY created_at, id",
        payment_id,
    )
    .fetch_all(conn)
    .await
}
