//! Evaluating a compiled rule set against one payment.
//!
//! Every rule is checked (not just up to the first that fires) so a decision lists every
//! reason, which is what an analyst reviewing a decline needs. Rules are pure functions of
//! the payment message: the engine keeps no state, and a redelivered message gets the same
//! score and reasons.

use strum::IntoEnumIterator;

use super::RuleId;
use super::compile::{CompiledRules, CompiledVelocity};
use crate::messages::{PaymentData, Velocity};
use crate::{Money, Reason};

/// Whether `rule` is hard: it declines on its own in model mode, whatever the model's score.
///
/// Hard rules are policy the operator states (who may not pay or be paid, which currencies,
/// which ceilings): no score may overrule them. Soft rules are evidence of fraud (velocity, a
/// payer paying themselves), which the model weighs among its features instead
/// (`velocity_count`, `velocity_total_minor`, `payer_is_payee`) and so replaces. In rules mode
/// every rule adds its score as before. One arm per rule: a new [`RuleId`] does not compile
/// until it is classified here.
pub const fn is_hard(rule: RuleId) -> bool {
    match rule {
        RuleId::CurrencyNotAllowed
        | RuleId::AmountAboveMax
        | RuleId::BlockedUser
        | RuleId::BlockedPayee
        | RuleId::BlockedPaymentMethod => true,
        RuleId::VelocityCount | RuleId::VelocityTotal | RuleId::PayerIsPayee => false,
    }
}

/// The rules that fired and their summed score.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evaluation {
    pub score: u32,
    pub reasons: Vec<Reason>,
    /// Each reason's rule and the points it added, in `reasons` order.
    fired: Vec<(RuleId, u32)>,
}

impl Evaluation {
    fn fire(&mut self, rule: RuleId, score: u32, detail: String) {
        self.score = self.score.saturating_add(score);
        self.reasons.push(Reason {
            rule: rule.as_str().to_owned(),
            detail,
        });
        self.fired.push((rule, score));
    }

    /// Only the hard rules that fired ([`is_hard`]): what still declines on its own in
    /// model mode.
    pub fn hard(&self) -> Evaluation {
        let mut out = Evaluation::default();
        for ((rule, score), reason) in self.fired.iter().zip(&self.reasons) {
            if is_hard(*rule) {
                out.fire(*rule, *score, reason.detail.clone());
            }
        }
        out
    }

    /// Whether no rule fired.
    pub fn fired_nothing(&self) -> bool {
        self.reasons.is_empty()
    }

    /// Whether the score reaches `threshold`, i.e. the payment is declined.
    pub fn declines(&self, threshold: u32) -> bool {
        self.score >= threshold
    }
}

/// What the rules look at: one payment. `money` is `data`'s amount in minor units (checked
/// when the message was decoded); `velocity` is the payer's prior activity, absent in a
/// hand-written message, in which case the velocity rules do not apply.
#[derive(Clone, Copy)]
struct Payment<'a> {
    data: &'a PaymentData,
    money: Money,
    velocity: Option<&'a Velocity>,
}

impl CompiledRules {
    /// Scores a payment: every rule, in [`RuleId`] order, adds its score if it fires.
    pub fn evaluate(
        &self,
        data: &PaymentData,
        money: Money,
        velocity: Option<&Velocity>,
    ) -> Evaluation {
        let payment = Payment {
            data,
            money,
            velocity,
        };
        let mut out = Evaluation::default();
        for rule in RuleId::iter() {
            if let Some(detail) = self.check(rule, payment) {
                out.fire(rule, self.scores.get(rule), detail);
            }
        }
        out
    }

    /// Why `rule` fires for `payment`, or `None` if it does not. One arm per rule, so a new
    /// [`RuleId`] does not compile until it has its check.
    fn check(&self, rule: RuleId, payment: Payment<'_>) -> Option<String> {
        let Payment {
            data,
            money,
            velocity,
        } = payment;
        match rule {
            RuleId::CurrencyNotAllowed => (!self.allowed_currencies.is_empty()
                && !self.allowed_currencies.contains(&money.currency))
            .then(|| {
                let allowed: Vec<&str> = self.allowed_currencies.iter().map(|c| c.code()).collect();
                format!(
                    "currency {} is not among the allowed currencies ({})",
                    money.currency,
                    allowed.join(", ")
                )
            }),
            RuleId::AmountAboveMax => {
                let max = *self.max_amount.get(&money.currency)?;
                (money.minor > max).then(|| {
                    format!(
                        "amount {} {} exceeds the maximum {} {}",
                        money.to_decimal(),
                        money.currency,
                        major(max, money),
                        money.currency
                    )
                })
            }
            RuleId::BlockedUser => self
                .blocked_users
                .contains(&data.user_id)
                .then(|| format!("userId {} is on the block list", data.user_id)),
            RuleId::BlockedPayee => self
                .blocked_payees
                .contains(&data.payee_id)
                .then(|| format!("payeeId {} is on the block list", data.payee_id)),
            RuleId::BlockedPaymentMethod => self
                .blocked_payment_methods
                .contains(&data.payment_method_id)
                .then(|| {
                    format!(
                        "paymentMethodId {} is on the block list",
                        data.payment_method_id
                    )
                }),
            // Velocity limits count this payment in: the message carries the payer's
            // activity before it.
            RuleId::VelocityCount => {
                let (rules, velocity) = (self.velocity.as_ref()?, velocity?);
                let max_count = rules.max_count?;
                let count = velocity.count.saturating_add(1);
                (count > max_count).then(|| {
                    format!(
                        "{count} payments by userId within {}, this one included; the limit is {max_count}",
                        window(rules, velocity)
                    )
                })
            }
            RuleId::VelocityTotal => {
                let (rules, velocity) = (self.velocity.as_ref()?, velocity?);
                let max_total = *rules.max_total.get(&money.currency)?;
                let total = velocity.total_minor.saturating_add(money.minor);
                (total > max_total).then(|| {
                    format!(
                        "{} {} paid by userId within {}, this one included; the limit is {} {}",
                        major(total, money),
                        money.currency,
                        window(rules, velocity),
                        major(max_total, money),
                        money.currency
                    )
                })
            }
            RuleId::PayerIsPayee => (self.flag_payer_is_payee && data.user_id == data.payee_id)
                .then(|| format!("userId {} is also the payeeId", data.user_id)),
        }
    }
}

/// The window a velocity reason speaks of. The API computes the activity over its own window
/// (VELOCITY_WINDOW_SECONDS); the operator wires it from the rules. If they differ, the limits
/// still apply but the detail says so, because the counts then cover a different period than
/// the rules intend.
fn window(rules: &CompiledVelocity, velocity: &Velocity) -> String {
    if velocity.window_seconds == rules.window_seconds {
        format!("{} s", velocity.window_seconds)
    } else {
        format!(
            "{} s (reported by the API; the rules expect {} s)",
            velocity.window_seconds, rules.window_seconds
        )
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

    use uuid::Uuid;

    use super::*;
    use crate::risk_rules::{RiskRules, VelocityRules, compile};

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

    /// docs/risk-engine.md lists the hard and the soft rules exactly as `is_hard` splits them.
    #[test]
    fn the_hard_rules_are_documented() {
        use strum::IntoEnumIterator;
        let doc = include_str!("../../../../docs/risk-engine.md");
        let listed = |prefix: &str| -> Vec<String> {
            let line = doc
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("docs/risk-engine.md has no line {prefix:?}"));
            line[prefix.len()..]
                .split(',')
                .map(|r| r.trim().trim_end_matches('.').trim_matches('`').to_owned())
                .collect()
        };
        let of = |hard: bool| -> Vec<String> {
            RuleId::iter()
                .filter(|r| is_hard(*r) == hard)
                .map(|r| r.as_str().to_owned())
                .collect()
        };
        assert_eq!(
            listed("Hard rules (decline on their own in model mode): "),
            of(true)
        );
        assert_eq!(
            listed("Soft rules (replaced by the model's score): "),
            of(false)
        );
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
    fn a_rule_adds_the_score_set_for_its_id() {
        let mut raw = RiskRules {
            blocked_payee_ids: vec![PAYEE],
            ..Default::default()
        };
        raw.scores.set(RuleId::BlockedPayee, 7);
        let e = evaluate(&raw, &payment("1", "USD"), None);
        assert_eq!(fired(&e), ["blocked_payee"]);
        assert_eq!(e.score, 7);
    }

    #[test]
    fn reasons_follow_the_rule_order() {
        let mut data = payment("20000", "EUR");
        data.payee_id = USER;
        let raw = RiskRules {
            allowed_currencies: vec!["USD".into()],
            max_amount: BTreeMap::from([("EUR".into(), "10".into())]),
            blocked_user_ids: vec![USER],
            blocked_payee_ids: vec![USER],
            blocked_payment_method_ids: vec![METHOD],
            velocity: Some(VelocityRules {
                max_count: Some(1),
                max_total: BTreeMap::from([("EUR".into(), "10".into())]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = evaluate(&raw, &data, velocity(1, 0));
        // Every rule fires here, so this also shows that each has a check.
        let all: Vec<&str> = RuleId::iter().map(RuleId::as_str).collect();
        assert_eq!(fired(&e), all);
    }

    #[test]
    fn the_hard_part_keeps_only_hard_rules_with_their_scores() {
        let mut data = payment("20000", "EUR");
        data.payee_id = USER;
        let mut raw = RiskRules {
            max_amount: BTreeMap::from([("EUR".into(), "10".into())]),
            blocked_payee_ids: vec![USER],
            velocity: Some(VelocityRules {
                max_count: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        };
        raw.scores.set(RuleId::BlockedPayee, 30);
        let e = evaluate(&raw, &data, velocity(1, 0));
        assert_eq!(
            fired(&e),
            [
                "amount_above_max",
                "blocked_payee",
                "velocity_count",
                "payer_is_payee"
            ]
        );
        let hard = e.hard();
        assert_eq!(fired(&hard), ["amount_above_max", "blocked_payee"]);
        assert_eq!(hard.score, 130);
        assert_eq!(hard.reasons[..], e.reasons[..2]);
        assert_eq!(
            fired(&evaluate(&raw, &payment("1", "USD"), velocity(1, 0)).hard()),
            Vec::<&str>::new()
        );
    }

    /// docs/risk-engine.md lists every rule with its score key and default score.
    #[test]
    fn every_rule_is_documented() {
        let doc = include_str!("../../../../docs/risk-engine.md");
        let rows: Vec<&str> = doc
            .lines()
            .filter(|line| line.starts_with("| `") && line.ends_with(") |") && line.contains("` ("))
            .collect();
        for rule in RuleId::iter() {
            let row = rows
                .iter()
                .find(|row| row.starts_with(&format!("| `{}` |", rule.as_str())))
                .unwrap_or_else(|| panic!("docs/risk-engine.md has no row for {rule:?}"));
            let score = format!("| `{}` ({}) |", rule.score_key(), rule.default_score());
            assert!(row.ends_with(&score), "{row} should end with {score}");
        }
        assert_eq!(rows.len(), RuleId::iter().count(), "{rows:#?}");
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
