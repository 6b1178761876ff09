//! The risk engine's rule set, as written in `RISK_RULES_FILE` (YAML or JSON) and in the
//! `PaymentSystem` resource's `spec.riskEngine.rules`.
//!
//! This is the raw, serialisable form shared by the risk engine (which evaluates it) and the
//! operator (which embeds it in its CRD schema and renders it into a ConfigMap). Both validate
//! it with the same [`compile`], so a rule set the operator accepts is one the engine starts
//! with; [`CompiledRules::evaluate`] scores a payment.
//! Amounts are decimal strings in major units (`"10000.00"`) so no float ever holds money.
//! Unknown keys are refused so a typo in a rule name cannot silently disable it.

mod compile;
mod evaluate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strum::IntoEnumIterator;
use uuid::Uuid;

pub use compile::{CompiledRules, RulesError, compile};
pub use evaluate::{Evaluation, is_hard};

/// A complete rule set. Every field has a default, so `{}` is valid: it approves everything
/// except a payment whose payer is also its payee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RiskRules {
    /// Identifies this rule set in every decision it produces (audit trail).
    pub version: String,
    /// A payment whose total score reaches this value is declined; below it, approved.
    #[schemars(range(min = 1))]
    pub decline_threshold: u32,
    /// ISO 4217 codes accepted; empty means every currency.
    pub allowed_currencies: Vec<String>,
    /// Largest amount per currency, in major units as a decimal string, e.g. `USD: "10000"`.
    pub max_amount: BTreeMap<String, String>,
    /// userIds whose payments are declined.
    pub blocked_user_ids: Vec<Uuid>,
    /// payeeIds that may not be paid.
    pub blocked_payee_ids: Vec<Uuid>,
    /// paymentMethodIds that may not be used.
    pub blocked_payment_method_ids: Vec<Uuid>,
    /// Limits on a payer's recent activity; absent means no velocity rules.
    pub velocity: Option<VelocityRules>,
    /// Whether a payment whose userId equals its payeeId counts against it.
    pub flag_payer_is_payee: bool,
    /// Score each rule adds when it fires.
    pub scores: RuleScores,
}

/// Limits on the payer's activity within the window the payments API reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VelocityRules {
    /// Length of the look-back window in seconds. The payments API computes the counts over
    /// this window (`VELOCITY_WINDOW_SECONDS`); the operator wires both from this value.
    #[schemars(range(min = 1))]
    pub window_seconds: u64,
    /// Most payments a user may make within the window, this one included.
    #[schemars(range(min = 1))]
    pub max_count: Option<u64>,
    /// Largest total per currency within the window, this one included, as decimal strings.
    pub max_total: BTreeMap<String, String>,
}

/// Every rule, in the order the engine checks them and lists them in a decision's reasons.
///
/// A rule's id in decisions and logs (`reasons[].rule`) is its snake_case name
/// (`blocked_user`); the key of its score in the rules file is its camelCase name
/// (`blockedUser`). Both are derived from the variant, so neither is written by hand.
/// Adding a rule: docs/architecture.md, "How to add a risk rule".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, strum::EnumIter, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum RuleId {
    CurrencyNotAllowed,
    AmountAboveMax,
    BlockedUser,
    BlockedPayee,
    BlockedPaymentMethod,
    VelocityCount,
    VelocityTotal,
    PayerIsPayee,
}

impl RuleId {
    /// The id in a decision's reasons: `blocked_payment_method`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The key of the rule's score under `scores` in the rules file: `blockedPaymentMethod`,
    /// the id in camelCase like every other key of the file.
    pub fn score_key(self) -> String {
        let mut words = self.as_str().split('_');
        let mut key = words.next().unwrap_or_default().to_owned();
        for word in words {
            let mut letters = word.chars();
            key.extend(letters.next().map(|first| first.to_ascii_uppercase()));
            key.push_str(letters.as_str());
        }
        key
    }

    fn from_score_key(key: &str) -> Option<Self> {
        Self::iter().find(|rule| rule.score_key() == key)
    }

    /// When the rule fires, in the rules file's words (the description of its score in the
    /// CRD, which `kubectl explain` shows).
    pub const fn fires_when(self) -> &'static str {
        match self {
            Self::CurrencyNotAllowed => "the currency is not one of allowedCurrencies",
            Self::AmountAboveMax => "the amount is above maxAmount for its currency",
            Self::BlockedUser => "the payer is one of blockedUserIds",
            Self::BlockedPayee => "the payee is one of blockedPayeeIds",
            Self::BlockedPaymentMethod => "the payment method is one of blockedPaymentMethodIds",
            Self::VelocityCount => "the payer exceeds velocity.maxCount payments in the window",
            Self::VelocityTotal => "the payer exceeds velocity.maxTotal in the window",
            Self::PayerIsPayee => "the payer is the payee (with flagPayerIsPayee)",
        }
    }

    /// The score when the rules file sets none. Hard rules (lists, currency, ceilings)
    /// decline on their own at the default threshold of 100; velocity rules need a second
    /// signal.
    pub const fn default_score(self) -> u32 {
        match self {
            Self::CurrencyNotAllowed
            | Self::AmountAboveMax
            | Self::BlockedUser
            | Self::BlockedPayee
            | Self::BlockedPaymentMethod
            | Self::PayerIsPayee => 100,
            Self::VelocityCount | Self::VelocityTotal => 60,
        }
    }
}

/// Points each rule adds to the score when it fires, by rule. Written in the rules file as
/// `{ruleKey: points}`; any subset may be given (the rest keep their default), an unknown or
/// repeated key is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleScores(BTreeMap<RuleId, u32>);

impl RuleScores {
    /// The points `rule` adds when it fires.
    pub fn get(&self, rule: RuleId) -> u32 {
        self.0
            .get(&rule)
            .copied()
            .unwrap_or_else(|| rule.default_score())
    }

    pub fn set(&mut self, rule: RuleId, score: u32) {
        self.0.insert(rule, score);
    }
}

impl Default for RuleScores {
    fn default() -> Self {
        Self(
            RuleId::iter()
                .map(|rule| (rule, rule.default_score()))
                .collect(),
        )
    }
}

impl Serialize for RuleScores {
    /// Every rule's score, in rule order (the operator renders the complete set).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(RuleId::iter().map(|rule| (rule.score_key(), self.get(rule))))
    }
}

/// A key under `scores`. Refused inside the key's own deserialisation, so an error path
/// names it (`scores.velocityCnt`), in the words serde uses for a struct's unknown field.
struct ScoreKey(RuleId);

impl<'de> Deserialize<'de> for ScoreKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = String::deserialize(deserializer)?;
        RuleId::from_score_key(&key).map(ScoreKey).ok_or_else(|| {
            let expected: Vec<String> = RuleId::iter()
                .map(|rule| format!("`{}`", rule.score_key()))
                .collect();
            serde::de::Error::custom(format_args!(
                "unknown field `{key}`, expected one of {}",
                expected.join(", ")
            ))
        })
    }
}

impl<'de> Deserialize<'de> for RuleScores {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Scores;
        impl<'de> serde::de::Visitor<'de> for Scores {
            type Value = RuleScores;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of rule scores")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RuleScores, A::Error> {
                let mut given = BTreeMap::new();
                while let Some(ScoreKey(rule)) = map.next_key()? {
                    if given.insert(rule, map.next_value()?).is_some() {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate field `{}`",
                            rule.score_key()
                        )));
                    }
                }
                let mut scores = RuleScores::default();
                scores.0.extend(given);
                Ok(scores)
            }
        }
        deserializer.deserialize_map(Scores)
    }
}

impl schemars::JsonSchema for RuleScores {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RuleScores".into()
    }

    /// What deriving it for a struct with one `u32` field per rule would give, so the CRD
    /// schema lists (and the API server checks) every score key.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let properties: serde_json::Map<String, serde_json::Value> = RuleId::iter()
            .map(|rule| {
                let property = serde_json::json!({
                    "description": format!(
                        "Points added when {} (rule {}).",
                        rule.fires_when(),
                        rule.as_str()
                    ),
                    "type": "integer",
                    "format": "uint32",
                    "minimum": 0,
                    "default": rule.default_score(),
                });
                (rule.score_key(), property)
            })
            .collect();
        schemars::json_schema!({
            "description": "Points each rule adds to the score when it fires, by rule.",
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        })
    }
}

impl Default for RiskRules {
    fn default() -> Self {
        Self {
            version: "default".into(),
            decline_threshold: 100,
            allowed_currencies: Vec::new(),
            max_amount: BTreeMap::new(),
            blocked_user_ids: Vec::new(),
            blocked_payee_ids: Vec::new(),
            blocked_payment_method_ids: Vec::new(),
            velocity: None,
            flag_payer_is_payee: true,
            scores: RuleScores::default(),
        }
    }
}

impl Default for VelocityRules {
    fn default() -> Self {
        Self {
            window_seconds: 3600,
            max_count: None,
            max_total: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_the_default_rule_set() {
        let rules: RiskRules = serde_json::from_str("{}").unwrap();
        assert_eq!(rules, RiskRules::default());
    }

    #[test]
    fn ids_and_score_keys_follow_the_variant_name() {
        assert_eq!(
            RuleId::BlockedPaymentMethod.as_str(),
            "blocked_payment_method"
        );
        assert_eq!(
            RuleId::BlockedPaymentMethod.score_key(),
            "blockedPaymentMethod"
        );
        assert_eq!(RuleId::iter().count(), 8);
    }

    #[test]
    fn scores_are_written_in_full_in_rule_order() {
        // Byte for byte what the struct with one field per rule wrote, so the ConfigMap the
        // operator renders does not change.
        let json = serde_json::to_string(&RuleScores::default()).unwrap();
        assert_eq!(
            json,
            r#"{"currencyNotAllowed":100,"amountAboveMax":100,"blockedUser":100,"blockedPayee":100,"blockedPaymentMethod":100,"velocityCount":60,"velocityTotal":60,"payerIsPayee":100}"#
        );
        let back: RuleScores = serde_json::from_str(&json).unwrap();
        assert_eq!(back, RuleScores::default());
    }

    #[test]
    fn a_subset_of_scores_keeps_the_other_defaults() {
        let rules: RiskRules = serde_json::from_str(r#"{"scores": {"velocityCount": 5}}"#).unwrap();
        assert_eq!(rules.scores.get(RuleId::VelocityCount), 5);
        assert_eq!(rules.scores.get(RuleId::VelocityTotal), 60);
        assert_eq!(rules.scores.get(RuleId::BlockedUser), 100);
        let mut expected = RuleScores::default();
        expected.set(RuleId::VelocityCount, 5);
        assert_eq!(rules.scores, expected);
    }

    #[test]
    fn unknown_and_repeated_score_keys_are_refused() {
        let error = serde_json::from_str::<RuleScores>(r#"{"velocityCnt": 1}"#).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("unknown field `velocityCnt`, expected one of `currencyNotAllowed`"),
            "{error}"
        );
        let error = serde_json::from_str::<RuleScores>(r#"{"blockedUser": 1, "blockedUser": 2}"#)
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("duplicate field `blockedUser`"),
            "{error}"
        );
    }

    #[test]
    fn the_schema_lists_every_score_with_its_default() {
        let schema = schemars::schema_for!(RuleScores);
        let properties = schema
            .get("properties")
            .and_then(|p| p.as_object())
            .expect("properties");
        let mut keys: Vec<String> = properties.keys().cloned().collect();
        keys.sort();
        let mut expected: Vec<String> = RuleId::iter().map(RuleId::score_key).collect();
        expected.sort();
        assert_eq!(keys, expected);
        assert_eq!(properties["velocityTotal"]["default"], 60);
        assert_eq!(schema.get("additionalProperties"), Some(&false.into()));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = serde_json::from_str::<RiskRules>(r#"{"maxAmmount": {}}"#).unwrap_err();
        assert!(error.to_string().contains("maxAmmount"), "{error}");
    }
}
