//! The export's columns: the original demo's four, then the exact ones, then the risk
//! model's (its outcomes, the features it was served and its scores).
//!
//! A producer fills a [`PaymentRow`] (the export fills it from PostgreSQL's binary COPY; a
//! producer of synthetic history can fill it too) and [`BatchBuilder`] turns rows into Arrow
//! batches of [`SCHEMA`], so every file has the same columns whoever wrote it.
//!
//! | column | type | from |
//! | --- | --- | --- |
//! | `date` | timestamp[ns, UTC] | `created_at` (the demo's name and type) |
//! | `currency` | string | ISO 4217 code |
//! | `amount` | double | the demo's amount in major units (display only: never sum it) |
//! | `encoded_user_id` | binary | Fernet token of the user id's text |
//! | `payment_id` | string | the payment's UUID |
//! | `amount_minor` | int64 | the exact amount in minor units |
//! | `currency_exponent` | int32 | decimal places of the currency's minor unit |
//! | `amount_decimal` | decimal(38, 4) | the exact amount in major units (4 = the largest ISO exponent) |
//! | `payee_id` | string | |
//! | `status` | string | pending, approved, declined, captured, canceled, partially_refunded, refunded |
//! | `decision_outcome` | string, null until decided | approved or declined |
//! | `created_at` | timestamp[us, UTC] | |
//! | `decided_at` | timestamp[us, UTC], null until decided | |
//! | `disputed_at` | timestamp[us, UTC], nullable | when a dispute was recorded |
//! | `dispute_reason` | string, nullable | fraudulent, product_not_received, duplicate, unrecognized, other |
//! | `rules_outcome` | string, nullable | approved/declined: what the rules alone decided |
//! | `features_version` | string, nullable | `FEATURES_VERSION` of the engine that decided |
//! | `features` | list<double> (items not null), nullable | the values, in that version's `FEATURE_NAMES` order |
//! | `model_version` | string, nullable | the model that decided (model mode) |
//! | `model_score` | double, nullable | its calibrated score |
//! | `model_threshold` | double, nullable | its threshold |
//! | `shadow_model_version` | string, nullable | the challenger scoring in shadow |
//! | `shadow_score` | double, nullable | its calibrated score |
//! | `refunded_amount_minor` | int64 | the sum of the payment's refunds in minor units (0 without any) |

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, Decimal128Builder, Float64Builder, Int32Builder, Int64Builder,
    ListBuilder, StringBuilder, TimestampMicrosecondBuilder, TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use uuid::Uuid;

use crate::key::TokenMaker;

/// One payment as exported. Times are microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRow<'a> {
    pub id: Uuid,
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: &'a str,
    pub user_id: Uuid,
    pub payee_id: Uuid,
    pub status: &'a str,
    pub decision_outcome: Option<&'a str>,
    pub decided_at: Option<i64>,
    pub created_at: i64,
    pub disputed_at: Option<i64>,
    pub dispute_reason: Option<&'a str>,
    pub rules_outcome: Option<&'a str>,
    pub features_version: Option<&'a str>,
    pub features: Option<Vec<f64>>,
    pub model: Option<ModelScore<'a>>,
    pub shadow: Option<ShadowScore<'a>>,
    /// The sum of the payment's refunds, in minor units.
    pub refunded_amount_minor: i64,
}

/// One model's score of the payment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelScore<'a> {
    pub version: &'a str,
    pub score: f64,
    pub threshold: f64,
}

/// A challenger's score in shadow (what it would have decided is not exported: its
/// threshold travels in its model card).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShadowScore<'a> {
    pub version: &'a str,
    pub score: f64,
}

/// The `features` column's type: a list of non-null doubles.
fn feature_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float64, false))
}

/// Scale of `amount_decimal`: the largest minor-unit exponent in ISO 4217 (CLF, UYW).
pub const DECIMAL_SCALE: i8 = 4;

fn utc(unit: TimeUnit) -> DataType {
    DataType::Timestamp(unit, Some("UTC".into()))
}

/// The Arrow schema of every exported file.
pub static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("date", utc(TimeUnit::Nanosecond), false),
        Field::new("currency", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("encoded_user_id", DataType::Binary, false),
        Field::new("payment_id", DataType::Utf8, false),
        Field::new("amount_minor", DataType::Int64, false),
        Field::new("currency_exponent", DataType::Int32, false),
        Field::new(
            "amount_decimal",
            DataType::Decimal128(38, DECIMAL_SCALE),
            false,
        ),
        Field::new("payee_id", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("decision_outcome", DataType::Utf8, true),
        Field::new("created_at", utc(TimeUnit::Microsecond), false),
        Field::new("decided_at", utc(TimeUnit::Microsecond), true),
        Field::new("disputed_at", utc(TimeUnit::Microsecond), true),
        Field::new("dispute_reason", DataType::Utf8, true),
        Field::new("rules_outcome", DataType::Utf8, true),
        Field::new("features_version", DataType::Utf8, true),
        Field::new("features", DataType::List(feature_item()), true),
        Field::new("model_version", DataType::Utf8, true),
        Field::new("model_score", DataType::Float64, true),
        Field::new("model_threshold", DataType::Float64, true),
        Field::new("shadow_model_version", DataType::Utf8, true),
        Field::new("shadow_score", DataType::Float64, true),
        Field::new("refunded_amount_minor", DataType::Int64, false),
    ]))
});

/// Column builders for one batch of rows.
pub struct BatchBuilder {
    date: TimestampNanosecondBuilder,
    currency: StringBuilder,
    amount: Float64Builder,
    encoded_user_id: BinaryBuilder,
    payment_id: StringBuilder,
    amount_minor: Int64Builder,
    currency_exponent: Int32Builder,
    amount_decimal: Decimal128Builder,
    payee_id: StringBuilder,
    status: StringBuilder,
    decision_outcome: StringBuilder,
    created_at: TimestampMicrosecondBuilder,
    decided_at: TimestampMicrosecondBuilder,
    disputed_at: TimestampMicrosecondBuilder,
    dispute_reason: StringBuilder,
    rules_outcome: StringBuilder,
    features_version: StringBuilder,
    features: ListBuilder<Float64Builder>,
    model_version: StringBuilder,
    model_score: Float64Builder,
    model_threshold: Float64Builder,
    shadow_model_version: StringBuilder,
    shadow_score: Float64Builder,
    refunded_amount_minor: Int64Builder,
    rows: usize,
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self {
            date: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            currency: StringBuilder::new(),
            amount: Float64Builder::new(),
            encoded_user_id: BinaryBuilder::new(),
            payment_id: StringBuilder::new(),
            amount_minor: Int64Builder::new(),
            currency_exponent: Int32Builder::new(),
            amount_decimal: Decimal128Builder::new()
                .with_precision_and_scale(38, DECIMAL_SCALE)
                .expect("valid decimal type"),
            payee_id: StringBuilder::new(),
            status: StringBuilder::new(),
            decision_outcome: StringBuilder::new(),
            created_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            decided_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            disputed_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            dispute_reason: StringBuilder::new(),
            rules_outcome: StringBuilder::new(),
            features_version: StringBuilder::new(),
            features: ListBuilder::new(Float64Builder::new()).with_field(feature_item()),
            model_version: StringBuilder::new(),
            model_score: Float64Builder::new(),
            model_threshold: Float64Builder::new(),
            shadow_model_version: StringBuilder::new(),
            shadow_score: Float64Builder::new(),
            refunded_amount_minor: Int64Builder::new(),
            rows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one payment; the user id is encrypted by `tokens` (a fresh IV per token).
    pub fn push(&mut self, row: &PaymentRow<'_>, tokens: &mut TokenMaker) -> anyhow::Result<()> {
        let exponent = exponent_of(row.currency)?;
        self.date.append_value(
            row.created_at
                .checked_mul(1000)
                .ok_or_else(|| anyhow::anyhow!("created_at {} µs out of range", row.created_at))?,
        );
        self.currency.append_value(row.currency);
        // The demo's double: display only, exact columns follow.
        self.amount
            .append_value(row.amount_minor as f64 / 10f64.powi(exponent));
        let mut text = Uuid::encode_buffer();
        let user_id = row.user_id.hyphenated().encode_lower(&mut text);
        self.encoded_user_id
            .append_value(tokens.encrypt(user_id.as_bytes())?);
        self.payment_id
            .append_value(row.id.hyphenated().encode_lower(&mut text));
        self.amount_minor.append_value(row.amount_minor);
        self.currency_exponent.append_value(exponent);
        self.amount_decimal.append_value(
            i128::from(row.amount_minor) * 10i128.pow((i32::from(DECIMAL_SCALE) - exponent) as u32),
        );
        self.payee_id
            .append_value(row.payee_id.hyphenated().encode_lower(&mut text));
        self.status.append_value(row.status);
        self.decision_outcome.append_option(row.decision_outcome);
        self.created_at.append_value(row.created_at);
        self.decided_at.append_option(row.decided_at);
        self.disputed_at.append_option(row.disputed_at);
        self.dispute_reason.append_option(row.dispute_reason);
        self.rules_outcome.append_option(row.rules_outcome);
        self.features_version.append_option(row.features_version);
        match &row.features {
            Some(values) => {
                self.features.values().append_slice(values);
                self.features.append(true);
            }
            None => self.features.append(false),
        }
        self.model_version
            .append_option(row.model.map(|m| m.version));
        self.model_score.append_option(row.model.map(|m| m.score));
        self.model_threshold
            .append_option(row.model.map(|m| m.threshold));
        self.shadow_model_version
            .append_option(row.shadow.map(|m| m.version));
        self.shadow_score.append_option(row.shadow.map(|m| m.score));
        self.refunded_amount_minor
            .append_value(row.refunded_amount_minor);
        self.rows += 1;
        Ok(())
    }

    /// The rows so far as a batch; the builder is empty again afterwards.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.date.finish()),
            Arc::new(self.currency.finish()),
            Arc::new(self.amount.finish()),
            Arc::new(self.encoded_user_id.finish()),
            Arc::new(self.payment_id.finish()),
            Arc::new(self.amount_minor.finish()),
            Arc::new(self.currency_exponent.finish()),
            Arc::new(self.amount_decimal.finish()),
            Arc::new(self.payee_id.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.decision_outcome.finish()),
            Arc::new(self.created_at.finish()),
            Arc::new(self.decided_at.finish()),
            Arc::new(self.disputed_at.finish()),
            Arc::new(self.dispute_reason.finish()),
            Arc::new(self.rules_outcome.finish()),
            Arc::new(self.features_version.finish()),
            Arc::new(self.features.finish()),
            Arc::new(self.model_version.finish()),
            Arc::new(self.model_score.finish()),
            Arc::new(self.model_threshold.finish()),
            Arc::new(self.shadow_model_version.finish()),
            Arc::new(self.shadow_score.finish()),
            Arc::new(self.refunded_amount_minor.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(SCHEMA.clone(), columns).expect("builders match the schema")
    }
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The currency's minor-unit exponent; a code the payments API would never store is an error.
fn exponent_of(code: &str) -> anyhow::Result<i32> {
    let currency: paysys_core::Currency = code
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("payment currency: {e}"))?;
    Ok(currency.exponent() as i32)
}
