//! The report's input: Parquet files or folders of them, in the demo's layout or the export's.
//!
//! Every file's footer is read first, so a missing, unreadable or malformed file, or one
//! without the columns the report needs, is refused by name before any query runs. Files are
//! grouped by schema, each group becomes a table, and the view `payments` puts them in one
//! shape: `date, payment_id, currency, amount_minor, exponent, encoded_user_id`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::prelude::SessionContext;

use super::currencies::UNKNOWN_EXPONENT;

/// How a file stores the amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layout {
    /// `amount` as a double in major units (the original demo).
    Demo,
    /// `amount_minor` and `currency_exponent` (paysys-feed export).
    Export,
}

/// The Parquet files under `inputs`, in order, without hidden or `_` files.
pub fn parquet_files(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let metadata = std::fs::metadata(input)
            .with_context(|| format!("cannot read input {}", input.display()))?;
        if metadata.is_dir() {
            let before = files.len();
            walk(input, &mut files)?;
            if files.len() == before {
                bail!("no .parquet files in {}", input.display());
            }
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, files)?;
        } else if name.ends_with(".parquet") {
            files.push(path);
        }
    }
    Ok(())
}

/// The file's Arrow schema and layout, or why it cannot be read.
fn inspect(path: &Path) -> anyhow::Result<(SchemaRef, Layout)> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let schema = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?
        .schema()
        .clone();
    let layout = layout_of(&schema).with_context(|| format!("{}", path.display()))?;
    Ok((schema, layout))
}

fn layout_of(schema: &SchemaRef) -> anyhow::Result<Layout> {
    let has = |name: &str, ok: &dyn Fn(&DataType) -> bool| {
        schema
            .field_with_name(name)
            .map(|f| ok(f.data_type()))
            .unwrap_or(false)
    };
    let string =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let binary = |t: &DataType| {
        matches!(
            t,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView
        ) || string(t)
    };
    let timestamp = |t: &DataType| matches!(t, DataType::Timestamp(..));
    let mut missing = Vec::new();
    for (name, ok) in [
        ("date", &timestamp as &dyn Fn(&DataType) -> bool),
        ("currency", &string),
        ("encoded_user_id", &binary),
    ] {
        if !has(name, ok) {
            missing.push(name);
        }
    }
    let export = has("amount_minor", &|t| *t == DataType::Int64)
        && has("currency_exponent", &|t| *t == DataType::Int32);
    if !export
        && !has("amount", &|t| {
            matches!(t, DataType::Float64 | DataType::Float32)
        })
    {
        missing.push("amount (double) or amount_minor and currency_exponent");
    }
    if !missing.is_empty() {
        bail!(
            "not a payments file: missing or mistyped column(s): {}",
            missing.join(", ")
        );
    }
    Ok(if export { Layout::Export } else { Layout::Demo })
}

/// Registers the files and the `payments` view over them; returns the layouts found.
pub async fn register(ctx: &SessionContext, files: &[PathBuf]) -> anyhow::Result<Vec<Layout>> {
    // Files with the same schema share one table.
    let mut groups: BTreeMap<String, (SchemaRef, Layout, Vec<PathBuf>)> = BTreeMap::new();
    for path in files {
        let (schema, layout) = inspect(path)?;
        groups
            .entry(format!("{layout:?}{schema:?}"))
            .or_insert_with(|| (schema, layout, Vec::new()))
            .2
            .push(path.clone());
    }
    let mut selects = Vec::new();
    let mut layouts = Vec::new();
    for (index, (schema, layout, paths)) in groups.into_values().enumerate() {
        let name = format!("input_{index}");
        let urls = paths
            .iter()
            .map(|p| {
                let absolute = std::path::absolute(p)?;
                ListingTableUrl::parse(absolute.to_string_lossy())
                    .with_context(|| format!("{}", p.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(schema);
        ctx.register_table(&name, Arc::new(ListingTable::try_new(config)?))?;
        selects.push(normalize(&name, layout));
        layouts.push(layout);
    }
    ctx.sql(&format!(
        "CREATE VIEW payments AS {}",
        selects.join(" UNION ALL ")
    ))
    .await?;
    Ok(layouts)
}

/// One table in the common shape. Demo amounts are doubles in major units: they are turned
/// into minor units by rounding half away from zero, written with casts (truncation) so the
/// PySpark job computes the very same integers.
fn normalize(table: &str, layout: Layout) -> String {
    let token = "CAST(t.encoded_user_id AS BYTEA) AS encoded_user_id";
    match layout {
        Layout::Export => format!(
            "SELECT CAST(t.date AS TIMESTAMP) AS date, CAST(t.payment_id AS VARCHAR) AS payment_id,
                    CAST(t.currency AS VARCHAR) AS currency, t.amount_minor,
                    CAST(t.currency_exponent AS INT) AS exponent, {token}
             FROM {table} t"
        ),
        Layout::Demo => format!(
            "SELECT CAST(t.date AS TIMESTAMP) AS date, CAST(NULL AS VARCHAR) AS payment_id,
                    CAST(t.currency AS VARCHAR) AS currency,
                    CASE WHEN t.amount >= 0
                         THEN CAST(CAST(t.amount AS DOUBLE) * COALESCE(c.scale, 100.0) + 0.5 AS BIGINT)
                         ELSE CAST(CAST(t.amount AS DOUBLE) * COALESCE(c.scale, 100.0) - 0.5 AS BIGINT)
                    END AS amount_minor,
                    CAST(COALESCE(c.exponent, {UNKNOWN_EXPONENT}) AS INT) AS exponent, {token}
             FROM {table} t LEFT JOIN currencies c ON CAST(t.currency AS VARCHAR) = c.currency"
        ),
    }
}
