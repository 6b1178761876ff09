//! The rates file: how much one unit of a currency is worth in the reporting currency.
//!
//! ```text
//! currency,rate
//! USD,4.0
//! EUR,3.7
//! ```
//! Blank lines and lines starting with `#` are ignored. Rates are exact decimals (at most 8
//! decimal places). The reporting currency itself always converts at 1.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use datafusion::arrow::array::{Decimal128Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use rust_decimal::Decimal;

use super::currencies;

/// Decimal places of a conversion factor: 8 of the rate plus up to 4 of exponent shift.
pub const FACTOR_SCALE: u32 = 12;
/// Precision of a factor: small enough that minor units (19 digits) times a factor fit the
/// 38 digits of a decimal exactly, in DataFusion and in Spark alike.
pub const FACTOR_PRECISION: u8 = 17;
const MAX_RATE_SCALE: u32 = 8;

/// One currency's rate and the factor from its minor units to the reporting currency's.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    pub currency: String,
    pub rate: Decimal,
    /// rate × 10^(reporting exponent − currency exponent).
    pub factor: Decimal,
}

/// The reporting currency and the rates into it.
#[derive(Debug, Clone)]
pub struct Rates {
    pub to: String,
    pub to_exponent: i32,
    pub rates: Vec<Rate>,
}

impl Rates {
    pub fn load(path: &Path, to: &str) -> anyhow::Result<Rates> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the rates file {}", path.display()))?;
        Self::parse(&text, to).with_context(|| format!("the rates file {}", path.display()))
    }

    pub fn parse(text: &str, to: &str) -> anyhow::Result<Rates> {
        let to_exponent = currencies::exponent(to)
            .with_context(|| format!("reporting currency '{to}' is not an ISO 4217 code"))?;
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'));
        match lines.next() {
            Some((_, "currency,rate")) => {}
            _ => bail!("the first line must be the header 'currency,rate'"),
        }
        let mut rates = vec![identity(to)];
        for (number, line) in lines {
            let rate = parse_line(line, to_exponent)
                .with_context(|| format!("line {number}: '{line}'"))?;
            if rate.currency == to {
                if rate.rate != Decimal::ONE {
                    bail!(
                        "line {number}: the reporting currency {to} converts at 1, not {}",
                        rate.rate
                    );
                }
                continue;
            }
            if rates.iter().any(|r| r.currency == rate.currency) {
                bail!("line {number}: a second rate for {}", rate.currency);
            }
            rates.push(rate);
        }
        Ok(Rates {
            to: to.to_owned(),
            to_exponent,
            rates,
        })
    }

    /// Table `rates(currency, rate, factor)`, the factor as decimal(17, 12).
    pub fn table(&self) -> datafusion::error::Result<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("currency", DataType::Utf8, false),
            Field::new("rate", DataType::Utf8, false),
            Field::new(
                "factor",
                DataType::Decimal128(FACTOR_PRECISION, FACTOR_SCALE as i8),
                false,
            ),
        ]));
        let factors = Decimal128Array::from_iter_values(self.rates.iter().map(|r| {
            let mut factor = r.factor;
            factor.rescale(FACTOR_SCALE);
            factor.mantissa()
        }))
        .with_precision_and_scale(FACTOR_PRECISION, FACTOR_SCALE as i8)?;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    self.rates.iter().map(|r| r.currency.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    self.rates.iter().map(|r| r.rate.to_string()),
                )),
                Arc::new(factors),
            ],
        )?;
        MemTable::try_new(schema, vec![vec![batch]])
    }
}

fn identity(to: &str) -> Rate {
    Rate {
        currency: to.to_owned(),
        rate: Decimal::ONE,
        factor: Decimal::ONE,
    }
}

fn parse_line(line: &str, to_exponent: i32) -> anyhow::Result<Rate> {
    let (code, rate) = line.split_once(',').context("expected 'CURRENCY,RATE'")?;
    let code = code.trim();
    let from_exponent =
        currencies::exponent(code).with_context(|| format!("'{code}' is not an ISO 4217 code"))?;
    let rate: Decimal = rate
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("'{}' is not a decimal number", rate.trim()))?;
    if rate <= Decimal::ZERO {
        bail!("a rate must be positive");
    }
    let rate = rate.normalize();
    if rate.scale() > MAX_RATE_SCALE {
        bail!("a rate has at most {MAX_RATE_SCALE} decimal places");
    }
    let shift = Decimal::from(10i64.pow((to_exponent - from_exponent).unsigned_abs()));
    let factor = if to_exponent >= from_exponent {
        rate * shift
    } else {
        rate / shift
    };
    let limit = Decimal::from(10i64.pow(u32::from(FACTOR_PRECISION) - FACTOR_SCALE));
    if factor >= limit {
        bail!("rate {rate} is too large (the factor per minor unit must stay below {limit})");
    }
    Ok(Rate {
        currency: code.to_owned(),
        rate,
        factor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_rates_with_identity_for_the_reporting_currency() {
        let rates = Rates::parse("# to ILS\ncurrency,rate\nUSD,4.0\nEUR,3.7\n\n", "ILS").unwrap();
        let found: Vec<_> = rates
            .rates
            .iter()
            .map(|r| (r.currency.as_str(), r.factor.to_string()))
            .collect();
        assert_eq!(
            found,
            [
                ("ILS", "1".into()),
                ("USD", "4".into()),
                ("EUR", "3.7".into())
            ]
        );
    }

    #[test]
    fn factors_shift_between_exponents() {
        // 1 JPY (exponent 0) = 0.025 ILS: one yen is 2.5 agorot.
        let rates = Rates::parse("currency,rate\nJPY,0.025\nKWD,12\n", "ILS").unwrap();
        assert_eq!(rates.rates[1].factor.to_string(), "2.500");
        // 1 KWD (exponent 3) = 12 ILS: one fils is 1.2 agorot.
        assert_eq!(rates.rates[2].factor.normalize().to_string(), "1.2");
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        for (text, expected) in [
            ("USD,4\n", "header"),
            ("currency,rate\nUSD\n", "line 2"),
            ("currency,rate\nXXX,1\n", "ISO 4217"),
            ("currency,rate\nUSD,four\n", "not a decimal"),
            ("currency,rate\nUSD,-1\n", "positive"),
            ("currency,rate\nUSD,1\nUSD,2\n", "second rate"),
            ("currency,rate\nILS,2\n", "converts at 1"),
            ("currency,rate\nUSD,0.123456789\n", "8 decimal"),
        ] {
            let error = format!("{:#}", Rates::parse(text, "ILS").unwrap_err());
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        assert!(Rates::parse("currency,rate\n", "XYZ").is_err());
    }
}
