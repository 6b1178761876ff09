//! Validating a raw rule set into [`CompiledRules`], once, before any payment is evaluated.
//!
//! `compile` turns the raw [`RiskRules`] (strings, as written in the ConfigMap) into typed
//! values: currencies parsed, limits converted to minor units of their own currency, block
//! lists as sets. Every error names the key path it is about, so an operator can fix the file
//! without guessing.

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;
use uuid::Uuid;

use super::{RiskRules, RuleScores, VelocityRules};
use crate::Currency;
use crate::money::{AmountError, Money};

/// A rule set that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRules {
    pub version: String,
    pub decline_threshold: u32,
    /// Empty means every currency is allowed.
    pub(super) allowed_currencies: Vec<Currency>,
    /// Largest amount per currency, in that currency's minor units.
    pub(super) max_amount: HashMap<Currency, i64>,
    pub(super) blocked_users: HashSet<Uuid>,
    pub(super) blocked_payees: HashSet<Uuid>,
    pub(super) blocked_payment_methods: HashSet<Uuid>,
    pub(super) velocity: Option<CompiledVelocity>,
    pub(super) flag_payer_is_payee: bool,
    pub(super) scores: RuleScores,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct CompiledVelocity {
    pub(super) window_seconds: u64,
    pub(super) max_count: Option<u64>,
    /// Largest total within the window per currency, minor units, this payment included.
    pub(super) max_total: HashMap<Currency, i64>,
}

/// A rule set refused: `path` is the key (`maxAmount.USD`), `message` what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RulesError {
    pub path: String,
    pub message: String,
}

impl RulesError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl CompiledRules {
    /// The score each rule adds when it fires.
    pub fn scores(&self) -> &RuleScores {
        &self.scores
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
        .map_err(|e: crate::currency::CurrencyError| RulesError::new(path, e.to_string()))
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
