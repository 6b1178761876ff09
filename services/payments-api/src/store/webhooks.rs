//! Webhook endpoints, their pending deliveries (made lazily per endpoint from the events it
//! is owed, [`fan_out`]) and the record of every attempt (migrations 0007, 0011).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The dispatcher's own connections: the main pool's, with sequential and bitmap scans off,
/// so that its statements ([`fan_out`], [`claim`], [`record`], the outbox gauges) reach rows by
/// index only (at most `max_connections`, opened when first needed). They read a few rows per
/// endpoint of tables that swing from empty to tens of thousands of rows between two analyses,
/// and endpoints' backlogs differ by orders of magnitude (a live one hundreds of rows, a dead
/// one one). Planned from the statistics they read whole tables or whole backlogs per endpoint:
/// in the benchmark, with statistics from when `webhook_deliveries` was nearly empty, the
/// fan-out counted each endpoint's rows with a sequential scan of the table (70–150 ms per
/// fan-out beside 900 dead endpoints, 2 ms without), and with the average endpoint holding
/// about one row the claim read and probed every due row of each busy endpoint by a bitmap scan
/// and a sort instead of walking `webhook_deliveries_next` up to its room. Set per connection
/// (startup options, like the pool's `jit`) rather than per statement: a transaction around
/// each statement to scope the settings cost three round trips a statement, and one endpoint's
/// lag p99 while payments were being created doubled (about 100 ms to 200 ms).
pub fn dispatcher_pool(pool: &PgPool, max_connections: u32) -> PgPool {
    let options = (*pool.connect_options())
        .clone()
        .options([("enable_seqscan", "off"), ("enable_bitmapscan", "off")]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(options)
}

/// An endpoint as stored (its secret still sealed).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub secret_rotated_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub paused_until: Option<DateTime<Utc>>,
}

pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    principal: &str,
    url: &str,
    event_types: &[String],
    secret_encrypted: &[u8],
) -> Result<Endpoint, sqlx::Error> {
    sqlx::query_as!(
        Endpoint,
        "INSERT INTO webhook_endpoints (id, principal, url, event_types, secret_encrypted)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, url, event_types, created_at, secret_rotated_at, failing_since,
                   paused_until",
        id,
        principal,
        url,
        event_types,
        secret_encrypted
    )
    .fetch_one(conn)
    .await
}

/// The principal's endpoints, oldest first.
pub async fn list(conn: &mut PgConnection, principal: &str) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query_as!(
        Endpoint,
        "SELECT id, url, event_types, created_at, secret_rotated_at, failing_since, paused_until
         FROM webhook_endpoints WHERE principal = $1 ORDER BY id",
        principal
    )
    .fetch_all(conn)
    .await
}

pub async fn find(
    conn: &mut PgConnection,
    principal: &str,
    id: Uuid,
) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as!(
        Endpoint,
        "SELECT id, url, event_types, created_at, secret_rotated_at, failing_since, paused_until
         FROM webhook_endpoints WHERE id = $1 AND principal = $2",
        id,
        principal
    )
    .fetch_optional(conn)
    .await
}

/// Deletes the endpoint with its pending deliveries and attempts; false if the principal has
/// no such endpoint.
pub async fn delete(
    conn: &mut PgConnection,
    principal: &str,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query!(
        "DELETE FROM webhook_endpoints WHERE id = $1 AND principal = $2",
        id,
        principal
    )
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Replaces the endpoint's sealed secret; `None` if the principal has no such endpoint.
pub async fn rotate_secret(
    conn: &mut PgConnection,
    principal: &str,
    id: Uuid,
    secret_encrypted: &[u8],
) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as!(
        Endpoint,
        "UPDATE webhook_endpoints SET secret_encrypted = $3, secret_rotated_at = now()
         WHERE id = $1 AND principal = $2
         RETURNING id, url, event_types, created_at, secret_rotated_at, failing_since,
                   paused_until",
        id,
        principal,
        secret_encrypted
    )
    .fetch_optional(conn)
    .await
}

/// One recorded attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: i64,
    pub event_id: i64,
    pub attempted_at: DateTime<Utc>,
    pub http_status: Option<i16>,
    pub latency_ms: i32,
    pub error: Option<String>,
}

/// The endpoint's attempts, newest first, before the attempt `before` if given; one more than
/// `limit` tells whether more exist.
pub async fn attempts(
    conn: &mut PgConnection,
    endpoint: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<Attempt>, bool), sqlx::Error> {
    let mut rows = sqlx::query_as!(
        Attempt,
        "SELECT id, event_id, attempted_at, http_status, latency_ms, error
         FROM webhook_attempts
         WHERE endpoint_id = $1 AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
        endpoint,
        before,
        limit + 1
    )
    .fetch_all(conn)
    .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok((rows, has_more))
}

/// What one fan-out made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FannedOut {
    /// Delivery rows written.
    pub deliveries: i64,
    /// Endpoints whose cursor moved.
    pub endpoints: i64,
    /// Rows taken that already existed (written by a replica of the version that fanned out
    /// when sequencing); anything else would be a fan-out done twice.
    pub skipped: i64,
}

/// How far ahead [`fan_out`] makes an endpoint's deliveries.
#[derive(Debug, Clone, Copy)]
pub struct FanOut {
    /// Undelivered rows an endpoint may have when its latest attempt succeeded.
    pub ahead: i32,
    /// ... when it has none yet or its latest failed (1: the probe's, the slow start's).
    pub unproven_ahead: i32,
    /// Events read per endpoint at most (of its subscribed types or not; 4 × its room
    /// otherwise).
    pub scan: i64,
    /// Endpoints per statement at most.
    pub endpoints: i64,
    /// Rows made per endpoint and statement at most.
    pub per_statement: i64,
    /// Whether endpoints whose latest attempts failed (not paused, or no longer) are looked
    /// at too; they hold one row, which they mostly still have, so the dispatcher looks at
    /// them once per first retry wait (at most a second), not at every round.
    pub failing: bool,
}

/// Turns owed events into delivery rows, per endpoint and lazily (migration 0011): for up to
/// `endpoints` endpoints that are not paused (nor failing, unless `failing`), have room (fewer
/// undelivered rows than their `ahead`: the full one once their latest attempt succeeded,
/// `unproven_ahead` otherwise, so a dead endpoint holds one row, the one its probe sends; at
/// most `per_statement` at once) and have events above their cursor:
/// the next of their principal's events in id order, 4 × the room of them but at most `scan`,
/// a row for each of a subscribed type up to the room, the cursor moved past the last one
/// taken (past events of other types too). The most behind first. "Has events above its
/// cursor" is one probe of `events_principal_id` per endpoint (a scalar subquery, which the
/// planner cannot turn into a scan of all events), and an endpoint with nothing owed or no
/// room costs nothing more.
///
/// Safe across replicas: the endpoint rows are locked (`FOR NO KEY UPDATE SKIP LOCKED`: a
/// replica skips what another is fanning out) and their cursors moved in the same statement;
/// the lock returns the cursor as last committed, so events are never fanned out twice (the
/// unique index of 0011 holds it however; `ON CONFLICT DO NOTHING` lets a replica of the
/// previous version, which fanned out when sequencing, run beside this one during an upgrade).
/// Ids increase in the order events become visible ([`crate::store::events::sequence`]): every
/// event up to the last one read is visible to this statement, so a cursor passes over none.
/// Rows are written in event id order (so the claim's "oldest row of the payment" is its
/// oldest event), the endpoints' interleaved: the claim takes the oldest rows first, and rows
/// grouped by endpoint would fill a few endpoints' lanes per round while the others wait.
/// Run on a [`dispatcher_pool`] connection, its plan walks indexes only.
pub async fn fan_out(conn: &mut PgConnection, limits: FanOut) -> Result<FannedOut, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH due AS (
            SELECT e.id, e.principal, e.event_types, e.fanned_out_through, w.room
            FROM webhook_endpoints e
            CROSS JOIN LATERAL (
                SELECT CASE WHEN coalesce((
                           SELECT a.error IS NULL FROM webhook_attempts a
                           WHERE a.endpoint_id = e.id ORDER BY a.id DESC LIMIT 1), false)
                       THEN $1::int ELSE $2::int END AS size
                OFFSET 0
            ) s
            CROSS JOIN LATERAL (
                SELECT least(s.size - count(*), $5) AS room FROM (
                    SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id LIMIT s.size
                ) held
            ) w
            WHERE (e.paused_until IS NULL OR e.paused_until <= now())
              AND (e.consecutive_failures = 0 OR $6)
              AND (SELECT v.id FROM events v
                   WHERE v.principal = e.principal AND v.id > e.fanned_out_through
                   ORDER BY v.principal, v.id LIMIT 1) IS NOT NULL
              AND w.room > 0
            ORDER BY e.fanned_out_through
            LIMIT $4
            FOR NO KEY UPDATE OF e SKIP LOCKED
        ), scanned AS (
            SELECT d.id AS endpoint_id, v.id AS event_id, v.payment_id, v.created_at, v.wanted,
                   d.room,
                   count(*) FILTER (WHERE v.wanted) OVER (PARTITION BY d.id ORDER BY v.id) AS nth
            FROM due d
            CROSS JOIN LATERAL (
                SELECT v.id, v.payment_id, v.created_at, v.type = ANY (d.event_types) AS wanted
                FROM events v
                WHERE v.principal = d.principal AND v.id > d.fanned_out_through
                ORDER BY v.principal, v.id
                LIMIT least($3, d.room * 4)
            ) v
        ), taken AS (
            SELECT * FROM scanned WHERE nth <= room
        ), made AS (
            INSERT INTO webhook_deliveries (endpoint_id, event_id, payment_id, event_created_at)
            SELECT endpoint_id, event_id, payment_id, created_at FROM taken
            WHERE wanted
            ORDER BY event_id, endpoint_id
            ON CONFLICT (endpoint_id, event_id) DO NOTHING
            RETURNING 1
        ), advanced AS (
            UPDATE webhook_endpoints e SET fanned_out_through = t.through
            FROM (SELECT endpoint_id, max(event_id) AS through FROM taken GROUP BY endpoint_id) t
            WHERE e.id = t.endpoint_id
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM made) AS "deliveries!",
               (SELECT count(*) FROM advanced) AS "endpoints!",
               (SELECT count(*) FROM taken WHERE wanted) - (SELECT count(*) FROM made)
                   AS "skipped!""#,
        limits.ahead,
        limits.unproven_ahead,
        limits.scan,
        limits.endpoints,
        limits.per_statement,
        limits.failing
    )
    .fetch_one(conn)
    .await?;
    Ok(FannedOut {
        deliveries: row.deliveries,
        endpoints: row.endpoints,
        skipped: row.skipped,
    })
}

/// A delivery claimed for one attempt, with what sending it needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    pub endpoint_id: Uuid,
    pub event_id: i64,
    /// The claim's number: its result is written only if the row still carries it.
    pub attempt: i32,
    pub url: String,
    pub secret_encrypted: Vec<u8>,
    pub event_type: String,
    pub event_created_at: DateTime<Utc>,
    /// The payment row's JSON, as the trigger took it.
    pub payment: String,
}

/// Claims due deliveries: for each endpoint that is not paused, its due deliveries that are
/// the oldest undelivered event of their payment to it (so each endpoint sees a payment's
/// events in order), oldest due first, up to its room: `capacity` (one probe only when it
/// failed `probe_after` times in a row or more, i.e. it was paused) minus what this process
/// already holds for it (`held`: endpoint ids and counts); at most `limit` in all. A claim
/// pushes the row's next attempt `lease` ahead: if this process dies, the row comes due again
/// then. `SKIP LOCKED` lets replicas claim side by side.
///
/// Endpoints whose latest attempts failed (`consecutive_failures` > 0, paused or not) are
/// looked at only when `failing`: the dispatcher does so once per first retry wait, since none
/// of their deliveries comes due sooner after a failure (the failed one waits that long or
/// more, and the lane that failed halts that long); a thousand of them then cost a probe each
/// once a second, not at every round.
///
/// The scan follows `webhook_deliveries_next` (migration 0009) and stops at the room; "is it
/// the oldest of its payment" is one probe of `webhook_deliveries_order` per row (a scalar
/// subquery with `LIMIT 1`, which the planner cannot turn into an anti-join over the
/// endpoint's whole backlog), which a [`dispatcher_pool`] connection keeps to.
pub async fn claim(
    conn: &mut PgConnection,
    held: &[(Uuid, i32)],
    capacity: i32,
    probe_after: i32,
    limit: i64,
    lease: Duration,
    failing: bool,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let busy: Vec<Uuid> = held.iter().map(|(id, _)| *id).collect();
    let counts: Vec<i32> = held.iter().map(|(_, n)| *n).collect();
    sqlx::query_as!(
        Claimed,
        r#"WITH candidates AS (
            SELECT d.id
            FROM webhook_endpoints e
            LEFT JOIN unnest($1::uuid[], $5::int[]) AS b(endpoint_id, held)
                ON b.endpoint_id = e.id
            CROSS JOIN LATERAL (
                SELECT c.id, c.next_attempt_at
                FROM webhook_deliveries c
                WHERE c.endpoint_id = e.id AND c.next_attempt_at <= now()
                  AND c.id = (
                      SELECT o.id FROM webhook_deliveries o
                      WHERE o.endpoint_id = c.endpoint_id AND o.payment_id = c.payment_id
                      ORDER BY o.id LIMIT 1
                  )
                ORDER BY c.next_attempt_at, c.id
                LIMIT greatest(CASE WHEN e.consecutive_failures >= $6 THEN 1 ELSE $2 END
                               - coalesce(b.held, 0), 0)
            ) d
            WHERE (e.paused_until IS NULL OR e.paused_until <= now())
              AND (e.consecutive_failures = 0 OR $7)
            ORDER BY d.next_attempt_at, d.id
            LIMIT $3
        ), picked AS (
            SELECT d.id FROM webhook_deliveries d
            WHERE d.id = ANY (ARRAY(SELECT id FROM candidates)) AND d.next_attempt_at <= now()
            FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE webhook_deliveries d
            SET attempts = d.attempts + 1,
                next_attempt_at = now() + make_interval(secs => $4)
            FROM picked WHERE d.id = picked.id
            RETURNING d.id, d.endpoint_id, d.event_id, d.attempts, d.event_created_at
        )
        SELECT c.id AS "delivery_id!", c.endpoint_id AS "endpoint_id!", c.event_id AS "event_id!",
               c.attempts AS "attempt!", e.url, e.secret_encrypted, v.type AS event_type,
               c.event_created_at AS "event_created_at!", v.payment::text AS "payment!"
        FROM claimed c
        JOIN webhook_endpoints e ON e.id = c.endpoint_id
        JOIN events v ON v.id = c.event_id
        ORDER BY c.event_created_at, c.id"#,
        &busy,
        capacity,
        limit,
        lease.as_secs_f64(),
        &counts,
        probe_after,
        failing
    )
    .fetch_all(conn)
    .await
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub delivery_id: i64,
    pub attempt: i32,
    pub endpoint_id: Uuid,
    pub event_id: i64,
    pub attempted_at: DateTime<Utc>,
    pub http_status: Option<i16>,
    pub latency_ms: i32,
    pub error: Option<String>,
    pub next: Next,
}

/// What becomes of the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    Delivered,
    /// Try again after this wait.
    RetryIn(Duration),
    /// The retry window is over: the delivery is dropped and the endpoint marked failing.
    GiveUp,
}

/// How an endpoint that keeps failing is paused: from `after_failures` failures in a row, for
/// `first` doubling with each further failure, up to `longest`.
#[derive(Debug, Clone, Copy)]
pub struct Pause {
    pub after_failures: i32,
    pub first: Duration,
    pub longest: Duration,
}

/// A claim given back unattempted (the endpoint failed meanwhile, or the process is stopping):
/// the delivery is due again at once, its claim count as before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Released {
    pub delivery_id: i64,
    pub attempt: i32,
}

/// Records attempts in one statement: each attempt's row; each delivery deleted (delivered or
/// given up) or rescheduled, if its claim still stands (a row claimed again after its lease
/// ran out belongs to the new claim); each endpoint's failure count, pause and failing mark;
/// and the `released` claims made due again (under the same fence). Run on a
/// [`dispatcher_pool`] connection, its plan walks indexes only.
pub async fn record(
    conn: &mut PgConnection,
    outcomes: &[Outcome],
    released: &[Released],
    pause: Pause,
) -> Result<(), sqlx::Error> {
    let released_ids: Vec<i64> = released.iter().map(|r| r.delivery_id).collect();
    let released_claims: Vec<i32> = released.iter().map(|r| r.attempt).collect();
    let field = |f: fn(&Outcome) -> i64| outcomes.iter().map(f).collect::<Vec<i64>>();
    let deliveries = field(|o| o.delivery_id);
    let claims: Vec<i32> = outcomes.iter().map(|o| o.attempt).collect();
    let endpoints: Vec<Uuid> = outcomes.iter().map(|o| o.endpoint_id).collect();
    let events = field(|o| o.event_id);
    let times: Vec<DateTime<Utc>> = outcomes.iter().map(|o| o.attempted_at).collect();
    let statuses: Vec<Option<i16>> = outcomes.iter().map(|o| o.http_status).collect();
    let latencies: Vec<i32> = outcomes.iter().map(|o| o.latency_ms).collect();
    let errors: Vec<Option<String>> = outcomes.iter().map(|o| o.error.clone()).collect();
    let delivered: Vec<bool> = outcomes.iter().map(|o| o.next == Next::Delivered).collect();
    // Seconds to the next attempt; NULL when the delivery ends (delivered or given up).
    let retry_in: Vec<Option<f64>> = outcomes
        .iter()
        .map(|o| match o.next {
            Next::RetryIn(wait) => Some(wait.as_secs_f64()),
            Next::Delivered | Next::GiveUp => None,
        })
        .collect();
    sqlx::query!(
        r#"WITH input AS (
            SELECT * FROM unnest($1::bigint[], $2::int[], $3::uuid[], $4::bigint[],
                                 $5::timestamptz[], $6::smallint[], $7::int[], $8::text[],
                                 $9::bool[], $10::float8[])
                AS t(delivery_id, claim, endpoint_id, event_id, attempted_at, http_status,
                     latency_ms, error, delivered, retry_in)
        ), logged AS (
            INSERT INTO webhook_attempts (endpoint_id, event_id, attempted_at, http_status,
                                          latency_ms, error)
            SELECT i.endpoint_id, i.event_id, i.attempted_at, i.http_status, i.latency_ms,
                   i.error
            FROM input i
            WHERE EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id = i.endpoint_id)
        ), ended AS (
            DELETE FROM webhook_deliveries d USING input i
            WHERE d.id = i.delivery_id AND d.attempts = i.claim AND i.retry_in IS NULL
        ), rescheduled AS (
            UPDATE webhook_deliveries d
            SET next_attempt_at = now() + make_interval(secs => i.retry_in)
            FROM input i
            WHERE d.id = i.delivery_id AND d.attempts = i.claim AND i.retry_in IS NOT NULL
        ), released AS (
            UPDATE webhook_deliveries d
            SET attempts = d.attempts - 1, next_attempt_at = now()
            FROM unnest($14::bigint[], $15::int[]) AS r(delivery_id, claim)
            WHERE d.id = r.delivery_id AND d.attempts = r.claim
        ), per_endpoint AS (
            SELECT endpoint_id, bool_or(delivered) AS delivered,
                   count(*) FILTER (WHERE NOT delivered)::int AS failures,
                   bool_or(NOT delivered AND retry_in IS NULL) AS gave_up
            FROM input GROUP BY endpoint_id
        )
        UPDATE webhook_endpoints e
        SET consecutive_failures = CASE WHEN s.delivered THEN 0
                                        ELSE e.consecutive_failures + s.failures END,
            paused_until = CASE
                WHEN s.delivered THEN NULL
                WHEN e.consecutive_failures + s.failures >= $11 THEN now() + least(
                    make_interval(secs => $12 * power(2, least(e.consecutive_failures + s.failures - $11, 30))),
                    make_interval(secs => $13))
                ELSE e.paused_until END,
            failing_since = CASE WHEN s.delivered THEN NULL
                                 WHEN s.gave_up THEN coalesce(e.failing_since, now())
                                 ELSE e.failing_since END
        FROM per_endpoint s
        WHERE e.id = s.endpoint_id
          AND (NOT s.delivered OR e.consecutive_failures > 0 OR e.paused_until IS NOT NULL
               OR e.failing_since IS NOT NULL)"#,
        &deliveries,
        &claims,
        &endpoints,
        &events,
        &times,
        &statuses as &[Option<i16>],
        &latencies,
        &errors as &[Option<String>],
        &delivered,
        &retry_in as &[Option<f64>],
        pause.after_failures,
        pause.first.as_secs_f64(),
        pause.longest.as_secs_f64(),
        &released_ids,
        &released_claims
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes up to `limit` attempts made more than `retention` ago; returns how many. Rows
/// another replica is deleting are skipped.
pub async fn delete_expired_attempts(
    conn: &mut PgConnection,
    retention: Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query!(
        r#"DELETE FROM webhook_attempts WHERE id = ANY (ARRAY(
            SELECT id FROM webhook_attempts
            WHERE attempted_at < now() - make_interval(secs => $1)
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
