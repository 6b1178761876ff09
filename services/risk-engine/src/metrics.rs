//! Prometheus metrics of the risk engine, served at `/metrics` with the prefix `paysys_risk`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// The `reason` label values of `dead_lettered`.
pub const DEAD_LETTER_REASONS: &[&str] = &["malformed", "unsupported_version", "too_large"];

pub struct Metrics {
    registry: Registry,
    /// Decisions published, confirmed and acked, by outcome.
    pub decisions: Family<OutcomeLabels, Counter>,
    /// From delivery to the payment's ack (decide + publish + confirm).
    pub decision_duration: Histogram,
    pub dead_lettered: Family<ReasonLabels, Counter>,
    /// Decisions (or dead letters) the broker refused or returned; the payment is requeued.
    pub publish_failures: Counter,
    pub reconnects: Counter,
    pub in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("paysys_risk");
        let decisions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "decisions",
            "Payments decided (decision confirmed by the broker, payment acked), by outcome",
            decisions.clone(),
        );
        // 0.1 ms .. ~3.3 s
        let decision_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "decision_duration_seconds",
            "Time from receiving a payment to acking it after its decision was confirmed",
            decision_duration.clone(),
        );
        let dead_lettered = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "dead_lettered",
            "Payment messages moved to the dead-letter queue, by reason",
            dead_lettered.clone(),
        );
        let publish_failures = Counter::default();
        registry.register(
            "publish_failures",
            "Decisions or dead letters the broker nacked or returned as unroutable (payment requeued)",
            publish_failures.clone(),
        );
        let reconnects = Counter::default();
        registry.register(
            "broker_reconnects",
            "Times the broker connection was lost and re-established",
            reconnects.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight",
            "Payments received and not yet acked",
            in_flight.clone(),
        );
        let metrics = Self {
            registry,
            decisions,
            decision_duration,
            dead_lettered,
            publish_failures,
            reconnects,
            in_flight,
        };
        // Known label values start at zero, so dashboards and alerts see the series before
        // the first event.
        for outcome in ["approved", "declined"] {
            let _ = metrics.decisions.get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            });
        }
        for reason in DEAD_LETTER_REASONS {
            let _ = metrics.dead_lettered.get_or_create(&ReasonLabels {
                reason: (*reason).into(),
            });
        }
        metrics
    }

    pub fn count_decision(&self, outcome: &str) {
        self.decisions
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn decided(&self, outcome: &str) -> u64 {
        self.decisions
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .get()
    }

    pub fn count_dead_letter(&self, reason: &str) {
        self.dead_lettered
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn dead_letters(&self, reason: &str) -> u64 {
        self.dead_lettered
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .get()
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let metrics = Metrics::new();
        metrics.count_decision("approved");
        metrics.count_dead_letter("malformed");
        metrics.decision_duration.observe(0.002);
        let text = metrics.render();
        assert!(
            text.contains("paysys_risk_decisions_total{outcome=\"approved\"} 1"),
            "{text}"
        );
        assert!(text.contains("paysys_risk_dead_lettered_total{reason=\"malformed\"} 1"));
        assert!(text.contains("paysys_risk_decision_duration_seconds_count 1"));
        assert_eq!(metrics.decided("approved"), 1);
        assert!(text.contains("paysys_risk_decisions_total{outcome=\"declined\"} 0"));
        assert!(text.contains("paysys_risk_dead_lettered_total{reason=\"too_large\"} 0"));
    }
}
