//! The PySpark job (spark/report.py) in Spark local mode agrees with `paysys-feed report` to
//! the cent, on the same files: an export from PostgreSQL and files in the demo's layout.
//! One Spark run serves every check (Spark takes seconds to start).

mod common;

use std::path::Path;
use std::process::Command;

use common::{DemoRow, feed, ok, query};
use datafusion::arrow::util::pretty::pretty_format_batches;
use fernet::Fernet;
use paysys_testkit::TestDb;

const RATES: &str = "currency,rate\nUSD,4.0\nEUR,3.7\nJPY,0.025\nKWD,12.1\n";

/// 1,500 exported payments in six currencies (GBP has no rate) over two days.
async fn export(dir: &Path, key_file: &Path) {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    common::MIGRATOR.run(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO payments (id, principal, amount_minor, currency, user_id, payee_id,
             payment_method_id, status, velocity_window_seconds, velocity_count,
             velocity_total_minor, created_at)
         SELECT gen_random_uuid(), 'test', 1 + (i * 7919) % 250000,
                (ARRAY['USD', 'EUR', 'ILS', 'GBP', 'JPY', 'KWD'])[1 + i % 6],
                gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'pending', 3600, 0, 0,
                timestamptz '2026-11-01 12:00Z' + i * interval '1 minute'
         FROM generate_series(1, 1500) i",
    )
    .execute(&pool)
    .await
    .unwrap();
    ok(feed(
        &[
            "export",
            "--out",
            dir.to_str().unwrap(),
            "--key-file",
            key_file.to_str().unwrap(),
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-02",
        ],
        &[("DATABASE_URL", &db.url)],
    ));
}

/// Demo-layout rows with amounts on rounding edges, refunds, and tokens that do not decrypt.
fn demo(path: &Path, key: &Fernet) {
    let other = Fernet::new(&Fernet::generate_key()).unwrap();
    let currencies = ["USD", "EUR", "ILS", "GBP", "JPY", "KWD", "XYZ"];
    let mut rows = Vec::new();
    for i in 0..500i64 {
        let currency = currencies[i as usize % currencies.len()];
        let amount = match currency {
            "JPY" => (i % 9 + 1) as f64,
            "KWD" => (i * 37 % 5000) as f64 / 1000.0 + 0.001,
            _ => (i * 37 % 100_000) as f64 / 100.0 + 0.05,
        };
        let amount = if i % 50 == 0 { -amount } else { amount };
        let token = match i % 100 {
            7 => other.encrypt(b"mallory").into_bytes(),
            8 => b"garbage".to_vec(),
            _ => key
                .encrypt(format!("user-{}", i % 40).as_bytes())
                .into_bytes(),
        };
        rows.push(DemoRow {
            date_ns: 1_700_000_000_000_000_000 + i * 1_000,
            currency,
            amount,
            token,
        });
    }
    common::write_demo(path, &rows);
}

/// Every row of an output, as sorted text.
async fn rows(path: &Path, columns: &str) -> String {
    let order: Vec<String> = (1..=columns.split(',').count())
        .map(|i| i.to_string())
        .collect();
    let sql = format!("SELECT {columns} FROM t ORDER BY {}", order.join(", "));
    let batches = query(path, &sql).await;
    pretty_format_batches(&batches).unwrap().to_string()
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[tokio::test]
async fn the_spark_job_agrees_with_datafusion_to_the_cent() {
    let Some(python) = common::spark_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let key = Fernet::generate_key();
    std::fs::write(path("key"), &key).unwrap();
    std::fs::write(path("rates.csv"), RATES).unwrap();
    export(&path("export"), &path("key")).await;
    demo(&path("demo/demo.parquet"), &Fernet::new(&key).unwrap());

    let inputs = [path("export"), path("demo")];
    let common_args = |out: &Path| -> Vec<String> {
        let mut args: Vec<String> = inputs
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        for arg in [
            "--rates",
            path("rates.csv").to_str().unwrap(),
            "--to",
            "ILS",
            "--key-file",
        ] {
            args.push(arg.into());
        }
        args.push(path("key").to_string_lossy().into_owned());
        args.extend(["--format".into(), "parquet".into(), "--out".into()]);
        args.push(out.to_string_lossy().into_owned());
        args
    };

    let df_args = common_args(&path("datafusion"));
    let mut report = vec!["report"];
    report.extend(df_args.iter().map(String::as_str));
    ok(feed(&report, &[]));

    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("spark/report.py");
    let spark = Command::new(&python)
        .arg(&job)
        .args(common_args(&path("spark")))
        .env("PYSPARK_PYTHON", &python)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .env_remove("PAYSYS_FEED_KEY")
        .output()
        .expect("run the PySpark job");
    assert!(
        spark.status.success(),
        "PySpark job failed:\n{}",
        String::from_utf8_lossy(&spark.stderr)
    );

    let totals = "currency, CAST(payments AS BIGINT) AS payments, total, \
                  CAST(total_minor AS VARCHAR) AS total_minor, rate, converted, \
                  CAST(converted_minor AS VARCHAR) AS converted_minor, note";
    let ours = rows(&path("datafusion/totals.parquet"), totals).await;
    assert_eq!(ours, rows(&path("spark/totals"), totals).await);
    assert!(ours.contains("GBP") && ours.contains("no rate"), "{ours}");

    let payments = "currency, payment_id, amount, amount_minor, amount_in_ils, \
                    amount_in_ils_minor, user_id";
    let ours = rows(&path("datafusion/payments.parquet"), payments).await;
    assert_eq!(
        ours.lines().count(),
        2000 + 4,
        "every payment, none dropped"
    );
    assert_eq!(ours, rows(&path("spark/payments"), payments).await);

    let (ours, theirs) = (summary(&path("datafusion")), summary(&path("spark")));
    for field in [
        "payments",
        "converted_total",
        "converted_total_minor",
        "currencies_without_rate",
        "undecryptable_tokens",
    ] {
        assert_eq!(ours[field], theirs[field], "{field}");
    }
    assert_eq!(ours["undecryptable_tokens"], 10);
    assert_eq!(
        ours["currencies_without_rate"],
        serde_json::json!(["GBP", "XYZ"])
    );
}
