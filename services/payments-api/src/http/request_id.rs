//! `X-Request-Id`: every request has an id, taken from the request when it sends a valid one
//! (a proxy's or the client's), else a new UUID. The response carries it, every log line of
//! the request has it (a field of the request's span, `http::router`), and every error body
//! names it (`requestId`), so a client's report can be found in the logs.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use uuid::Uuid;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id taken from a request.
const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being handled, if any (errors made outside a request have none).
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Whether a request's id is taken as is: 1 to 128 letters, digits, `-`, `_`, `.` or `:`
/// (nothing that could forge a log line or a header).
pub fn is_valid(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The middleware: settles the id, hands it to the layers inside (the request's header, read
/// by the span) and to the handler (the task-local [`current`]), and sets it on the response.
pub async fn propagate(mut request: Request, next: Next) -> Response {
    let id = match request.headers().get(&HEADER) {
        Some(value) if is_valid(value.as_bytes()) => value.clone(),
        _ => HeaderValue::try_from(Uuid::now_v7().to_string()).expect("a UUID is a header value"),
    };
    request.headers_mut().insert(HEADER, id.clone());
    let text = id
        .to_str()
        .expect("checked or generated as ASCII")
        .to_owned();
    let mut response = CURRENT.scope(text, next.run(request)).await;
    response.headers_mut().insert(HEADER, id);
    response
}

#[cfg(test)]
mod tests {
    use super::is_valid;

    #[test]
    fn ids_that_are_taken_as_sent() {
        assert!(is_valid(b"0193a0c2-7f3e-7cc1-9d1e-4f1b2c3d4e5f"));
        assert!(is_valid(b"req_42.a:b"));
        assert!(is_valid(&[b'a'; 128]));
        assert!(!is_valid(b""));
        assert!(!is_valid(&[b'a'; 129]));
        assert!(!is_valid(b"two words"));
        assert!(!is_valid(b"line\nbreak"));
        assert!(!is_valid("é".as_bytes()));
    }
}
