//! Prometheus metrics of the operator, served on `/metrics`.

use std::sync::{Mutex, OnceLock};

use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::PaymentSystem;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: String,
}

/// One condition of one `PaymentSystem`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub namespace: String,
    pub name: String,
    /// The condition's type: `Ready`, `Progressing`, `Degraded`, `Durable`.
    pub r#type: String,
}

/// Everything the operator counts.
pub struct Metrics {
    registry: Registry,
    pub reconciliations: Counter,
    pub failures: Family<FailureLabels, Counter>,
    pub duration: Histogram,
    pub leader: Gauge,
    /// Each condition of each PaymentSystem in the controller's cache, as its status says:
    /// read at scrape time, so a deleted system's series go with it.
    conditions: Family<ConditionLabels, Gauge>,
    systems: OnceLock<Store<DeserializeGuard<PaymentSystem>>>,
    /// One scrape refills `conditions` at a time.
    encoding: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("paysys_operator");
        let reconciliations = Counter::default();
        registry.register(
            "reconciliations",
            "Reconciliations started",
            reconciliations.clone(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed, by reason",
            failures.clone(),
        );
        // 1 ms .. ~16 s: a reconcile is a few dozen API calls.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let conditions = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "paymentsystem_condition",
            "1 while the PaymentSystem's condition of this type is True, else 0 (as its status says)",
            conditions.clone(),
        );
        Self {
            registry,
            reconciliations,
            failures,
            duration,
            leader,
            conditions,
            systems: OnceLock::new(),
            encoding: Mutex::new(()),
        }
    }
}

impl Metrics {
    pub fn failed(&self, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Reports the conditions of the systems in `store` (the controller's cache) from now on.
    pub fn watch_systems(&self, store: Store<DeserializeGuard<PaymentSystem>>) {
        // The controller runs once per process; a second call keeps the first store.
        let _ = self.systems.set(store);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let _one_scrape = self.encoding.lock().expect("not poisoned");
        self.conditions.clear();
        for guard in self.systems.get().map(Store::state).unwrap_or_default() {
            let Ok(system) = &guard.0 else { continue };
            let (namespace, name) = (system.namespace().unwrap_or_default(), system.name_any());
            for condition in system.status.iter().flat_map(|status| &status.conditions) {
                self.conditions
                    .get_or_create(&ConditionLabels {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        r#type: condition.type_.clone(),
                    })
                    .set(i64::from(condition.status == "True"));
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
