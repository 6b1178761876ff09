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

/// Claims up to `limit` rows, oldest first, locking them for the rest of the transaction.
/// `SKIP LOCKED` lets several API replicas relay at once without ever publishing the same
/// row concurrently: each takes rows the others do not hold.
pub async fn claim(conn: &mut PgConnection, limit: i64) -> Result<Vec<Pending>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.id AS outbox_id, p.id, p.principal, p.amount_minor, p.currency,
                p.user_id, p.payee_id, p.payment_method_id, p.status, p.velocity_window_seconds,
                p.velocity_count, p.velocity_total_minor, p.decision, p.created_at, p.updated_at
         FROM outbox o JOIN payments p ON p.id = o.payment_id
         ORDER BY o.id
         LIMIT $1
         FOR UPDATE OF o SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Removes rows whose messages the broker confirmed.
pub async fn delete(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Rows waiting to be published (the backlog metric).
pub async fn backlog(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(conn)
        .await
}
