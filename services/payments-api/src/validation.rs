//! Request bodies, each one struct: it derives `Deserialize` (the wire format) and `ToSchema`
//! (the OpenAPI document), so the contract exists once.
//!
//! Every field is a [`Field`], which never fails deserialisation: it keeps its value or its
//! own error, and keys the struct does not declare are collected on the way
//! ([`serde_ignored`]). The struct's `validate` then turns the fields into a valid request or
//! into the list of *every* bad field, not just the first. Fields are read straight from the
//! JSON text as `RawValue`s (no `flatten`, no buffered `Value`), so the amount keeps its
//! literal text and never passes through a float.

use paysys_core::Currency;
use paysys_core::money::Money;
use rust_decimal::Decimal;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::FieldError;
use crate::store::disputes::DisputeReason;

/// The body of `POST /payments` (the original demo's contract).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatePaymentRequest {
    /// Amount in major units, a JSON number with at most as many decimals as the currency's
    /// minor unit allows (USD 2, JPY 0, KWD 3). Parsed exactly, never through a float.
    #[schema(value_type = f64, example = 70.5)]
    pub amount: Field<Amount>,
    /// ISO 4217 code, upper case.
    #[schema(value_type = String, example = "USD")]
    pub currency: Field<Currency>,
    #[schema(value_type = Uuid)]
    pub user_id: Field<Uuid>,
    #[schema(value_type = Uuid)]
    pub payee_id: Field<Uuid>,
    #[schema(value_type = Uuid)]
    pub payment_method_id: Field<Uuid>,
}

/// A payment request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    pub money: Money,
    pub user_id: Uuid,
    pub payee_id: Uuid,
    pub payment_method_id: Uuid,
}

impl CreatePaymentRequest {
    /// Checks every field against `max_amount` (major units), adding to `errors` (which holds
    /// the unknown fields already).
    pub fn validate(
        self,
        max_amount: Decimal,
        mut errors: Vec<FieldError>,
    ) -> Validated<NewPayment> {
        // Destructured, so a field added to the struct but not checked here does not compile.
        let Self {
            amount,
            currency,
            user_id,
            payee_id,
            payment_method_id,
        } = self;
        let currency = currency.required("currency", &mut errors);
        let amount = amount.required("amount", &mut errors);
        let user_id = user_id.required("userId", &mut errors);
        let payee_id = payee_id.required("payeeId", &mut errors);
        let payment_method_id = payment_method_id.required("paymentMethodId", &mut errors);

        let money = amount.and_then(|Amount(text)| {
            // Without a valid currency the exponent is unknown; still report what can be
            // known (a non-positive amount) by checking against the loosest exponent.
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
}

/// The optional body of `POST /payments/{id}/cancel`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CancelRequest {
    /// Why, kept in the payment's audit trail; at most 500 bytes of UTF-8.
    #[schema(value_type = Option<String>, example = "customer request")]
    pub reason: Field<CancelReason>,
}

impl CancelRequest {
    /// The reason, if one was given.
    pub fn validate(self, mut errors: Vec<FieldError>) -> Validated<Option<String>> {
        let Self { reason } = self;
        let reason = reason.optional("reason", &mut errors);
        if errors.is_empty() {
            Ok(reason.map(|CancelReason(reason)| reason))
        } else {
            Err(errors)
        }
    }
}

/// The body of `POST /payments/{id}/disputes`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DisputeRequest {
    /// Why the payment is contested.
    #[schema(value_type = DisputeReason)]
    pub reason: Field<DisputeReason>,
    /// Free text kept with the dispute; at most 500 bytes of UTF-8.
    #[schema(value_type = Option<String>, example = "cardholder denies the purchase")]
    pub note: Field<DisputeNote>,
}

/// A valid dispute request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDispute {
    pub reason: DisputeReason,
    pub note: Option<String>,
}

impl DisputeRequest {
    pub fn validate(self, mut errors: Vec<FieldError>) -> Validated<NewDispute> {
        let Self { reason, note } = self;
        let reason = reason.required("reason", &mut errors);
        let note = note.optional("note", &mut errors);
        match reason {
            Some(reason) if errors.is_empty() => Ok(NewDispute {
                reason,
                note: note.map(|DisputeNote(note)| note),
            }),
            _ => Err(errors),
        }
    }
}

impl FromJson for DisputeReason {
    fn from_json(raw: &RawValue) -> Result<Self, String> {
        let expected = || format!("must be one of {}", DisputeReason::expected());
        string(raw)
            .ok_or_else(expected)?
            .parse()
            .map_err(|_| expected())
    }
}

/// A dispute note of at most [`DisputeNote::MAX_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeNote(pub String);

impl DisputeNote {
    pub const MAX_BYTES: usize = 500;
}

impl FromJson for DisputeNote {
    fn from_json(raw: &RawValue) -> Result<Self, String> {
        string(raw)
            .filter(|note| note.len() <= Self::MAX_BYTES)
            .map(Self)
            .ok_or_else(|| format!("must be a string of at most {} bytes", Self::MAX_BYTES))
    }
}

/// The body of `POST|PUT /payments/{id}/capture`: none, or an empty object.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CaptureRequest {}

impl CaptureRequest {
    pub fn validate(self, errors: Vec<FieldError>) -> Validated<()> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// The optional body of `POST /payments/{id}/refunds`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefundRequest {
    /// Amount to refund in major units, a JSON number with at most as many decimals as the
    /// payment's currency allows; at most what is left to refund. Absent: all that is left.
    #[schema(value_type = Option<f64>, example = 20.5)]
    pub amount: Field<Amount>,
}

impl RefundRequest {
    /// The amount's literal text, if one was given; it is checked against the payment's
    /// currency once the payment is read.
    pub fn validate(self, mut errors: Vec<FieldError>) -> Validated<Option<Amount>> {
        let Self { amount } = self;
        let amount = amount.optional("amount", &mut errors);
        if errors.is_empty() {
            Ok(amount)
        } else {
            Err(errors)
        }
    }
}

/// A valid request, or every problem found with it.
pub type Validated<T> = Result<T, Vec<FieldError>>;

/// Parses and validates a create-payment body against `max_amount` (major units).
pub fn parse_new_payment(body: &[u8], max_amount: Decimal) -> Validated<NewPayment> {
    let (request, errors) = read::<CreatePaymentRequest>(body)?;
    request.validate(max_amount, errors)
}

/// Reads a body that must be a JSON object into `T`, with one error per key `T` does not
/// declare. Malformed JSON and well-formed JSON of the wrong shape are told apart.
pub fn read<T: DeserializeOwned>(body: &[u8]) -> Result<(T, Vec<FieldError>), Vec<FieldError>> {
    let body_error = |message: String| vec![FieldError::new("body", message)];
    let is_object = body
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|&byte| byte == b'{');
    // A derived struct also accepts a JSON array of its fields in order; a body must not.
    if !is_object {
        return Err(body_error(
            match serde_json::from_slice::<IgnoredAny>(body) {
                Ok(_) => "must be a JSON object".to_owned(),
                Err(error) => format!("malformed JSON: {error}"),
            },
        ));
    }
    let mut unknown = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_ignored::deserialize(&mut deserializer, |path| {
        unknown.push(FieldError::new(&path.to_string(), "unknown field"));
    })
    .and_then(|value| deserializer.end().map(|()| value))
    .map_err(|error| {
        body_error(match error.classify() {
            // Well-formed JSON that is not the struct: a repeated key.
            serde_json::error::Category::Data => error.to_string(),
            _ => format!("malformed JSON: {error}"),
        })
    })?;
    Ok((value, unknown))
}

/// [`read`] for the endpoints whose body is optional: an empty body, or JSON `null` (the
/// OpenAPI document's way of saying optional), means `{}`.
pub fn read_optional<T: DeserializeOwned>(
    body: &[u8],
) -> Result<(T, Vec<FieldError>), Vec<FieldError>> {
    if body.trim_ascii().is_empty() || body.trim_ascii() == b"null" {
        read(b"{}")
    } else {
        read(body)
    }
}

/// One field of a body as received: absent (or `null`), refused with a message for the
/// client, or valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field<T> {
    Missing,
    Invalid(String),
    Valid(T),
}

impl<T> Field<T> {
    /// The value; `name` gets an error if it is missing or invalid.
    pub fn required(self, name: &str, errors: &mut Vec<FieldError>) -> Option<T> {
        match self {
            Self::Missing => {
                errors.push(FieldError::new(name, "is required"));
                None
            }
            other => other.optional(name, errors),
        }
    }

    /// The value if present; `name` gets an error if it is invalid.
    pub fn optional(self, name: &str, errors: &mut Vec<FieldError>) -> Option<T> {
        match self {
            Self::Missing => None,
            Self::Invalid(message) => {
                errors.push(FieldError::new(name, message));
                None
            }
            Self::Valid(value) => Some(value),
        }
    }
}

/// How a field's type is read from its raw JSON text, with a message for the client when it
/// cannot be.
pub trait FromJson: Sized {
    fn from_json(raw: &RawValue) -> Result<Self, String>;
}

impl<'de, T: FromJson> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // As an `Option`: serde hands a missing key to it as `None` (no `#[serde(default)]`,
        // which would also make the OpenAPI document call the field optional), and `null`
        // is `None` too. Anything else is kept as its literal text.
        Ok(match Option::<Box<RawValue>>::deserialize(deserializer)? {
            None => Self::Missing,
            Some(raw) => match T::from_json(&raw) {
                Ok(value) => Self::Valid(value),
                Err(message) => Self::Invalid(message),
            },
        })
    }
}

/// The literal text of a JSON number, for [`Money::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount(pub String);

impl FromJson for Amount {
    fn from_json(raw: &RawValue) -> Result<Self, String> {
        if paysys_core::money::is_json_number(raw.get()) {
            Ok(Self(raw.get().to_owned()))
        } else {
            Err("must be a number".into())
        }
    }
}

impl FromJson for Currency {
    fn from_json(raw: &RawValue) -> Result<Self, String> {
        let code = string(raw).ok_or("must be a string")?;
        code.parse::<Currency>().map_err(|e| e.to_string())
    }
}

impl FromJson for Uuid {
    fn from_json(raw: &RawValue) -> Result<Self, String> {
        let text = string(raw).ok_or("must be a string holding a UUID")?;
        Uuid::parse_str(&text).map_err(|_| "must be a UUID".to_owned())
    }
}

/// A cancel reason of at most [`CancelReason::MAX_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelReason(pub String);

impl CancelReason {
    pub const MAX_BYTES: usize = 500;
}

impl FromJson for CancelReason {
    fn from_json(raw: &RawValue) -> Result<Self, String> {
        string(raw)
            .filter(|reason| reason.len() <= Self::MAX_BYTES)
            .map(Self)
            .ok_or_else(|| format!("must be a string of at most {} bytes", Self::MAX_BYTES))
    }
}

/// The body of `POST /v1/webhook-endpoints`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateEndpointRequest {
    /// Where events are POSTed: an `https` URL (plain `http` only where the server allows it)
    /// whose host resolves to public addresses only; at most 2,048 bytes.
    #[schema(value_type = String, example = "https://merchant.example/paysys/webhooks")]
    pub url: Field<EndpointUrl>,
    /// The event types to receive, at least one.
    #[schema(value_type = Vec<crate::webhooks::EventType>, min_items = 1, example = json!(["payment.approved", "payment.declined"]))]
    pub event_types: Field<EventTypes>,
}

/// A valid endpoint request (the URL's destination is checked by the handler: it resolves
/// the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEndpoint {
    pub url: String,
    pub event_types: Vec<crate::webhooks::EventType>,
}

impl CreateEndpointRequest {
    pub fn validate(self, mut errors: Vec<FieldError>) -> Validated<NewEndpoint> {
        let Self { url, event_types } = self;
        let url = url.required("url", &mut errors);
        let event_types = event_types.required("eventTypes", &mut errors);
        match (url, event_types) {
            (Some(EndpointUrl(url)), Some(EventTypes(event_types))) if errors.is_empty() => {
                Ok(NewEndpoint { url, event_types })
            }
            _ => Err(errors),
        }
    }
}

/// An endpoint URL as sent (a string; its form and destination are checked by
/// `webhooks::outbound`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(pub String);

impl FromJson for EndpointUrl {
    fn from_json(raw: &RawValue) -> Result<Self, String> {
        string(raw)
            .map(Self)
            .ok_or_else(|| "must be a string".into())
    }
}

/// A non-empty list of known event types, without repeats (kept in the order sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypes(pub Vec<crate::webhooks::EventType>);

impl FromJson for EventTypes {
    fn from_json(raw: &RawValue) -> Result<Self, String> {
        use crate::webhooks::EventType;
        let expected = || {
            format!(
                "must be a non-empty array of event types: {}",
                EventType::expected()
            )
        };
        let names: Vec<String> = serde_json::from_str(raw.get()).map_err(|_| expected())?;
        if names.is_empty() {
            return Err(expected());
        }
        let mut types = Vec::new();
        for name in names {
            let event_type: EventType = name.parse().map_err(|_| {
                format!(
                    "unknown event type {name:?}; known: {}",
                    EventType::expected()
                )
            })?;
            if !types.contains(&event_type) {
                types.push(event_type);
            }
        }
        Ok(Self(types))
    }
}

/// The string a raw JSON value holds, if it is a string.
fn string(value: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(value.get()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

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

    /// The names `validate` reports are the struct's JSON names, as the OpenAPI document
    /// lists them (all required): a renamed or added field that `validate` names differently
    /// fails here.
    #[test]
    fn errors_name_the_documented_fields() {
        use utoipa::PartialSchema;
        use utoipa::openapi::{RefOr, Schema};
        let RefOr::T(Schema::Object(schema)) = CreatePaymentRequest::schema() else {
            panic!("CreatePaymentRequest is an object schema");
        };
        let mut documented: Vec<String> = schema.properties.keys().cloned().collect();
        documented.sort();
        let mut required = schema.required.clone();
        required.sort();
        assert_eq!(required, documented, "every field is required");
        let mut reported = fields(&json!({}));
        reported.sort();
        assert_eq!(reported, documented);
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
        let demo = valid().to_string();
        let array = format!("[{}]", ["70.5", "\"USD\"", ID, ID, ID].join(", "));
        let repeated = demo.replacen('{', "{\"amount\": 1, ", 1);
        let trailing = format!("{demo} x");
        for body in [
            &b"{"[..],
            b"[]",
            b"\"x\"",
            b"",
            b"\xff\xfe",
            array.as_bytes(),
            repeated.as_bytes(),
            trailing.as_bytes(),
        ] {
            let errors = parse_new_payment(body, Decimal::from(10)).unwrap_err();
            assert_eq!(errors.len(), 1, "{errors:?}");
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
        // And the largest exact amounts are kept to the last digit.
        let body = valid().to_string().replace("70.5", "9007199254740993.01");
        let payment =
            parse_new_payment(body.as_bytes(), Decimal::from(10_000_000_000_000_000_i64)).unwrap();
        assert_eq!(payment.money.minor, 900_719_925_474_099_301);
    }

    #[test]
    fn optional_bodies() {
        let cancel = |body: &[u8]| {
            let (request, errors) = read_optional::<CancelRequest>(body)?;
            request.validate(errors)
        };
        assert_eq!(cancel(b""), Ok(None));
        assert_eq!(cancel(b" null "), Ok(None));
        assert_eq!(cancel(b"{\"reason\": null}"), Ok(None));
        assert_eq!(cancel(b"{\"reason\": \"x\"}"), Ok(Some("x".into())));
        let long = format!("{{\"reason\": \"{}\"}}", "é".repeat(251));
        assert_eq!(cancel(long.as_bytes()).unwrap_err()[0].field, "reason");
        let both = cancel(b"{\"amount\": 1, \"reason\": 5}").unwrap_err();
        let fields: Vec<_> = both.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["amount", "reason"]);

        let capture = |body: &[u8]| {
            let (request, errors) = read_optional::<CaptureRequest>(body)?;
            request.validate(errors)
        };
        assert_eq!(capture(b" "), Ok(()));
        assert_eq!(capture(b"{}"), Ok(()));
        assert_eq!(capture(b"{\"amount\": 1}").unwrap_err()[0].field, "amount");
        assert_eq!(capture(b"[]").unwrap_err()[0].field, "body");
    }

    #[test]
    fn dispute_bodies() {
        let dispute = |body: &[u8]| {
            let (request, errors) = read::<DisputeRequest>(body)?;
            request.validate(errors)
        };
        assert_eq!(
            dispute(br#"{"reason": "product_not_received", "note": "never came"}"#),
            Ok(NewDispute {
                reason: DisputeReason::ProductNotReceived,
                note: Some("never came".into())
            })
        );
        assert_eq!(dispute(br#"{"reason": "fraudulent"}"#).unwrap().note, None);
        let bad = dispute(br#"{"reason": "chargeback", "note": 5, "amount": 1}"#).unwrap_err();
        let fields: Vec<_> = bad.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["amount", "reason", "note"]);
        assert_eq!(
            bad[1].message,
            "must be one of fraudulent, product_not_received, duplicate, unrecognized, other"
        );
        assert_eq!(dispute(b"{}").unwrap_err()[0].message, "is required");
        let long = format!(r#"{{"reason": "other", "note": "{}"}}"#, "x".repeat(501));
        assert_eq!(dispute(long.as_bytes()).unwrap_err()[0].field, "note");
    }
}
