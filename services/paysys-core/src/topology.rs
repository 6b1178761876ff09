//! Names and declaration of the RabbitMQ exchanges and queues both services use.
//!
//! ```text
//! payments API ──▶ {prefix}.payments  (direct) ──payment.created──▶ queue {prefix}.payments.v2  ──▶ risk engine
//! risk engine  ──▶ {prefix}.decisions (direct) ──payment.decided──▶ queue {prefix}.decisions.v2 ──▶ payments API
//! either       ──▶ {prefix}.dead-letter (direct) ──payments──▶ {prefix}.payments.dead.v2
//!                                                ──decisions─▶ {prefix}.decisions.dead.v2
//! ```
//!
//! Everything is durable. Both services declare the whole topology at start-up with the same
//! arguments (declarations are idempotent, see `paysys_amqp::declare_topology`), so they can
//! start in any order. The prefix lets
//! tests, or several installations on one broker, keep to their own names.
//!
//! **Topology versions.** Version 2 (this one) uses *quorum* queues: replicated across a
//! clustered broker, with a delivery limit and at-least-once dead-lettering. Version 1 used
//! classic queues under the names without `.v2`. A queue's type cannot change once declared
//! (RabbitMQ answers `PRECONDITION_FAILED`), so version 2 takes new queue names and
//! `paysys_amqp::legacy_queues::retire` retires the version-1 queues: unbind, move what they hold, delete.
//! Exchange names did not change, so publishers of either version reach the same exchanges.

pub const PAYMENT_ROUTING_KEY: &str = "payment.created";
pub const DECISION_ROUTING_KEY: &str = "payment.decided";
/// Routing keys on the dead-letter exchange, one per source queue.
pub const DEAD_PAYMENTS_ROUTING_KEY: &str = "payments";
pub const DEAD_DECISIONS_ROUTING_KEY: &str = "decisions";

/// Default prefix, used when `AMQP_PREFIX` is unset.
pub const DEFAULT_PREFIX: &str = "paysys";

/// Suffix of this topology version's queue names (see the module comment).
pub const QUEUE_VERSION_SUFFIX: &str = ".v2";

/// Deliveries of one message before the broker dead-letters it. The consumers dead-letter
/// poison explicitly with a reason and hold (not requeue) work during a database outage, so
/// this only trips on a message that kills its consumer again and again: at 50 it is far above
/// what broker cuts and restarts add, and still stops a crash loop within minutes.
pub const DELIVERY_LIMIT: u32 = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub payments_exchange: String,
    pub payments_queue: String,
    pub decisions_exchange: String,
    pub decisions_queue: String,
    pub dead_letter_exchange: String,
    pub payments_dead_queue: String,
    pub decisions_dead_queue: String,
    /// See [`DELIVERY_LIMIT`]; tests lower it to see it trip.
    pub delivery_limit: u32,
}

/// One queue with the binding that feeds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueBinding {
    pub queue: String,
    pub exchange: String,
    pub routing_key: &'static str,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Topology {
    pub fn new(prefix: &str) -> Self {
        let v = QUEUE_VERSION_SUFFIX;
        Self {
            payments_exchange: format!("{prefix}.payments"),
            payments_queue: format!("{prefix}.payments{v}"),
            decisions_exchange: format!("{prefix}.decisions"),
            decisions_queue: format!("{prefix}.decisions{v}"),
            dead_letter_exchange: format!("{prefix}.dead-letter"),
            payments_dead_queue: format!("{prefix}.payments.dead{v}"),
            decisions_dead_queue: format!("{prefix}.decisions.dead{v}"),
            delivery_limit: DELIVERY_LIMIT,
        }
    }

    /// The four queues of this version, each with its binding and, for the two work queues,
    /// the routing key its dead letters take.
    pub fn queues(&self) -> [(QueueBinding, Option<&'static str>); 4] {
        let bound = |queue: &str, exchange: &str, routing_key| QueueBinding {
            queue: queue.to_owned(),
            exchange: exchange.to_owned(),
            routing_key,
        };
        [
            (
                bound(
                    &self.payments_queue,
                    &self.payments_exchange,
                    PAYMENT_ROUTING_KEY,
                ),
                Some(DEAD_PAYMENTS_ROUTING_KEY),
            ),
            (
                bound(
                    &self.decisions_queue,
                    &self.decisions_exchange,
                    DECISION_ROUTING_KEY,
                ),
                Some(DEAD_DECISIONS_ROUTING_KEY),
            ),
            (
                bound(
                    &self.payments_dead_queue,
                    &self.dead_letter_exchange,
                    DEAD_PAYMENTS_ROUTING_KEY,
                ),
                None,
            ),
            (
                bound(
                    &self.decisions_dead_queue,
                    &self.dead_letter_exchange,
                    DEAD_DECISIONS_ROUTING_KEY,
                ),
                None,
            ),
        ]
    }

    /// The version-1 (classic) queues this version replaces, with the binding that fed each.
    /// Their messages move to the same exchange and routing key, which now reach the
    /// version-2 queue that took the legacy queue's place.
    pub fn legacy_queues(&self) -> [QueueBinding; 4] {
        self.queues().map(|(binding, _)| QueueBinding {
            queue: binding
                .queue
                .trim_end_matches(QUEUE_VERSION_SUFFIX)
                .to_owned(),
            ..binding
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix_and_the_version() {
        let t = Topology::new("t1");
        assert_eq!(t.payments_queue, "t1.payments.v2");
        assert_eq!(t.decisions_queue, "t1.decisions.v2");
        assert_eq!(t.payments_dead_queue, "t1.payments.dead.v2");
        assert_eq!(Topology::default().payments_exchange, "paysys.payments");
    }

    #[test]
    fn legacy_queues_are_the_version_1_names_with_their_bindings() {
        let legacy = Topology::new("t1").legacy_queues();
        let names: Vec<_> = legacy.iter().map(|b| b.queue.as_str()).collect();
        assert_eq!(
            names,
            [
                "t1.payments",
                "t1.decisions",
                "t1.payments.dead",
                "t1.decisions.dead"
            ]
        );
        assert_eq!(legacy[0].exchange, "t1.payments");
        assert_eq!(legacy[0].routing_key, PAYMENT_ROUTING_KEY);
        assert_eq!(legacy[3].exchange, "t1.dead-letter");
        assert_eq!(legacy[3].routing_key, DEAD_DECISIONS_ROUTING_KEY);
    }
}
