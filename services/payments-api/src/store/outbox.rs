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

/// How much the outbox holds, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Depth {
    /// From the oldest row's id to the newest's: the rows waiting, plus any row a relay has
    /// published but not yet deleted for good (still in the outbox until it commits) and any
    /// id an insert has taken and not yet committed or rolled back. Exact when no batch is
    /// in flight; never a count of the table.
    pub rows: i64,
    /// Since the oldest row was committed (0 when the outbox is empty).
    pub oldest_age_seconds: f64,
}

/// The outbox's [`Depth`], by two probes of its primary key (the first and the last id):
/// its cost does not depend on what the outbox holds, while a `count(*)` would read every
/// waiting row, and every deleted row not yet vacuumed, just when the broker is away and the
/// outbox grows.
pub async fn depth(conn: &mut PgConnection) -> Result<Depth, sqlx::Error> {
    let depth = sqlx::query_as!(
        Depth,
        r#"SELECT newest.id - oldest.id + 1 AS "rows!",
                  greatest(extract(epoch FROM now() - oldest.created_at), 0)::float8
                      AS "oldest_age_seconds!"
           FROM (SELECT id, created_at FROM outbox ORDER BY id LIMIT 1) AS oldest,
                (SELECT id FROM outbox ORDER BY id DESC LIMIT 1) AS newest"#
    )
    .fetch_optional(conn)
    .await?;
    Ok(depth.unwrap_or(Depth {
        rows: 0,
        oldest_age_seconds: 0.0,
    }))
}
