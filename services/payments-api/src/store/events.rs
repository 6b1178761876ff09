//! The events outbox (migration 0007): events as the triggers wrote them, given their public
//! ids in commit order; listing them; deleting them past their retention. Turning them into
//! deliveries is the dispatcher's, per endpoint and lazily ([`crate::store::webhooks::fan_out`],
//! migration 0011): an event above an endpoint's cursor (`fanned_out_through`), of its
//! principal and of a type it subscribes to, is owed to it without a delivery row yet.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

/// The advisory lock held by the one replica sequencing at a time.
const SEQUENCER_LOCK: i64 = 0x7061_7973_6576_7473; // "paysevts"

/// Gives up to `limit` written events their public ids; `None` when another replica is doing
/// it right now. Nothing is fanned out here: the endpoints' cursors make each event owed to
/// the endpoints subscribed to it.
///
/// Only events of transactions older than every running one (`pg_snapshot_xmin`) are taken,
/// in the order of their transactions: nothing can commit before them any more, so an id
/// handed out here is never followed by a smaller one becoming visible. One sequencer at a
/// time (a transaction-level advisory lock), each run committed before the next starts, so
/// ids increase in the order readers can see them (each run is visible before its lock is
/// released, so before the next run takes ids). The fan-out relies on it: a reader that sees
/// an id sees every smaller one still stored, so a cursor moved up to an event it read never
/// passes over one that becomes visible later.
pub async fn sequence(conn: &mut PgConnection, limit: i64) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#,
        SEQUENCER_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(None);
    }
    let sequenced = sqlx::query_scalar!(
        r#"WITH ready AS (
            DELETE FROM events_unsequenced WHERE seq = ANY (ARRAY(
                SELECT seq FROM events_unsequenced
                WHERE txid < pg_snapshot_xmin(pg_current_snapshot())
                ORDER BY txid, seq LIMIT $1
            ))
            RETURNING txid, seq, type, payment_id, principal, created_at, payment
        ), published AS (
            INSERT INTO events (type, payment_id, principal, created_at, payment)
            SELECT type, payment_id, principal, created_at, payment FROM ready
            ORDER BY txid, seq
            RETURNING id
        )
        SELECT count(*) AS "count!" FROM published"#,
        limit
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(sequenced))
}

/// A stored event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    /// The payment row's JSON, as the trigger took it.
    pub payment: String,
}

/// The principal's events after `after`, oldest first; one more than `limit` tells whether
/// more exist.
pub async fn list(
    conn: &mut PgConnection,
    principal: &str,
    after: i64,
    limit: i64,
) -> Result<(Vec<StoredEvent>, bool), sqlx::Error> {
    let mut rows = sqlx::query_as!(
        StoredEvent,
        r#"SELECT id, type AS event_type, created_at, payment::text AS "payment!"
        FROM events WHERE principal = $1 AND id > $2 ORDER BY id LIMIT $3"#,
        principal,
        after,
        limit + 1
    )
    .fetch_all(conn)
    .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok((rows, has_more))
}

/// What is still to be delivered (events not yet sequenced, deliveries not yet done, and
/// events owed to an endpoint but not yet fanned out to it, paused ones' included: one per
/// event and endpoint, as the deliveries count, each endpoint's counted up to
/// `owed_per_endpoint`) and the age in seconds of the oldest of it (0 when nothing waits).
/// An endpoint's owed events are read in id order from its cursor and no further than the cap,
/// so a refresh costs at most the cap per endpoint however long one has been dead.
pub async fn outbox(
    conn: &mut PgConnection,
    owed_per_endpoint: i64,
) -> Result<(i64, f64), sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH owed AS (
            SELECT sum(o.depth)::bigint AS depth, min(o.oldest) AS oldest
            FROM webhook_endpoints e
            CROSS JOIN LATERAL (
                SELECT count(*) AS depth, min(v.created_at) AS oldest FROM (
                    SELECT v.created_at FROM events v
                    WHERE v.principal = e.principal AND v.id > e.fanned_out_through
                      AND v.type = ANY (e.event_types)
                    ORDER BY v.principal, v.id
                    LIMIT $1
                ) v
            ) o
        )
        SELECT
            (SELECT count(*) FROM events_unsequenced) + (SELECT count(*) FROM webhook_deliveries)
                + coalesce((SELECT depth FROM owed), 0) AS "depth!",
            coalesce(extract(epoch FROM clock_timestamp() - least(
                (SELECT min(created_at) FROM events_unsequenced),
                (SELECT min(event_created_at) FROM webhook_deliveries),
                (SELECT oldest FROM owed)
            )), 0)::float8 AS "oldest_age_seconds!""#,
        owed_per_endpoint
    )
    .fetch_one(conn)
    .await?;
    Ok((row.depth, row.oldest_age_seconds))
}

/// Deletes up to `limit` events older than `retention` that are owed to no endpoint (an event
/// still owed stays, whatever its age: a delivery refers to it, or it is above the cursor of an
/// endpoint of its principal subscribed to its type, not yet fanned out); returns how many.
/// Rows another replica is deleting are skipped, and so are events a fan-out is writing
/// deliveries of (their foreign key's check holds them locked).
pub async fn delete_expired(
    conn: &mut PgConnection,
    retention: Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query!(
        r#"DELETE FROM events WHERE id = ANY (ARRAY(
            SELECT e.id FROM events e
            WHERE e.created_at < now() - make_interval(secs => $1)
              AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)
              AND NOT EXISTS (
                  SELECT 1 FROM webhook_endpoints w
                  WHERE w.principal = e.principal AND w.fanned_out_through < e.id
                    AND e.type = ANY (w.event_types)
              )
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        ))"#,
        retention.as_secs_f64(),
        limit
    )
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected())
}
