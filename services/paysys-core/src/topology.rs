//! Names and declaration of the RabbitMQ exchanges and queues both services use.
//!
//! ```text
//! payments API ──▶ {prefix}.payments  (direct) ──payment.created──▶ queue {prefix}.payments  ──▶ risk engine
//! risk engine  ──▶ {prefix}.decisions (direct) ──payment.decided──▶ queue {prefix}.decisions ──▶ payments API
//! either       ──▶ {prefix}.dead-letter (direct) ──payments──▶ {prefix}.payments.dead
//!                                                ──decisions─▶ {prefix}.decisions.dead
//! ```
//!
//! Everything is durable. Both services declare the whole topology at start-up with the same
//! arguments (declarations are idempotent, see `paysys_amqp::declare_topology`), so they can
//! start in any order. The prefix lets tests, or several installations on one broker, keep to
//! their own names.

pub const PAYMENT_ROUTING_KEY: &str = "payment.created";
pub const DECISION_ROUTING_KEY: &str = "payment.decided";
/// Routing keys on the dead-letter exchange, one per source queue.
pub const DEAD_PAYMENTS_ROUTING_KEY: &str = "payments";
pub const DEAD_DECISIONS_ROUTING_KEY: &str = "decisions";

/// Default prefix, used when `AMQP_PREFIX` is unset.
pub const DEFAULT_PREFIX: &str = "paysys";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub payments_exchange: String,
    pub payments_queue: String,
    pub decisions_exchange: String,
    pub decisions_queue: String,
    pub dead_letter_exchange: String,
    pub payments_dead_queue: String,
    pub decisions_dead_queue: String,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Topology {
    pub fn new(prefix: &str) -> Self {
        Self {
            payments_exchange: format!("{prefix}.payments"),
            payments_queue: format!("{prefix}.payments"),
            decisions_exchange: format!("{prefix}.decisions"),
            decisions_queue: format!("{prefix}.decisions"),
            dead_letter_exchange: format!("{prefix}.dead-letter"),
            payments_dead_queue: format!("{prefix}.payments.dead"),
            decisions_dead_queue: format!("{prefix}.decisions.dead"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let t = Topology::new("t1");
        assert_eq!(t.payments_queue, "t1.payments");
        assert_eq!(t.decisions_queue, "t1.decisions");
        assert_eq!(t.payments_dead_queue, "t1.payments.dead");
        assert_eq!(Topology::default().payments_exchange, "paysys.payments");
    }
}
