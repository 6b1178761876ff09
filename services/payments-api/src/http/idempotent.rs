//! Running a POST with `Idempotency-Key` semantics.
//!
//! Without a key the operation simply runs. With one, in a single transaction: take the key's
//! lock (held elsewhere -> 409, the key is in flight), replay the stored response if the key
//! was used (a different request under the same key -> 422), else run the operation and store
//! its response with its effects. Responses that say the request could not run at all
//! (validation, auth, unavailability) are never stored, so a retry after them runs afresh.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::AppState;
use crate::store::idempotency::{self, StoredResponse};

/// A JSON response ready to be stored and replayed byte for byte; an error's is problem
/// details (`application/problem+json`), as [`ApiError`] answers.
pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: StatusCode, body: &impl serde::Serialize) -> Self {
        Self {
            status,
            body: serde_json::to_vec(body).expect("response bodies serialise"),
        }
    }

    pub fn into_response(self, replayed: bool) -> Response {
        let is_error = self.status.is_client_error() || self.status.is_server_error();
        let mut response = (self.status, self.body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(if is_error {
                crate::error::PROBLEM_JSON
            } else {
                "application/json"
            }),
        );
        if replayed {
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

/// Sets `Location` on a `201`, made from its body by `location` (a replay's body is the first
/// request's, so its `Location` is too); other responses pass as they are.
pub async fn with_location(
    response: Response,
    location: impl FnOnce(&serde_json::Value) -> Option<String>,
) -> Response {
    if response.status() != StatusCode::CREATED {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // A body this API made: small, and already in memory.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let value = serde_json::from_slice(&bytes).unwrap_or_default();
    if let Some(value) = location(&value).and_then(|l| HeaderValue::try_from(l).ok()) {
        parts.headers.insert(header::LOCATION, value);
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Identifies a request for comparison under one key: method, path and the body's canonical
/// JSON (key order and whitespace do not matter; values do).
pub fn request_hash(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let canonical = canonical_json(body).unwrap_or_else(|| body.to_vec());
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update([0]);
    hasher.update(path.as_bytes());
    hasher.update([0]);
    hasher.update(&canonical);
    hasher.finalize().to_vec()
}

/// A JSON object body with its keys sorted and whitespace removed. A top-level number keeps
/// its literal text (`70.50` is not `70.5`, and no two amounts collapse into one float);
/// nested values are compared as parsed JSON. `None` for anything but an object.
fn canonical_json(body: &[u8]) -> Option<Vec<u8>> {
    use serde_json::value::RawValue;
    let object: std::collections::BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(body).ok()?;
    let canonical: std::collections::BTreeMap<String, Box<RawValue>> = object
        .into_iter()
        .map(|(key, raw)| {
            let value = if paysys_core::money::is_json_number(raw.get()) {
                raw
            } else {
                let parsed: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
                serde_json::value::to_raw_value(&parsed).ok()?
            };
            Some((key, value))
        })
        .collect::<Option<_>>()?;
    serde_json::to_vec(&canonical).ok()
}

/// Runs `operation` under the key, if any. The closure gets the connection to do its work on;
/// with a key it is the transaction that also stores the response.
pub async fn run<F>(
    app: &AppState,
    principal: &Principal,
    key: Option<String>,
    request_hash: Vec<u8>,
    operation: F,
) -> Result<Response, ApiError>
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Reply, ApiError>>,
{
    let Some(key) = key else {
        let mut conn = app.pool.acquire().await?;
        return Ok(operation(&mut conn).await?.into_response(false));
    };
    let mut tx = app.pool.begin().await?;
    if !idempotency::try_lock(&mut tx, &principal.0, &key).await? {
        return Err(ApiError::IdempotencyKeyInUse);
    }
    if let Some(stored) = idempotency::find(&mut tx, &principal.0, &key).await? {
        if stored.request_hash != request_hash {
            return Err(ApiError::IdempotencyMismatch);
        }
        let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
        return Ok(Reply {
            status,
            body: stored.body,
        }
        .into_response(true));
    }
    let reply = match operation(&mut tx).await {
        Ok(reply) => reply,
        // The request ran and its answer is final: store it like a success.
        Err(
            error @ (ApiError::NotFound(_)
            | ApiError::InvalidStatus { .. }
            | ApiError::RefundExceedsAmountLeft { .. }
            | ApiError::AlreadyDisputed(_)),
        ) => Reply::json(error.status(), &error.body()),
        Err(error) => return Err(error),
    };
    let stored = StoredResponse {
        request_hash,
        status: reply.status.as_u16(),
        body: reply.body,
    };
    idempotency::save(&mut tx, &principal.0, &key, &stored).await?;
    tx.commit().await?;
    Ok(Reply {
        status: reply.status,
        body: stored.body,
    }
    .into_response(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_formatting_but_not_values() {
        let a = request_hash("POST", "/payments", br#"{"amount": 1, "currency": "USD"}"#);
        let b = request_hash("POST", "/payments", br#"{"currency":"USD","amount":1}"#);
        let c = request_hash("POST", "/payments", br#"{"currency":"USD","amount":2}"#);
        let d = request_hash("POST", "/payments/x", br#"{"currency":"USD","amount":1}"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn amounts_that_one_float_would_hold_are_still_different_requests() {
        let a = request_hash("POST", "/payments", br#"{"amount": 0.1}"#);
        let b = request_hash(
            "POST",
            "/payments",
            br#"{"amount": 0.10000000000000000001}"#,
        );
        assert_ne!(a, b);
        let nested = request_hash("POST", "/payments", br#"{"x": {"b": 1,  "a": 2}}"#);
        let reordered = request_hash("POST", "/payments", br#"{"x":{"a":2,"b":1}}"#);
        assert_eq!(nested, reordered);
    }
}
