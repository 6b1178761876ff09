//! The dispatcher: a task of every API process that turns written events into deliveries and
//! delivers them.
//!
//! Each round it (1) sequences the events whose transactions are over ([`store::events::
//! sequence`]: public ids in commit order), then, when webhooks are enabled, (2) fans events
//! out lazily, per endpoint ([`store::webhooks::fan_out`]): each endpoint has a cursor, the
//! last event turned into its delivery rows, and the events above it that it subscribes to
//! are owed to it; only endpoints that are not paused get rows, and only as many as their
//! lanes can take ([`FAN_OUT_AHEAD`] times the claim capacity once their latest attempt
//! succeeded, one otherwise), so a dead endpoint holds one row (its probe's) instead of one
//! per event, and catches up in bounded batches when it comes back; (3) claims due deliveries
//! ([`store::webhooks::claim`]: per endpoint, the oldest undelivered event of each payment, so
//! a payment's events reach an endpoint in order; `SKIP LOCKED`, so replicas share the work)
//! into the endpoint's *lane* in memory, and (4) each lane sends with at most `per_endpoint`
//! workers (one until a delivery to that endpoint succeeds: a slow start), each taking the
//! next claimed delivery as soon as its previous attempt ends. Results are written in batches
//! by one recorder ([`store::webhooks::record`]): delivered (2xx) rows are deleted, failed ones
//! rescheduled with exponential backoff and jitter (`backon`), until the retry window is over;
//! then the delivery is given up and the endpoint marked failing. The window counts from the
//! event's creation however late its row was made: after a pause longer than the window an
//! old event is still sent, and its first failed attempt gives it up (the same path as any
//! other). Delivery is at least once: a claim is a lease, and a process that dies
//! mid-delivery leaves the row to be claimed again when it runs out; receivers deduplicate by
//! event id.
//!
//! Why lanes: sending is fast (a loopback round trip is well under a millisecond) while a
//! claim is a database round; claiming [`CLAIM_AHEAD`] deliveries per slot lets a lane refill
//! its slots from memory and keeps the claims to a few per second per busy endpoint instead of
//! one per delivery. The lease covers the wait in the lane, and a delivery still waiting when
//! its lease could run out during the attempt is given back rather than sent. Each event's body
//! is rendered once per claim round, whatever the number of endpoints it goes to, and each
//! endpoint's URL check and secret are kept while they do not change; one HTTP client keeps
//! pooled connections per host.
//!
//! Its statements run on connections of its own ([`store::webhooks::dispatcher_pool`]) that
//! plan by index only, so that neither a deliveries table analyzed while nearly empty nor a
//! thousand one-row endpoints beside a few busy ones turns a claim or a fan-out into a scan of
//! whole tables or backlogs; endpoints whose latest attempts failed are looked at once per
//! first retry wait, not every round; the outbox gauges are counted by a task of their own.
//!
//! One slow or dead endpoint never delays the others: every lane has its own workers, every
//! request is bounded in time, an attempt that fails halts its lane (its queued claims are
//! given back unattempted, and nothing more is claimed for it for `retry_first`), and an
//! endpoint failing several times in a row is paused as a whole (its deliveries are not
//! claimed until the pause ends, and then only one as a probe until a delivery succeeds), so a
//! dead receiver costs one probe per pause rather than an attempt per event.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::Url;
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
use crate::store::webhooks::{Claimed, FanOut, Next, Outcome, Pause, Released};

/// Bytes of a response read at most (the body is not used; reading a little lets the
/// connection be reused).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Failures in a row after which an endpoint is paused (and, after the pause, probed with one
/// delivery at a time until one succeeds).
pub const PAUSE_AFTER_FAILURES: i32 = 5;
/// Deliveries claimed per in-flight slot of an endpoint: a lane holds up to this many times
/// `per_endpoint`, so its slots refill from memory between claim rounds.
pub const CLAIM_AHEAD: usize = 4;
/// An endpoint whose latest attempt succeeded has its deliveries made (fanned out) up to this
/// many times its claim capacity (`per_endpoint` × [`CLAIM_AHEAD`]) ahead, rows waiting for
/// their result to be written included; any other, only one (the slow start's and the
/// probe's).
pub const FAN_OUT_AHEAD: usize = 8;
/// Rows made per endpoint and round at most, in claim capacities: the whole room (less made a
/// single busy endpoint's events wait for the next round: its lag doubled in the benchmark).
const FAN_OUT_PER_ROUND: usize = FAN_OUT_AHEAD;
/// Events read per endpoint and fan-out at most (of its subscribed types or not).
const FAN_OUT_SCAN: i64 = 4096;
/// How often endpoints whose latest attempts failed are looked at, at most (the first retry
/// wait when shorter): fanned out to (at most one row each, when they have none: the next one
/// to try, or to probe with after a pause) and claimed from. None of their deliveries comes due
/// sooner than the first retry wait after a failure, and a thousand dead endpoints looked at in
/// every round made each round slower for the live ones.
const FAILING_INTERVAL: Duration = Duration::from_secs(1);
/// Endpoints fanned out per statement at most (the most behind first).
const FAN_OUT_ENDPOINTS: i64 = 128;
/// Results written per statement at most.
const RECORD_BATCH: usize = 1000;
/// How often the outbox gauges are refreshed at most; a refresh that takes longer than a
/// twentieth of it spaces the next one out to twenty times its own duration, so that counting
/// what is owed takes at most a twentieth of a connection's time.
const GAUGE_INTERVAL: Duration = Duration::from_secs(2);
/// Events counted per endpoint at most in the depth gauge: an endpoint dead for days is owed
/// every event since, and counting them all at each refresh grows without bound.
const GAUGE_OWED_PER_ENDPOINT: i64 = 10_000;
/// Longest wait for deliveries in flight when the process stops; the rest are claimed again
/// after their lease (at least once).
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Endpoint targets kept at most (URL checked, secret opened); beyond, the cache starts over.
const TARGETS_KEPT: usize = 10_000;
/// The dispatcher's own database connections at most: its loop's, the recorder's and the
/// gauges'.
pub const DISPATCHER_CONNECTIONS: u32 = 3;

pub struct Dispatcher {
    /// The API's pool: the dispatcher opens its own connections with its options
    /// ([`store::webhooks::dispatcher_pool`], [`DISPATCHER_CONNECTIONS`] of them).
    pub pool: PgPool,
    pub settings: WebhookSettings,
    pub metrics: Arc<Metrics>,
}

/// The state of one dispatcher's run, kept by its loop.
struct Run {
    tasks: JoinSet<()>,
    /// How far a claim pushes a delivery's next attempt.
    lease: Duration,
    /// When events were last sequenced, and how many.
    last_sequenced: Option<(Instant, i64)>,
    /// How often, and when last, failing endpoints were looked at ([`FAILING_INTERVAL`]).
    failing_interval: Duration,
    failing_looked_at: Instant,
    /// Each endpoint's destination as last claimed, reused while its URL and sealed secret
    /// are the same.
    targets: HashMap<Uuid, Arc<Target>>,
}

/// Where and how an endpoint's deliveries are sent.
struct Target {
    /// As stored, to tell when it changed.
    url_text: String,
    sealed: Vec<u8>,
    /// Checked again (form and IP literal) whenever the stored URL changes; names are checked
    /// by the client's resolver at every connection.
    url: Url,
    secret: String,
}

/// A claimed delivery, ready to send.
struct Delivery {
    delivery_id: i64,
    endpoint_id: Uuid,
    event_id: i64,
    /// The claim's number: its result is written only if the row still carries it.
    attempt: i32,
    event_created_at: DateTime<Utc>,
    /// Where to, or why it cannot be sent (a failed attempt).
    target: Result<Arc<Target>, String>,
    /// The request body, shared by every endpoint of the event, or why it cannot be rendered.
    body: Result<Bytes, String>,
    /// Past this instant the attempt could outlive the claim: it is given back instead.
    send_by: Instant,
}

impl Delivery {
    fn released(&self) -> Record {
        Record::Released(Released {
            delivery_id: self.delivery_id,
            attempt: self.attempt,
        })
    }
}

/// What the recorder writes.
enum Record {
    Attempted(Outcome),
    Released(Released),
}

/// One endpoint's claimed deliveries in this process.
#[derive(Default)]
struct Lane {
    queue: VecDeque<Delivery>,
    /// Workers running (each sends one delivery at a time).
    sending: usize,
    /// After a failed attempt: nothing more is sent or claimed for the endpoint until then
    /// (by when the recorder has counted the failure, and paused the endpoint if it must).
    halted_until: Option<Instant>,
}

impl Lane {
    fn halted(&self, now: Instant) -> bool {
        self.halted_until.is_some_and(|until| until > now)
    }

    fn idle(&self, now: Instant) -> bool {
        self.queue.is_empty() && self.sending == 0 && !self.halted(now)
    }
}

/// What the loop and the lanes' workers share.
struct Shared {
    lanes: Mutex<HashMap<Uuid, Lane>>,
    /// Endpoints whose last attempt from this process succeeded. Only their lanes send with
    /// all `per_endpoint` workers; any other lane sends one delivery at a time until one
    /// succeeds (a slow start), so a dead endpoint costs one refused attempt per retry, not
    /// `per_endpoint` of them, and a thousand dead endpoints cannot crowd the live ones.
    proven: Mutex<HashSet<Uuid>>,
    client: reqwest::Client,
    policy: outbound::Policy,
    secrets: SecretBox,
    settings: WebhookSettings,
    metrics: Arc<Metrics>,
    results: mpsc::UnboundedSender<Record>,
    /// Wakes the loop: a lane has room again, or results were written.
    wake: Arc<Notify>,
    stop: CancellationToken,
}

impl Dispatcher {
    /// Runs until `stop`: sequencing always, delivering when webhooks are enabled.
    pub async fn run(mut self, stop: CancellationToken) {
        // From here on, every statement of the dispatcher runs on its own connections, which
        // plan by index only.
        self.pool = store::webhooks::dispatcher_pool(&self.pool, DISPATCHER_CONNECTIONS);
        let (results, outcomes) = mpsc::unbounded_channel::<Record>();
        let wake = Arc::new(Notify::new());
        let shared = self.settings.secrets.clone().map(|secrets| {
            Arc::new(Shared {
                lanes: Mutex::default(),
                proven: Mutex::default(),
                client: outbound::client(
                    &self.settings.policy,
                    self.settings.connect_timeout,
                    self.settings.timeout,
                ),
                policy: self.settings.policy.clone(),
                secrets,
                settings: self.settings.clone(),
                metrics: self.metrics.clone(),
                results: results.clone(),
                wake: wake.clone(),
                stop: stop.clone(),
            })
        });
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
            tasks: JoinSet::new(),
            // A claim outlives its wait in the lane (at most CLAIM_AHEAD - 1 attempts of each
            // slot before it), its own attempt, and as long again with room for writing its
            // result.
            lease: self.settings.timeout * (CLAIM_AHEAD as u32 + 1) + Duration::from_secs(5),
            last_sequenced: None,
            failing_interval: FAILING_INTERVAL.min(self.settings.retry_first),
            failing_looked_at: Instant::now() - FAILING_INTERVAL,
            targets: HashMap::new(),
        };
        // The gauges have their own task and connection: counting what is owed reads every
        // endpoint's backlog, and in the loop it held up every delivery while it ran (44–121 ms
        // every 2 s beside 900 dead endpoints in the benchmark).
        let gauges = tokio::spawn(refresh_gauges(
            self.pool.clone(),
            self.metrics.clone(),
            stop.clone(),
        ));
        let mut db_waits = paysys_runtime::backoff::Backoff::default();
        tracing::info!(delivering = shared.is_some(), "webhook dispatcher started");
        while !stop.is_cancelled() {
            while run.tasks.try_join_next().is_some() {}
            let round = self.round(shared.as_ref(), &mut run);
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
            if !more {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(self.settings.poll_interval) => {}
                }
            }
        }
        // Deliveries in flight get a short grace; what they do not finish is claimed again
        // after its lease. What is still waiting in the lanes is given back at once.
        let Run { mut tasks, .. } = run;
        let _ = tokio::time::timeout(STOP_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
        // Aborted tasks end at their next await; their handles to the results go with them.
        while tasks.join_next().await.is_some() {}
        if let Some(shared) = shared {
            let waiting: Vec<Delivery> = shared
                .lanes
                .lock()
                .expect("not poisoned")
                .drain()
                .flat_map(|(_, lane)| lane.queue)
                .collect();
            for delivery in waiting {
                let _ = results.send(delivery.released());
            }
        }
        drop(results);
        let _ = tokio::time::timeout(STOP_GRACE, recorder).await;
        let _ = gauges.await;
        self.pool.close().await;
        tracing::info!("webhook dispatcher stopped");
    }

    /// One round; true when there may be more to do at once.
    async fn round(
        &self,
        shared: Option<&Arc<Shared>>,
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
        let Some(shared) = shared else {
            return Ok(more);
        };
        let capacity = self.settings.per_endpoint * CLAIM_AHEAD;
        // Failing endpoints (each a probe or three, and they mostly hold one row, not yet due)
        // once per failing interval; the others at every round.
        let failing = run.failing_looked_at.elapsed() >= run.failing_interval;
        let fanned = store::webhooks::fan_out(
            &mut conn,
            FanOut {
                ahead: (capacity * FAN_OUT_AHEAD).min(i32::MAX as usize) as i32,
                unproven_ahead: 1,
                scan: FAN_OUT_SCAN,
                endpoints: FAN_OUT_ENDPOINTS,
                per_statement: (capacity * FAN_OUT_PER_ROUND) as i64,
                failing,
            },
        )
        .await?;
        // The rows made are claimed below; what they free up (results written, lanes half
        // empty) wakes the loop. More at once only when endpoints were left for next time.
        more |= fanned.endpoints == FAN_OUT_ENDPOINTS;
        if fanned.skipped > 0 {
            // Expected only beside a replica of the version that fanned out when sequencing.
            tracing::warn!(
                skipped = fanned.skipped,
                "webhook fan-out found deliveries already made"
            );
        }
        let held = shared.held(capacity);
        let claimed = store::webhooks::claim(
            &mut conn,
            &held,
            capacity.min(i32::MAX as usize) as i32,
            PAUSE_AFTER_FAILURES,
            batch,
            run.lease,
            failing,
        )
        .await?;
        drop(conn);
        if failing {
            run.failing_looked_at = Instant::now();
        }
        let claimed_at = Instant::now();
        more |= claimed.len() as i64 == batch;
        if claimed.is_empty() {
            // Lanes proven since the last round get their other workers.
            shared.enqueue(Vec::new(), &mut run.tasks);
            return Ok(more);
        }
        // The attempt and the writing of its result (as long again) must fit in the lease.
        let send_by = claimed_at + run.lease.saturating_sub(self.settings.timeout * 2);
        let deliveries = run.prepare(claimed, shared, send_by);
        shared.enqueue(deliveries, &mut run.tasks);
        Ok(more)
    }
}

impl Run {
    /// The claimed rows as deliveries: each event rendered once for all its endpoints, each
    /// endpoint's target reused while unchanged.
    fn prepare(
        &mut self,
        claimed: Vec<Claimed>,
        shared: &Shared,
        send_by: Instant,
    ) -> Vec<Delivery> {
        if self.targets.len() > TARGETS_KEPT {
            self.targets.clear();
        }
        let mut bodies: HashMap<i64, Result<Bytes, String>> = HashMap::new();
        claimed
            .into_iter()
            .map(|row| {
                let body = bodies
                    .entry(row.event_id)
                    .or_insert_with(|| render(&row))
                    .clone();
                let target = self.target(&row, shared);
                Delivery {
                    delivery_id: row.delivery_id,
                    endpoint_id: row.endpoint_id,
                    event_id: row.event_id,
                    attempt: row.attempt,
                    event_created_at: row.event_created_at,
                    target,
                    body,
                    send_by,
                }
            })
            .collect()
    }

    fn target(&mut self, row: &Claimed, shared: &Shared) -> Result<Arc<Target>, String> {
        if let Some(target) = self.targets.get(&row.endpoint_id)
            && target.url_text == row.url
            && target.sealed == row.secret_encrypted
        {
            return Ok(target.clone());
        }
        // Checked again at delivery: the form and IP literals here, names as the client
        // resolves them.
        let url = shared
            .policy
            .check_url(&row.url)
            .map_err(|e| format!("URL refused: {e}"))?;
        let secret = shared
            .secrets
            .open(row.endpoint_id, &row.secret_encrypted)
            .ok_or("the signing secret cannot be decrypted with WEBHOOK_SECRETS_KEY")?;
        let target = Arc::new(Target {
            url_text: row.url.clone(),
            sealed: row.secret_encrypted.clone(),
            url,
            secret,
        });
        self.targets.insert(row.endpoint_id, target.clone());
        Ok(target)
    }
}

/// The event's request body.
fn render(row: &Claimed) -> Result<Bytes, String> {
    let event = WebhookEvent::render(
        row.event_id,
        row.event_type.clone(),
        row.event_created_at,
        &row.payment,
    )
    .map_err(|e| {
        tracing::error!(event = row.event_id, error = %e, "stored event cannot be rendered");
        "the event cannot be rendered".to_owned()
    })?;
    Ok(serde_json::to_vec(&event).expect("events serialize").into())
}

impl Shared {
    /// What this process holds per endpoint (waiting and in flight), after dropping idle
    /// lanes; a halted lane counts as full, so that nothing is claimed for it.
    fn held(&self, capacity: usize) -> Vec<(Uuid, i32)> {
        let now = Instant::now();
        let mut lanes = self.lanes.lock().expect("not poisoned");
        lanes.retain(|_, lane| !lane.idle(now));
        lanes
            .iter()
            .map(|(id, lane)| {
                let held = if lane.halted(now) {
                    capacity
                } else {
                    lane.queue.len() + lane.sending
                };
                (*id, held.min(i32::MAX as usize) as i32)
            })
            .collect()
    }

    /// Queues the deliveries in their lanes and starts the workers they need.
    fn enqueue(self: &Arc<Self>, deliveries: Vec<Delivery>, tasks: &mut JoinSet<()>) {
        let now = Instant::now();
        let mut start = Vec::new();
        let mut released = Vec::new();
        {
            let mut lanes = self.lanes.lock().expect("not poisoned");
            for delivery in deliveries {
                let lane = lanes.entry(delivery.endpoint_id).or_default();
                if lane.halted(now) {
                    released.push(delivery.released());
                } else {
                    lane.queue.push_back(delivery);
                }
            }
            let proven = self.proven.lock().expect("not poisoned");
            for (endpoint, lane) in lanes.iter_mut() {
                let limit = if proven.contains(endpoint) {
                    self.settings.per_endpoint
                } else {
                    1
                };
                let workers = limit.saturating_sub(lane.sending).min(lane.queue.len());
                lane.sending += workers;
                start.extend(std::iter::repeat_n(*endpoint, workers));
            }
        }
        for record in released {
            let _ = self.results.send(record);
        }
        for endpoint in start {
            tasks.spawn(self.clone().work(endpoint));
        }
    }

    /// One worker of a lane: sends its deliveries one after the other until the lane is empty,
    /// halted or the process stops.
    async fn work(self: Arc<Self>, endpoint: Uuid) {
        let refill_at = self.settings.per_endpoint * CLAIM_AHEAD / 2;
        loop {
            let next = {
                let mut lanes = self.lanes.lock().expect("not poisoned");
                let lane = lanes
                    .get_mut(&endpoint)
                    .expect("a lane is kept while it has workers");
                let next = if self.stop.is_cancelled() || lane.halted(Instant::now()) {
                    None
                } else {
                    lane.queue.pop_front()
                };
                if next.is_none() {
                    lane.sending -= 1;
                }
                next.map(|delivery| (delivery, lane.queue.len() == refill_at))
            };
            let Some((delivery, refill)) = next else {
                return;
            };
            if refill {
                // Down to half: the loop claims more for it (the recorder's wake after each
                // write and the poll interval bring the rest).
                self.wake.notify_one();
            }
            if Instant::now() > delivery.send_by {
                let _ = self.results.send(delivery.released());
                continue;
            }
            let outcome = self.deliver(delivery).await;
            let failed = outcome.next != Next::Delivered;
            let _ = self.results.send(Record::Attempted(outcome));
            if failed {
                self.halt(endpoint);
            } else if self.proven.lock().expect("not poisoned").insert(endpoint) {
                // Newly proven: the loop starts the lane's other workers.
                self.wake.notify_one();
            }
        }
    }

    /// After a failed attempt: the endpoint's waiting deliveries are given back unattempted
    /// and nothing more is sent or claimed for it for the first retry wait.
    fn halt(&self, endpoint: Uuid) {
        self.proven.lock().expect("not poisoned").remove(&endpoint);
        let waiting: Vec<Delivery> = {
            let mut lanes = self.lanes.lock().expect("not poisoned");
            let Some(lane) = lanes.get_mut(&endpoint) else {
                return;
            };
            lane.halted_until = Some(Instant::now() + self.settings.retry_first);
            lane.queue.drain(..).collect()
        };
        for delivery in waiting {
            let _ = self.results.send(delivery.released());
        }
    }

    /// One attempt of one delivery; never fails, every problem is an outcome.
    async fn deliver(&self, claimed: Delivery) -> Outcome {
        let metrics = &self.metrics;
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
    async fn send(&self, delivery: &Delivery) -> Result<u16, String> {
        let target = delivery.target.as_ref().map_err(Clone::clone)?;
        let body = delivery.body.as_ref().map_err(Clone::clone)?;
        let signature = signature::sign(&target.secret, Utc::now().timestamp(), body);
        let mut response = self
            .client
            .post(target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_ID_HEADER, delivery.event_id.to_string())
            .body(body.clone())
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
    mut records: mpsc::UnboundedReceiver<Record>,
    pause: Pause,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
) {
    let mut batch = Vec::new();
    let mut outcomes = Vec::new();
    let mut released = Vec::new();
    let mut waits = paysys_runtime::backoff::Backoff::default();
    loop {
        if outcomes.is_empty() && released.is_empty() {
            if records.recv_many(&mut batch, RECORD_BATCH).await == 0 {
                return;
            }
        } else {
            // Retrying: add what came meanwhile, up to the batch size.
            let room = RECORD_BATCH.saturating_sub(outcomes.len() + released.len());
            while batch.len() < room {
                match records.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
        }
        for record in batch.drain(..) {
            match record {
                Record::Attempted(outcome) => outcomes.push(outcome),
                Record::Released(claim) => released.push(claim),
            }
        }
        let written = match pool.acquire().await {
            Ok(mut conn) => store::webhooks::record(&mut conn, &outcomes, &released, pause).await,
            Err(error) => Err(error),
        };
        match written {
            Ok(()) => {
                outcomes.clear();
                released.clear();
                waits.reset();
                wake.notify_one();
            }
            Err(error) => {
                metrics.webhook_record_failures.inc();
                tracing::warn!(%error, pending = outcomes.len() + released.len(), "cannot record webhook attempts; retrying");
                if records.is_closed() {
                    // Stopping with the database away: the leases bring these back.
                    return;
                }
                tokio::time::sleep(waits.next_wait()).await;
            }
        }
    }
}

/// Refreshes the outbox gauges until `stop`: every [`GAUGE_INTERVAL`], or twenty times as long
/// as the last refresh took when that is longer.
async fn refresh_gauges(pool: PgPool, metrics: Arc<Metrics>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let started = Instant::now();
        if let Ok(mut conn) = pool.acquire().await
            && let Ok((depth, oldest)) =
                store::events::outbox(&mut conn, GAUGE_OWED_PER_ENDPOINT).await
        {
            metrics.events_outbox_depth.set(depth);
            metrics.events_outbox_oldest_age_seconds.set(oldest);
        }
        sleep_or_stop(&stop, GAUGE_INTERVAL.max(started.elapsed() * 20)).await;
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
