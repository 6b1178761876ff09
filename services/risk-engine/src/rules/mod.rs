//! Rules mode: the operator's rule set, validated once at start-up into [`CompiledRules`],
//! then evaluated against every payment.
//!
//! `compile` turns the raw [`RiskRules`] (strings, as written in the ConfigMap) into typed
//! values: currencies parsed, limits converted to minor units of their own currency, block
//! lists as sets. Every error names the key path it is about, so an operator can fix the file
//! without guessing.

mod evaluate;
mod load;

use std::collections::{HashMap, HashSet};

use paysys_core::Currency;
use paysys_core::money::{AmountError, Money};
use paysys_core::risk_rules::{RiskRules, RuleId, RuleScores, VelocityRules};
use rust_decimal::Decimal;
use uuid::Uuid;

pub use evaluate::Evaluation;
pub use load::{Format, load_file, parse};

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

/// A rule set that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRules {
    pub version: String,
    pub decline_threshold: u32,
    /// Empty means every currency is allowed.
    allowed_currencies: Vec<Currency>,
    /// Largest amount per currency, in that currency's minor units.
    max_amount: HashMap<Currency, i64>,
    blocked_users: HashSet<Uuid>,
    blocked_payees: HashSet<Uuid>,
    blocked_payment_methods: HashSet<Uuid>,
    velocity: Option<CompiledVelocity>,
    flag_payer_is_payee: bool,
    scores: RuleScores,
}

#[derive(Debug, Clone, PartialEq)]
struct CompiledVelocity {
    window_seconds: u64,
    max_count: Option<u64>,
    /// Largest total within the window per currency, minor units, this payment included.
    max_total: HashMap<Currency, i64>,
}

/// A rule set refused at start-up: `path` is the key (`maxAmount.USD`), `message` what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RulesError {
    pub path: String,
    pub message: String,
}

impl RulesError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl Default for CompiledRules {
    /// The default rule set (`RiskRules::default()`), used when no rules file is given.
    fn default() -> Self {
        compile(&RiskRules::default()).expect("the default rule set is valid")
    }
}

/// Validates a raw rule set.
pub fn compile(raw: &RiskRules) -> Result<CompiledRules, RulesError> {
    if raw.version.trim().is_empty() {
        return Err(RulesError::new("version", "must not be empty"));
    }
    if raw.decline_threshold == 0 {
        return Err(RulesError::new(
            "declineThreshold",
            "must be at least 1 (0 would decline every payment)",
        ));
    }
    let allowed_currencies = raw
        .allowed_currencies
        .iter()
        .enumerate()
        .map(|(i, code)| parse_currency(&format!("allowedCurrencies[{i}]"), code))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CompiledRules {
        version: raw.version.trim().to_owned(),
        decline_threshold: raw.decline_threshold,
        allowed_currencies,
        max_amount: compile_limits("maxAmount", &raw.max_amount)?,
        blocked_users: raw.blocked_user_ids.iter().copied().collect(),
        blocked_payees: raw.blocked_payee_ids.iter().copied().collect(),
        blocked_payment_methods: raw.blocked_payment_method_ids.iter().copied().collect(),
        velocity: raw.velocity.as_ref().map(compile_velocity).transpose()?,
        flag_payer_is_payee: raw.flag_payer_is_payee,
        scores: raw.scores.clone(),
    })
}

fn compile_velocity(raw: &VelocityRules) -> Result<CompiledVelocity, RulesError> {
    if raw.window_seconds == 0 {
        return Err(RulesError::new(
            "velocity.windowSeconds",
            "must be at least 1",
        ));
    }
    if raw.max_count == Some(0) {
        return Err(RulesError::new(
            "velocity.maxCount",
            "must be at least 1 (the count includes the payment being decided)",
        ));
    }
    Ok(CompiledVelocity {
        window_seconds: raw.window_seconds,
        max_count: raw.max_count,
        max_total: compile_limits("velocity.maxTotal", &raw.max_total)?,
    })
}

fn parse_currency(path: &str, code: &str) -> Result<Currency, RulesError> {
    code.parse()
        .map_err(|e: paysys_core::currency::CurrencyError| RulesError::new(path, e.to_string()))
}

/// Converts `{CODE: "decimal"}` into minor units, checking each amount against its
/// currency's exponent so `USD: "0.001"` is an error, not a silently rounded limit.
fn compile_limits(
    key: &str,
    raw: &std::collections::BTreeMap<String, String>,
) -> Result<HashMap<Currency, i64>, RulesError> {
    raw.iter()
        .map(|(code, amount)| {
            let path = format!("{key}.{code}");
            let currency = parse_currency(&path, code)?;
            let money = Money::parse(amount, currency, Decimal::MAX)
                .map_err(|e| RulesError::new(&path, amount_message(amount, currency, &e)))?;
            Ok((currency, money.minor))
        })
        .collect()
}

fn amount_message(amount: &str, currency: Currency, error: &AmountError) -> String {
    match error {
        AmountError::NotANumber => format!("{amount:?} is not a decimal number"),
        AmountError::NotPositive => format!("{amount:?} must be greater than zero"),
        AmountError::TooManyDecimals { exponent, .. } => {
            format!("{amount:?} has more decimals than {currency} allows ({exponent})")
        }
        AmountError::AboveMaximum { .. } => {
            format!("{amount:?} is too large to hold in minor units of {currency}")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn error_of(raw: RiskRules) -> String {
        compile(&raw).unwrap_err().to_string()
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
    fn default_rules_compile() {
        let rules = CompiledRules::default();
        assert_eq!(rules.version, "default");
        assert_eq!(rules.decline_threshold, 100);
        assert!(rules.flag_payer_is_payee);
    }

    #[test]
    fn limits_become_minor_units_of_their_currency() {
        let raw = RiskRules {
            max_amount: BTreeMap::from([
                ("USD".into(), "10000.50".into()),
                ("JPY".into(), "500000".into()),
                ("KWD".into(), "1.234".into()),
            ]),
            ..Default::default()
        };
        let rules = compile(&raw).unwrap();
        let usd: Currency = "USD".parse().unwrap();
        let jpy: Currency = "JPY".parse().unwrap();
        let kwd: Currency = "KWD".parse().unwrap();
        assert_eq!(rules.max_amount[&usd], 1_000_050);
        assert_eq!(rules.max_amount[&jpy], 500_000);
        assert_eq!(rules.max_amount[&kwd], 1_234);
    }

    #[test]
    fn errors_name_the_key_path() {
        let limits = |code: &str, amount: &str| BTreeMap::from([(code.into(), amount.into())]);
        assert_eq!(
            error_of(RiskRules {
                max_amount: limits("USD", "12.345"),
                ..Default::default()
            }),
            r#"maxAmount.USD: "12.345" has more decimals than USD allows (2)"#
        );
        assert_eq!(
            error_of(RiskRules {
                max_amount: limits("JPY", "1.5"),
                ..Default::default()
            }),
            r#"maxAmount.JPY: "1.5" has more decimals than JPY allows (0)"#
        );
        assert_eq!(
            error_of(RiskRules {
                max_amount: limits("usd", "1"),
                ..Default::default()
            }),
            "maxAmount.usd: 'usd' is not an ISO 4217 currency code"
        );
        assert_eq!(
            error_of(RiskRules {
                max_amount: limits("EUR", "lots"),
                ..Default::default()
            }),
            r#"maxAmount.EUR: "lots" is not a decimal number"#
        );
        assert_eq!(
            error_of(RiskRules {
                max_amount: limits("EUR", "0"),
                ..Default::default()
            }),
            r#"maxAmount.EUR: "0" must be greater than zero"#
        );
        assert_eq!(
            error_of(RiskRules {
                allowed_currencies: vec!["USD".into(), "XAU".into()],
                ..Default::default()
            }),
            "allowedCurrencies[1]: 'XAU' has no minor unit and cannot be used for payments"
        );
        assert_eq!(
            error_of(RiskRules {
                velocity: Some(VelocityRules {
                    max_total: limits("GBP", "0.001"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            r#"velocity.maxTotal.GBP: "0.001" has more decimals than GBP allows (2)"#
        );
    }

    #[test]
    fn nonsensical_settings_are_refused() {
        assert!(
            error_of(RiskRules {
                decline_threshold: 0,
                ..Default::default()
            })
            .starts_with("declineThreshold: ")
        );
        assert_eq!(
            error_of(RiskRules {
                version: "  ".into(),
                ..Default::default()
            }),
            "version: must not be empty"
        );
        assert!(
            error_of(RiskRules {
                velocity: Some(VelocityRules {
                    window_seconds: 0,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .starts_with("velocity.windowSeconds: ")
        );
        assert!(
            error_of(RiskRules {
                velocity: Some(VelocityRules {
                    max_count: Some(0),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .starts_with("velocity.maxCount: ")
        );
    }
}
