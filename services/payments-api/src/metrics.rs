//! Prometheus metrics of the payments API, served at `/metrics`: its own under the prefix
//! `paysys_api`; the build, its database pool, the payments' time to a decision and the
//! outbox under `paysys` (names shared with the other binaries or about the whole flow).

mod pool;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/payments/{id}`), never the raw path, to bound cardinality.
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `delivered`, `failed` (to be retried) or `given_up`.
    pub result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

/// From a payment's creation to its decision applied: milliseconds when the flow keeps up,
/// minutes while a backlog drains (the undecided bound admits up to `MAX_UNDECIDED`).
/// Round boundaries, so that an objective such as "99 % within 1 s" is a bucket.
const DECISION_LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<RouteLabels>,
    pub payments_created: Counter,
    /// Seconds from a payment's creation to its decision applied (`paysys_payment_*`).
    pub decision_latency: Histogram,
    /// The payment outbox (`paysys_outbox_*`), sampled by `relay::watch_depth`.
    pub outbox_depth: Gauge,
    pub outbox_oldest_age_seconds: Gauge<f64, AtomicU64>,
    pub broker_blocked: Gauge,
    pub outbox_published: Counter,
    pub undecided: Gauge,
    pub undecided_oldest_seconds: Gauge<f64, AtomicU64>,
    pub auth_failures: Family<ReasonLabels, Counter>,
    pub decisions_applied: Family<OutcomeLabels, Counter>,
    pub dead_lettered: Family<ReasonLabels, Counter>,
    pub disputes: Family<ReasonLabels, Counter>,
    /// The webhook metrics are named `paysys_*` rather than `paysys_api_*`: the events outbox
    /// is the system's, whichever process delivers it.
    pub events_outbox_depth: Gauge,
    pub events_outbox_oldest_age_seconds: Gauge<f64, AtomicU64>,
    pub webhook_deliveries: Family<DeliveryLabels, Counter>,
    pub webhook_delivery_duration: Histogram,
    pub webhook_event_lag: Histogram,
    pub webhook_record_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::with_prefix("paysys");
        paysys_runtime::build_info::register(&mut root);
        let decision_latency = Histogram::new(DECISION_LATENCY_BUCKETS);
        root.register(
            "payment_decision_latency_seconds",
            "Time from a payment's creation to its risk decision applied (approved or declined), by the database's clock",
            decision_latency.clone(),
        );
        let outbox_depth = Gauge::default();
        root.register(
            "outbox_depth",
            "Payment messages committed and not yet confirmed by RabbitMQ, all replicas (the span of the outbox's ids: counts rows a relay or an insert has in flight)",
            outbox_depth.clone(),
        );
        let outbox_oldest_age_seconds = Gauge::<f64, AtomicU64>::default();
        root.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest payment message in the outbox (0 when empty)",
            outbox_oldest_age_seconds.clone(),
        );
        let registry = root.sub_registry_with_prefix("api");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let request_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            request_duration.clone(),
        );
        let payments_created = Counter::default();
        registry.register(
            "payments_created",
            "Payments accepted (201)",
            payments_created.clone(),
        );
        let broker_blocked = Gauge::default();
        registry.register(
            "broker_blocked",
            "Relay connections RabbitMQ is blocking (a memory or disk alarm): payments wait in the outbox",
            broker_blocked.clone(),
        );
        let outbox_published = Counter::default();
        registry.register(
            "outbox_published",
            "Payment messages confirmed by RabbitMQ",
            outbox_published.clone(),
        );
        let undecided = Gauge::default();
        registry.register(
            "undecided_payments",
            "Payments accepted (201) and still waiting for their risk decision, all replicas",
            undecided.clone(),
        );
        let undecided_oldest_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "undecided_oldest_age_seconds",
            "Age of the oldest payment still waiting for its risk decision (0 when none)",
            undecided_oldest_seconds.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Rejected credentials by reason",
            auth_failures.clone(),
        );
        let decisions_applied = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "decisions",
            "Risk decisions consumed, by what they did (approved, declined, duplicate, ignored)",
            decisions_applied.clone(),
        );
        let dead_lettered = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "decisions_dead_lettered",
            "Decision messages moved to the dead-letter queue, by reason",
            dead_lettered.clone(),
        );
        let disputes = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "disputes",
            "Disputes recorded, by reason (a replayed Idempotency-Key counts once)",
            disputes.clone(),
        );
        let events_outbox_depth = Gauge::default();
        root.register(
            "events_outbox_depth",
            "Payment events not yet delivered: waiting for their id, plus deliveries owed to subscribed endpoints, made or not yet fanned out (all replicas)",
            events_outbox_depth.clone(),
        );
        let events_outbox_oldest_age_seconds = Gauge::<f64, AtomicU64>::default();
        root.register(
            "events_outbox_oldest_age_seconds",
            "Age of the oldest event not yet delivered (0 when none)",
            events_outbox_oldest_age_seconds.clone(),
        );
        let webhook_deliveries = Family::<DeliveryLabels, Counter>::default();
        root.register(
            "webhook_deliveries",
            "Webhook delivery attempts by result (delivered, failed, given_up)",
            webhook_deliveries.clone(),
        );
        let webhook_delivery_duration = latency_histogram();
        root.register(
            "webhook_delivery_duration_seconds",
            "Time of one webhook delivery attempt, to the response status",
            webhook_delivery_duration.clone(),
        );
        let webhook_event_lag = latency_histogram();
        root.register(
            "webhook_event_lag_seconds",
            "From the change of a payment to its event's delivery",
            webhook_event_lag.clone(),
        );
        let webhook_record_failures = Counter::default();
        root.register(
            "webhook_record_failures",
            "Batches of webhook attempts that could not be written (retried)",
            webhook_record_failures.clone(),
        );
        Self {
            registry: root,
            requests,
            request_duration,
            payments_created,
            decision_latency,
            outbox_depth,
            outbox_oldest_age_seconds,
            broker_blocked,
            outbox_published,
            undecided,
            undecided_oldest_seconds,
            auth_failures,
            decisions_applied,
            dead_lettered,
            disputes,
            events_outbox_depth,
            events_outbox_oldest_age_seconds,
            webhook_deliveries,
            webhook_delivery_duration,
            webhook_event_lag,
            webhook_record_failures,
        }
    }

    /// Adds the JWKS metrics: `jwks_refresh_total{result}`, `jwks_keys` and
    /// `jwks_last_success_timestamp_seconds` (only when a JWKS is configured, so that an alert
    /// on "no keys" never fires for an API that uses none).
    pub fn register_jwks(&mut self, jwks: &crate::auth::jwks::JwksMetrics) {
        let registry = self.registry.sub_registry_with_prefix("api");
        registry.register(
            "jwks_refresh",
            "JWKS refreshes by result (ok, failed); a failed one keeps the last good keys",
            jwks.refreshes.clone(),
        );
        registry.register(
            "jwks_keys",
            "JWKS keys held that fit the pinned JWT algorithm",
            jwks.keys.clone(),
        );
        registry.register(
            "jwks_last_success_timestamp_seconds",
            "Unix time of the last successful JWKS refresh (0: never)",
            jwks.last_success.clone(),
        );
    }

    /// Reports the state of `pool` (read at each scrape) as `paysys_db_pool_*`.
    pub fn watch_pool(&mut self, pool: sqlx::PgPool) {
        self.registry
            .register_collector(Box::new(pool::PoolCollector::new(pool)));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_eof(&mut out))
            .expect("writing to a String cannot fail");
        out
    }

    pub fn count_auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}
