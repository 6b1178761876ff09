//! `paysys-sim live`: the same story driven through the real payments API at real time.
//!
//! The payments are sent one at a time, in story order, at `--rate` per second (the story's
//! own gaps are not waited for: live mode compresses the story into the time it takes to send
//! it, and the API stamps each payment with its own clock). Then each payment's decision is
//! read back (`GET /payments/{id}`), and the planned dispute of every approved payment is
//! filed (`POST /payments/{id}/disputes`) once `--dispute-after` seconds have passed since it
//! was sent. Everything goes to a JSONL log, one object per line with a `kind`:
//!
//! - `payment`: `seq`, `payment_id`, `body` (the request body sent), `event` (`userId`,
//!   `payeeId`, `paymentMethodId`, `currency`, `amount_minor`, `story_at`), `truth`
//!   (`is_fraud`, `pattern`) and `planned_dispute` (`reason`, `after_seconds`, or null);
//! - `refused`: `seq`, `status`, `body` (the API's answer to a payment it did not accept);
//! - `decision`: `payment_id`, `created_at` (the API's), `outcome` (null if none came);
//! - `dispute`: `payment_id`, `reason`, `status` (the API's answer).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::story::{Params, Story, StoryConfig};

/// One request's answer after this long is a failure of the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Times a payment refused with 503/429 (overload) is sent again.
const OVERLOAD_RETRIES: u32 = 50;

#[derive(Debug, clap::Args)]
pub struct LiveArgs {
    /// Base URL of the payments API, e.g. http://127.0.0.1:5000.
    #[arg(long)]
    pub api: String,
    /// The API key (sent as the Authorization header).
    #[arg(long, env = "PAYSYS_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Seed of the story (the same story as `history --seed`).
    #[arg(long)]
    pub seed: u64,
    /// Payments to send.
    #[arg(long)]
    pub payments: u64,
    /// Payments per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds after a payment was sent before its planned dispute is filed.
    #[arg(long, default_value_t = 10)]
    pub dispute_after: u64,
    /// Days of the story (its shape: hours, bursts, takeovers); live mode sends it compressed.
    #[arg(long, default_value_t = 1)]
    pub days: u32,
    /// First day of the story (default: today, UTC).
    #[arg(long)]
    pub start: Option<NaiveDate>,
    /// The JSONL log of what was sent and answered.
    #[arg(long, default_value = "paysys-sim-live.jsonl")]
    pub log: PathBuf,
    /// Seconds to wait for all decisions after the last payment was sent.
    #[arg(long, default_value_t = 120)]
    pub decision_timeout: u64,
}

/// What a live run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveSummary {
    pub sent: u64,
    pub accepted: u64,
    /// Payments refused, by status.
    pub refused: BTreeMap<u16, u64>,
    pub approved: u64,
    pub declined: u64,
    pub undecided: u64,
    pub disputes_filed: u64,
    /// Disputes the API refused, by status.
    pub disputes_refused: BTreeMap<u16, u64>,
    /// Planned disputes not filed because the API has no dispute route.
    pub disputes_without_route: u64,
}

pub fn describe(summary: &LiveSummary) -> String {
    json!({
        "sent": summary.sent,
        "accepted": summary.accepted,
        "refused": summary.refused,
        "approved": summary.approved,
        "declined": summary.declined,
        "undecided": summary.undecided,
        "disputes_filed": summary.disputes_filed,
        "disputes_refused": summary.disputes_refused,
        "disputes_without_route": summary.disputes_without_route,
    })
    .to_string()
}

struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    key: String,
}

struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Value,
}

impl Api {
    async fn send(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<String>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut request = hyper::Request::builder()
            .method(method.clone())
            .uri(&url)
            .header("authorization", &self.key);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request))
            .await
            .with_context(|| format!("{method} {url}: no answer within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
            .await
            .with_context(|| format!("{method} {url}: body not received"))??
            .to_bytes();
        Ok(Answer {
            status,
            retry_after,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }
}

/// A payment the API accepted.
struct Accepted {
    id: Uuid,
    sent_at: Instant,
    dispute: Option<crate::story::PlannedDispute>,
}

/// The log, one JSON object per line, flushed per line so a test or a person can follow it.
struct Log(std::io::BufWriter<std::fs::File>);

impl Log {
    fn write(&mut self, line: &Value) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.0, line)?;
        self.0.write_all(b"\n")?;
        self.0.flush()?;
        Ok(())
    }
}

pub async fn run(args: &LiveArgs) -> anyhow::Result<LiveSummary> {
    anyhow::ensure!(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate must be positive"
    );
    let story = Story::generate(&StoryConfig {
        seed: args.seed,
        payments: args.payments,
        start: args.start.unwrap_or_else(|| Utc::now().date_naive()),
        days: args.days,
        params: Params::default(),
    })?;
    let api = Api {
        client: Client::builder(TokioExecutor::new()).build_http(),
        base: args.api.trim_end_matches('/').to_owned(),
        key: args.api_key.clone(),
    };
    let file = std::fs::File::create(&args.log)
        .with_context(|| format!("cannot create {}", args.log.display()))?;
    let mut log = Log(std::io::BufWriter::new(file));
    let mut summary = LiveSummary::default();

    // Payments, one at a time in story order, paced at the rate.
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let mut accepted = Vec::new();
    for (seq, event) in story.events.iter().enumerate() {
        tokio::time::sleep_until((started + interval * seq as u32).into()).await;
        let (user, payee, method) = (
            story.user_id(event),
            story.payee_id(event),
            story.payment_method_id(event),
        );
        // The original body; the amount is the exact decimal's own text, a JSON number.
        let body = format!(
            r#"{{"amount": {}, "currency": "{}", "userId": "{user}", "payeeId": "{payee}", "paymentMethodId": "{method}"}}"#,
            event.money.to_decimal(),
            event.money.currency,
        );
        let mut tries = 0;
        let answer = loop {
            let answer = api
                .send(hyper::Method::POST, "/payments", Some(body.clone()), None)
                .await?;
            tries += 1;
            if matches!(answer.status, 429 | 503) && tries < OVERLOAD_RETRIES {
                let wait = answer.retry_after.unwrap_or(Duration::from_millis(200));
                tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
                continue;
            }
            break answer;
        };
        summary.sent += 1;
        let id = answer.body["PaymentId"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok());
        let Some(id) = id.filter(|_| answer.status == 201) else {
            *summary.refused.entry(answer.status).or_default() += 1;
            log.write(
                &json!({"kind": "refused", "seq": seq, "status": answer.status,
                              "body": answer.body}),
            )?;
            continue;
        };
        summary.accepted += 1;
        log.write(&json!({
            "kind": "payment",
            "seq": seq,
            "payment_id": id,
            "body": serde_json::from_str::<Value>(&body)?,
            "event": {
                "userId": user, "payeeId": payee, "paymentMethodId": method,
                "currency": event.money.currency.code(), "amount_minor": event.money.minor,
                "story_at": event.at,
            },
            "truth": {"is_fraud": event.pattern.is_fraud(), "pattern": event.pattern.as_str()},
            "planned_dispute": event.dispute.map(|d| json!({
                "reason": d.reason.as_str(),
                "after_seconds": d.after.num_seconds(),
            })),
        }))?;
        accepted.push(Accepted {
            id,
            sent_at: Instant::now(),
            dispute: event.dispute,
        });
    }

    // Decisions, read back.
    let deadline = Instant::now() + Duration::from_secs(args.decision_timeout);
    let mut approved = Vec::new();
    for payment in &accepted {
        let (created_at, outcome) = decision(&api, payment.id, deadline).await?;
        log.write(&json!({"kind": "decision", "payment_id": payment.id,
                          "created_at": created_at, "outcome": outcome}))?;
        match outcome.as_deref() {
            Some("approved") => {
                summary.approved += 1;
                approved.push(payment);
            }
            Some(_) => summary.declined += 1,
            None => summary.undecided += 1,
        }
    }

    // Disputes of approved payments, each once its delay has passed.
    let after = Duration::from_secs(args.dispute_after);
    for payment in approved {
        let Some(planned) = payment.dispute else {
            continue;
        };
        if summary.disputes_without_route > 0 {
            summary.disputes_without_route += 1;
            continue;
        }
        tokio::time::sleep_until((payment.sent_at + after).into()).await;
        let reason = planned.reason.as_str();
        let answer = api
            .send(
                hyper::Method::POST,
                &format!("/payments/{}/disputes", payment.id),
                Some(json!({"reason": reason}).to_string()),
                Some(&format!("paysys-sim-dispute-{}", payment.id)),
            )
            .await?;
        log.write(
            &json!({"kind": "dispute", "payment_id": payment.id, "reason": reason,
                          "status": answer.status}),
        )?;
        if route_missing(&answer) {
            summary.disputes_without_route += 1;
        } else if matches!(answer.status, 200 | 201) {
            summary.disputes_filed += 1;
        } else {
            *summary.disputes_refused.entry(answer.status).or_default() += 1;
        }
    }
    if summary.disputes_without_route > 0 {
        bail!(
            "the API at {} has no POST /payments/{{id}}/disputes route (answered \"no such \
             route\"): {} planned disputes were not filed; payments and decisions are in {} \
             ({})",
            args.api,
            summary.disputes_without_route,
            args.log.display(),
            describe(&summary)
        );
    }
    Ok(summary)
}

/// Whether the API answered that the route itself does not exist (not that the payment
/// does not): its fallback says "no such route"; a 405 means the path exists for other
/// methods only.
fn route_missing(answer: &Answer) -> bool {
    (answer.status == 404 && answer.body["detail"] == "no such route") || answer.status == 405
}

/// The payment's creation time and, once made, its decision's outcome.
async fn decision(
    api: &Api,
    id: Uuid,
    deadline: Instant,
) -> anyhow::Result<(DateTime<Utc>, Option<String>)> {
    loop {
        let answer = api
            .send(hyper::Method::GET, &format!("/payments/{id}"), None, None)
            .await?;
        if answer.status != 200 {
            bail!(
                "GET /payments/{id} answered {}: {}",
                answer.status,
                answer.body
            );
        }
        let created_at: DateTime<Utc> = serde_json::from_value(answer.body["createdAt"].clone())
            .with_context(|| format!("GET /payments/{id}: no createdAt"))?;
        let outcome = answer.body["decision"]["outcome"]
            .as_str()
            .map(str::to_owned);
        if outcome.is_some() || Instant::now() >= deadline {
            return Ok((created_at, outcome));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
