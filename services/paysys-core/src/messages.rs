//! The messages exchanged over RabbitMQ.
//!
//! Payment messages go from the payments API to the risk engine, decision messages come back.
//! Both are JSON and carry `schema_version`. The payment message keeps the original demo's
//! shape (`payment_id` plus `payment_data` holding the request body) so the risk engine's
//! `Received message: ...` log line reads as it always did, and a hand-written demo message
//! (without `schema_version` or `velocity`) is still understood as version 1.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Currency;
use crate::features::FeatureLog;
use crate::money::{AmountError, Money};

/// The only schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Messages larger than this are refused undecoded: no legitimate message comes near it.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A payment to decide, as published by the payments API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentMessage {
    #[serde(default = "schema_version_of_the_original_demo")]
    pub schema_version: u32,
    pub payment_id: Uuid,
    pub payment_data: PaymentData,
    /// The payer's recent activity, computed by the API from its database when the payment
    /// was accepted, so the risk engine can apply velocity rules while staying stateless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub velocity: Option<Velocity>,
    /// The payer's, payee's and payment method's history before this payment, computed by
    /// the API like `velocity` (incrementally, never by scanning a history): the inputs of the
    /// risk model's features ([`crate::features`]). Absent means a first payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,
}

/// The payment as the client sent it, in the request body's own field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentData {
    /// Major units as an exact decimal (`70.5`), written as a JSON number.
    #[serde(with = "crate::money::json_number")]
    pub amount: Decimal,
    pub currency: Currency,
    pub user_id: Uuid,
    pub payee_id: Uuid,
    pub payment_method_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

impl PaymentData {
    /// The amount as minor units; fails if the decimal does not fit the currency.
    pub fn money(&self) -> Result<Money, AmountError> {
        Money::parse(&self.amount.to_string(), self.currency, Decimal::MAX)
    }
}

/// The payer's payments accepted within the window before this one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Velocity {
    pub window_seconds: u64,
    /// Payments by the same userId in the window, any currency, this one excluded.
    pub count: u64,
    /// Their total in this payment's currency, minor units, this one excluded.
    pub total_minor: i64,
}

/// What the API knew of the payer, the payee and the payment method when it accepted a
/// payment, this payment excluded. Every count is since the party was first seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The payer's earlier payments, any currency.
    pub payer_payment_count: u64,
    /// Creation time of the payer's first payment; absent for a first payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_first_payment_at: Option<DateTime<Utc>>,
    /// The payer's earlier payments in this payment's currency, and their total (minor units).
    pub payer_currency_count: u64,
    pub payer_currency_total_minor: i64,
    /// The payer never paid this payee before.
    pub new_payee: bool,
    /// The payer never used this payment method before.
    pub new_payment_method: bool,
    /// Earlier payments with this payment method, by any payer.
    pub method_payment_count: u64,
    /// The payee's payments received within the velocity window before this one, any payer.
    pub payee_window_count: u64,
}

/// The risk engine's verdict on one payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DecisionMessage {
    #[serde(default = "schema_version_of_the_original_demo")]
    pub schema_version: u32,
    pub payment_id: Uuid,
    pub outcome: Outcome,
    /// Sum of the scores of every rule that fired.
    pub score: u32,
    /// Every rule that fired, in evaluation order; empty when none did.
    pub reasons: Vec<Reason>,
    /// Identifies the rule set (or random-mode settings) that produced the decision.
    pub rules_version: String,
    pub decided_at: DateTime<Utc>,
    /// What the risk rules alone decided (rules and model modes; absent in random mode), so
    /// the rules and a model can be compared on the very same payments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_outcome: Option<Outcome>,
    /// The feature values the engine computed for this payment (in every mode, so that any
    /// decision can become training data). Absent from engines older than the risk model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeatureLog>,
    /// The model that decided (`RISK_MODE=model`): its version, score and threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelScore>,
    /// A challenger model's score in shadow: recorded, never deciding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ModelScore>,
}

/// One model's score of one payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelScore {
    /// The model card's version (a hash of the model's content).
    pub version: String,
    /// Calibrated probability of fraud, 0 to 1.
    pub score: f64,
    /// Scores at or above it decline (a shadow's threshold is what it would have used).
    pub threshold: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Approved,
    Declined,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Declined => "declined",
        }
    }
}

/// One rule that fired and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reason {
    pub rule: String,
    pub detail: String,
}

/// Why a message body could not be turned into a message; the text goes into the
/// dead-letter header, so it names the problem precisely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unsupported schema_version {0} (this build reads {SCHEMA_VERSION})")]
    UnsupportedVersion(String),
}

/// Decodes a JSON message after checking its size and schema version.
///
/// A missing `schema_version` means version 1, the original demo's format. The body is
/// parsed straight into `T` (never through a `Value`), so an amount keeps its literal text.
fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, DecodeError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(body.len()));
    }
    /// Only the version, read first so a message of another version is refused as such
    /// rather than as whatever field it happens to break.
    #[derive(Deserialize)]
    struct Version {
        schema_version: Option<serde_json::Value>,
    }
    let malformed = |e: serde_json::Error| DecodeError::Malformed(e.to_string());
    let version: Version = serde_json::from_slice(body).map_err(malformed)?;
    match version.schema_version {
        None => {}
        Some(v) if v.as_u64() == Some(u64::from(SCHEMA_VERSION)) => {}
        Some(v) => return Err(DecodeError::UnsupportedVersion(v.to_string())),
    }
    serde_json::from_slice(body).map_err(malformed)
}

fn schema_version_of_the_original_demo() -> u32 {
    SCHEMA_VERSION
}

impl PaymentMessage {
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let message: Self = decode(body)?;
        // The amount must be expressible in the currency, or minor units are meaningless.
        message
            .payment_data
            .money()
            .map_err(|e| DecodeError::Malformed(format!("payment_data.amount {e}")))?;
        Ok(message)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a payment message always serialises")
    }
}

impl DecisionMessage {
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        decode(body)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a decision message always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PaymentMessage {
        PaymentMessage {
            schema_version: SCHEMA_VERSION,
            payment_id: Uuid::nil(),
            payment_data: PaymentData {
                amount: "70.5".parse().unwrap(),
                currency: "USD".parse().unwrap(),
                user_id: Uuid::nil(),
                payee_id: Uuid::nil(),
                payment_method_id: Uuid::nil(),
                created_at: None,
            },
            velocity: Some(Velocity {
                window_seconds: 3600,
                count: 2,
                total_minor: 1000,
            }),
            history: None,
        }
    }

    #[test]
    fn payment_round_trips_with_an_exact_amount() {
        let bytes = sample().encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"amount\":70.5"), "{text}");
        assert_eq!(PaymentMessage::decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn the_original_demo_message_is_version_1() {
        let body = br#"{"payment_id": "00000000-0000-0000-0000-000000000000",
            "payment_data": {"amount": 70.5, "currency": "USD",
              "userId": "00000000-0000-0000-0000-000000000000",
              "payeeId": "00000000-0000-0000-0000-000000000000",
              "paymentMethodId": "00000000-0000-0000-0000-000000000000"}}"#;
        let message = PaymentMessage::decode(body).unwrap();
        assert_eq!(message.schema_version, 1);
        assert_eq!(message.payment_data.money().unwrap().minor, 7050);
        assert_eq!(message.velocity, None);
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        assert!(matches!(
            PaymentMessage::decode(b"not json"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            PaymentMessage::decode(b"[1,2]"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            PaymentMessage::decode(br#"{"schema_version": 2}"#),
            Err(DecodeError::UnsupportedVersion(v)) if v == "2"
        ));
        let mut wrong_type = serde_json::to_value(sample()).unwrap();
        wrong_type["payment_data"]["amount"] = "seventy".into();
        assert!(matches!(
            PaymentMessage::decode(&serde_json::to_vec(&wrong_type).unwrap()),
            Err(DecodeError::Malformed(_))
        ));
        let mut too_precise = serde_json::to_value(sample()).unwrap();
        too_precise["payment_data"]["amount"] = serde_json::from_str("1.001").unwrap();
        assert!(matches!(
            PaymentMessage::decode(&serde_json::to_vec(&too_precise).unwrap()),
            Err(DecodeError::Malformed(m)) if m.contains("decimal places")
        ));
        let huge = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            PaymentMessage::decode(&huge),
            Err(DecodeError::TooLarge(_))
        ));
    }

    #[test]
    fn decision_round_trips() {
        let decision = DecisionMessage {
            schema_version: SCHEMA_VERSION,
            payment_id: Uuid::nil(),
            outcome: Outcome::Declined,
            score: 100,
            reasons: vec![Reason {
                rule: "blocked_user".into(),
                detail: "userId is on the block list".into(),
            }],
            rules_version: "v1".into(),
            decided_at: Utc::now(),
            rules_outcome: None,
            features: None,
            model: None,
            shadow: None,
        };
        assert_eq!(
            DecisionMessage::decode(&decision.encode()).unwrap(),
            decision
        );
        let text = String::from_utf8(decision.encode()).unwrap();
        assert!(text.contains("\"outcome\":\"declined\""), "{text}");
    }
}
