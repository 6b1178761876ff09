//! The transactional outbox: payments committed but not yet confirmed by the broker.

use sqlx::PgConnection;

use super::payments::PaymentRecord;

/// An outbox row with the payment it announces.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Pending {
    pub outbox_id: i64,
    #[sqlx(flatten)]
    pub payment: PaymentRecord,
}

/// Takes up to `limit` rows, oldest first: deletes them and returns them with their payments,
/// in one statement. The deletion only becomes final if the caller commits (after the broker
/// confirmed every message); a rollback, a crash or a lost connection puts them back. The row
/// locks last until then, and `SKIP LOCKED` lets several API replicas relay at once without
/// ever publishing the same row concurrently: each takes rows the others do not hold.
pub async fn take(conn: &mut PgConnection, limit: i64) -> Result<Vec<Pending>, sqlx::Error> {
    sqlx::query_as(
        "WITH taken AS (
            DELETE FROM outbox WHERE id IN (
                SELECT id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
            )
            RETURNING id, payment_id
        )
        SELECT t.id AS outbox_id, p.id, p.principal, p.amount_minor, p.currency,
               p.user_id, p.payee_id, p.payment_method_id, p.status, p.velocity_window_seconds,
               p.velocity_count, p.velocity_total_minor, p.decision, p.created_at, p.updated_at
        FROM taken t JOIN payments p ON p.id = t.payment_id
        ORDER BY t.id",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Rows waiting to be published (the backlog metric).
pub async fn backlog(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(conn)
        .await
}
