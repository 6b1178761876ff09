//! JWT verification keys from an identity provider: its JWKS (RFC 7517), read from
//! `JWT_JWKS_URL` directly or through the OpenID Provider configuration found there, so that
//! the IdP can rotate its signing keys without the API being restarted.
//!
//! - A token's key is chosen by its `kid` among the cached keys.
//! - The cache is refreshed by a background task when it expires (the JWKS response's
//!   `Cache-Control: max-age`, else `JWT_JWKS_CACHE_TTL_SECONDS`), and at once when a token
//!   names a `kid` the cache does not hold (the IdP has just rotated). Fetches are at least
//!   `JWT_JWKS_MIN_REFRESH_SECONDS` apart whatever asks for them, so tokens with made-up `kid`s
//!   cannot make the API hammer the IdP, and concurrent requests share one fetch.
//! - A refresh that fails (IdP down, an error status, a document with no usable key) keeps the
//!   last good keys: tokens keep being verified while the IdP is away. Readiness says `stale`
//!   (still ready) or, before any key was ever loaded, `down` (not ready).
//! - The algorithm stays pinned by `JWT_ALGORITHM`: a published key whose `kty` (or curve)
//!   does not fit it, whose `alg` names another algorithm, or that is meant for encryption
//!   (`use: enc`) is ignored, so the JWKS can never widen what the API accepts.
//! - Only `https` URLs, or plain `http` to a loopback address (a local sidecar, tests): the
//!   keys decide who may move money, so they are never read over a network in clear text.
//!   Redirects are not followed, fetches time out and documents are capped in size.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use paysys_runtime::config::{self, ConfigError, Source, redact_url};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use reqwest::Url;
use reqwest::header::{ACCEPT, CACHE_CONTROL, HeaderMap};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::AuthError;

/// Longest one refresh may take, discovery document and JWKS together. A request that found
/// an unknown `kid` waits for it, so it stays well inside the request timeout.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest discovery document or JWKS read; real ones are a few kilobytes.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Longest the keys are kept before they are fetched again, whatever `max-age` says, so a
/// revoked key does not outlive a day.
const MAX_CACHE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Where and how often the keys are fetched.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    pub url: Url,
    /// How long the keys are kept when the JWKS response sets no `max-age`.
    pub cache_ttl: Duration,
    /// Shortest time between two fetches (unknown-`kid` refreshes, retries after a failure).
    pub min_refresh_interval: Duration,
}

impl JwksSettings {
    /// `JWT_JWKS_URL` (an OpenID Provider configuration or a JWKS URL; unset: no JWKS), with
    /// `JWT_JWKS_CACHE_TTL_SECONDS` (default 300) and `JWT_JWKS_MIN_REFRESH_SECONDS` (default
    /// 30).
    pub fn from_source(source: &dyn Source) -> Result<Option<Self>, ConfigError> {
        let Some(text) = config::optional(source, "JWT_JWKS_URL") else {
            return Ok(None);
        };
        let url = Url::parse(text.trim())
            .map_err(|e| ConfigError::new("JWT_JWKS_URL", format!("not a URL: {e}")))?;
        check_url(&url).map_err(|m| ConfigError::new("JWT_JWKS_URL", m))?;
        let seconds = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            match config::parse_or(source, name, default)? {
                0 => Err(ConfigError::new(name, "must be greater than zero")),
                seconds => Ok(Duration::from_secs(seconds)),
            }
        };
        Ok(Some(Self {
            url,
            cache_ttl: seconds("JWT_JWKS_CACHE_TTL_SECONDS", 300)?,
            min_refresh_interval: seconds("JWT_JWKS_MIN_REFRESH_SECONDS", 30)?,
        }))
    }
}

/// `https`, or `http` to a loopback address.
fn check_url(url: &Url) -> Result<(), String> {
    let loopback = url.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "{} must use https (plain http only to a loopback address)",
            redact_url(url.as_str())
        )),
        other => Err(format!("scheme '{other}' is not http(s)")),
    }
}

/// What readiness says of the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksHealth {
    /// The last refresh succeeded.
    Up,
    /// The last refresh failed; the last good keys are used.
    Stale,
    /// No key was ever loaded: no token can be verified.
    Down,
}

impl JwksHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Stale => "stale",
            Self::Down => "down",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// The JWKS metrics, registered with the API's others when a JWKS is configured.
#[derive(Clone, Default)]
pub struct JwksMetrics {
    /// Refreshes by result (`ok`, `failed`).
    pub refreshes: Family<ResultLabels, Counter>,
    /// Keys held that fit the pinned algorithm.
    pub keys: Gauge,
    /// Unix time of the last successful refresh (0: never).
    pub last_success: Gauge,
}

impl JwksMetrics {
    fn count(&self, result: &str) {
        self.refreshes
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

/// The keys as of the last successful refresh.
#[derive(Default)]
struct KeyCache {
    /// Each usable key with its `kid`.
    keys: Vec<(Option<String>, DecodingKey)>,
    /// When the keys are to be fetched again; `None` until a refresh succeeds.
    expires: Option<Instant>,
    /// Whether the last refresh failed.
    last_failed: bool,
}

/// Why a refresh is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The cache expired (or was never loaded, or the last refresh failed).
    Expiry,
    /// A token named a `kid` the cache does not hold.
    UnknownKey,
}

/// The cached keys of one JWKS URL and the means to refresh them.
pub struct Jwks {
    settings: JwksSettings,
    algorithm: Algorithm,
    client: reqwest::Client,
    cache: RwLock<Arc<KeyCache>>,
    /// Held during a fetch, so that concurrent triggers share it; holds the last attempt's
    /// time for the rate limit.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    /// Wakes [`Jwks::run`] after every fetch, so that its next wait follows the outcome (a
    /// failed unknown-`kid` refresh is retried soon, not when the old keys expire).
    fetched: tokio::sync::Notify,
    metrics: JwksMetrics,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &redact_url(self.settings.url.as_str()))
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl Jwks {
    /// Keys for `algorithm` (RS256 or ES256), none loaded yet: [`Jwks::run`] loads them.
    pub fn new(settings: JwksSettings, algorithm: Algorithm) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(FETCH_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .build()?;
        Ok(Self {
            settings,
            algorithm,
            client,
            cache: RwLock::default(),
            fetching: tokio::sync::Mutex::new(None),
            fetched: tokio::sync::Notify::new(),
            metrics: JwksMetrics::default(),
        })
    }

    pub fn metrics(&self) -> &JwksMetrics {
        &self.metrics
    }

    pub fn health(&self) -> JwksHealth {
        let cache = self.cache();
        match (cache.expires, cache.last_failed) {
            (None, _) => JwksHealth::Down,
            (Some(_), true) => JwksHealth::Stale,
            (Some(_), false) => JwksHealth::Up,
        }
    }

    fn cache(&self) -> Arc<KeyCache> {
        self.cache
            .read()
            .expect("the key cache lock is never poisoned")
            .clone()
    }

    /// The key a token with `kid` is verified with. An unknown `kid` refreshes the keys first
    /// (rate-limited); a token without `kid` is accepted only while the JWKS holds one key.
    pub async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, AuthError> {
        let lookup = || -> Option<DecodingKey> {
            let cache = self.cache();
            match kid {
                Some(kid) => cache
                    .keys
                    .iter()
                    .find(|(id, _)| id.as_deref() == Some(kid))
                    .map(|(_, key)| key.clone()),
                None => match cache.keys.as_slice() {
                    [(_, key)] => Some(key.clone()),
                    _ => None,
                },
            }
        };
        if let Some(key) = lookup() {
            return Ok(key);
        }
        if kid.is_none() && !self.cache().keys.is_empty() {
            // Several keys and nothing to choose by: fetching again would not help.
            return Err(AuthError::InvalidToken("missing_key_id"));
        }
        self.refresh(Trigger::UnknownKey).await;
        lookup().ok_or(AuthError::InvalidToken("unknown_key_id"))
    }

    /// Keeps the keys fresh until `stop`: loads them at once, then refreshes them when they
    /// expire, or `JWT_JWKS_MIN_REFRESH_SECONDS` after a failed attempt.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            self.refresh(Trigger::Expiry).await;
            let cache = self.cache();
            // Never zero: a refresh held back by the rate limit must not make this spin.
            let wait = match cache.expires {
                Some(at) if !cache.last_failed => at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100)),
                _ => self.settings.min_refresh_interval,
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.fetched.notified() => {}
            }
        }
    }

    async fn refresh(&self, trigger: Trigger) {
        let mut last_attempt = self.fetching.lock().await;
        let now = Instant::now();
        if trigger == Trigger::Expiry {
            // Another trigger may have refreshed while this one waited for the lock.
            let cache = self.cache();
            let fresh = cache.expires.is_some_and(|at| now < at) && !cache.last_failed;
            if fresh {
                return;
            }
        }
        if last_attempt
            .is_some_and(|at| now.duration_since(at) < self.settings.min_refresh_interval)
        {
            return;
        }
        *last_attempt = Some(now);
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.fetch())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", FETCH_TIMEOUT.as_secs())));
        let url = redact_url(self.settings.url.as_str());
        let previous = self.cache();
        let updated = match fetched {
            Ok((keys, lifetime)) => {
                self.metrics.count("ok");
                self.metrics.keys.set(keys.len() as i64);
                let unix = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                self.metrics.last_success.set(unix as i64);
                let kids = |keys: &[(Option<String>, DecodingKey)]| -> Vec<Option<String>> {
                    keys.iter().map(|(kid, _)| kid.clone()).collect()
                };
                if kids(&keys) != kids(&previous.keys) {
                    tracing::info!(%url, ?trigger, kids = ?kids(&keys), "JWKS keys loaded");
                }
                KeyCache {
                    keys,
                    expires: Some(now + lifetime),
                    last_failed: false,
                }
            }
            Err(error) => {
                self.metrics.count("failed");
                tracing::warn!(%url, ?trigger, %error, kept = previous.keys.len(), "JWKS refresh failed; keeping the last good keys");
                KeyCache {
                    keys: previous.keys.clone(),
                    expires: previous.expires,
                    last_failed: true,
                }
            }
        };
        *self
            .cache
            .write()
            .expect("the key cache lock is never poisoned") = Arc::new(updated);
        self.fetched.notify_one();
    }

    /// The usable keys and how long to keep them.
    async fn fetch(&self) -> Result<(Vec<(Option<String>, DecodingKey)>, Duration), String> {
        let (mut document, mut max_age) = self.get_json(&self.settings.url).await?;
        if document.get("keys").is_none() {
            // An OpenID Provider configuration: it names the JWKS. Read each time, so that a
            // provider moving its JWKS is followed too.
            let jwks_uri = document
                .get("jwks_uri")
                .and_then(Value::as_str)
                .ok_or("the document is neither a JWKS (`keys`) nor an OpenID Provider configuration (`jwks_uri`)")?;
            let jwks_uri =
                Url::parse(jwks_uri).map_err(|e| format!("jwks_uri is not a URL: {e}"))?;
            check_url(&jwks_uri).map_err(|m| format!("jwks_uri: {m}"))?;
            (document, max_age) = self.get_json(&jwks_uri).await?;
        }
        let published = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("`keys` is not a list")?;
        // Each key is read on its own: one the jsonwebtoken types cannot represent (another
        // key type, an unknown `alg`) is skipped, not a reason to drop the whole set.
        let keys: Vec<_> = published
            .iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value.clone()).ok())
            .filter_map(|jwk| {
                let key = usable_key(&jwk, self.algorithm)?;
                Some((jwk.common.key_id, key))
            })
            .collect();
        if keys.is_empty() {
            // Refused like an unreachable JWKS, so the last good keys stay in use.
            return Err(format!(
                "none of the {} published keys is a {:?} signing key",
                published.len(),
                self.algorithm
            ));
        }
        let lifetime = max_age
            .unwrap_or(self.settings.cache_ttl)
            .clamp(self.settings.min_refresh_interval, MAX_CACHE_LIFETIME);
        Ok((keys, lifetime))
    }

    /// The JSON document at `url` and its `max-age`.
    async fn get_json(&self, url: &Url) -> Result<(Value, Option<Duration>), String> {
        let shown = redact_url(url.as_str());
        let mut response = self
            .client
            .get(url.clone())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("{shown}: {}", error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{shown}: HTTP {status}"));
        }
        let max_age = max_age(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("{shown}: {}", error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{shown}: larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let document =
            serde_json::from_slice(&body).map_err(|e| format!("{shown}: not JSON: {e}"))?;
        Ok((document, max_age))
    }
}

/// The error and its causes (reqwest's own message hides the connection error).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `max-age` of a `Cache-Control` header; `no-cache`/`no-store` (or none) leave the
/// configured lifetime.
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| value.trim().trim_matches('"').parse().ok())
                .flatten()
                .map(Duration::from_secs)
        })
}

/// The key of `jwk` when it can verify `algorithm` signatures, else `None`.
fn usable_key(jwk: &Jwk, algorithm: Algorithm) -> Option<DecodingKey> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|used| *used != PublicKeyUse::Signature)
    {
        return None;
    }
    if jwk
        .common
        .key_algorithm
        .is_some_and(|alg| alg != KeyAlgorithm::from(algorithm))
    {
        return None;
    }
    let fits = match (algorithm, &jwk.algorithm) {
        (Algorithm::RS256, AlgorithmParameters::RSA(_)) => true,
        (Algorithm::ES256, AlgorithmParameters::EllipticCurve(params)) => {
            params.curve == EllipticCurve::P256
        }
        _ => false,
    };
    if !fits {
        return None;
    }
    DecodingKey::from_jwk(jwk).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwk(value: Value) -> Jwk {
        serde_json::from_value(value).unwrap()
    }

    // A P-256 public key (RFC 7515 appendix A.3) and an RSA one (RFC 7517 appendix A.1).
    fn ec(extra: Value) -> Jwk {
        let mut key = json!({"kty": "EC", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        key.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        jwk(key)
    }

    fn rsa() -> Jwk {
        jwk(json!({"kty": "RSA", "e": "AQAB",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}))
    }

    #[test]
    fn only_keys_that_fit_the_pinned_algorithm_are_used() {
        assert!(usable_key(&ec(json!({})), Algorithm::ES256).is_some());
        assert!(usable_key(&ec(json!({"alg": "ES256", "use": "sig"})), Algorithm::ES256).is_some());
        assert!(usable_key(&rsa(), Algorithm::RS256).is_some());
        // The wrong key type for the algorithm, either way.
        assert!(usable_key(&rsa(), Algorithm::ES256).is_none());
        assert!(usable_key(&ec(json!({})), Algorithm::RS256).is_none());
        // An `alg` naming another algorithm, or an encryption key.
        assert!(usable_key(&ec(json!({"alg": "ES384"})), Algorithm::ES256).is_none());
        assert!(usable_key(&ec(json!({"use": "enc"})), Algorithm::ES256).is_none());
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let headers = |values: &[&str]| {
            let mut map = HeaderMap::new();
            for value in values {
                map.append(CACHE_CONTROL, value.parse().unwrap());
            }
            map
        };
        assert_eq!(
            max_age(&headers(&["public, max-age=3600, must-revalidate"])),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            max_age(&headers(&["no-cache", "Max-Age=60"])),
            Some(Duration::from_secs(60))
        );
        assert_eq!(max_age(&headers(&["no-store"])), None);
        assert_eq!(max_age(&headers(&["max-age=soon"])), None);
        assert_eq!(max_age(&headers(&[])), None);
    }

    #[test]
    fn urls_are_https_or_loopback_http() {
        let check = |url: &str| check_url(&Url::parse(url).unwrap());
        assert!(check("https://idp.example.com/.well-known/openid-configuration").is_ok());
        assert!(check("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check("http://localhost/jwks").is_ok());
        assert!(check("http://[::1]/jwks").is_ok());
        assert!(check("http://idp.example.com/jwks").is_err());
        assert!(check("http://10.0.0.1/jwks").is_err());
        assert!(check("file:///etc/jwks.json").is_err());
    }

    #[test]
    fn configuration_errors_name_their_variable() {
        let error = |pairs: &[(&str, &str)]| {
            let env: std::collections::HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            JwksSettings::from_source(&env).unwrap_err().name
        };
        assert_eq!(error(&[("JWT_JWKS_URL", "not a url")]), "JWT_JWKS_URL");
        assert_eq!(
            error(&[("JWT_JWKS_URL", "http://idp.example.com/")]),
            "JWT_JWKS_URL"
        );
        assert_eq!(
            error(&[
                ("JWT_JWKS_URL", "https://idp.example.com/"),
                ("JWT_JWKS_CACHE_TTL_SECONDS", "0")
            ]),
            "JWT_JWKS_CACHE_TTL_SECONDS"
        );
        assert_eq!(
            error(&[
                ("JWT_JWKS_URL", "https://idp.example.com/"),
                ("JWT_JWKS_MIN_REFRESH_SECONDS", "soon")
            ]),
            "JWT_JWKS_MIN_REFRESH_SECONDS"
        );
        let settings = JwksSettings::from_source(&[("JWT_JWKS_URL", "https://idp.example.com/")])
            .unwrap()
            .unwrap();
        assert_eq!(settings.cache_ttl, Duration::from_secs(300));
        assert_eq!(settings.min_refresh_interval, Duration::from_secs(30));
    }
}
