//! A merchant's webhook receiver on 127.0.0.1 for the tests: it verifies every signature the
//! way docs/webhooks.md tells merchants to (HMAC-SHA256 of `"<t>.<raw body>"` under the whole
//! secret, any `v1` matching, `t` within 5 minutes), written here from the documentation rather
//! than taken from the API's code, so that the API is held to what merchants were told. It
//! records what it accepted, in order, and answers as its [`Mode`] says (down, failing,
//! hanging, slow), for the fault tests of the payments API and of the whole system.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The tolerance docs/webhooks.md recommends for the signature's timestamp.
const TOLERANCE_SECS: i64 = 300;

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    /// 500 for every request.
    Fail,
    /// 500 the first time each event arrives, 200 after.
    FailFirst,
    /// Never answers the first time each event arrives (past the API's timeout).
    HangFirst,
    /// Never answers at all (before even looking at the request).
    Hang,
    /// Answers 200 after this many milliseconds.
    Slow(u64),
}

/// One event as the receiver accepted it.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: i64,
    pub event_type: String,
    pub payment_id: String,
}

/// A receiver serving `POST /hook` until dropped or [`Receiver::stop`]ped.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
    /// Stops the server running now ([`Receiver::restart`] starts another).
    stop: Mutex<CancellationToken>,
}

struct ReceiverState {
    secret: Mutex<String>,
    mode: Mutex<Mode>,
    seen: Mutex<HashSet<i64>>,
    /// Events answered 2xx, in order of arrival (duplicates included).
    accepted: Mutex<Vec<Received>>,
    requests: AtomicUsize,
    bad_signatures: AtomicUsize,
}

impl Receiver {
    pub async fn start(mode: Mode) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a receiver");
        Self::serve(listener, mode)
    }

    /// On a given address (a receiver that was down comes back where it was).
    pub async fn start_on(addr: SocketAddr, mode: Mode) -> Receiver {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the receiver's port");
        Self::serve(listener, mode)
    }

    fn serve(listener: TcpListener, mode: Mode) -> Receiver {
        let addr = listener.local_addr().expect("receiver address");
        let state = Arc::new(ReceiverState {
            secret: Mutex::new(String::new()),
            mode: Mutex::new(mode),
            seen: Mutex::default(),
            accepted: Mutex::default(),
            requests: AtomicUsize::new(0),
            bad_signatures: AtomicUsize::new(0),
        });
        let stop = Mutex::new(serve(listener, state.clone()));
        Receiver { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The endpoint's signing secret (`whsec_...`), as the API showed it at registration.
    pub fn set_secret(&self, secret: &str) {
        *self.state.secret.lock().unwrap() = secret.to_owned();
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Every event answered 2xx, in order of arrival, duplicates included.
    pub fn accepted(&self) -> Vec<Received> {
        self.state.accepted.lock().unwrap().clone()
    }

    /// The ids of the events answered 2xx.
    pub fn distinct(&self) -> HashSet<i64> {
        self.accepted().iter().map(|r| r.id).collect()
    }

    /// Requests received, answered or not.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests refused for their signature or a `Paysys-Event-Id` not matching the body.
    pub fn bad_signatures(&self) -> usize {
        self.state.bad_signatures.load(Ordering::SeqCst)
    }

    /// Waits until every id in `expected` was accepted; false at the deadline.
    pub async fn wait_for(&self, expected: &HashSet<i64>, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if expected.is_subset(&self.distinct()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        expected.is_subset(&self.distinct())
    }

    /// Stops serving: the port refuses connections (in-flight requests are let finish).
    pub fn stop(&self) {
        self.stop.lock().unwrap().cancel();
    }

    /// Serves again on the same address after [`Receiver::stop`], with what it recorded so
    /// far: a receiver that was down comes back.
    pub async fn restart(&self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("bind the receiver's port again");
        *self.stop.lock().unwrap() = serve(listener, self.state.clone());
    }
}

/// Serves `POST /hook` on `listener` until the returned token is cancelled.
fn serve(listener: TcpListener, state: Arc<ReceiverState>) -> CancellationToken {
    let stop = CancellationToken::new();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(state);
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
    });
    stop
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.lock().unwrap().cancel();
    }
}

/// The first event of a payment that was first accepted after a later one of the same
/// payment (ids increase in commit order), as `(payment, earlier id, later id)`; `None` when
/// every payment's events first arrived in order. Redeliveries are ignored.
pub fn out_of_order(received: &[Received]) -> Option<(String, i64, i64)> {
    let mut first_seen: HashSet<i64> = HashSet::new();
    let mut last_per_payment: HashMap<&str, i64> = HashMap::new();
    for event in received {
        if !first_seen.insert(event.id) {
            continue;
        }
        if let Some(&previous) = last_per_payment.get(event.payment_id.as_str())
            && previous > event.id
        {
            return Some((event.payment_id.clone(), event.id, previous));
        }
        last_per_payment.insert(&event.payment_id, event.id);
    }
    None
}

/// Checks a `Paysys-Signature` header as docs/webhooks.md describes.
fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for (key, value) in header.split(',').filter_map(|p| p.trim().split_once('=')) {
        match key {
            "t" => timestamp = value.parse::<i64>().ok(),
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp.filter(|t| (now - t).abs() <= TOLERANCE_SECS) else {
        return false;
    };
    signatures.iter().any(|signature| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        mac.verify_slice(signature).is_ok()
    })
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if *state.mode.lock().unwrap() == Mode::Hang {
        // Whoever sent it (several endpoints may share this receiver).
        std::future::pending::<()>().await;
    }
    let secret = state.secret.lock().unwrap().clone();
    let header = headers
        .get("paysys-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let event: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let id = event.as_ref().and_then(|e| e["id"].as_i64());
    let header_id = headers.get("paysys-event-id").and_then(|v| v.to_str().ok());
    let (true, Some(event), Some(id)) = (verify(&secret, header, &body), event, id) else {
        state.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::BAD_REQUEST;
    };
    if header_id != Some(id.to_string().as_str()) {
        // Counted with the signatures: the tests assert there are none.
        state.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::BAD_REQUEST;
    }
    let first_time = state.seen.lock().unwrap().insert(id);
    let mode = *state.mode.lock().unwrap();
    match mode {
        Mode::Fail => return StatusCode::INTERNAL_SERVER_ERROR,
        Mode::FailFirst if first_time => return StatusCode::INTERNAL_SERVER_ERROR,
        Mode::HangFirst if first_time => std::future::pending::<()>().await,
        Mode::Slow(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        _ => {}
    }
    state.accepted.lock().unwrap().push(Received {
        id,
        event_type: event["type"].as_str().unwrap_or_default().to_owned(),
        payment_id: event["payment"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    });
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(id: i64, payment: &str) -> Received {
        Received {
            id,
            event_type: "payment.created".into(),
            payment_id: payment.into(),
        }
    }

    #[test]
    fn order_is_per_payment_and_ignores_redeliveries() {
        let fine = [
            received(1, "a"),
            received(3, "b"),
            received(2, "a"),
            received(1, "a"),
        ];
        assert_eq!(out_of_order(&fine), None);
        let late = [received(2, "a"), received(1, "a")];
        assert_eq!(out_of_order(&late), Some(("a".into(), 1, 2)));
    }

    #[test]
    fn verifies_as_the_documentation_says() {
        let secret = "whsec_test";
        let body = br#"{"id":1}"#;
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let sign = |t: i64, secret: &str| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(format!("{t}.").as_bytes());
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        };
        assert!(verify(
            secret,
            &format!("t={t},v1={}", sign(t, secret)),
            body
        ));
        assert!(verify(
            secret,
            &format!("t={t},v1=00,v1={}", sign(t, secret)),
            body
        ));
        assert!(!verify(
            secret,
            &format!("t={t},v1={}", sign(t, "other")),
            body
        ));
        let old = t - 301;
        assert!(!verify(
            secret,
            &format!("t={old},v1={}", sign(old, secret)),
            body
        ));
        assert!(!verify(secret, "v1=00", body));
    }
}
