//! Stored responses for `Idempotency-Key`.
//!
//! A keyed request runs inside one transaction that first takes a transaction-scoped advisory
//! lock on (principal, key): a concurrent request with the same key fails to take it and is
//! told the key is in flight (409), and the stored response is written in the same
//! transaction as the work itself, so a response is stored if and only if its effects are.

use std::time::Duration;

use sqlx::PgConnection;

/// A response stored for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub request_hash: Vec<u8>,
    pub status: u16,
    pub body: Vec<u8>,
}

/// Tries to take the key's lock for the rest of the transaction; false when another
/// transaction holds it.
pub async fn try_lock(
    conn: &mut PgConnection,
    principal: &str,
    key: &str,
) -> Result<bool, sqlx::Error> {
    // hashtextextended gives a 64-bit lock id; a collision only makes an unrelated key wait
    // for a retry (409), never mixes responses, because lookups use the full key.
    sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock(hashtextextended($1 || E'\n' || $2, 0)) AS "locked!""#,
        principal,
        key
    )
    .fetch_one(conn)
    .await
}

pub async fn find(
    conn: &mut PgConnection,
    principal: &str,
    key: &str,
) -> Result<Option<StoredResponse>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT request_hash, response_status, response_body
         FROM idempotency_keys WHERE principal = $1 AND key = $2",
        principal,
        key
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| StoredResponse {
        request_hash: row.request_hash,
        status: row.response_status as u16,
        body: row.response_body,
    }))
}

pub async fn save(
    conn: &mut PgConnection,
    principal: &str,
    key: &str,
    response: &StoredResponse,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO idempotency_keys (principal, key, request_hash, response_status, response_body)
         VALUES ($1, $2, $3, $4, $5)",
        principal,
        key,
        &response.request_hash,
        response.status as i16,
        &response.body
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes keys older than `retention`; returns how many went.
pub async fn delete_expired(
    conn: &mut PgConnection,
    retention: Duration,
) -> Result<u64, sqlx::Error> {
    let seconds = retention.as_secs_f64();
    let result = sqlx::query!(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        seconds
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}
