//! Scalar functions the report's SQL calls: Fernet decryption and minor units as text.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Int32Type, Int64Type};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use fernet::Fernet;
use rust_decimal::Decimal;

/// `decrypt_user_id(token binary) -> string`: the token's text, or null when it does not
/// decrypt with the key (wrong key, tampered, not a token, not UTF-8). The report counts the
/// nulls; the rows are kept.
pub fn decrypt_user_id(key: Fernet) -> ScalarUDF {
    let key = Arc::new(key);
    create_udf(
        "decrypt_user_id",
        vec![DataType::Binary],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let tokens = args[0].to_array(1)?;
            let tokens = tokens.as_binary::<i32>();
            let mut out = StringBuilder::with_capacity(tokens.len(), tokens.len() * 36);
            for token in tokens.iter() {
                out.append_option(token.and_then(|t| decrypt(&key, t)));
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
        }),
    )
}

pub fn decrypt(key: &Fernet, token: &[u8]) -> Option<String> {
    let token = std::str::from_utf8(token).ok()?;
    String::from_utf8(key.decrypt(token).ok()?).ok()
}

/// `minor_text(minor bigint, exponent int) -> string`: exact major units, e.g. 1250, 2 ->
/// "12.50".
pub fn minor_text() -> ScalarUDF {
    create_udf(
        "minor_text",
        vec![DataType::Int64, DataType::Int32],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let len = args
                .iter()
                .find_map(|a| match a {
                    ColumnarValue::Array(a) => Some(a.len()),
                    ColumnarValue::Scalar(_) => None,
                })
                .unwrap_or(1);
            let minor = args[0].to_array(len)?;
            let exponent = args[1].to_array(len)?;
            let minor = minor.as_primitive::<Int64Type>();
            let exponent = exponent.as_primitive::<Int32Type>();
            let mut out = StringBuilder::with_capacity(len, len * 8);
            for (m, e) in minor.iter().zip(exponent.iter()) {
                out.append_option(m.zip(e).map(|(m, e)| format_minor(i128::from(m), e)));
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
        }),
    )
}

/// Minor units as exact major-unit text with the currency's decimal places.
pub fn format_minor(minor: i128, exponent: i32) -> String {
    match Decimal::try_from_i128_with_scale(minor, exponent.clamp(0, 28) as u32) {
        Ok(value) => value.to_string(),
        Err(_) => format!("{minor}e-{exponent}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_keep_the_currency_exponent() {
        assert_eq!(format_minor(1250, 2), "12.50");
        assert_eq!(format_minor(-5, 2), "-0.05");
        assert_eq!(format_minor(7, 0), "7");
        assert_eq!(format_minor(1, 3), "0.001");
    }

    #[test]
    fn a_token_from_another_key_or_garbage_gives_none() {
        let key = Fernet::new(&Fernet::generate_key()).unwrap();
        let other = Fernet::new(&Fernet::generate_key()).unwrap();
        let token = key.encrypt(b"alice");
        assert_eq!(decrypt(&key, token.as_bytes()).as_deref(), Some("alice"));
        assert_eq!(decrypt(&other, token.as_bytes()), None);
        assert_eq!(decrypt(&key, b"not a token"), None);
        assert_eq!(decrypt(&key, &[0xff, 0xfe]), None);
    }
}
