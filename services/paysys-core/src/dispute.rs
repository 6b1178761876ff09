//! Disputes: why a payer's bank contested an approved payment. The reasons are the labels the
//! risk model learns from, shared by the API (which records them), the data feed (which
//! exports them) and the simulator (which files them).

use serde::{Deserialize, Serialize};

/// Why a payment was disputed. One list: the API's strings (serde, strum), the database
/// column's values (its CHECK, payments-api migration 0006; a test compares them), the
/// OpenAPI enum and the simulator's disputes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum DisputeReason {
    /// The cardholder did not make the payment (card network fraud chargeback).
    Fraudulent,
    /// Paid, but the goods or service never came.
    ProductNotReceived,
    /// Charged more than once for one purchase.
    Duplicate,
    /// The cardholder does not recognize the payment (often fraud, sometimes a forgotten one).
    Unrecognized,
    Other,
}

impl DisputeReason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The allowed values, for error messages.
    pub fn expected() -> String {
        use strum::VariantArray;
        Self::VARIANTS
            .iter()
            .map(|reason| reason.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
