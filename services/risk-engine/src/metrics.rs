//! Prometheus metrics of the risk engine, served at `/metrics` with the prefix `paysys_risk`
//! (and `paysys_build_info`, which every binary serves).

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use paysys_core::DecisionMessage;
use paysys_core::messages::ModelScore;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;

use crate::decide::Decider;
use crate::drift::DriftWindow;
use crate::model::Model;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// A model and the part it plays: `champion` decides (model mode), `shadow` only scores.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model_version: String,
    pub role: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelOutcomeLabels {
    pub model_version: String,
    pub role: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    pub model_version: String,
    pub feature: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WindowLabels {
    pub model_version: String,
}

pub const CHAMPION: &str = "champion";
pub const SHADOW: &str = "shadow";

type ScoreHistograms = Family<ModelLabels, Histogram, fn() -> Histogram>;

fn score_histogram() -> Histogram {
    // Calibrated scores are probabilities: 0.05-wide buckets from 0.05 to 1.
    Histogram::new(linear_buckets(0.05, 0.05, 20))
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
    /// Calibrated scores per model and role.
    pub model_scores: ScoreHistograms,
    /// Each model's own verdict (score at or above its threshold = declined), per role.
    pub model_decisions: Family<ModelOutcomeLabels, Counter>,
    pub model_info: Family<ModelLabels, Gauge>,
    /// PSI per model and feature, refreshed from `drift` at each render.
    pub feature_drift: Family<DriftLabels, Gauge<f64, AtomicU64>>,
    pub drift_window_size: Family<WindowLabels, Gauge>,
    /// One sliding window per distinct model version served.
    drift: Vec<(String, Mutex<DriftWindow>)>,
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
        let registry = root.sub_registry_with_prefix("risk");
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
        let model_scores: ScoreHistograms = Family::new_with_constructor(score_histogram);
        registry.register(
            "model_score",
            "Calibrated model scores of the payments decided, by model version and role (champion decides, shadow only scores)",
            model_scores.clone(),
        );
        let model_decisions = Family::<ModelOutcomeLabels, Counter>::default();
        registry.register(
            "model_decisions",
            "Each model's own verdict (declined = score at or above its threshold; hard rules not included), by model version, role and outcome",
            model_decisions.clone(),
        );
        let model_info = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "model_info",
            "1 for each model loaded, by version and role",
            model_info.clone(),
        );
        let feature_drift = Family::<DriftLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "feature_drift_psi",
            "Population stability index of each feature: the model card's training distribution against the last DRIFT_WINDOW live payments (< 0.1 stable, 0.1-0.25 watch, > 0.25 act)",
            feature_drift.clone(),
        );
        let drift_window_size = Family::<WindowLabels, Gauge>::default();
        registry.register(
            "feature_drift_window",
            "Live payments in the drift window (up to DRIFT_WINDOW), by model version",
            drift_window_size.clone(),
        );
        let metrics = Self {
            registry: root,
            decisions,
            decision_duration,
            dead_lettered,
            publish_failures,
            reconnects,
            in_flight,
            model_scores,
            model_decisions,
            model_info,
            feature_drift,
            drift_window_size,
            drift: Vec::new(),
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

    /// Metrics for `decider`'s models: their info, and a drift window of `drift_window`
    /// payments per model version.
    pub fn for_decider(decider: &Decider, drift_window: usize) -> Self {
        let mut metrics = Self::new();
        let models = [(CHAMPION, decider.champion()), (SHADOW, decider.shadow())];
        for (role, model) in models {
            if let Some(model) = model {
                metrics.watch(model, role, drift_window);
            }
        }
        metrics
    }

    fn watch(&mut self, model: &Model, role: &str, drift_window: usize) {
        self.model_info
            .get_or_create(&ModelLabels {
                model_version: model.version.clone(),
                role: role.into(),
            })
            .set(1);
        for outcome in ["approved", "declined"] {
            let _ = self.model_decisions.get_or_create(&ModelOutcomeLabels {
                model_version: model.version.clone(),
                role: role.into(),
                outcome: outcome.into(),
            });
        }
        if !self.drift.iter().any(|(v, _)| *v == model.version) {
            let window = DriftWindow::new(&model.drift_reference, drift_window);
            self.drift.push((model.version.clone(), Mutex::new(window)));
        }
    }

    /// Records a published decision's model scores and its features (for drift).
    pub fn observe_models(&self, decision: &DecisionMessage) {
        let scored = [(CHAMPION, &decision.model), (SHADOW, &decision.shadow)];
        for (role, score) in scored {
            if let Some(score) = score {
                self.observe_score(role, score);
            }
        }
        let Some(features) = &decision.features else {
            return;
        };
        for (_, window) in &self.drift {
            // A poisoned lock only means a panic mid-update elsewhere; the counts stay usable.
            let mut window = window.lock().unwrap_or_else(|e| e.into_inner());
            window.observe(&features.values);
        }
    }

    fn observe_score(&self, role: &str, score: &ModelScore) {
        let labels = ModelLabels {
            model_version: score.version.clone(),
            role: role.into(),
        };
        self.model_scores
            .get_or_create(&labels)
            .observe(score.score);
        let outcome = if score.score >= score.threshold {
            "declined"
        } else {
            "approved"
        };
        self.model_decisions
            .get_or_create(&ModelOutcomeLabels {
                model_version: labels.model_version,
                role: labels.role,
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Sets the drift gauges from the windows' bucket counts (at each scrape).
    fn refresh_drift(&self) {
        for (version, window) in &self.drift {
            let window = window.lock().unwrap_or_else(|e| e.into_inner());
            self.drift_window_size
                .get_or_create(&WindowLabels {
                    model_version: version.clone(),
                })
                .set(window.len() as i64);
            for (feature, psi) in window.psi() {
                self.feature_drift
                    .get_or_create(&DriftLabels {
                        model_version: version.clone(),
                        feature: feature.into(),
                    })
                    .set(psi);
            }
        }
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
        self.refresh_drift();
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
        assert!(text.contains("paysys_build_info{version=\""), "{text}");
    }
}
