//! Request extractors that answer with the API's JSON errors instead of axum's plain-text
//! rejections.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::AppState;

/// The authenticated caller. Failures are counted and logged by reason, never with the
/// credential itself.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .map(|value| value.as_bytes());
        match state.auth.authenticate(header).await {
            Ok(principal) => {
                state
                    .rate_limits
                    .check(&principal.0)
                    .map_err(crate::protection::too_many_requests)?;
                Ok(Caller(principal))
            }
            Err(error) => {
                state.metrics.count_auth_failure(error.label());
                tracing::info!(reason = error.label(), path = %parts.uri.path(), "authentication failed");
                Err(ApiError::Unauthorized(error))
            }
        }
    }
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_HEADER) else {
            return Ok(Self(None));
        };
        let key = value
            .to_str()
            .ok()
            .filter(|key| {
                (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or_else(|| {
                ApiError::validation(
                    "Idempotency-Key",
                    "must be 1 to 255 visible ASCII characters",
                )
            })?;
        Ok(Self(Some(key.to_owned())))
    }
}

/// A request body read up to the configured size limit. When `REQUIRED` is true the body must
/// be declared as JSON; an empty body without a content type is accepted otherwise.
pub struct JsonBody<const REQUIRED: bool>(pub axum::body::Bytes);

impl<const REQUIRED: bool> FromRequest<AppState> for JsonBody<REQUIRED> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.limits.max_body_bytes;
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(is_json_media_type);
        let body = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|_| ApiError::PayloadTooLarge(limit))?;
        let empty = body.iter().all(u8::is_ascii_whitespace);
        if !is_json && (REQUIRED || !empty) {
            return Err(ApiError::UnsupportedMediaType);
        }
        Ok(Self(body))
    }
}

fn is_json_media_type(value: &str) -> bool {
    let media_type = value.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_media_types() {
        assert!(super::is_json_media_type("application/json"));
        assert!(super::is_json_media_type("application/json; charset=utf-8"));
        assert!(super::is_json_media_type("Application/JSON"));
        assert!(!super::is_json_media_type("text/plain"));
        assert!(!super::is_json_media_type("application/jsonx"));
    }
}
