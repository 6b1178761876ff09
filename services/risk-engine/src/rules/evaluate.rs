//! Evaluating a compiled rule set against one payment.
//!
//! Every rule is checked (not just up to the first that fires) so a decision lists every
//! reason, which is what an analyst reviewing a decline needs. Rules are pure functions of
//! the payment message: the engine keeps no state, and a redelivered message gets the same
//! score and reasons.

use paysys_core::messages::{PaymentData, Velocity};
use paysys_core::{Money, Reason};

use super::{CompiledRules, CompiledVelocity};

/// The rules that fired and their summed score.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evaluation {
    pub score: u32,
    pub reasons: Vec<Reason>,
}

impl Evaluation {
    fn fire(&mut self, rule: &str, score: u32, detail: String) {
        self.score = self.score.saturating_add(score);
        self.reasons.push(Reason {
            rule: rule.to_owned(),
            detail,
        });
    }

    /// Whether the score reaches `threshold`, i.e. the payment is declined.
    pub fn declines(&self, threshold: u32) -> bool {
        self.score >= threshold
    }
}

impl CompiledRules {
    /// Scores a payment. `money` is `data`'s amount in minor units (checked when the message
    /// was decoded); `velocity` is the payer's prior activity, absent in a hand-written
    /// message, in which case the velocity rules do not apply.
    pub fn evaluate(
        &self,
        data: &PaymentData,
        money: Money,
        velocity: Option<&Velocity>,
    ) -> Evaluation {
        let mut out = Evaluation::default();
        let scores = &self.scores;
        if !self.allowed_currencies.is_empty() && !self.allowed_currencies.contains(&money.currency)
        {
            let allowed: Vec<&str> = self.allowed_currencies.iter().map(|c| c.code()).collect();
            out.fire(
                "currency_not_allowed",
                scores.currency_not_allowed,
                format!(
                    "currency {} is not among the allowed currencies ({})",
                    money.currency,
                    allowed.join(", ")
                ),
            );
        }
        if let Some(&max) = self.max_amount.get(&money.currency)
            && money.minor > max
        {
            out.fire(
                "amount_above_max",
                scores.amount_above_max,
                format!(
                    "amount {} {} exceeds the maximum {} {}",
                    money.to_decimal(),
                    money.currency,
                    major(max, money),
                    money.currency
                ),
            );
        }
        self.check_block_lists(data, &mut out);
        if let (Some(rules), Some(velocity)) = (&self.velocity, velocity) {
            check_velocity(rules, velocity, money, scores, &mut out);
        }
        if self.flag_payer_is_payee && data.user_id == data.payee_id {
            out.fire(
                "payer_is_payee",
                scores.payer_is_payee,
                format!("userId {} is also the payeeId", data.user_id),
            );
        }
        out
    }

    fn check_block_lists(&self, data: &PaymentData, out: &mut Evaluation) {
        let scores = &self.scores;
        if self.blocked_users.contains(&data.user_id) {
            out.fire(
                "blocked_user",
                scores.blocked_user,
                format!("userId {} is on the block list", data.user_id),
            );
        }
        if self.blocked_payees.contains(&data.payee_id) {
            out.fire(
                "blocked_payee",
                scores.blocked_payee,
                format!("payeeId {} is on the block list", data.payee_id),
            );
        }
        if self
            .blocked_payment_methods
            .contains(&data.payment_method_id)
        {
            out.fire(
                "blocked_payment_method",
                scores.blocked_payment_method,
                format!(
                    "paymentMethodId {} is on the block list",
                    data.payment_method_id
                ),
            );
        }
    }
}

/// Velocity limits count this payment in: the message carries the payer's activity before it.
fn check_velocity(
    rules: &CompiledVelocity,
    velocity: &Velocity,
    money: Money,
    scores: &paysys_core::risk_rules::RuleScores,
    out: &mut Evaluation,
) {
    // The API computes the activity over its own window (VELOCITY_WINDOW_SECONDS); the
    // operator wires it from the rules. If they differ, the limits still apply but the detail
    // says so, because the counts then cover a different period than the rules intend.
    let window = if velocity.window_seconds == rules.window_seconds {
        format!("{} s", velocity.window_seconds)
    } else {
        format!(
            "{} s (reported by the API; the rules expect {} s)",
            velocity.window_seconds, rules.window_seconds
        )
    };
    if let Some(max_count) = rules.max_count {
        let count = velocity.count.saturating_add(1);
        if count > max_count {
            out.fire(
                "velocity_count",
                scores.velocity_count,
                format!(
                    "{count} payments by userId within {window}, this one included; the limit is {max_count}"
                ),
            );
        }
    }
    if let Some(&max_total) = rules.max_total.get(&money.currency) {
        let total = velocity.total_minor.saturating_add(money.minor);
        if total > max_total {
            out.fire(
                "velocity_total",
                scores.velocity_total,
                format!(
                    "{} {} paid by userId within {window}, this one included; the limit is {} {}",
                    major(total, money),
                    money.currency,
                    major(max_total, money),
                    money.currency
                ),
            );
        }
    }
}

/// Minor units of `like`'s currency as a major-unit decimal for messages.
fn major(minor: i64, like: Money) -> rust_decimal::Decimal {
    Money {
        minor,
        currency: like.currency,
    }
    .to_decimal()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use paysys_core::risk_rules::{RiskRules, VelocityRules};
    use uuid::Uuid;

    use super::*;
    use crate::rules::compile;

    const USER: Uuid = Uuid::from_u128(1);
    const PAYEE: Uuid = Uuid::from_u128(2);
    const METHOD: Uuid = Uuid::from_u128(3);
    const OTHER: Uuid = Uuid::from_u128(99);

    fn payment(amount: &str, currency: &str) -> PaymentData {
        PaymentData {
            amount: amount.parse().unwrap(),
            currency: currency.parse().unwrap(),
            user_id: USER,
            payee_id: PAYEE,
            payment_method_id: METHOD,
            created_at: None,
        }
    }

    fn evaluate(raw: &RiskRules, data: &PaymentData, velocity: Option<Velocity>) -> Evaluation {
        let rules = compile(raw).unwrap();
        rules.evaluate(data, data.money().unwrap(), velocity.as_ref())
    }

    fn fired(evaluation: &Evaluation) -> Vec<&str> {
        evaluation.reasons.iter().map(|r| r.rule.as_str()).collect()
    }

    fn velocity(count: u64, total_minor: i64) -> Option<Velocity> {
        Some(Velocity {
            window_seconds: 3600,
            count,
            total_minor,
        })
    }

    #[test]
    fn nothing_fires_on_a_clean_payment() {
        let e = evaluate(&RiskRules::default(), &payment("70.5", "USD"), None);
        assert_eq!(e, Evaluation::default());
        assert!(!e.declines(100));
    }

    #[test]
    fn currency_rule() {
        let raw = RiskRules {
            allowed_currencies: vec!["USD".into(), "GBP".into()],
            ..Default::default()
        };
        let e = evaluate(&raw, &payment("10", "EUR"), None);
        assert_eq!(fired(&e), ["currency_not_allowed"]);
        assert_eq!(e.score, 100);
        assert_eq!(
            e.reasons[0].detail,
            "currency EUR is not among the allowed currencies (USD, GBP)"
        );
        assert!(fired(&evaluate(&raw, &payment("10", "GBP"), None)).is_empty());
    }

    #[test]
    fn max_amount_rule_is_exact_at_the_limit() {
        let raw = RiskRules {
            max_amount: BTreeMap::from([("USD".into(), "10000".into())]),
            ..Default::default()
        };
        assert!(fired(&evaluate(&raw, &payment("10000.00", "USD"), None)).is_empty());
        let e = evaluate(&raw, &payment("10000.01", "USD"), None);
        assert_eq!(fired(&e), ["amount_above_max"]);
        assert_eq!(
            e.reasons[0].detail,
            "amount 10000.01 USD exceeds the maximum 10000 USD"
        );
        // A limit in one currency says nothing about another.
        assert!(fired(&evaluate(&raw, &payment("20000", "EUR"), None)).is_empty());
    }

    #[test]
    fn block_list_rules() {
        let raw = RiskRules {
            blocked_user_ids: vec![USER],
            blocked_payee_ids: vec![PAYEE],
            blocked_payment_method_ids: vec![METHOD],
            ..Default::default()
        };
        let e = evaluate(&raw, &payment("1", "USD"), None);
        assert_eq!(
            fired(&e),
            ["blocked_user", "blocked_payee", "blocked_payment_method"]
        );
        assert_eq!(e.score, 300);
        let lists_of_others = RiskRules {
            blocked_user_ids: vec![OTHER],
            blocked_payee_ids: vec![OTHER],
            blocked_payment_method_ids: vec![OTHER],
            ..Default::default()
        };
        assert!(fired(&evaluate(&lists_of_others, &payment("1", "USD"), None)).is_empty());
    }

    #[test]
    fn velocity_count_includes_this_payment() {
        let raw = RiskRules {
            velocity: Some(VelocityRules {
                max_count: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        // Two before + this one = 3: at the limit, allowed.
        assert!(fired(&evaluate(&raw, &payment("1", "USD"), velocity(2, 0))).is_empty());
        let e = evaluate(&raw, &payment("1", "USD"), velocity(3, 0));
        assert_eq!(fired(&e), ["velocity_count"]);
        assert_eq!(e.score, 60);
        assert!(
            !e.declines(100),
            "velocity alone does not reach the default threshold"
        );
        assert_eq!(
            e.reasons[0].detail,
            "4 payments by userId within 3600 s, this one included; the limit is 3"
        );
        // Without velocity data (a hand-published message) the rule cannot apply.
        assert!(fired(&evaluate(&raw, &payment("1", "USD"), None)).is_empty());
    }

    #[test]
    fn velocity_total_includes_this_payment() {
        let raw = RiskRules {
            velocity: Some(VelocityRules {
                max_total: BTreeMap::from([("USD".into(), "500".into())]),
                ..Default::default()
            }),
            ..Default::default()
        };
        // 400.00 before + 100.00 = 500.00: at the limit.
        assert!(fired(&evaluate(&raw, &payment("100", "USD"), velocity(3, 40_000))).is_empty());
        let e = evaluate(&raw, &payment("100.01", "USD"), velocity(3, 40_000));
        assert_eq!(fired(&e), ["velocity_total"]);
        assert_eq!(
            e.reasons[0].detail,
            "500.01 USD paid by userId within 3600 s, this one included; the limit is 500 USD"
        );
        assert!(
            fired(&evaluate(
                &raw,
                &payment("100.01", "EUR"),
                velocity(3, 40_000)
            ))
            .is_empty()
        );
    }

    #[test]
    fn a_window_mismatch_is_visible_in_the_reason() {
        let raw = RiskRules {
            velocity: Some(VelocityRules {
                window_seconds: 600,
                max_count: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = evaluate(&raw, &payment("1", "USD"), velocity(1, 0));
        assert!(
            e.reasons[0].detail.contains("the rules expect 600 s"),
            "{}",
            e.reasons[0].detail
        );
    }

    #[test]
    fn payer_is_payee_rule_and_its_switch() {
        let mut data = payment("1", "USD");
        data.payee_id = USER;
        let e = evaluate(&RiskRules::default(), &data, None);
        assert_eq!(fired(&e), ["payer_is_payee"]);
        assert!(e.declines(100));
        let off = RiskRules {
            flag_payer_is_payee: false,
            ..Default::default()
        };
        assert!(fired(&evaluate(&off, &data, None)).is_empty());
    }

    #[test]
    fn scores_add_up_against_the_threshold() {
        let raw = RiskRules {
            decline_threshold: 100,
            velocity: Some(VelocityRules {
                max_count: Some(1),
                max_total: BTreeMap::from([("USD".into(), "10".into())]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = evaluate(&raw, &payment("20", "USD"), velocity(1, 0));
        assert_eq!(fired(&e), ["velocity_count", "velocity_total"]);
        assert_eq!(e.score, 120);
        assert!(e.declines(100));
        assert!(!e.declines(121));
    }
}
