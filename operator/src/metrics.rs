//! Prometheus metrics of the operator, served on `/metrics`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
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
    /// The reconciles due and not started, as [`ReconcileQueue`] keeps them.
    pub queue: ReconcileQueue,
    queue_depth: Gauge,
    /// Each condition of each PaymentSystem in the controller's cache, as its status says:
    /// read at scrape time, so a deleted system's series go with it.
    conditions: Family<ConditionLabels, Gauge>,
    systems: OnceLock<Store<DeserializeGuard<PaymentSystem>>>,
    /// One scrape refills `conditions` at a time.
    encoding: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::with_prefix("paysys");
        paysys_runtime::build_info::register(&mut root);
        let registry = root.sub_registry_with_prefix("operator");
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
        let queue_depth = Gauge::default();
        registry.register(
            "reconcile_queue_depth",
            "PaymentSystems with a reconcile due (asked for by a watch event, a retry or the periodic resync) that has not started yet",
            queue_depth.clone(),
        );
        let conditions = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "paymentsystem_condition",
            "1 while the PaymentSystem's condition of this type is True, else 0 (as its status says)",
            conditions.clone(),
        );
        Self {
            registry: root,
            reconciliations,
            failures,
            duration,
            leader,
            queue: ReconcileQueue::default(),
            queue_depth,
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
        let depth = self.queue.depth(Instant::now(), |namespace, name| {
            self.systems
                .get()
                .is_some_and(|store| store.get(&ObjectRef::new(name).within(namespace)).is_some())
        });
        self.queue_depth.set(depth);
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

/// Which `PaymentSystem`s have a reconcile due that has not started: the operator's
/// reconcile queue.
///
/// kube-runtime keeps its queue (the controller's scheduler) to itself, so this is a ledger
/// kept beside it from what goes in and what comes out: every request the controller's
/// watches make (a changed system, child, referenced Secret or foreign object), every requeue
/// a reconcile or a failure asks for (due later), and every reconcile's start, which reads the
/// latest state and so serves every request made before it. Like the scheduler, it keeps one
/// entry per system, due at the earliest time asked. A request that arrives while the
/// system's reconcile runs stays counted until the next one starts, as kube-runtime runs it
/// then. The depth counts the entries due now for systems in the controller's cache (a
/// request for a deleted system is never served; it is forgotten at the next scrape).
#[derive(Debug, Default)]
pub struct ReconcileQueue {
    due: Mutex<HashMap<(String, String), Instant>>,
}

impl ReconcileQueue {
    /// A watch event asked for a reconcile of `namespace/name` now.
    pub fn triggered(&self, namespace: &str, name: &str) {
        self.schedule(namespace, name, Instant::now());
    }

    /// A reconcile of `namespace/name` asked to run again after `after`.
    pub fn requeued(&self, namespace: &str, name: &str, after: Duration) {
        self.schedule(namespace, name, Instant::now() + after);
    }

    fn schedule(&self, namespace: &str, name: &str, at: Instant) {
        let mut due = self.due.lock().expect("not poisoned");
        due.entry((namespace.to_owned(), name.to_owned()))
            .and_modify(|due| *due = (*due).min(at))
            .or_insert(at);
    }

    /// A reconcile of `namespace/name` starts.
    pub fn started(&self, namespace: &str, name: &str) {
        let mut due = self.due.lock().expect("not poisoned");
        due.remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// The entries due at `now` among the systems `exists` knows; forgets the others'.
    pub fn depth(&self, now: Instant, exists: impl Fn(&str, &str) -> bool) -> i64 {
        let mut due = self.due.lock().expect("not poisoned");
        due.retain(|(namespace, name), _| exists(namespace, name));
        due.values().filter(|at| **at <= now).count() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_counts_requests_due_and_not_started() {
        let queue = ReconcileQueue::default();
        let all = |_: &str, _: &str| true;
        queue.triggered("team", "a");
        queue.triggered("team", "a");
        queue.triggered("team", "b");
        assert_eq!(queue.depth(Instant::now(), all), 2, "one entry per system");
        queue.started("team", "a");
        assert_eq!(queue.depth(Instant::now(), all), 1);
        // A resync ten minutes away is scheduled, not due.
        queue.requeued("team", "a", Duration::from_secs(600));
        assert_eq!(queue.depth(Instant::now(), all), 1);
        let later = Instant::now() + Duration::from_secs(601);
        assert_eq!(queue.depth(later, all), 2);
        // A request made while a system's reconcile runs stays due until the next one starts,
        // and an earlier request wins over a later requeue.
        queue.started("team", "b");
        queue.triggered("team", "b");
        queue.requeued("team", "b", Duration::from_secs(600));
        assert_eq!(queue.depth(Instant::now(), all), 1);
        // Systems gone from the cache are never reconciled: their requests are forgotten.
        assert_eq!(queue.depth(later, |_, name| name == "a"), 1);
        assert_eq!(queue.depth(later, all), 1);
    }

    #[test]
    fn build_info_and_the_queue_depth_are_served() {
        let metrics = Metrics::default();
        let text = metrics.encode();
        assert!(text.contains("paysys_build_info{version=\""), "{text}");
        assert!(
            text.contains("paysys_operator_reconcile_queue_depth 0\n"),
            "{text}"
        );
    }
}
