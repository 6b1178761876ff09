//! The transactional outbox: payments committed but not yet confirmed by the broker.

use sqlx::PgConnection;

use super::payments::{PaymentRecord, query_payments};

/// Takes up to `limit` rows, oldest first: deletes them and returns their payments,
/// in one statement. The deletion only becomes final if the caller commits (after the broker
/// confirmed every message); a rollback, a crash or a lost connection puts them back. The row
/// locks last until then, and `SKIP LOCKED` lets several API replicas relay at once without
/// ever publishing the same row concurrently: each takes rows the others do not hold.
pub async fn take(conn: &mut PgConnection, limit: i64) -> Result<Vec<PaymentRecord>, sqlx::Error> {
    // Written so that every access is by key, whatever the planner believes about the tables'
    // sizes (a plan made while they were small is reused for the life of the connection): the
    // rows to delete by their `ctid` (a TID scan), their payments by primary key (a lateral
    // probe; `OFFSET 0` keeps it from being turned back into a join, which was planned as a
    // scan of the whole payments table for every batch).
    query_payments!(
        "WITH taken AS (
            DELETE FROM outbox WHERE ctid = ANY (ARRAY(
                SELECT ctid FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
            ))
            RETURNING id, payment_id
        )
        SELECT ",
        "FROM taken t
        CROSS JOIN LATERAL (SELECT * FROM payments p WHERE p.id = t.payment_id OFFSET 0) p
        ORDER BY t.id",
        limit
    )
    .fetch_all(conn)
    .await
}

/// Rows waiting to be published (the backlog metric).
pub async fn backlog(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM outbox"#)
        .fetch_one(conn)
        .await
}
