//! JWTs verified with an identity provider's JWKS, served here by a small IdP on 127.0.0.1
//! (OpenID Provider configuration + JWKS) whose keys the tests rotate and take down mid-run.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::harness::*;

const ES256_1: &[u8] = include_bytes!("keys/es256-1.pem");
const ES256_2: &[u8] = include_bytes!("keys/es256-2.pem");
const RS256: &[u8] = include_bytes!("keys/rs256.pem");

/// A signing key of the test IdP.
struct Key {
    kid: &'static str,
    algorithm: Algorithm,
    encoding: EncodingKey,
}

impl Key {
    fn new(kid: &'static str, algorithm: Algorithm, pem: &[u8]) -> Key {
        let encoding = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            _ => EncodingKey::from_ec_pem(pem),
        }
        .unwrap();
        Key {
            kid,
            algorithm,
            encoding,
        }
    }

    /// The public half as a JWK with this key's `kid` (and `alg` unless `None`).
    fn jwk(&self, alg: Option<Algorithm>) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.encoding, self.algorithm).unwrap();
        jwk.common.key_id = Some(self.kid.into());
        jwk.common.key_algorithm = alg.map(Into::into);
        serde_json::to_value(jwk).unwrap()
    }

    /// `Bearer <JWT>` for `sub`, signed by this key, naming `kid`.
    fn bearer_as(&self, kid: &str, sub: &str) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(kid.into());
        let claims = json!({"sub": sub, "exp": chrono::Utc::now().timestamp() + 3600});
        format!(
            "Bearer {}",
            encode(&header, &claims, &self.encoding).unwrap()
        )
    }

    fn bearer(&self, sub: &str) -> String {
        self.bearer_as(self.kid, sub)
    }
}

/// The identity provider: what it publishes, whether it answers, and how often it was asked.
#[derive(Default)]
struct Idp {
    keys: Mutex<Vec<Value>>,
    max_age: Mutex<Option<u64>>,
    down: AtomicBool,
    jwks_fetches: AtomicUsize,
    address: Mutex<Option<SocketAddr>>,
}

impl Idp {
    async fn start(keys: Vec<Value>, max_age: Option<u64>) -> Arc<Idp> {
        let idp = Arc::new(Idp {
            keys: Mutex::new(keys),
            max_age: Mutex::new(max_age),
            ..Idp::default()
        });
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/keys", get(jwks))
            .with_state(idp.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *idp.address.lock().unwrap() = Some(listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        idp
    }

    fn discovery_url(&self) -> String {
        let address = self.address.lock().unwrap().unwrap();
        format!("http://{address}/.well-known/openid-configuration")
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }

    fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }
}

async fn discovery(State(idp): State<Arc<Idp>>) -> Response {
    if idp.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let address = idp.address.lock().unwrap().unwrap();
    Json(json!({"issuer": format!("http://{address}"), "jwks_uri": format!("http://{address}/keys")}))
        .into_response()
}

async fn jwks(State(idp): State<Arc<Idp>>) -> Response {
    idp.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if idp.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys = idp.keys.lock().unwrap().clone();
    let mut response = Json(json!({ "keys": keys })).into_response();
    if let Some(seconds) = *idp.max_age.lock().unwrap() {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            format!("public, max-age={seconds}").parse().unwrap(),
        );
    }
    response
}

async fn start_api(idp: &Idp, extra: &[(&str, &str)]) -> TestApi {
    let url = idp.discovery_url();
    let mut overrides = vec![
        ("JWT_ALGORITHM", "ES256"),
        ("JWT_SECRET", ""),
        ("JWT_JWKS_URL", url.as_str()),
        ("JWT_JWKS_MIN_REFRESH_SECONDS", "1"),
    ];
    overrides.extend_from_slice(extra);
    TestApi::start_with(&overrides).await
}

async fn status_as(api: &TestApi, bearer: &str) -> StatusCode {
    api.get("/v1/payments", Some(bearer)).await.status
}

async fn jwks_readiness(api: &TestApi) -> (StatusCode, Value) {
    let reply = api.get("/readyz", None).await;
    (reply.status, reply.body["checks"]["jwks"].clone())
}

async fn wait_for_readiness(api: &TestApi, jwks: &str) {
    paysys_testkit::eventually(Duration::from_secs(10), || async {
        (jwks_readiness(api).await.1 == jwks).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("readiness never said jwks: {jwks}"));
}

async fn metrics(api: &TestApi) -> String {
    api.get("/metrics", None)
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned()
}

fn metric_value(metrics: &str, prefix: &str) -> f64 {
    let line = metric_line(metrics, prefix);
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn metric_line(metrics: &str, prefix: &str) -> String {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
        .to_owned()
}

/// Longer than JWT_JWKS_MIN_REFRESH_SECONDS (1 s in these tests).
const PAST_THE_RATE_LIMIT: Duration = Duration::from_millis(1200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_rotating_its_keys_needs_no_restart() {
    let first = Key::new("first", Algorithm::ES256, ES256_1);
    let second = Key::new("second", Algorithm::ES256, ES256_2);
    let rsa = Key::new("rsa", Algorithm::RS256, RS256);
    // Keys that do not fit the pinned ES256 are published too, and must be ignored: an RSA
    // key, and the first key again under an `alg` of another algorithm.
    let mut es384 = first.jwk(Some(Algorithm::ES384));
    es384["kid"] = "first-es384".into();
    let idp = Idp::start(
        vec![first.jwk(Some(Algorithm::ES256)), rsa.jwk(None), es384],
        Some(3600),
    )
    .await;
    let api = start_api(&idp, &[]).await;
    wait_for_readiness(&api, "up").await;
    assert_eq!(
        status_as(&api, &first.bearer("carol")).await,
        StatusCode::OK
    );
    // An API key still works beside the JWKS.
    assert_eq!(status_as(&api, ALICE).await, StatusCode::OK);
    let shown = metrics(&api).await;
    assert_eq!(
        metric_line(&shown, "paysys_api_jwks_keys "),
        "paysys_api_jwks_keys 1"
    );

    // The ignored keys verify nothing: the RSA key's token is another algorithm, and an
    // ES256 token naming the ignored keys' kids finds no key.
    assert_eq!(
        status_as(&api, &rsa.bearer("mallory")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_as(&api, &first.bearer_as("first-es384", "mallory")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_as(&api, &first.bearer_as("rsa", "mallory")).await,
        StatusCode::UNAUTHORIZED
    );

    // The IdP rotates: the second key replaces the first. Its first token makes the API fetch
    // the keys again (past the rate limit), without a restart.
    idp.publish(vec![second.jwk(None)]);
    tokio::time::sleep(PAST_THE_RATE_LIMIT).await;
    let before = idp.fetches();
    assert_eq!(
        status_as(&api, &second.bearer("carol")).await,
        StatusCode::OK
    );
    assert_eq!(idp.fetches(), before + 1, "one fetch for the new kid");
    // The retired key is gone with the JWKS that no longer lists it.
    assert_eq!(
        status_as(&api, &first.bearer("carol")).await,
        StatusCode::UNAUTHORIZED
    );

    // Unknown kids right after a fetch: refused without asking the IdP again, even many at once.
    let before = idp.fetches();
    let unknown = second.bearer_as("made-up", "mallory");
    let statuses = futures::future::join_all((0..20).map(|_| status_as(&api, &unknown))).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(
        idp.fetches(),
        before,
        "rate-limited: no fetch within the interval"
    );
    // Past the interval, an unknown kid may look once more, and many at once share that one
    // fetch.
    tokio::time::sleep(PAST_THE_RATE_LIMIT).await;
    let statuses = futures::future::join_all((0..20).map(|_| status_as(&api, &unknown))).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(idp.fetches(), before + 1, "one shared fetch");

    // The IdP goes down: a refresh fails, the last good keys keep working, readiness says
    // stale (still ready), and the failure is counted.
    idp.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(PAST_THE_RATE_LIMIT).await;
    assert_eq!(status_as(&api, &unknown).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status_as(&api, &second.bearer("carol")).await,
        StatusCode::OK
    );
    let (status, jwks) = jwks_readiness(&api).await;
    assert_eq!(jwks, "stale");
    assert_eq!(status, StatusCode::OK, "stale keys leave the API ready");
    let shown = metrics(&api).await;
    // At least this one; the background retry may have failed again since.
    assert!(metric_value(&shown, "paysys_api_jwks_refresh_total{result=\"failed\"}") >= 1.0);
    assert_eq!(
        metric_line(&shown, "paysys_api_jwks_keys "),
        "paysys_api_jwks_keys 1"
    );
    assert!(
        shown.contains("reason=\"unknown_key_id\""),
        "unknown kids are counted as auth failures:\n{shown}"
    );

    // Back up: the next refresh (the background retry) clears the staleness.
    idp.down.store(false, Ordering::SeqCst);
    wait_for_readiness(&api, "up").await;
    assert_eq!(
        status_as(&api, &second.bearer("carol")).await,
        StatusCode::OK
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_refreshed_when_their_max_age_passes() {
    let first = Key::new("first", Algorithm::ES256, ES256_1);
    let second = Key::new("second", Algorithm::ES256, ES256_2);
    let idp = Idp::start(vec![first.jwk(None)], Some(1)).await;
    let api = start_api(&idp, &[("JWT_JWKS_CACHE_TTL_SECONDS", "3600")]).await;
    wait_for_readiness(&api, "up").await;
    assert_eq!(
        status_as(&api, &first.bearer("carol")).await,
        StatusCode::OK
    );

    // Only the first key is known; no token names the second, yet once max-age (1 s, not the
    // configured hour) passes, the background refresh drops the first key.
    idp.publish(vec![second.jwk(None)]);
    paysys_testkit::eventually(Duration::from_secs(10), || async {
        (status_as(&api, &first.bearer("carol")).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await
    .expect("the expired keys were refreshed");
    assert_eq!(
        status_as(&api, &second.bearer("carol")).await,
        StatusCode::OK
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_never_loaded_keys_is_not_ready_until_it_does() {
    let first = Key::new("first", Algorithm::ES256, ES256_1);
    let idp = Idp::start(vec![first.jwk(None)], None).await;
    idp.down.store(true, Ordering::SeqCst);
    let api = start_api(&idp, &[]).await;
    paysys_testkit::eventually(Duration::from_secs(10), || async {
        let shown = metrics(&api).await;
        shown
            .contains("paysys_api_jwks_refresh_total{result=\"failed\"}")
            .then_some(())
    })
    .await
    .expect("the first fetch failed");
    let (status, jwks) = jwks_readiness(&api).await;
    assert_eq!(
        (status, jwks),
        (StatusCode::SERVICE_UNAVAILABLE, json!("down"))
    );
    assert_eq!(
        status_as(&api, &first.bearer("carol")).await,
        StatusCode::UNAUTHORIZED
    );
    // API keys do not depend on the IdP.
    assert_eq!(status_as(&api, ALICE).await, StatusCode::OK);

    // The IdP comes up: the retry loads the keys without a restart.
    idp.down.store(false, Ordering::SeqCst);
    wait_for_readiness(&api, "up").await;
    assert_eq!(
        status_as(&api, &first.bearer("carol")).await,
        StatusCode::OK
    );
    api.stop().await;
}
