//! Turning a `POST /payments` body into a valid payment, or into the list of everything wrong
//! with it.
//!
//! The body is read as a map of raw JSON values (so the amount keeps its literal text and
//! never passes through a float) and each field is checked on its own, so one response lists
//! every bad field instead of stopping at the first.

use paysys_core::Currency;
use paysys_core::money::Money;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::FieldError;

/// The body of `POST /payments` (the original demo's contract). Documentation of the wire
/// format; parsing goes through [`parse_new_payment`] so every bad field is reported.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct CreatePaymentRequest {
    /// Amount in major units, a JSON number with at most as many decimals as the currency's
    /// minor unit allows (USD 2, JPY 0, KWD 3). Parsed exactly, never through a float.
    #[schema(value_type = f64, example = 70.5)]
    pub amount: String,
    /// ISO 4217 code, upper case.
    #[schema(example = "USD")]
    pub currency: String,
    pub user_id: Uuid,
    pub payee_id: Uuid,
    pub payment_method_id: Uuid,
}

/// A payment request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    pub money: Money,
    pub user_id: Uuid,
    pub payee_id: Uuid,
    pub payment_method_id: Uuid,
}

const FIELDS: [&str; 5] = ["amount", "currency", "userId", "payeeId", "paymentMethodId"];

/// Parses and validates a create-payment body against `max_amount` (major units).
pub fn parse_new_payment(body: &[u8], max_amount: Decimal) -> Result<NewPayment, Vec<FieldError>> {
    let object: RawObject = parse_object(body)?;
    let mut errors: Vec<FieldError> = object
        .keys()
        .filter(|key| !FIELDS.contains(&key.as_str()))
        .map(|key| FieldError::new(key, "unknown field"))
        .collect();

    let currency = field(&object, "currency", &mut errors, |value| {
        let code = string(value).ok_or("must be a string")?;
        code.parse::<Currency>().map_err(|e| e.to_string())
    });
    let amount_text = field(&object, "amount", &mut errors, |value| {
        if paysys_core::money::is_json_number(value.get()) {
            Ok(value.get().to_owned())
        } else {
            Err("must be a number".into())
        }
    });
    let user_id = field(&object, "userId", &mut errors, uuid_field);
    let payee_id = field(&object, "payeeId", &mut errors, uuid_field);
    let payment_method_id = field(&object, "paymentMethodId", &mut errors, uuid_field);

    let money = amount_text.and_then(|text| {
        // Without a valid currency the exponent is unknown; still report what can be known
        // (a non-positive amount) by checking against the loosest exponent.
        let currency_for_check = currency.unwrap_or_else(|| "KWD".parse().expect("KWD exists"));
        match Money::parse(&text, currency_for_check, max_amount) {
            Ok(money) => Some(money),
            Err(error) => {
                let currency_specific = matches!(
                    error,
                    paysys_core::AmountError::TooManyDecimals { .. }
                        | paysys_core::AmountError::AboveMaximum { .. }
                );
                if currency.is_some() || !currency_specific {
                    errors.push(FieldError::new("amount", error.to_string()));
                }
                None
            }
        }
    });

    match (money, user_id, payee_id, payment_method_id) {
        (Some(money), Some(user_id), Some(payee_id), Some(payment_method_id))
            if errors.is_empty() =>
        {
            Ok(NewPayment {
                money,
                user_id,
                payee_id,
                payment_method_id,
            })
        }
        _ => Err(errors),
    }
}

/// Parses an optional JSON object body (empty means `{}`) and refuses any field not in
/// `allowed`; for endpoints such as capture and cancel.
pub fn parse_optional_object(
    body: &[u8],
    allowed: &[&str],
) -> Result<Map<String, Value>, Vec<FieldError>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let object: Map<String, Value> = parse_object(body)?;
    let errors: Vec<FieldError> = object
        .keys()
        .filter(|key| !allowed.contains(&key.as_str()))
        .map(|key| FieldError::new(key, "unknown field"))
        .collect();
    if errors.is_empty() {
        Ok(object)
    } else {
        Err(errors)
    }
}

/// A JSON object whose values are kept as their literal text.
type RawObject = BTreeMap<String, Box<RawValue>>;

/// Parses a body that must be a JSON object into `T` (a map), telling malformed JSON apart
/// from well-formed JSON of the wrong shape.
fn parse_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Vec<FieldError>> {
    serde_json::from_slice::<T>(body).map_err(|error| {
        let message = match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => "must be a JSON object".to_owned(),
            Err(_) => format!("malformed JSON: {error}"),
        };
        vec![FieldError::new("body", message)]
    })
}

/// The string a raw JSON value holds, if it is a string.
fn string(value: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(value.get()).ok()
}

/// Checks one required field with `check`, recording an error if it is missing or bad.
fn field<T>(
    object: &RawObject,
    name: &str,
    errors: &mut Vec<FieldError>,
    check: impl FnOnce(&RawValue) -> Result<T, String>,
) -> Option<T> {
    match object.get(name).filter(|value| value.get() != "null") {
        None => {
            errors.push(FieldError::new(name, "is required"));
            None
        }
        Some(value) => match check(value) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                errors.push(FieldError::new(name, message));
                None
            }
        },
    }
}

fn uuid_field(value: &RawValue) -> Result<Uuid, String> {
    let text = string(value).ok_or("must be a string holding a UUID")?;
    Uuid::parse_str(&text).map_err(|_| "must be a UUID".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "6f1c0c8e-5b0e-4d8e-9f3a-2b7d1c9e4a10";

    fn valid() -> Value {
        json!({"amount": 70.5, "currency": "USD", "userId": ID, "payeeId": ID, "paymentMethodId": ID})
    }

    fn errors_for(body: &Value) -> Vec<(String, String)> {
        parse_new_payment(body.to_string().as_bytes(), Decimal::from(1_000_000))
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    fn fields(body: &Value) -> Vec<String> {
        errors_for(body)
            .into_iter()
            .map(|(field, _)| field)
            .collect()
    }

    #[test]
    fn accepts_the_original_demo_request() {
        let payment =
            parse_new_payment(valid().to_string().as_bytes(), Decimal::from(1_000_000)).unwrap();
        assert_eq!(payment.money.minor, 7050);
        assert_eq!(payment.money.currency.code(), "USD");
    }

    #[test]
    fn lists_every_bad_field() {
        let body =
            json!({"amount": -1, "currency": "XYZ", "userId": "nope", "payeeId": 5, "extra": true});
        let mut got = fields(&body);
        got.sort();
        assert_eq!(
            got,
            vec![
                "amount",
                "currency",
                "extra",
                "payeeId",
                "paymentMethodId",
                "userId"
            ]
        );
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("amount", json!(0), "greater than zero"),
            ("amount", json!(-3.5), "greater than zero"),
            ("amount", json!("70.5"), "must be a number"),
            ("amount", json!(1.001), "decimal places"),
            ("amount", json!(1000000.01), "must not exceed"),
            ("currency", json!("usd"), "ISO 4217"),
            ("currency", json!("XAU"), "no minor unit"),
            ("currency", json!(840), "must be a string"),
            ("userId", json!("123"), "must be a UUID"),
            ("payeeId", json!(null), "is required"),
            ("paymentMethodId", json!({"id": ID}), "UUID"),
        ];
        for (field, value, message) in cases {
            let mut body = valid();
            body[field] = value.clone();
            let errors = errors_for(&body);
            assert_eq!(errors.len(), 1, "{field}={value}: {errors:?}");
            assert_eq!(errors[0].0, field);
            assert!(
                errors[0].1.contains(message),
                "{field}={value}: {}",
                errors[0].1
            );
        }
    }

    #[test]
    fn currency_exponent_governs_decimals() {
        let mut body = valid();
        body["currency"] = json!("JPY");
        body["amount"] = json!(100.5);
        assert_eq!(fields(&body), vec!["amount"]);
        body["amount"] = json!(100);
        assert!(parse_new_payment(body.to_string().as_bytes(), Decimal::from(1_000_000)).is_ok());
        body["currency"] = json!("KWD");
        body["amount"] = serde_json::from_str("1.234").unwrap();
        assert!(parse_new_payment(body.to_string().as_bytes(), Decimal::from(1_000_000)).is_ok());
    }

    #[test]
    fn malformed_bodies_are_body_errors() {
        for body in [&b"{"[..], b"[]", b"\"x\"", b"", b"\xff\xfe"] {
            let errors = parse_new_payment(body, Decimal::from(10)).unwrap_err();
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].field, "body");
        }
    }

    #[test]
    fn high_precision_numbers_are_not_rounded() {
        // 0.1 + 0.2 style values would survive a float round trip badly; here they are exact.
        let body = r#"{"amount": 0.30000000000000004, "currency": "USD", "userId": "6f1c0c8e-5b0e-4d8e-9f3a-2b7d1c9e4a10", "payeeId": "6f1c0c8e-5b0e-4d8e-9f3a-2b7d1c9e4a10", "paymentMethodId": "6f1c0c8e-5b0e-4d8e-9f3a-2b7d1c9e4a10"}"#;
        let errors = parse_new_payment(body.as_bytes(), Decimal::from(10)).unwrap_err();
        assert_eq!(errors[0].field, "amount");
        assert!(errors[0].message.contains("decimal places"));
    }

    #[test]
    fn optional_object_bodies() {
        assert!(parse_optional_object(b"", &["reason"]).unwrap().is_empty());
        assert!(parse_optional_object(b"{\"reason\": \"x\"}", &["reason"]).is_ok());
        assert_eq!(
            parse_optional_object(b"{\"amount\": 1}", &["reason"]).unwrap_err()[0].field,
            "amount"
        );
    }
}
