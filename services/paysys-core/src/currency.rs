//! ISO 4217 currencies, restricted to those a payment can be made in.
//!
//! The table itself comes from the `iso_currency` crate; this type only narrows it to codes
//! with a minor-unit exponent (precious metals, bond units and the like have none and cannot
//! be expressed in minor units).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A currency payments can be made in: an ISO 4217 code with a defined minor-unit exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

/// Why a currency code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    #[error("'{0}' is not an ISO 4217 currency code")]
    Unknown(String),
    #[error("'{0}' has no minor unit and cannot be used for payments")]
    NoMinorUnit(String),
}

impl Currency {
    /// Every currency payments can be made in, in ISO 4217 code order.
    pub fn all() -> impl Iterator<Item = Currency> {
        use iso_currency::IntoEnumIterator;
        iso_currency::Currency::iter()
            .filter(|currency| currency.exponent().is_some())
            .map(Self)
    }

    /// The three-letter ISO 4217 code, e.g. `USD`.
    pub fn code(self) -> &'static str {
        // `iso_currency` returns codes with a 'static lifetime.
        self.0.code()
    }

    /// The ISO 4217 numeric code, e.g. 840 for USD (a stable number for a model's input).
    pub fn numeric(self) -> u16 {
        self.0.numeric()
    }

    /// Number of decimal places of the minor unit: USD 2, JPY 0, KWD 3.
    pub fn exponent(self) -> u32 {
        u32::from(self.0.exponent().expect("checked on construction"))
    }
}

impl FromStr for Currency {
    type Err = CurrencyError;

    /// Parses an upper-case ISO 4217 code. Lower-case is refused on purpose: codes are
    /// case-sensitive identifiers and accepting both would give one payment two spellings.
    fn from_str(code: &str) -> Result<Self, Self::Err> {
        let currency = iso_currency::Currency::from_code(code)
            .ok_or_else(|| CurrencyError::Unknown(code.to_owned()))?;
        match currency.exponent() {
            Some(_) => Ok(Self(currency)),
            None => Err(CurrencyError::NoMinorUnit(code.to_owned())),
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents_follow_iso_4217() {
        let exponent = |code: &str| code.parse::<Currency>().unwrap().exponent();
        assert_eq!(exponent("USD"), 2);
        assert_eq!(exponent("EUR"), 2);
        assert_eq!(exponent("JPY"), 0);
        assert_eq!(exponent("KWD"), 3);
    }

    #[test]
    fn unknown_and_unitless_codes_are_refused() {
        assert_eq!(
            "ABC".parse::<Currency>(),
            Err(CurrencyError::Unknown("ABC".into()))
        );
        assert_eq!(
            "usd".parse::<Currency>(),
            Err(CurrencyError::Unknown("usd".into()))
        );
        assert_eq!(
            "XAU".parse::<Currency>(),
            Err(CurrencyError::NoMinorUnit("XAU".into()))
        );
    }

    #[test]
    fn serde_round_trip_uses_the_code() {
        let usd: Currency = serde_json::from_str("\"USD\"").unwrap();
        assert_eq!(serde_json::to_string(&usd).unwrap(), "\"USD\"");
    }
}
