//! What serving would have done with a payment, computed by serving's own code: the API's
//! `velocity` and `history` ([`HistoryTracker`]), the risk engine's features
//! ([`FeatureVector::of`]) and its rules ([`Decider`] in rules mode).

use paysys_core::messages::{PaymentData, SCHEMA_VERSION};
use paysys_core::{FeatureVector, Outcome, PaymentMessage};
use risk_engine::decide::Decider;
use risk_engine::rules::CompiledRules;
use uuid::Uuid;

use crate::tracker::{HistoryTracker, Seen};

/// One payment as serving saw and decided it.
#[derive(Debug, Clone)]
pub struct Served {
    /// The message the API would have published (with velocity and history).
    pub message: PaymentMessage,
    pub features: FeatureVector,
    pub outcome: Outcome,
    /// What the rules alone decided (the decision's `rules_outcome`).
    pub rules_outcome: Outcome,
}

/// The API's history and the risk engine's rules, applied to payments in creation order.
pub struct Serving {
    tracker: HistoryTracker,
    decider: Decider,
}

impl Serving {
    pub fn new(window_seconds: u64, rules: CompiledRules) -> Self {
        Self {
            tracker: HistoryTracker::new(window_seconds),
            decider: Decider::Rules(Box::new(rules)),
        }
    }

    /// The rule set's version, as decisions carry it.
    pub fn rules_version(&self) -> String {
        self.decider.rules_version()
    }

    /// Serves the next payment (in creation order).
    pub fn serve(&mut self, payment_id: Uuid, seen: &Seen) -> anyhow::Result<Served> {
        let known = self.tracker.observe(seen)?;
        let message = PaymentMessage {
            schema_version: SCHEMA_VERSION,
            payment_id,
            payment_data: PaymentData {
                amount: seen.money.to_decimal(),
                currency: seen.money.currency,
                user_id: seen.user_id,
                payee_id: seen.payee_id,
                payment_method_id: seen.payment_method_id,
                created_at: Some(seen.created_at),
            },
            velocity: Some(known.velocity),
            history: Some(known.history),
        };
        let features = FeatureVector::of(&message, seen.created_at);
        let decision = self.decider.decide(&message)?.decision;
        Ok(Served {
            features,
            outcome: decision.outcome,
            // Rules mode: the rules' outcome is the outcome.
            rules_outcome: decision.rules_outcome.unwrap_or(decision.outcome),
            message,
        })
    }
}
