//! The export's columns: the original demo's four, then the exact ones.
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
//! | `status` | string | pending, approved, declined, captured, canceled |
//! | `decision_outcome` | string, null until decided | approved or declined |
//! | `created_at` | timestamp[us, UTC] | |
//! | `decided_at` | timestamp[us, UTC], null until decided | |

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, Decimal128Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder, TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use uuid::Uuid;

use super::copy::RawRow;
use crate::key::TokenMaker;

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
            rows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    /// Appends one payment; the user id is encrypted by `tokens` (a fresh IV per token).
    pub fn push(&mut self, row: &RawRow<'_>, tokens: &mut TokenMaker) -> anyhow::Result<()> {
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
        ];
        self.rows = 0;
        RecordBatch::try_new(SCHEMA.clone(), columns).expect("builders match the schema")
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
