//! Shared by the data feed's tests: the binary, the pinned Python, files in the demo's layout.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use datafusion::arrow::array::{
    BinaryArray, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../payments-api/migrations");

/// Runs `paysys-feed` with `args`, no key in the environment unless given.
pub fn feed(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_paysys-feed"));
    command
        .args(args)
        .env_remove("PAYSYS_FEED_KEY")
        .env_remove("PAYSYS_FEED_KEY_FILE")
        .env_remove("DATABASE_URL");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run paysys-feed")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a zero exit and returns stdout.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "paysys-feed failed: {}\n{}",
        output.status,
        stderr(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Asserts a non-zero exit without a panic, with `expected` in the message.
pub fn fails_with(output: Output, expected: &str) {
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "exit status; stderr: {text}");
    assert!(text.contains(expected), "expected '{expected}' in: {text}");
    assert!(!text.contains("panicked"), "{text}");
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Skips with `why` outside CI; fails under CI=true, where nothing may be skipped.
pub fn skip(why: &str) -> Option<PathBuf> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why} (CI=true: this test may not be skipped)");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// The Python with the pinned pyspark, pyarrow and cryptography (scripts/ensure-python.sh).
pub fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("PAYSYS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/python-feed/bin/python"));
    if candidate.exists() {
        Some(candidate)
    } else {
        skip("no Python with pyspark/pyarrow/cryptography: run scripts/ensure-python.sh")
    }
}

/// Python and a Java runtime for Spark local mode.
pub fn spark_python() -> Option<PathBuf> {
    let python = python()?;
    let java = Command::new("java").arg("-version").output();
    if !java.is_ok_and(|o| o.status.success()) {
        return skip("no Java runtime for Spark: apt-get install openjdk-17-jre-headless");
    }
    Some(python)
}

/// Runs a Python snippet with `args`; asserts success and returns stdout.
pub fn run_python(python: &Path, code: &str, args: &[&str]) -> String {
    let output = Command::new(python)
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// One payment in the original demo's layout.
pub struct DemoRow<'a> {
    pub date_ns: i64,
    pub currency: &'a str,
    pub amount: f64,
    pub token: Vec<u8>,
}

/// Writes `rows` as a Parquet file in the demo's layout (naive ns timestamps, as pandas).
pub fn write_demo(path: &Path, rows: &[DemoRow]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "date",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        ),
        Field::new("currency", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("encoded_user_id", DataType::Binary, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(TimestampNanosecondArray::from_iter_values(
                rows.iter().map(|r| r.date_ns),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.currency),
            )),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.amount),
            )),
            Arc::new(BinaryArray::from_iter_values(
                rows.iter().map(|r| r.token.as_slice()),
            )),
        ],
    )
    .unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Reads every row of the Parquet files under `path` with DataFusion, through `sql` over the
/// table `t`.
pub async fn query(path: &Path, sql: &str) -> Vec<RecordBatch> {
    // Plain Utf8/Binary columns (not views), so tests can read them with as_string.
    let config = datafusion::prelude::SessionConfig::new()
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        )
        .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false);
    let ctx = datafusion::prelude::SessionContext::new_with_config(config);
    ctx.register_parquet("t", path.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}
