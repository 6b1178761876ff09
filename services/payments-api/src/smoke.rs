//! `payments-api smoke-test`: checks a running payments API end to end as a client does:
//! creates one payment with an API key and waits until the risk engine's decision is recorded
//! on it. The chart's `helm test` runs it in the payments API's own image (distroless: no
//! shell, no curl), so the test needs no image the system does not already use.
//!
//! Configuration from the environment: `SMOKE_API_URL` (the API's base URL, e.g.
//! `http://paysys-payments-api.paysys.svc:80`), `API_KEY` (never printed),
//! `SMOKE_TIMEOUT_SECONDS` (default 120: the whole check, creation included). Exit 0 with one
//! line naming the payment and its decision, 1 with the reason (2 for bad configuration).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use paysys_runtime::config::{self, ConfigError, Source};
use serde_json::{Value, json};
use uuid::Uuid;

/// The argument that selects this mode: `payments-api smoke-test`.
pub const ARG: &str = "smoke-test";

/// Between two looks at the payment, and between two tries of a refused creation.
const POLL: Duration = Duration::from_millis(500);
/// One request's limit (the overall deadline bounds the whole check).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// True when the binary was started as `payments-api smoke-test`.
pub fn requested() -> bool {
    std::env::args().nth(1).as_deref() == Some(ARG)
}

/// What the smoke test needs.
#[derive(Debug, Clone)]
pub struct SmokeConfig {
    /// Base URL, without a trailing `/`.
    pub url: String,
    pub api_key: String,
    pub timeout: Duration,
}

impl SmokeConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let url = config::required(source, "SMOKE_API_URL")?;
        if !url.starts_with("http://") {
            return Err(ConfigError::new(
                "SMOKE_API_URL",
                "must be an http:// URL (the API inside the cluster)",
            ));
        }
        let timeout = config::parse_or(source, "SMOKE_TIMEOUT_SECONDS", 120u64)?;
        if timeout == 0 {
            return Err(ConfigError::new("SMOKE_TIMEOUT_SECONDS", "must be >= 1"));
        }
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            api_key: config::required(source, "API_KEY")?,
            timeout: Duration::from_secs(timeout),
        })
    }
}

/// The payment the smoke test created and the decision recorded on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub id: String,
    /// `approved` or `declined`.
    pub status: String,
    pub elapsed: Duration,
}

/// Runs the smoke test from the environment and reports as an exit code.
pub async fn main() -> ExitCode {
    let config = match SmokeConfig::from_source(&config::Env) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("payments-api smoke-test: {error}");
            return ExitCode::from(2);
        }
    };
    match run(&config).await {
        Ok(decided) => {
            println!(
                "payment {} created and {} in {:.1} s",
                decided.id,
                decided.status,
                decided.elapsed.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("payments-api smoke-test: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Creates a payment at `config.url` and waits for its decision, within `config.timeout`.
pub async fn run(config: &SmokeConfig) -> Result<Decided, String> {
    let started = Instant::now();
    let deadline = started + config.timeout;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let id = create(&client, config, deadline).await?;
    loop {
        let (status, body) = request(
            &client,
            config,
            "GET",
            &format!("/payments/{id}"),
            None,
            None,
        )
        .await?;
        if status != 200 {
            return Err(format!("GET /payments/{id} answered {status}: {body}"));
        }
        match body["status"].as_str() {
            Some("pending") => {}
            Some(decision @ ("approved" | "declined")) => {
                return Ok(Decided {
                    id,
                    status: decision.to_owned(),
                    elapsed: started.elapsed(),
                });
            }
            other => return Err(format!("payment {id} is {other:?}, not a decision")),
        }
        if Instant::now() + POLL > deadline {
            return Err(format!(
                "payment {id} was created but still pending after {} s: is a risk engine \
                 consuming (kubectl get ps: Risk column)?",
                config.timeout.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `POST /payments`; a refused connection or a `503` (shedding load, starting) is tried
/// again with the same `Idempotency-Key` until `deadline`, so at most one payment is made.
async fn create(
    client: &Client<HttpConnector, Full<Bytes>>,
    config: &SmokeConfig,
    deadline: Instant,
) -> Result<String, String> {
    let idempotency_key = format!("smoke-test-{}", Uuid::new_v4());
    let body = json!({
        "amount": 12.34,
        "currency": "USD",
        "userId": Uuid::new_v4(),
        "payeeId": Uuid::new_v4(),
        "paymentMethodId": Uuid::new_v4(),
    });
    loop {
        let answer = request(
            client,
            config,
            "POST",
            "/payments",
            Some(&idempotency_key),
            Some(&body),
        )
        .await;
        let retry = match answer {
            Ok((201, created)) => {
                // The original demo's answer (`http::views::PaymentChanged`).
                return created["PaymentId"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("201 without a PaymentId: {created}"));
            }
            Ok((503, why)) => format!("503: {why}"),
            Ok((status, why)) => return Err(format!("POST /payments answered {status}: {why}")),
            Err(error) => error,
        };
        if Instant::now() + POLL > deadline {
            return Err(format!(
                "no payment created within {} s; last: {retry}",
                config.timeout.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One request: `(status, JSON body)` (a body that is not JSON comes back as a string).
async fn request(
    client: &Client<HttpConnector, Full<Bytes>>,
    config: &SmokeConfig,
    method: &str,
    path: &str,
    idempotency_key: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let url = format!("{}{path}", config.url);
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(&url)
        .header(hyper::header::AUTHORIZATION, &config.api_key);
    if body.is_some() {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    if let Some(key) = idempotency_key {
        builder = builder.header("idempotency-key", key);
    }
    let request = builder
        .body(Full::new(Bytes::from(
            body.map(Value::to_string).unwrap_or_default(),
        )))
        .map_err(|error| format!("{method} {url}: {error}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|error| format!("{method} {url}: {error}"))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("{method} {url}: reading the answer: {error}"))?
            .to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{method} {url}: no answer within {REQUEST_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_names_what_is_wrong() {
        let ok = SmokeConfig::from_source(&[
            ("SMOKE_API_URL", "http://api.shop.svc:80/"),
            ("API_KEY", "k"),
        ])
        .unwrap();
        assert_eq!(ok.url, "http://api.shop.svc:80");
        assert_eq!(ok.timeout, Duration::from_secs(120));
        for (source, name) in [
            (
                [
                    ("SMOKE_API_URL", ""),
                    ("API_KEY", "k"),
                    ("SMOKE_TIMEOUT_SECONDS", ""),
                ],
                "SMOKE_API_URL",
            ),
            (
                [
                    ("SMOKE_API_URL", "https://x"),
                    ("API_KEY", "k"),
                    ("SMOKE_TIMEOUT_SECONDS", ""),
                ],
                "SMOKE_API_URL",
            ),
            (
                [
                    ("SMOKE_API_URL", "http://x"),
                    ("API_KEY", ""),
                    ("SMOKE_TIMEOUT_SECONDS", ""),
                ],
                "API_KEY",
            ),
            (
                [
                    ("SMOKE_API_URL", "http://x"),
                    ("API_KEY", "k"),
                    ("SMOKE_TIMEOUT_SECONDS", "0"),
                ],
                "SMOKE_TIMEOUT_SECONDS",
            ),
        ] {
            assert_eq!(SmokeConfig::from_source(&source).unwrap_err().name, name);
        }
    }
}
