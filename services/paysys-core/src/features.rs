//! The risk model's feature vector: one definition for serving, logging and training.
//!
//! The risk engine computes [`FeatureVector::of`] from the payment message it received, scores
//! it, and sends the exact values back in the decision ([`FeatureLog`]); the API stores them with
//! the decision and the data feed exports them. Training therefore reads exactly what serving
//! saw (the feature-logging pattern of feature stores): there is no second implementation of a
//! feature to drift from this one.
//!
//! Every input is either in the payment itself or in the payer/payee/method history the API
//! sends with it ([`History`], computed incrementally like velocity, so its cost never grows
//! with a payer's history). The features are generic on purpose: nothing here names a fraud
//! pattern, so a model learns patterns it was never told about.
//!
//! Changing a feature's meaning, order or count is a new [`FEATURES_VERSION`]: a model trained
//! on one version is refused by an engine serving another (the model card records the version).

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::messages::{History, PaymentMessage};

/// The version of [`FEATURE_NAMES`] and of [`FeatureVector::of`].
pub const FEATURES_VERSION: &str = "payment-features/1";

/// The features in vector order. The model card lists the same names: a test in the training
/// package and the engine's start-up check compare them.
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "amount_minor",
    "log_amount_minor",
    "currency_numeric",
    "hour_utc",
    "weekday_utc",
    "velocity_count",
    "velocity_total_minor",
    "payer_payment_count",
    "payer_age_seconds",
    "amount_to_payer_mean",
    "new_payee",
    "new_payment_method",
    "method_payment_count",
    "payee_window_count",
    "payer_is_payee",
];

/// Number of features in a vector of [`FEATURES_VERSION`].
pub const FEATURE_COUNT: usize = 15;

/// One payment's features, in [`FEATURE_NAMES`] order. Plain `f64`: these are model inputs,
/// never money (the exact amount stays in minor units everywhere else).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureVector(pub [f64; FEATURE_COUNT]);

impl FeatureVector {
    /// The features of `message`. `received_at` stands in for the creation time only when the
    /// message has none (a hand-written demo message); the API always sets it.
    pub fn of(message: &PaymentMessage, received_at: DateTime<Utc>) -> Self {
        let data = &message.payment_data;
        // A message that decoded has an amount that fits its currency (PaymentMessage::decode).
        let amount_minor = data.money().map(|m| m.minor).unwrap_or(0) as f64;
        let at = data.created_at.unwrap_or(received_at);
        let velocity = message.velocity.unwrap_or_default();
        // A message without history (schema 1 without it, the demo's) reads as a first payment.
        let history = message.history.unwrap_or_default();
        let payer_age_seconds = history
            .payer_first_payment_at
            .map(|first| (at - first).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        let amount_to_payer_mean = if history.payer_currency_count > 0 {
            let mean =
                history.payer_currency_total_minor as f64 / history.payer_currency_count as f64;
            if mean > 0.0 { amount_minor / mean } else { 0.0 }
        } else {
            0.0
        };
        Self([
            amount_minor,
            amount_minor.ln_1p(),
            f64::from(data.currency.numeric()),
            f64::from(at.hour()),
            f64::from(at.weekday().num_days_from_monday()),
            velocity.count as f64,
            velocity.total_minor as f64,
            history.payer_payment_count as f64,
            payer_age_seconds,
            amount_to_payer_mean,
            flag(history.new_payee),
            flag(history.new_payment_method),
            history.method_payment_count as f64,
            history.payee_window_count as f64,
            flag(data.user_id == data.payee_id),
        ])
    }

    /// The values as the decision logs them.
    pub fn log(&self) -> FeatureLog {
        FeatureLog {
            version: FEATURES_VERSION.to_owned(),
            values: self.0.to_vec(),
        }
    }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The feature values a decision was made on, as sent in the decision, stored with it and
/// exported by the feed. JSON numbers written by `serde_json` round-trip every `f64` exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureLog {
    /// [`FEATURES_VERSION`] of the engine that computed them.
    pub version: String,
    /// In the order of that version's feature names.
    pub values: Vec<f64>,
}

impl History {
    /// The history of a payer's very first payment (what a message without history means).
    pub fn first_payment() -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;
    use crate::messages::{PaymentData, SCHEMA_VERSION, Velocity};

    fn message(history: Option<History>) -> PaymentMessage {
        PaymentMessage {
            schema_version: SCHEMA_VERSION,
            payment_id: Uuid::nil(),
            payment_data: PaymentData {
                amount: "70.5".parse().unwrap(),
                currency: "USD".parse().unwrap(),
                user_id: Uuid::from_u128(1),
                payee_id: Uuid::from_u128(2),
                payment_method_id: Uuid::from_u128(3),
                // A Wednesday, 18:00 UTC.
                created_at: Some(Utc.with_ymd_and_hms(2026, 11, 25, 18, 0, 0).unwrap()),
            },
            velocity: Some(Velocity {
                window_seconds: 3600,
                count: 2,
                total_minor: 12000,
            }),
            history,
        }
    }

    #[test]
    fn names_and_values_line_up() {
        assert_eq!(FEATURE_NAMES.len(), FEATURE_COUNT);
        let mut names = FEATURE_NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FEATURE_COUNT, "feature names must be unique");
    }

    #[test]
    fn features_of_a_payment_with_history() {
        let first = Utc.with_ymd_and_hms(2026, 11, 24, 18, 0, 0).unwrap();
        let f = FeatureVector::of(
            &message(Some(History {
                payer_payment_count: 4,
                payer_first_payment_at: Some(first),
                payer_currency_count: 2,
                payer_currency_total_minor: 2000,
                new_payee: true,
                new_payment_method: false,
                method_payment_count: 4,
                payee_window_count: 9,
            })),
            Utc::now(),
        );
        let by_name = |name: &str| f.0[FEATURE_NAMES.iter().position(|n| *n == name).unwrap()];
        assert_eq!(by_name("amount_minor"), 7050.0);
        assert_eq!(by_name("log_amount_minor"), 7050f64.ln_1p());
        assert_eq!(by_name("currency_numeric"), 840.0);
        assert_eq!(by_name("hour_utc"), 18.0);
        assert_eq!(by_name("weekday_utc"), 2.0);
        assert_eq!(by_name("velocity_count"), 2.0);
        assert_eq!(by_name("velocity_total_minor"), 12000.0);
        assert_eq!(by_name("payer_payment_count"), 4.0);
        assert_eq!(by_name("payer_age_seconds"), 86400.0);
        assert_eq!(by_name("amount_to_payer_mean"), 7.05);
        assert_eq!(by_name("new_payee"), 1.0);
        assert_eq!(by_name("new_payment_method"), 0.0);
        assert_eq!(by_name("method_payment_count"), 4.0);
        assert_eq!(by_name("payee_window_count"), 9.0);
        assert_eq!(by_name("payer_is_payee"), 0.0);
    }

    #[test]
    fn a_message_without_history_reads_as_a_first_payment() {
        let without = FeatureVector::of(&message(None), Utc::now());
        let first = FeatureVector::of(&message(Some(History::first_payment())), Utc::now());
        assert_eq!(without, first);
    }

    proptest::proptest! {
        /// Every finite value arrives bit for bit (serde_json's `float_roundtrip`; without
        /// it, values such as 0.9056228889330419 came back one unit in the last place off).
        #[test]
        fn any_feature_value_round_trips_exactly_through_json(
            values in proptest::collection::vec(proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO, 1..32)
        ) {
            let log = FeatureLog { version: FEATURES_VERSION.to_owned(), values };
            let back: FeatureLog =
                serde_json::from_slice(&serde_json::to_vec(&log).unwrap()).unwrap();
            proptest::prop_assert_eq!(
                back.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                log.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn the_log_round_trips_exactly_through_json() {
        let f = FeatureVector::of(&message(None), Utc::now());
        let mut log = f.log();
        log.values.push(0.1 + 0.2);
        log.values.push(1.0 / 3.0);
        log.values.push(2279.0 / 2516.5);
        let back: FeatureLog = serde_json::from_slice(&serde_json::to_vec(&log).unwrap()).unwrap();
        assert_eq!(back, log);
    }
}
