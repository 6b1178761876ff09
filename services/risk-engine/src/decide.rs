//! One decision: the configured mode turns a payment into a decision message plus the
//! human-readable "why" for the log line.

use chrono::Utc;
use paysys_core::messages::SCHEMA_VERSION;
use paysys_core::money::AmountError;
use paysys_core::{DecisionMessage, Outcome, PaymentMessage, Reason};

use crate::random::RandomMode;
use crate::rules::CompiledRules;

/// How payments are decided (`RISK_MODE`).
#[derive(Debug, Clone, PartialEq)]
pub enum Decider {
    // Boxed: a rule set is far larger than random mode's two numbers.
    Rules(Box<CompiledRules>),
    Random(RandomMode),
}

/// A decision and why, in words, for the `Payment <id> approved. <why>` log line.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub decision: DecisionMessage,
    pub why: String,
}

impl Decider {
    pub fn mode_name(&self) -> &'static str {
        match self {
            Self::Rules(_) => "rules",
            Self::Random(_) => "random",
        }
    }

    pub fn rules_version(&self) -> String {
        match self {
            Self::Rules(rules) => rules.version.clone(),
            Self::Random(random) => random.version(),
        }
    }

    /// Decides one payment. Fails only if the amount does not fit its currency, which
    /// `PaymentMessage::decode` has already ruled out for messages from the queue.
    pub fn decide(&self, payment: &PaymentMessage) -> Result<Verdict, AmountError> {
        let (outcome, score, reasons, why) = match self {
            Self::Rules(rules) => decide_by_rules(rules, payment)?,
            Self::Random(random) => decide_at_random(random, payment),
        };
        Ok(Verdict {
            decision: DecisionMessage {
                schema_version: SCHEMA_VERSION,
                payment_id: payment.payment_id,
                outcome,
                score,
                reasons,
                rules_version: self.rules_version(),
                decided_at: Utc::now(),
                rules_outcome: None,
                features: None,
                model: None,
                shadow: None,
            },
            why,
        })
    }
}

type Parts = (Outcome, u32, Vec<Reason>, String);

fn decide_by_rules(rules: &CompiledRules, payment: &PaymentMessage) -> Result<Parts, AmountError> {
    let data = &payment.payment_data;
    let evaluation = rules.evaluate(data, data.money()?, payment.velocity.as_ref());
    let threshold = rules.decline_threshold;
    let declined = evaluation.declines(threshold);
    let score = evaluation.score;
    let mut why = if declined {
        format!("Score {score} reached threshold {threshold}")
    } else {
        format!("Score {score} below threshold {threshold}")
    };
    if !evaluation.reasons.is_empty() {
        let listed: Vec<String> = evaluation
            .reasons
            .iter()
            .map(|r| format!("{} ({})", r.rule, r.detail))
            .collect();
        why.push_str(": ");
        why.push_str(&listed.join("; "));
    }
    why.push('.');
    let outcome = if declined {
        Outcome::Declined
    } else {
        Outcome::Approved
    };
    Ok((outcome, score, evaluation.reasons, why))
}

/// The score of a random decline: a decline is the "random" rule firing at full weight.
const RANDOM_DECLINE_SCORE: u32 = 100;

fn decide_at_random(random: &RandomMode, payment: &PaymentMessage) -> Parts {
    let draw = random.draw(payment.payment_id);
    let p = random.probability();
    if random.approves(draw) {
        let why = format!("Random draw {draw:.4} below approval probability {p}.");
        (Outcome::Approved, 0, Vec::new(), why)
    } else {
        let detail = format!("random draw {draw:.4} not below approval probability {p}");
        let why = format!("Random draw {draw:.4} not below approval probability {p}.");
        let reasons = vec![Reason {
            rule: "random".into(),
            detail,
        }];
        (Outcome::Declined, RANDOM_DECLINE_SCORE, reasons, why)
    }
}

#[cfg(test)]
mod tests {
    use paysys_core::PaymentData;
    use paysys_core::risk_rules::RiskRules;
    use uuid::Uuid;

    use super::*;
    use crate::rules::compile;

    fn payment(user: u128, payee: u128) -> PaymentMessage {
        PaymentMessage {
            schema_version: SCHEMA_VERSION,
            payment_id: Uuid::from_u128(77),
            payment_data: PaymentData {
                amount: "70.5".parse().unwrap(),
                currency: "USD".parse().unwrap(),
                user_id: Uuid::from_u128(user),
                payee_id: Uuid::from_u128(payee),
                payment_method_id: Uuid::from_u128(3),
                created_at: None,
            },
            velocity: None,
            history: None,
        }
    }

    #[test]
    fn rules_decisions_carry_everything_an_audit_needs() {
        let decider = Decider::Rules(Box::new(
            compile(&RiskRules {
                version: "v9".into(),
                ..Default::default()
            })
            .unwrap(),
        ));
        let approved = decider.decide(&payment(1, 2)).unwrap();
        assert_eq!(approved.decision.outcome, Outcome::Approved);
        assert_eq!(approved.decision.payment_id, Uuid::from_u128(77));
        assert_eq!(approved.decision.rules_version, "v9");
        assert_eq!(approved.decision.score, 0);
        assert_eq!(approved.why, "Score 0 below threshold 100.");

        let declined = decider.decide(&payment(1, 1)).unwrap();
        assert_eq!(declined.decision.outcome, Outcome::Declined);
        assert_eq!(declined.decision.score, 100);
        assert_eq!(declined.decision.reasons[0].rule, "payer_is_payee");
        assert_eq!(
            declined.why,
            format!(
                "Score 100 reached threshold 100: payer_is_payee (userId {} is also the payeeId).",
                Uuid::from_u128(1)
            )
        );
    }

    #[test]
    fn random_decisions_are_repeatable_and_explained() {
        let always = Decider::Random(RandomMode::new(1.0, 0).unwrap());
        let verdict = always.decide(&payment(1, 2)).unwrap();
        assert_eq!(verdict.decision.outcome, Outcome::Approved);
        assert!(verdict.why.starts_with("Random draw "), "{}", verdict.why);
        assert_eq!(verdict.decision.rules_version, "random:p=1:seed=0");

        let never = Decider::Random(RandomMode::new(0.0, 0).unwrap());
        let verdict = never.decide(&payment(1, 2)).unwrap();
        assert_eq!(verdict.decision.outcome, Outcome::Declined);
        assert_eq!(verdict.decision.score, 100);
        assert_eq!(verdict.decision.reasons[0].rule, "random");

        let half = Decider::Random(RandomMode::new(0.5, 9).unwrap());
        let first = half.decide(&payment(1, 2)).unwrap().decision;
        let again = half.decide(&payment(1, 2)).unwrap().decision;
        assert_eq!(
            (first.outcome, first.score, first.reasons),
            (again.outcome, again.score, again.reasons)
        );
    }
}
