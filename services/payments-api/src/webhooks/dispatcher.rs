//! The dispatcher: a task of every API process that turns written events into deliveries and
//! delivers them.
//!
//! Each round it (1) sequences the events whose transactions are over ([`store::events::
//! sequence`]: public ids in commit order, one delivery row per subscribed endpoint), then,
//! when webhooks are enabled, (2) claims due deliveries ([`store::webhooks::claim`]: per
//! endpoint, the oldest undelivered event of each payment, so a payment's events reach an
//! endpoint in order; `SKIP LOCKED`, so replicas share the work) and (3) sends each in its own
//! task. Results are written in batches by one recorder ([`store::webhooks::record`]): delivered
//! (2xx) rows are deleted, failed ones rescheduled with exponential backoff and jitter
//! (`backon`), until the retry window is over; then the delivery is given up and the endpoint
//! marked failing. Delivery is at least once: a claim is a lease, and a process that dies
//! mid-delivery leaves the row to be claimed again when it runs out; receivers deduplicate
//! by event id.
//!
//! One slow or dead endpoint never delays the others: an endpoint has at most `per_endpoint`
//! deliveries in flight per process (each round claims only its free slots; a completion
//! starts a round, so a fast endpoint's slots refill at once), every request is bounded in
//! time, and an endpoint failing
//! several times in a row is paused as a whole (its deliveries are not claimed until the pause
//! ends), so it costs one probe per pause rather than an attempt per event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::WebhookSettings;
use super::events::WebhookEvent;
use super::outbound;
use super::secrets::SecretBox;
use super::signature::{self, EVENT_ID_HEADER, SIGNATURE_HEADER};
use crate::metrics::{DeliveryLabels, Metrics};
use crate::store;
use crate::store::webhooks::{Claimed, Next, Outcome, Pause};

/// Bytes of a response read at most (the body is not used; reading a little lets the
/// connection be reused).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Failures in a row after which an endpoint is paused.
pub const PAUSE_AFTER_FAILURES: i32 = 5;
/// Results written per statement at most.
const RECORD_BATCH: usize = 1000;
/// How often the outbox gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait for deliveries in flight when the process stops; the rest are claimed again
/// after their lease (at least once).
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct Dispatcher {
    pub pool: PgPool,
    pub settings: WebhookSettings,
    pub metrics: Arc<Metrics>,
}

/// The state of one dispatcher's run.
struct Run {
    /// Deliveries in flight in this process, per endpoint.
    in_flight: Arc<Mutex<HashMap<Uuid, usize>>>,
    tasks: JoinSet<()>,
    results: mpsc::UnboundedSender<Outcome>,
    /// Wakes the loop when a delivery ends or results are written.
    wake: Arc<Notify>,
    /// How far a claim pushes a delivery's next attempt.
    lease: Duration,
    /// When events were last sequenced, and how many.
    last_sequenced: Option<(Instant, i64)>,
}

/// Everything a delivery task needs.
struct Sender {
    client: reqwest::Client,
    policy: outbound::Policy,
    secrets: SecretBox,
    settings: WebhookSettings,
}

impl Dispatcher {
    /// Runs until `stop`: sequencing always, delivering when webhooks are enabled.
    pub async fn run(self, stop: CancellationToken) {
        let sender = self.settings.secrets.clone().map(|secrets| {
            Arc::new(Sender {
                client: outbound::client(
                    &self.settings.policy,
                    self.settings.connect_timeout,
                    self.settings.timeout,
                ),
                policy: self.settings.policy.clone(),
                secrets,
                settings: self.settings.clone(),
            })
        });
        let (results, outcomes) = mpsc::unbounded_channel::<Outcome>();
        let wake = Arc::new(Notify::new());
        let recorder = tokio::spawn(record_loop(
            self.pool.clone(),
            outcomes,
            Pause {
                after_failures: PAUSE_AFTER_FAILURES,
                first: self.settings.retry_first,
                longest: self.settings.retry_longest,
            },
            self.metrics.clone(),
            wake.clone(),
        ));
        let mut run = Run {
            in_flight: Arc::default(),
            tasks: JoinSet::new(),
            results,
            wake: wake.clone(),
            // A claim outlives the longest attempt, with room for writing its result.
            lease: self.settings.timeout * 2 + Duration::from_secs(5),
            last_sequenced: None,
        };
        let mut db_waits = paysys_runtime::backoff::Backoff::default();
        let mut gauges_at = Instant::now() - GAUGE_INTERVAL;
        tracing::info!(delivering = sender.is_some(), "webhook dispatcher started");
        while !stop.is_cancelled() {
            while run.tasks.try_join_next().is_some() {}
            let round = self.round(sender.as_ref(), &mut run);
            let more = match round.await {
                Ok(more) => {
                    db_waits.reset();
                    more
                }
                Err(error) => {
                    tracing::warn!(%error, "webhook dispatcher cannot reach the database");
                    sleep_or_stop(&stop, db_waits.next_wait()).await;
                    continue;
                }
            };
            if gauges_at.elapsed() >= GAUGE_INTERVAL {
                self.refresh_gauges().await;
                gauges_at = Instant::now();
            }
            if !more {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(self.settings.poll_interval) => {}
                }
            }
        }
        // Deliveries in flight get a short grace; what they do not finish is claimed again
        // after its lease.
        let Run {
            mut tasks, results, ..
        } = run;
        let _ = tokio::time::timeout(STOP_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
        drop(results);
        let _ = tokio::time::timeout(STOP_GRACE, recorder).await;
        tracing::info!("webhook dispatcher stopped");
    }

    /// One round; true when there may be more to do at once.
    async fn round(
        &self,
        sender: Option<&Arc<Sender>>,
        run: &mut Run,
    ) -> Result<bool, sqlx::Error> {
        let batch = self.settings.batch_size;
        let mut conn = self.pool.acquire().await?;
        // Sequencing costs a transaction: at most once per poll interval while there is
        // nothing to sequence.
        let mut more = false;
        let due = run
            .last_sequenced
            .is_none_or(|(at, count)| count > 0 || at.elapsed() >= self.settings.poll_interval);
        if due {
            let sequenced = store::events::sequence(&mut conn, batch).await?;
            run.last_sequenced = Some((Instant::now(), sequenced.unwrap_or(0)));
            more = sequenced == Some(batch);
        }
        let Some(sender) = sender else {
            return Ok(more);
        };
        let busy: Vec<(Uuid, i32)> = run
            .in_flight
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(id, count)| (*id, *count as i32))
            .collect();
        let claimed = store::webhooks::claim(
            &mut conn,
            &busy,
            self.settings.per_endpoint as i64,
            batch,
            run.lease,
        )
        .await?;
        drop(conn);
        more |= claimed.len() as i64 == batch;
        for delivery in claimed {
            *run.in_flight
                .lock()
                .expect("not poisoned")
                .entry(delivery.endpoint_id)
                .or_default() += 1;
            let sender = sender.clone();
            let in_flight = run.in_flight.clone();
            let results = run.results.clone();
            let wake = run.wake.clone();
            let metrics = self.metrics.clone();
            run.tasks.spawn(async move {
                let endpoint = delivery.endpoint_id;
                let outcome = sender.deliver(delivery, &metrics).await;
                let _ = results.send(outcome);
                let mut in_flight = in_flight.lock().expect("not poisoned");
                if let Some(count) = in_flight.get_mut(&endpoint) {
                    *count -= 1;
                    if *count == 0 {
                        in_flight.remove(&endpoint);
                    }
                }
                // A slot is free: the endpoint can take its next delivery.
                wake.notify_one();
            });
        }
        Ok(more)
    }

    async fn refresh_gauges(&self) {
        if let Ok(mut conn) = self.pool.acquire().await
            && let Ok((depth, oldest)) = store::events::outbox(&mut conn).await
        {
            self.metrics.events_outbox_depth.set(depth);
            self.metrics.events_outbox_oldest_age_seconds.set(oldest);
        }
    }
}

impl Sender {
    /// One attempt of one delivery; never fails, every problem is an outcome.
    async fn deliver(&self, claimed: Claimed, metrics: &Metrics) -> Outcome {
        let attempted_at = Utc::now();
        let started = Instant::now();
        let result = self.send(&claimed).await;
        let elapsed = started.elapsed();
        let (http_status, error) = match result {
            Ok(status) if (200..300).contains(&status) => (Some(status as i16), None),
            Ok(status) => (Some(status as i16), Some(format!("HTTP {status}"))),
            Err(error) => (None, Some(error)),
        };
        let next = if error.is_none() {
            Next::Delivered
        } else {
            let wait = retry_wait(
                claimed.attempt.max(1) as usize,
                self.settings.retry_first,
                self.settings.retry_longest,
            );
            // Past the retry window (or beyond the calendar) the next attempt is not made.
            let window = chrono::Duration::from_std(self.settings.retry_window).ok();
            let deadline = window.and_then(|w| claimed.event_created_at.checked_add_signed(w));
            let next_at = chrono::Duration::from_std(wait)
                .ok()
                .and_then(|w| Utc::now().checked_add_signed(w));
            match (deadline, next_at) {
                (Some(deadline), Some(next_at)) if next_at > deadline => Next::GiveUp,
                (Some(_), None) => Next::GiveUp,
                _ => Next::RetryIn(wait),
            }
        };
        let result = match next {
            Next::Delivered => "delivered",
            Next::RetryIn(_) => "failed",
            Next::GiveUp => "given_up",
        };
        metrics
            .webhook_deliveries
            .get_or_create(&DeliveryLabels {
                result: result.into(),
            })
            .inc();
        metrics
            .webhook_delivery_duration
            .observe(elapsed.as_secs_f64());
        if next == Next::Delivered {
            metrics.webhook_event_lag.observe(
                (Utc::now() - claimed.event_created_at)
                    .to_std()
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
        } else {
            // The URL is the merchant's; the error names no secret.
            tracing::info!(
                endpoint = %claimed.endpoint_id, event = claimed.event_id,
                attempt = claimed.attempt, error = error.as_deref().unwrap_or_default(), result,
                "webhook delivery failed"
            );
        }
        Outcome {
            delivery_id: claimed.delivery_id,
            attempt: claimed.attempt,
            endpoint_id: claimed.endpoint_id,
            event_id: claimed.event_id,
            attempted_at,
            http_status,
            latency_ms: elapsed.as_millis().min(i32::MAX as u128) as i32,
            error,
            next,
        }
    }

    /// Sends the event; the HTTP status, or why there was none.
    async fn send(&self, claimed: &Claimed) -> Result<u16, String> {
        // Checked again at every delivery: the form and IP literals here, names as the client
        // resolves them.
        let url = self
            .policy
            .check_url(&claimed.url)
            .map_err(|e| format!("URL refused: {e}"))?;
        let secret = self
            .secrets
            .open(claimed.endpoint_id, &claimed.secret_encrypted)
            .ok_or("the signing secret cannot be decrypted with WEBHOOK_SECRETS_KEY")?;
        let event = WebhookEvent::render(
            claimed.event_id,
            claimed.event_type.clone(),
            claimed.event_created_at,
            &claimed.payment,
        )
        .map_err(|e| {
            tracing::error!(event = claimed.event_id, error = %e, "stored event cannot be rendered");
            "the event cannot be rendered".to_owned()
        })?;
        let body = serde_json::to_vec(&event).expect("events serialize");
        let signature = signature::sign(&secret, Utc::now().timestamp(), &body);
        let mut response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_ID_HEADER, claimed.event_id.to_string())
            .body(body)
            .send()
            .await
            .map_err(describe)?;
        let status = response.status().as_u16();
        let mut read = 0;
        while read < MAX_RESPONSE_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) => break,
                // The status came; a body cut short does not change it.
                Err(_) => break,
            }
        }
        Ok(status)
    }
}

/// An error of the HTTP client, with its causes (the resolver's refusal is a cause).
fn describe(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The wait after the `attempt`-th failed attempt (1-based): `first` doubling up to `longest`,
/// with backon's jitter (up to the wait again), so that many deliveries failing together do
/// not all come back at the same instant.
pub fn retry_wait(attempt: usize, first: Duration, longest: Duration) -> Duration {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(longest)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1).min(64))
        .unwrap_or(longest)
}

/// Writes results in batches; wakes the dispatcher after each (a payment's next event may
/// now be due). A batch that cannot be written is kept and tried again; should the process
/// die first, the deliveries are claimed again after their lease.
async fn record_loop(
    pool: PgPool,
    mut outcomes: mpsc::UnboundedReceiver<Outcome>,
    pause: Pause,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
) {
    let mut batch = Vec::new();
    let mut waits = paysys_runtime::backoff::Backoff::default();
    loop {
        if batch.is_empty() && outcomes.recv_many(&mut batch, RECORD_BATCH).await == 0 {
            return;
        }
        while batch.len() < RECORD_BATCH {
            match outcomes.try_recv() {
                Ok(outcome) => batch.push(outcome),
                Err(_) => break,
            }
        }
        let written = match pool.acquire().await {
            Ok(mut conn) => store::webhooks::record(&mut conn, &batch, pause).await,
            Err(error) => Err(error),
        };
        match written {
            Ok(()) => {
                batch.clear();
                waits.reset();
                wake.notify_one();
            }
            Err(error) => {
                metrics.webhook_record_failures.inc();
                tracing::warn!(%error, pending = batch.len(), "cannot record webhook attempts; retrying");
                if outcomes.is_closed() {
                    // Stopping with the database away: the leases bring these back.
                    return;
                }
                tokio::time::sleep(waits.next_wait()).await;
            }
        }
    }
}

async fn sleep_or_stop(stop: &CancellationToken, delay: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_waits_grow_with_jitter_up_to_the_longest() {
        let first = Duration::from_secs(5);
        let longest = Duration::from_secs(3600);
        for attempt in 1..40 {
            let wait = retry_wait(attempt, first, longest);
            let base = (first * 2u32.pow((attempt as u32 - 1).min(20))).min(longest);
            assert!(wait >= base, "{attempt}: {wait:?} < {base:?}");
            assert!(wait <= base * 2, "{attempt}: {wait:?} > 2 × {base:?}");
        }
        let waits: std::collections::HashSet<_> =
            (0..20).map(|_| retry_wait(3, first, longest)).collect();
        assert!(waits.len() > 1, "jittered waits differ");
    }
}
