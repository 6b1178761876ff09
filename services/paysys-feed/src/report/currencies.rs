//! ISO 4217 minor-unit exponents, for files in the demo's layout (which carry none) and for
//! the rates file. The PySpark job keeps the same table (`EXPONENTS` in spark/report.py);
//! a test checks the two agree.

use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int32Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use iso_currency::IntoEnumIterator;

/// Exponent assumed for a code ISO 4217 does not know (reported as a warning).
pub const UNKNOWN_EXPONENT: i32 = 2;

/// Every ISO 4217 currency with a minor unit, and its exponent.
pub fn all() -> Vec<(&'static str, i32)> {
    let mut list: Vec<_> = iso_currency::Currency::iter()
        .filter_map(|c| c.exponent().map(|e| (c.code(), i32::from(e))))
        .collect();
    list.sort_unstable();
    list
}

/// The exponent of `code`, when ISO 4217 gives it one.
pub fn exponent(code: &str) -> Option<i32> {
    code.parse::<paysys_core::Currency>()
        .ok()
        .map(|c| c.exponent() as i32)
}

/// Table `currencies(currency, exponent, scale)`, `scale` being 10^exponent as a double for
/// turning the demo's double amounts into minor units.
pub fn table() -> datafusion::error::Result<MemTable> {
    let list = all();
    let schema = Arc::new(Schema::new(vec![
        Field::new("currency", DataType::Utf8, false),
        Field::new("exponent", DataType::Int32, false),
        Field::new("scale", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(list.iter().map(|c| c.0))),
            Arc::new(Int32Array::from_iter_values(list.iter().map(|c| c.1))),
            Arc::new(Float64Array::from_iter_values(
                list.iter().map(|c| 10f64.powi(c.1)),
            )),
        ],
    )?;
    MemTable::try_new(schema, vec![vec![batch]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Spark job's table lists the codes whose exponent is not 2; every other code is 2.
    #[test]
    fn the_spark_job_uses_the_same_exponents() {
        let job = include_str!("../../spark/report.py");
        let start = job.find("EXPONENTS = {").expect("EXPONENTS in report.py");
        let end = start + job[start..].find('}').unwrap();
        let mut python = std::collections::BTreeMap::new();
        for entry in job[start + 13..end].split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (code, exponent) = entry.split_once(':').expect("code: exponent");
            python.insert(
                code.trim().trim_matches('"').to_owned(),
                exponent.trim().parse::<i32>().unwrap(),
            );
        }
        let rust: std::collections::BTreeMap<String, i32> = all()
            .into_iter()
            .filter(|(_, e)| *e != 2)
            .map(|(c, e)| (c.to_owned(), e))
            .collect();
        assert_eq!(python, rust);
    }
}
