//! The risk engine's rule set, as written in `RISK_RULES_FILE` (YAML or JSON) and in the
//! `PaymentSystem` resource's `spec.riskEngine.rules`.
//!
//! This is the raw, serialisable form shared by the risk engine (which validates and evaluates
//! it) and the operator (which embeds it in its CRD schema and renders it into a ConfigMap).
//! Amounts are decimal strings in major units (`"10000.00"`) so no float ever holds money.
//! Unknown keys are refused so a typo in a rule name cannot silently disable it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
    pub max_count: Option<u64>,
    /// Largest total per currency within the window, this one included, as decimal strings.
    pub max_total: BTreeMap<String, String>,
}

/// Points each rule adds to the score when it fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RuleScores {
    pub currency_not_allowed: u32,
    pub amount_above_max: u32,
    pub blocked_user: u32,
    pub blocked_payee: u32,
    pub blocked_payment_method: u32,
    pub velocity_count: u32,
    pub velocity_total: u32,
    pub payer_is_payee: u32,
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

impl Default for RuleScores {
    /// Hard rules (lists, currency, ceilings) decline on their own; velocity rules need a
    /// second signal to reach the default threshold of 100.
    fn default() -> Self {
        Self {
            currency_not_allowed: 100,
            amount_above_max: 100,
            blocked_user: 100,
            blocked_payee: 100,
            blocked_payment_method: 100,
            velocity_count: 60,
            velocity_total: 60,
            payer_is_payee: 100,
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
    fn unknown_keys_are_refused() {
        let error = serde_json::from_str::<RiskRules>(r#"{"maxAmmount": {}}"#).unwrap_err();
        assert!(error.to_string().contains("maxAmmount"), "{error}");
    }
}
