//! Exact money: amounts parsed from decimal text, held as integer minor units.
//!
//! An amount never exists as a float. The API hands over the JSON number's literal text
//! (serde_json's `RawValue`, see [`json_number`]), it is parsed into a `Decimal`, checked
//! against the currency's exponent and converted to an `i64` count of minor units (cents,
//! yen, fils).

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Currency;

/// An amount in a currency, as integer minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

/// Why an amount was refused. Messages are written for API clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("must be a decimal number")]
    NotANumber,
    #[error("must be greater than zero")]
    NotPositive,
    #[error("{currency} allows at most {exponent} decimal places")]
    TooManyDecimals { currency: Currency, exponent: u32 },
    #[error("must not exceed {max} {currency}")]
    AboveMaximum { max: Decimal, currency: Currency },
}

impl Money {
    /// Parses a decimal literal (`70.5`, `1e3`, `0.125`) in `currency`.
    ///
    /// `max_major` caps the amount in major units; it applies to every currency alike and is a
    /// sanity bound against typos, not a risk limit (the risk engine owns those).
    pub fn parse(text: &str, currency: Currency, max_major: Decimal) -> Result<Self, AmountError> {
        let value = parse_decimal(text)?;
        if value <= Decimal::ZERO {
            return Err(AmountError::NotPositive);
        }
        let exponent = currency.exponent();
        // normalize() drops trailing zeros, so "70.50" and "70.5" are the same amount.
        if value.normalize().scale() > exponent {
            return Err(AmountError::TooManyDecimals { currency, exponent });
        }
        if value > max_major {
            return Err(AmountError::AboveMaximum {
                max: max_major.normalize(),
                currency,
            });
        }
        let minor = value
            .checked_mul(Decimal::from(10_i64.pow(exponent)))
            .and_then(|minor| i64::try_from(minor).ok())
            .ok_or(AmountError::AboveMaximum {
                max: max_major.normalize(),
                currency,
            })?;
        Ok(Self { minor, currency })
    }

    /// The amount in major units as an exact decimal, without trailing zeros (`70.5`).
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.minor, self.currency.exponent()).normalize()
    }
}

/// Parses plain (`12.30`) and scientific (`1.23e1`) decimal notation exactly.
fn parse_decimal(text: &str) -> Result<Decimal, AmountError> {
    let text = text.trim();
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str_exact(text)
    };
    let value = parsed.map_err(|_| AmountError::NotANumber)?;
    // from_str_exact rejects what it cannot hold exactly; from_scientific may round, so
    // insist that the value renders back to the same number it was read from.
    if text.contains(['e', 'E']) && Decimal::from_str(&value.to_string()) != Ok(value) {
        return Err(AmountError::NotANumber);
    }
    Ok(value)
}

/// Whether `text` is the literal of a JSON number (not a string, bool, null, array or object).
pub fn is_json_number(text: &str) -> bool {
    text.trim_start()
        .starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

/// Serde support for a `Decimal` written as a JSON *number* whose literal text is kept
/// exactly (`70.5`, never `70.499999...`), without serde_json's workspace-wide
/// `arbitrary_precision` feature: the field alone is read as a `RawValue`.
///
/// Use as `#[serde(with = "paysys_core::money::json_number")]`. The containing type must be
/// deserialised straight from JSON text, not through a buffered `Value`/`Content` (no
/// `flatten` or `untagged` around it), because only then does serde_json hand over raw text.
pub mod json_number {
    use rust_decimal::Decimal;
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(value.normalize().to_string()).map_err(S::Error::custom)?;
        raw.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        if !super::is_json_number(text) {
            return Err(D::Error::custom(format!(
                "expected a JSON number, found {text}"
            )));
        }
        super::parse_decimal(text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(code: &str) -> Currency {
        code.parse().unwrap()
    }

    fn max() -> Decimal {
        Decimal::from(1_000_000)
    }

    #[test]
    fn parses_to_minor_units_by_exponent() {
        assert_eq!(Money::parse("70.5", cur("USD"), max()).unwrap().minor, 7050);
        assert_eq!(
            Money::parse("70.50", cur("USD"), max()).unwrap().minor,
            7050
        );
        assert_eq!(Money::parse("1000", cur("JPY"), max()).unwrap().minor, 1000);
        assert_eq!(
            Money::parse("1.234", cur("KWD"), max()).unwrap().minor,
            1234
        );
        assert_eq!(
            Money::parse("1.5e2", cur("USD"), max()).unwrap().minor,
            15000
        );
        assert_eq!(Money::parse("0.01", cur("USD"), max()).unwrap().minor, 1);
    }

    #[test]
    fn refuses_bad_amounts() {
        let usd = cur("USD");
        assert_eq!(Money::parse("0", usd, max()), Err(AmountError::NotPositive));
        assert_eq!(
            Money::parse("-1", usd, max()),
            Err(AmountError::NotPositive)
        );
        assert!(matches!(
            Money::parse("0.001", usd, max()),
            Err(AmountError::TooManyDecimals { exponent: 2, .. })
        ));
        assert!(matches!(
            Money::parse("1.5", cur("JPY"), max()),
            Err(AmountError::TooManyDecimals { exponent: 0, .. })
        ));
        assert!(matches!(
            Money::parse("1000000.01", usd, max()),
            Err(AmountError::AboveMaximum { .. })
        ));
        assert_eq!(
            Money::parse("abc", usd, max()),
            Err(AmountError::NotANumber)
        );
        assert_eq!(
            Money::parse("1e400", usd, max()),
            Err(AmountError::NotANumber)
        );
    }

    #[test]
    fn renders_without_trailing_zeros() {
        let m = Money::parse("70.50", cur("USD"), max()).unwrap();
        assert_eq!(m.to_decimal().to_string(), "70.5");
        let m = Money::parse("5", cur("KWD"), max()).unwrap();
        assert_eq!(m.to_decimal().to_string(), "5");
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Amount {
        #[serde(with = "json_number")]
        amount: Decimal,
    }

    #[test]
    fn json_number_keeps_the_literal_exactly() {
        let parsed: Amount = serde_json::from_str(r#"{"amount": 0.30000000000000004}"#).unwrap();
        assert_eq!(parsed.amount.to_string(), "0.30000000000000004");
        let parsed: Amount = serde_json::from_str(r#"{"amount": 70.50}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&parsed).unwrap(),
            r#"{"amount":70.5}"#
        );
        let big = "12345678901234567890.12";
        let parsed: Amount = serde_json::from_str(&format!(r#"{{"amount": {big}}}"#)).unwrap();
        assert_eq!(parsed.amount.to_string(), big);
    }

    #[test]
    fn json_number_refuses_strings_and_other_types() {
        for body in [
            r#"{"amount": "70.5"}"#,
            r#"{"amount": null}"#,
            r#"{"amount": [1]}"#,
        ] {
            assert!(serde_json::from_str::<Amount>(body).is_err(), "{body}");
        }
    }

    proptest! {
        /// Any amount written with at most `exponent` decimals parses to exactly that many
        /// minor units and renders back to the same value.
        #[test]
        fn round_trips_exactly(minor in 1_i64..=100_000_000_000, code in prop::sample::select(vec!["USD", "JPY", "KWD", "EUR", "BHD"])) {
            let currency = cur(code);
            let text = Decimal::new(minor, currency.exponent()).to_string();
            let big = Decimal::from(i64::MAX / 1000);
            let money = Money::parse(&text, currency, big).unwrap();
            prop_assert_eq!(money.minor, minor);
            prop_assert_eq!(money.to_decimal(), Decimal::new(minor, currency.exponent()));
        }

        /// Arbitrary text never panics: it either parses to a positive amount or is refused.
        #[test]
        fn never_panics(text in ".{0,40}") {
            if let Ok(money) = Money::parse(&text, cur("USD"), max()) {
                prop_assert!(money.minor > 0);
            }
        }

        /// One decimal too many is always refused, never rounded.
        #[test]
        fn extra_decimal_is_refused(minor in 1_i64..=1_000_000, digit in 1_i64..=9) {
            let text = format!("{}{}", Decimal::new(minor, 2), digit);
            prop_assert!(
                matches!(
                    Money::parse(&text, cur("USD"), max()),
                    Err(AmountError::TooManyDecimals { .. })
                ),
                "{} was accepted",
                text
            );
        }
    }
}
