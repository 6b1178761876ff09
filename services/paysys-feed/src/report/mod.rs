//! `paysys-feed report`: totals per currency, converted totals, the payments with their
//! converted amount and, with a key, their decrypted user ids, on an embedded DataFusion.
//!
//! Nothing is dropped silently: a currency without a rate is listed as such, a token that
//! does not decrypt is counted and its row kept, and an unreadable input stops the report
//! with its name before any output is written.

mod currencies;
mod input;
mod output;
mod rates;
mod udf;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Int64Array, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, Int32Type, Int64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;
use serde::Serialize;

pub use output::Format;
use output::Sink;
pub use rates::Rates;
pub use udf::format_minor;

use crate::key::KeySource;
use crate::progress;

/// Tokens tried before the report starts: when none of them decrypts, the key is wrong.
const KEY_PROBE_TOKENS: usize = 100;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Parquet files or folders of them (searched recursively), in the demo's layout or the
    /// export's.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Rates file (`currency,rate` lines: the value of one unit in the --to currency).
    #[arg(long, requires = "to")]
    pub rates: Option<PathBuf>,
    /// Reporting currency the rates convert into (converts into itself at 1).
    #[arg(long, requires = "rates")]
    pub to: Option<String>,
    /// With a key (--key-file or PAYSYS_FEED_KEY), the payments get their decrypted user id.
    #[command(flatten)]
    pub key: KeySource,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Folder for totals.<ext>, payments.<ext> and summary.json (needed by csv, json and
    /// parquet).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Payments shown by the table format.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Memory the engine may use before it spills to disk, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory_limit_mib: usize,
}

/// The report's figures besides its tables (also written as summary.json).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub payments: u64,
    pub totals: Vec<CurrencyTotal>,
    pub reporting_currency: Option<String>,
    /// Sum of the converted totals of every currency that has a rate.
    pub converted_total: Option<String>,
    pub converted_total_minor: Option<i128>,
    /// Currencies with payments but no rate: their amounts are in no converted total.
    pub currencies_without_rate: Vec<String>,
    /// Codes ISO 4217 does not know (amounts read with 2 decimal places).
    pub unknown_currencies: Vec<String>,
    /// Tokens that did not decrypt with the key (their rows are kept, user_id empty).
    pub undecryptable_tokens: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CurrencyTotal {
    pub currency: String,
    pub payments: i64,
    pub total: String,
    pub total_minor: i128,
    pub rate: Option<String>,
    pub converted: Option<String>,
    pub converted_minor: Option<i128>,
}

pub async fn run(args: &ReportArgs) -> anyhow::Result<Summary> {
    match (args.format, &args.out) {
        (Format::Table, Some(_)) => bail!("--out needs --format csv, json or parquet"),
        (Format::Table, None) | (_, Some(_)) => {}
        (format, None) => bail!("--format {format:?} needs --out FOLDER"),
    }
    let key = args.key.load()?;
    let rates = match (&args.rates, &args.to) {
        (Some(path), Some(to)) => Some(Rates::load(path, to)?),
        _ => None,
    };
    let files = input::parquet_files(&args.inputs)?;
    let ctx = session(args.memory_limit_mib)?;
    ctx.register_table("currencies", Arc::new(currencies::table()?))?;
    ctx.register_udf(udf::minor_text());
    input::register(&ctx, &files).await?;
    price(&ctx, rates.as_ref()).await?;
    let decrypting = key.is_some();
    if let Some(key) = key {
        check_key(&ctx, &key).await?;
        ctx.register_udf(udf::decrypt_user_id(key));
    }

    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    }
    let mut summary = totals(&ctx, rates.as_ref()).await?;
    summary.unknown_currencies = unknown_currencies(&summary.totals);
    let totals_batch = totals_batch(&summary)?;
    let (rows, undecryptable, shown) = payments(&ctx, args, rates.as_ref(), decrypting).await?;
    summary.payments = rows;
    summary.undecryptable_tokens = decrypting.then_some(undecryptable);

    match &args.out {
        None => {
            println!("{}", pretty_format_batches(&[totals_batch])?);
            println!("{}", pretty_format_batches(&shown)?);
            print_summary(&summary);
        }
        Some(out) => {
            let mut sink = Sink::create(out, "totals", args.format, totals_batch.schema())?;
            sink.write(&totals_batch)?;
            sink.finish()?;
            let path = out.join("summary.json");
            std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            print_summary(&summary);
        }
    }
    Ok(summary)
}

fn session(memory_limit_mib: usize) -> anyhow::Result<SessionContext> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory_limit_mib << 20, 1.0)
        .build_arc()?;
    Ok(SessionContext::new_with_config_rt(
        SessionConfig::new(),
        runtime,
    ))
}

/// The view `priced`: `payments` with the rate and the amount in the reporting currency's
/// minor units, rounded half away from zero per payment, exactly (decimal arithmetic; the
/// PySpark job writes the same expression).
async fn price(ctx: &SessionContext, rates: Option<&Rates>) -> anyhow::Result<()> {
    let sql = match rates {
        Some(rates) => {
            ctx.register_table("rates", Arc::new(rates.table()?))?;
            "CREATE VIEW priced AS
             SELECT p.*, r.rate,
                    CASE WHEN r.factor IS NULL THEN NULL
                         WHEN p.amount_minor >= 0
                         THEN CAST(CAST(p.amount_minor AS DECIMAL(19, 0)) * r.factor
                                   + CAST(0.5 AS DECIMAL(2, 1)) AS BIGINT)
                         ELSE CAST(CAST(p.amount_minor AS DECIMAL(19, 0)) * r.factor
                                   - CAST(0.5 AS DECIMAL(2, 1)) AS BIGINT)
                    END AS converted_minor
             FROM payments p LEFT JOIN rates r ON p.currency = r.currency"
        }
        None => {
            "CREATE VIEW priced AS
             SELECT p.*, CAST(NULL AS VARCHAR) AS rate, CAST(NULL AS BIGINT) AS converted_minor
             FROM payments p"
        }
    };
    ctx.sql(sql).await?;
    Ok(())
}

/// Refuses a key that decrypts none of the first tokens: a wrong key, not a few bad rows.
async fn check_key(ctx: &SessionContext, key: &fernet::Fernet) -> anyhow::Result<()> {
    let batches = ctx
        .sql(&format!(
            "SELECT encoded_user_id FROM payments WHERE encoded_user_id IS NOT NULL LIMIT {KEY_PROBE_TOKENS}"
        ))
        .await?
        .collect()
        .await?;
    let mut tried = 0;
    for batch in &batches {
        let tokens = batch.column(0).as_binary::<i32>();
        for token in tokens.iter().flatten() {
            if udf::decrypt(key, token).is_some() {
                return Ok(());
            }
            tried += 1;
        }
    }
    if tried > 0 {
        bail!("the key decrypts none of the first {tried} user id tokens: wrong key?");
    }
    Ok(())
}

/// Totals per currency, converted totals, and their sum over the currencies with a rate.
async fn totals(ctx: &SessionContext, rates: Option<&Rates>) -> anyhow::Result<Summary> {
    let batches = ctx
        .sql(
            // Types spelled out: the code below reads the columns as exactly these.
            "SELECT currency, CAST(COUNT(*) AS BIGINT) AS payments,
                    CAST(MAX(exponent) AS INT) AS exponent,
                    CAST(SUM(CAST(amount_minor AS DECIMAL(38, 0))) AS DECIMAL(38, 0)) AS total_minor,
                    MAX(rate) AS rate,
                    CAST(SUM(CAST(converted_minor AS DECIMAL(38, 0))) AS DECIMAL(38, 0))
                        AS converted_minor
             FROM priced GROUP BY currency ORDER BY currency",
        )
        .await?
        .collect()
        .await?;
    let mut summary = Summary {
        payments: 0,
        totals: Vec::new(),
        reporting_currency: rates.map(|r| r.to.clone()),
        converted_total: None,
        converted_total_minor: None,
        currencies_without_rate: Vec::new(),
        unknown_currencies: Vec::new(),
        undecryptable_tokens: None,
    };
    let to_exponent = rates.map_or(0, |r| r.to_exponent);
    let mut grand = rates.map(|_| 0i128);
    for batch in &batches {
        let currency = utf8(batch.column(0))?;
        let currency = currency.as_string::<i32>();
        let payments = batch.column(1).as_primitive::<Int64Type>();
        let exponent = batch.column(2).as_primitive::<Int32Type>();
        let total = batch.column(3).as_primitive::<Decimal128Type>();
        let rate = utf8(batch.column(4))?;
        let rate = rate.as_string::<i32>();
        let converted = batch.column(5).as_primitive::<Decimal128Type>();
        for i in 0..batch.num_rows() {
            let converted_minor = (!converted.is_null(i)).then(|| converted.value(i));
            if rates.is_some() && converted_minor.is_none() {
                summary
                    .currencies_without_rate
                    .push(currency.value(i).to_owned());
            }
            if let (Some(sum), Some(c)) = (grand.as_mut(), converted_minor) {
                *sum += c;
            }
            summary.totals.push(CurrencyTotal {
                currency: currency.value(i).to_owned(),
                payments: payments.value(i),
                total: format_minor(total.value(i), exponent.value(i)),
                total_minor: total.value(i),
                rate: (!rate.is_null(i)).then(|| rate.value(i).to_owned()),
                converted: converted_minor.map(|c| format_minor(c, to_exponent)),
                converted_minor,
            });
        }
    }
    summary.converted_total = grand.map(|g| format_minor(g, to_exponent));
    summary.converted_total_minor = grand;
    Ok(summary)
}

/// The codes among the totals' currencies that the `currencies` table does not know.
///
/// Read from the totals, not from another query over the payments: a `NOT IN` over every
/// row is a null-aware anti join, which holds the whole column in a hash table (memory that
/// grew with the input; with the output writer's row groups it cost the 1 M-row report 75 MiB,
/// docs/benchmarks.md).
fn unknown_currencies(totals: &[CurrencyTotal]) -> Vec<String> {
    let known: std::collections::HashSet<&str> = currencies::all()
        .into_iter()
        .map(|(code, _)| code)
        .collect();
    totals
        .iter()
        .filter(|total| !known.contains(total.currency.as_str()))
        .map(|total| total.currency.clone())
        .collect()
}

/// A string column as plain UTF-8: DataFusion reads Parquet strings as views.
fn utf8(column: &ArrayRef) -> anyhow::Result<ArrayRef> {
    Ok(datafusion::arrow::compute::cast(column, &DataType::Utf8)?)
}

/// The totals as a table: one row per currency.
fn totals_batch(summary: &Summary) -> anyhow::Result<RecordBatch> {
    let totals = &summary.totals;
    let decimal = |values: Vec<Option<i128>>| -> anyhow::Result<ArrayRef> {
        Ok(Arc::new(
            Decimal128Array::from(values).with_precision_and_scale(38, 0)?,
        ))
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("currency", DataType::Utf8, false),
        Field::new("payments", DataType::Int64, false),
        Field::new("total", DataType::Utf8, false),
        Field::new("total_minor", DataType::Decimal128(38, 0), false),
        Field::new("rate", DataType::Utf8, true),
        Field::new("converted", DataType::Utf8, true),
        Field::new("converted_minor", DataType::Decimal128(38, 0), true),
        Field::new("note", DataType::Utf8, true),
    ]));
    let note = |t: &CurrencyTotal| {
        (summary.reporting_currency.is_some() && t.converted_minor.is_none())
            .then_some("no rate: not in the converted total")
    };
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                totals.iter().map(|t| &t.currency),
            )),
            Arc::new(Int64Array::from_iter_values(
                totals.iter().map(|t| t.payments),
            )),
            Arc::new(StringArray::from_iter_values(
                totals.iter().map(|t| &t.total),
            )),
            decimal(totals.iter().map(|t| Some(t.total_minor)).collect())?,
            Arc::new(StringArray::from_iter(
                totals.iter().map(|t| t.rate.as_deref()),
            )),
            Arc::new(StringArray::from_iter(
                totals.iter().map(|t| t.converted.as_deref()),
            )),
            decimal(totals.iter().map(|t| t.converted_minor).collect())?,
            Arc::new(StringArray::from_iter(totals.iter().map(note))),
        ],
    )?)
}

/// Streams every payment to its output; returns the rows, the undecryptable tokens and, for
/// the table format, the first --limit rows.
async fn payments(
    ctx: &SessionContext,
    args: &ReportArgs,
    rates: Option<&Rates>,
    decrypting: bool,
) -> anyhow::Result<(u64, u64, Vec<RecordBatch>)> {
    let mut columns = vec![
        "date".to_owned(),
        "payment_id".into(),
        "currency".into(),
        "minor_text(amount_minor, exponent) AS amount".into(),
        "amount_minor".into(),
    ];
    if let Some(rates) = rates {
        let name = format!("amount_in_{}", rates.to.to_lowercase());
        columns.push(format!(
            "minor_text(converted_minor, CAST({} AS INT)) AS {name}",
            rates.to_exponent
        ));
        columns.push(format!("converted_minor AS {name}_minor"));
    }
    if decrypting {
        columns.push("decrypt_user_id(encoded_user_id) AS user_id".into());
        columns.push("encoded_user_id IS NOT NULL AS has_token".into());
    }
    let df = ctx
        .sql(&format!("SELECT {} FROM priced", columns.join(", ")))
        .await?;
    let full_schema = df.schema().as_arrow().clone();
    // `has_token` only serves the count; it is not part of the output.
    let kept: Vec<usize> = (0..full_schema.fields().len() - usize::from(decrypting)).collect();
    let schema = Arc::new(full_schema.project(&kept)?);
    let mut sink = match &args.out {
        Some(out) => Some(Sink::create(out, "payments", args.format, schema)?),
        None => None,
    };
    let bar = progress::rows("report");
    let mut stream = df.execute_stream().await?;
    let (mut rows, mut undecryptable, mut shown, mut shown_rows) = (0u64, 0u64, Vec::new(), 0);
    while let Some(batch) = stream.try_next().await? {
        if decrypting {
            undecryptable += count_undecryptable(&batch);
        }
        let batch = batch.project(&kept)?;
        rows += batch.num_rows() as u64;
        bar.set_position(rows);
        match sink.as_mut() {
            Some(sink) => sink.write(&batch)?,
            None if shown_rows < args.limit => {
                let take = (args.limit - shown_rows).min(batch.num_rows());
                shown.push(batch.slice(0, take));
                shown_rows += take;
            }
            None => {}
        }
    }
    bar.finish_and_clear();
    if let Some(sink) = sink {
        sink.finish()?;
    }
    if decrypting && rows > 0 && undecryptable == rows {
        bail!("no user id token of {rows} decrypts with the key: wrong key?");
    }
    Ok((rows, undecryptable, shown))
}

/// Rows with a token whose user_id came out null.
fn count_undecryptable(batch: &RecordBatch) -> u64 {
    let columns = batch.num_columns();
    let user_id = batch.column(columns - 2);
    let has_token = batch.column(columns - 1).as_boolean();
    (0..batch.num_rows())
        .filter(|&i| has_token.is_valid(i) && has_token.value(i) && user_id.is_null(i))
        .count() as u64
}

fn print_summary(summary: &Summary) {
    let mut lines = vec![format!("payments: {}", summary.payments)];
    if let (Some(to), Some(total)) = (&summary.reporting_currency, &summary.converted_total) {
        lines.push(format!("converted total: {total} {to}"));
    }
    if !summary.currencies_without_rate.is_empty() {
        lines.push(format!(
            "currencies without a rate (not in the converted total): {}",
            summary.currencies_without_rate.join(", ")
        ));
    }
    if !summary.unknown_currencies.is_empty() {
        lines.push(format!(
            "currencies unknown to ISO 4217 (read with 2 decimal places): {}",
            summary.unknown_currencies.join(", ")
        ));
    }
    if let Some(n) = summary.undecryptable_tokens {
        lines.push(format!(
            "user id tokens that did not decrypt (rows kept): {n}"
        ));
    }
    eprintln!("{}", lines.join("\n"));
}
