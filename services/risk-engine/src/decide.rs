//! One decision: the configured mode turns a payment into a decision message plus the
//! human-readable "why" for the log line.
//!
//! Every mode computes the payment's features ([`FeatureVector::of`]) and sends them in the
//! decision, so any decision can become training data; rules and model modes also send what
//! the rules alone decided (`rules_outcome`). A shadow model scores beside any mode and never
//! decides.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use paysys_core::features::FeatureVector;
use paysys_core::messages::{ModelScore, SCHEMA_VERSION};
use paysys_core::money::AmountError;
use paysys_core::{DecisionMessage, Outcome, PaymentMessage, Reason};

use crate::model::Model;
use crate::random::RandomMode;
use crate::rules::CompiledRules;

/// How payments are decided (`RISK_MODE`), and whether a challenger scores beside it.
#[derive(Debug, Clone, PartialEq)]
pub enum Decider {
    // Boxed: a rule set is far larger than random mode's two numbers.
    Rules(Box<CompiledRules>),
    Random(RandomMode),
    /// `RISK_MODE=model`: the hard rules decline on their own, the model's score replaces
    /// the soft ones.
    Model(Box<ModelMode>),
    /// Any mode above with a challenger model (`SHADOW_MODEL_DIR`) scoring every payment: its
    /// score is recorded in the decision's `shadow`, it never changes the outcome.
    Shadowed(Box<Decider>, Arc<Model>),
}

/// Model mode's settings: the rule set (its hard rules decide, all of it gives
/// `rules_outcome`) and the champion model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMode {
    pub rules: CompiledRules,
    pub model: Arc<Model>,
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
            Self::Model(_) => "model",
            Self::Shadowed(decider, _) => decider.mode_name(),
        }
    }

    /// In model mode, the rule set's version: the hard rules and `rules_outcome` come from it,
    /// and the model's own version travels beside it in the decision's `model`.
    pub fn rules_version(&self) -> String {
        match self {
            Self::Rules(rules) => rules.version.clone(),
            Self::Random(random) => random.version(),
            Self::Model(mode) => mode.rules.version.clone(),
            Self::Shadowed(decider, _) => decider.rules_version(),
        }
    }

    /// The deciding model (model mode), if any.
    pub fn champion(&self) -> Option<&Arc<Model>> {
        match self {
            Self::Model(mode) => Some(&mode.model),
            Self::Shadowed(decider, _) => decider.champion(),
            Self::Rules(_) | Self::Random(_) => None,
        }
    }

    /// The challenger in shadow, if any.
    pub fn shadow(&self) -> Option<&Arc<Model>> {
        match self {
            Self::Shadowed(_, shadow) => Some(shadow),
            _ => None,
        }
    }

    /// Decides one payment. Fails only if the amount does not fit its currency, which
    /// `PaymentMessage::decode` has already ruled out for messages from the queue.
    pub fn decide(&self, payment: &PaymentMessage) -> Result<Verdict, AmountError> {
        let now = Utc::now();
        self.decide_at(payment, &FeatureVector::of(payment, now), now)
    }

    fn decide_at(
        &self,
        payment: &PaymentMessage,
        features: &FeatureVector,
        now: DateTime<Utc>,
    ) -> Result<Verdict, AmountError> {
        let parts = match self {
            Self::Rules(rules) => decide_by_rules(rules, payment)?,
            Self::Random(random) => decide_at_random(random, payment),
            Self::Model(mode) => decide_by_model(mode, payment, features)?,
            Self::Shadowed(decider, shadow) => {
                let mut verdict = decider.decide_at(payment, features, now)?;
                verdict.decision.shadow = Some(score_of(shadow, features));
                return Ok(verdict);
            }
        };
        Ok(Verdict {
            decision: DecisionMessage {
                schema_version: SCHEMA_VERSION,
                payment_id: payment.payment_id,
                outcome: parts.outcome,
                score: parts.score,
                reasons: parts.reasons,
                rules_version: self.rules_version(),
                decided_at: now,
                rules_outcome: parts.rules_outcome,
                features: Some(features.log()),
                model: parts.model,
                shadow: None,
            },
            why: parts.why,
        })
    }
}

/// What a mode decided, before it becomes a message.
struct Parts {
    outcome: Outcome,
    score: u32,
    reasons: Vec<Reason>,
    why: String,
    rules_outcome: Option<Outcome>,
    model: Option<ModelScore>,
}

fn outcome(declined: bool) -> Outcome {
    if declined {
        Outcome::Declined
    } else {
        Outcome::Approved
    }
}

/// "rule (detail); rule (detail)" for the log line.
fn listed(reasons: &[Reason]) -> String {
    let listed: Vec<String> = reasons
        .iter()
        .map(|r| format!("{} ({})", r.rule, r.detail))
        .collect();
    listed.join("; ")
}

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
        why.push_str(": ");
        why.push_str(&listed(&evaluation.reasons));
    }
    why.push('.');
    Ok(Parts {
        outcome: outcome(declined),
        score,
        reasons: evaluation.reasons,
        why,
        rules_outcome: Some(outcome(declined)),
        model: None,
    })
}

/// The score of a random decline: a decline is the "random" rule firing at full weight.
const RANDOM_DECLINE_SCORE: u32 = 100;

fn decide_at_random(random: &RandomMode, payment: &PaymentMessage) -> Parts {
    let draw = random.draw(payment.payment_id);
    let p = random.probability();
    let (outcome, score, reasons, why) = if random.approves(draw) {
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
    };
    Parts {
        outcome,
        score,
        reasons,
        why,
        rules_outcome: None,
        model: None,
    }
}

/// The `reasons[].rule` of a model decline.
pub const MODEL_RULE: &str = "model";
/// The points of a model decline in the decision's `score`: the model firing at full weight,
/// like a hard rule at its default score. `score` stays "the sum of what fired".
const MODEL_DECLINE_SCORE: u32 = 100;

fn score_of(model: &Model, features: &FeatureVector) -> ModelScore {
    ModelScore {
        version: model.version.clone(),
        score: model.score(features).calibrated,
        threshold: model.threshold,
    }
}

/// Model mode: declined if any hard rule fires or the model's calibrated score reaches its
/// threshold. Reasons: the hard rules that fired, then `model` if it declined.
fn decide_by_model(
    mode: &ModelMode,
    payment: &PaymentMessage,
    features: &FeatureVector,
) -> Result<Parts, AmountError> {
    let data = &payment.payment_data;
    let all = mode
        .rules
        .evaluate(data, data.money()?, payment.velocity.as_ref());
    let rules_outcome = outcome(all.declines(mode.rules.decline_threshold));
    let hard = all.hard();
    let model = &mode.model;
    let score = model.score(features);
    let model_declines = model.declines(score);
    let (s, t) = (score.calibrated, model.threshold);
    let mut why = if model_declines {
        format!(
            "Model {} score {s:.4} reached threshold {t:.4}",
            model.version
        )
    } else {
        format!(
            "Model {} score {s:.4} below threshold {t:.4}",
            model.version
        )
    };
    if !hard.fired_nothing() {
        why.push_str("; hard rules: ");
        why.push_str(&listed(&hard.reasons));
    }
    why.push('.');
    let declined = model_declines || !hard.fired_nothing();
    let mut reasons = hard.reasons;
    let mut points = hard.score;
    if model_declines {
        reasons.push(Reason {
            rule: MODEL_RULE.into(),
            detail: format!("model score {s:.4} ≥ threshold {t:.4}"),
        });
        points = points.saturating_add(MODEL_DECLINE_SCORE);
    }
    Ok(Parts {
        outcome: outcome(declined),
        score: points,
        reasons,
        why,
        rules_outcome: Some(rules_outcome),
        model: Some(ModelScore {
            version: model.version.clone(),
            score: s,
            threshold: t,
        }),
    })
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

    fn fixture_model() -> Arc<Model> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/model");
        Arc::new(Model::load(std::path::Path::new(dir)).unwrap())
    }

    #[test]
    fn model_decisions_say_why_and_keep_hard_rules() {
        let model = fixture_model();
        let decider = Decider::Model(Box::new(ModelMode {
            rules: compile(&RiskRules {
                version: "m9".into(),
                blocked_user_ids: vec![Uuid::from_u128(5)],
                ..Default::default()
            })
            .unwrap(),
            model: model.clone(),
        }));
        assert_eq!(decider.mode_name(), "model");
        assert_eq!(decider.rules_version(), "m9");
        let approved = decider.decide(&payment(1, 2)).unwrap();
        let s = approved.decision.model.as_ref().unwrap().score;
        assert!(s < model.threshold, "the plain payment scores low: {s}");
        assert_eq!(approved.decision.outcome, Outcome::Approved);
        assert_eq!(approved.decision.rules_outcome, Some(Outcome::Approved));
        assert_eq!(
            approved.why,
            format!(
                "Model {} score {s:.4} below threshold {:.4}.",
                model.version, model.threshold
            )
        );
        let blocked = decider.decide(&payment(5, 2)).unwrap();
        assert_eq!(blocked.decision.outcome, Outcome::Declined);
        assert_eq!(blocked.decision.score, 100);
        assert!(
            blocked.why.contains("; hard rules: blocked_user (userId "),
            "{}",
            blocked.why
        );
    }

    #[test]
    fn a_shadow_adds_its_score_and_changes_nothing_else() {
        let model = fixture_model();
        let random = Decider::Random(RandomMode::new(0.5, 3).unwrap());
        let shadowed = Decider::Shadowed(Box::new(random.clone()), model.clone());
        assert_eq!(shadowed.mode_name(), "random");
        assert_eq!(shadowed.rules_version(), random.rules_version());
        for user in 1..50 {
            let p = payment(user, 1000);
            let plain = random.decide(&p).unwrap();
            let with = shadowed.decide(&p).unwrap();
            assert_eq!(with.why, plain.why);
            assert_eq!(
                (
                    with.decision.outcome,
                    with.decision.score,
                    &with.decision.reasons
                ),
                (
                    plain.decision.outcome,
                    plain.decision.score,
                    &plain.decision.reasons
                )
            );
            assert_eq!(with.decision.rules_outcome, None);
            let shadow = with.decision.shadow.unwrap();
            assert_eq!(shadow.version, model.version);
            let features = with.decision.features.unwrap();
            let vector = FeatureVector(features.values.try_into().unwrap());
            assert_eq!(shadow.score, model.score(&vector).calibrated);
        }
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
