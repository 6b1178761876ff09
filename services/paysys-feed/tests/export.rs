//! `paysys-feed export` against a real PostgreSQL: columns, day files, replacement, watermark.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use common::{fails_with, feed, ok, query};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use paysys_testkit::TestDb;
use uuid::Uuid;

struct Payment {
    id: Uuid,
    user_id: Uuid,
    amount_minor: i64,
    currency: &'static str,
    status: &'static str,
    created_at: DateTime<Utc>,
}

async fn insert(pool: &sqlx::PgPool, p: &Payment, updated_ago_hours: i32) {
    let decision = match p.status {
        "approved" | "declined" => Some(serde_json::json!({
            "schema_version": 2, "payment_id": p.id, "outcome": p.status, "score": 0,
            "reasons": [], "rules_version": "test", "decided_at": "2026-11-02T10:00:01.5Z"
        })),
        _ => None,
    };
    sqlx::query(
        "INSERT INTO payments (id, principal, amount_minor, currency, user_id, payee_id,
             payment_method_id, status, velocity_window_seconds, velocity_count,
             velocity_total_minor, decision, created_at, updated_at)
         VALUES ($1, 'test', $2, $3, $4, $5, $6, $7, 3600, 0, 0, $8, $9,
                 now() - make_interval(hours => $10))",
    )
    .bind(p.id)
    .bind(p.amount_minor)
    .bind(p.currency)
    .bind(p.user_id)
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .bind(p.status)
    .bind(decision)
    .bind(p.created_at)
    .bind(updated_ago_hours)
    .execute(pool)
    .await
    .unwrap();
}

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
}

fn payment(
    amount_minor: i64,
    currency: &'static str,
    status: &'static str,
    created_at: DateTime<Utc>,
) -> Payment {
    Payment {
        id: Uuid::now_v7(),
        user_id: Uuid::new_v4(),
        amount_minor,
        currency,
        status,
        created_at,
    }
}

struct Setup {
    db: TestDb,
    pool: sqlx::PgPool,
    dir: tempfile::TempDir,
    key: String,
}

async fn setup() -> Setup {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    common::MIGRATOR.run(&pool).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = ok(feed(&["keygen"], &[])).trim().to_owned();
    std::fs::write(dir.path().join("key"), &key).unwrap();
    Setup { db, pool, dir, key }
}

impl Setup {
    fn out(&self) -> String {
        self.dir.path().join("feed").to_string_lossy().into_owned()
    }

    fn export(&self, extra: &[&str]) -> std::process::Output {
        let key_file = self.dir.path().join("key");
        let out = self.out();
        let mut args = vec![
            "export",
            "--out",
            &out,
            "--key-file",
            key_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        feed(&args, &[("DATABASE_URL", &self.db.url)])
    }

    fn day_file(&self, day: &str) -> std::path::PathBuf {
        Path::new(&self.out()).join(format!("day={day}/payments.parquet"))
    }
}

#[tokio::test]
async fn days_are_exported_with_the_demo_and_the_exact_columns() {
    let s = setup().await;
    let usd = payment(1250, "USD", "approved", at(2, 9));
    let jpy = payment(500, "JPY", "pending", at(2, 23));
    let kwd = payment(1234, "KWD", "declined", at(3, 0));
    for p in [&usd, &jpy, &kwd] {
        insert(&s.pool, p, 0).await;
    }
    insert(&s.pool, &payment(1, "USD", "pending", at(5, 1)), 0).await;
    ok(s.export(&["--from", "2026-11-02", "--to", "2026-11-03"]));

    assert!(s.day_file("2026-11-02").exists() && s.day_file("2026-11-03").exists());
    assert!(!s.day_file("2026-11-05").exists(), "outside the range");
    assert!(
        !Path::new(&s.out()).join("_watermark.json").exists(),
        "a range leaves no watermark"
    );

    let batches = query(
        Path::new(&s.out()),
        "SELECT payment_id, currency, amount, amount_minor, currency_exponent,
                CAST(amount_decimal AS VARCHAR) AS exact, status, decision_outcome,
                CAST(decided_at AS VARCHAR) AS decided, CAST(date AS BIGINT) AS d,
                CAST(created_at AS BIGINT) AS c,
                encoded_user_id
         FROM t ORDER BY date",
    )
    .await;
    let b = &batches[0];
    assert_eq!(b.num_rows(), 3);
    let text = |c: usize, r: usize| b.column(c).as_string::<i32>().value(r).to_owned();
    let key = fernet::Fernet::new(&s.key).unwrap();
    for (row, (p, amount, exponent, decimal, outcome)) in [
        (&usd, 12.5, 2, "12.5000", Some("approved")),
        (&jpy, 500.0, 0, "500.0000", None),
        (&kwd, 1.234, 3, "1.2340", Some("declined")),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(text(0, row), p.id.to_string());
        assert_eq!(text(1, row), p.currency);
        assert_eq!(
            b.column(2)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .value(row),
            amount
        );
        assert_eq!(
            b.column(3).as_primitive::<Int64Type>().value(row),
            p.amount_minor
        );
        assert_eq!(
            b.column(4)
                .as_primitive::<datafusion::arrow::datatypes::Int32Type>()
                .value(row),
            exponent
        );
        assert_eq!(text(5, row), decimal);
        assert_eq!(text(6, row), p.status);
        assert_eq!(
            b.column(7)
                .as_string::<i32>()
                .is_valid(row)
                .then(|| text(7, row))
                .as_deref(),
            outcome
        );
        assert_eq!(
            b.column(8).as_string::<i32>().is_valid(row),
            outcome.is_some()
        );
        let nanos = p.created_at.timestamp_nanos_opt().unwrap();
        assert_eq!(b.column(9).as_primitive::<Int64Type>().value(row), nanos);
        assert_eq!(
            b.column(10).as_primitive::<Int64Type>().value(row),
            nanos / 1000
        );
        let token = std::str::from_utf8(b.column(11).as_binary::<i32>().value(row)).unwrap();
        assert_eq!(
            key.decrypt(token).unwrap(),
            p.user_id.to_string().as_bytes()
        );
    }
}

#[tokio::test]
async fn re_exporting_a_day_replaces_its_file_whole() {
    let s = setup().await;
    let first = payment(100, "EUR", "approved", at(4, 10));
    let second = payment(200, "EUR", "pending", at(4, 11));
    insert(&s.pool, &first, 0).await;
    insert(&s.pool, &second, 0).await;
    let range = ["--from", "2026-11-04", "--to", "2026-11-04"];
    ok(s.export(&range));

    sqlx::query("UPDATE payments SET status = 'captured' WHERE id = $1")
        .bind(first.id)
        .execute(&s.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM payment_events WHERE payment_id = $1")
        .bind(second.id)
        .execute(&s.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM payments WHERE id = $1")
        .bind(second.id)
        .execute(&s.pool)
        .await
        .unwrap();
    // A temporary file of an interrupted export is cleaned up, never read.
    let leftover = s
        .day_file("2026-11-04")
        .with_file_name(".payments.parquet.tmp-dead");
    std::fs::write(&leftover, b"partial").unwrap();
    ok(s.export(&range));

    let entries: Vec<_> = std::fs::read_dir(s.day_file("2026-11-04").parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(entries, ["payments.parquet"]);
    let batches = query(Path::new(&s.out()), "SELECT status FROM t").await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    assert_eq!(batches[0].column(0).as_string::<i32>().value(0), "captured");

    // A day that has no payments any more loses its file.
    sqlx::raw_sql("DELETE FROM payment_events; DELETE FROM outbox; DELETE FROM payments")
        .execute(&s.pool)
        .await
        .unwrap();
    ok(s.export(&range));
    assert!(!s.day_file("2026-11-04").exists());
}

#[tokio::test]
async fn a_failure_in_the_middle_of_a_day_leaves_its_file_as_it_was() {
    let s = setup().await;
    insert(&s.pool, &payment(100, "EUR", "approved", at(4, 10)), 0).await;
    insert(&s.pool, &payment(200, "USD", "approved", at(5, 10)), 0).await;
    let range = ["--from", "2026-11-04", "--to", "2026-11-05"];
    ok(s.export(&range));
    let before = std::fs::read(s.day_file("2026-11-05")).unwrap();

    // A row the export refuses (XXX has no minor unit), after a good one of the same day.
    insert(&s.pool, &payment(300, "USD", "approved", at(5, 11)), 0).await;
    insert(&s.pool, &payment(400, "XXX", "approved", at(5, 12)), 0).await;
    fails_with(s.export(&range), "payment currency");

    assert_eq!(std::fs::read(s.day_file("2026-11-05")).unwrap(), before);
    let batches = query(Path::new(&s.out()), "SELECT amount_minor FROM t").await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
}

#[tokio::test]
async fn without_a_range_only_days_changed_since_the_watermark_are_exported() {
    let s = setup().await;
    let old = payment(100, "USD", "approved", at(6, 10));
    let changing = payment(300, "USD", "approved", at(7, 10));
    insert(&s.pool, &old, 48).await;
    insert(&s.pool, &changing, 48).await;
    ok(s.export(&[]));
    assert!(Path::new(&s.out()).join("_watermark.json").exists());
    let inode = |day: &str| std::fs::metadata(s.day_file(day)).unwrap().ino();
    let (old_inode, changing_inode) = (inode("2026-11-06"), inode("2026-11-07"));

    sqlx::query("UPDATE payments SET status = 'captured', updated_at = now() WHERE id = $1")
        .bind(changing.id)
        .execute(&s.pool)
        .await
        .unwrap();
    ok(s.export(&[]));
    assert_eq!(
        inode("2026-11-06"),
        old_inode,
        "an unchanged day is not rewritten"
    );
    assert_ne!(
        inode("2026-11-07"),
        changing_inode,
        "a changed day is replaced"
    );
    let batches = query(
        Path::new(&s.out()),
        &format!("SELECT status FROM t WHERE payment_id = '{}'", changing.id),
    )
    .await;
    assert_eq!(batches[0].column(0).as_string::<i32>().value(0), "captured");
}

/// `--retain-days N` keeps today and the N - 1 days before: older day folders go (even ones an
/// earlier export without retention wrote), are not exported again, and nothing else in the
/// folder is touched.
#[tokio::test]
async fn retention_deletes_old_days_and_does_not_export_them_again() {
    let s = setup().await;
    let now = Utc::now();
    let day = |ago: i64| {
        (now - chrono::TimeDelta::days(ago))
            .date_naive()
            .to_string()
    };
    for ago in [0, 2, 3, 10] {
        let created = now - chrono::TimeDelta::days(ago);
        insert(&s.pool, &payment(100, "USD", "approved", created), 0).await;
    }
    ok(s.export(&[]));
    for ago in [0, 2, 3, 10] {
        assert!(s.day_file(&day(ago)).exists(), "{ago} days ago");
    }
    let other = Path::new(&s.out()).join("notes");
    std::fs::create_dir(&other).unwrap();

    let output = s.export(&["--retain-days", "3"]);
    assert!(common::stderr(&output).contains("retention: deleted 2 day folders"));
    ok(output);
    assert!(s.day_file(&day(0)).exists());
    assert!(s.day_file(&day(2)).exists());
    for ago in [3, 10] {
        assert!(
            !Path::new(&s.out())
                .join(format!("day={}", day(ago)))
                .exists(),
            "{ago} days ago is past retention"
        );
    }
    assert!(other.exists(), "a folder that is not a day is left alone");

    // A backfill asking for an expired day writes nothing for it.
    ok(s.export(&["--from", &day(10), "--to", &day(0), "--retain-days", "3"]));
    assert!(!s.day_file(&day(10)).exists());
    assert!(s.day_file(&day(0)).exists());

    // A usage error: clap's exit status 2, with the option named.
    let output = s.export(&["--retain-days", "0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(common::stderr(&output).contains("--retain-days"));
}

#[tokio::test]
async fn bad_keys_and_unreachable_databases_fail_clearly() {
    let s = setup().await;
    let out = s.out();
    fails_with(
        feed(&["export", "--out", &out], &[("DATABASE_URL", &s.db.url)]),
        "no Fernet key",
    );
    let bad = s.dir.path().join("bad-key");
    std::fs::write(&bad, "hunter2").unwrap();
    let output = feed(
        &["export", "--out", &out, "--key-file", bad.to_str().unwrap()],
        &[("DATABASE_URL", &s.db.url)],
    );
    assert!(
        !common::stderr(&output).contains("hunter2"),
        "the key is never echoed"
    );
    fails_with(output, "not a Fernet key");
    // The key may come from the environment too; an empty table is a valid export.
    let output = feed(
        &["export", "--out", &out],
        &[("DATABASE_URL", &s.db.url), ("PAYSYS_FEED_KEY", &s.key)],
    );
    assert!(common::stderr(&output).contains("exported 0 payments"));
    ok(output);
    let port = paysys_testkit::free_port();
    fails_with(
        feed(
            &["export", "--out", &out],
            &[
                (
                    "DATABASE_URL",
                    &format!("postgres://postgres@127.0.0.1:{port}/x"),
                ),
                ("PAYSYS_FEED_KEY", &s.key),
            ],
        ),
        "cannot connect to PostgreSQL",
    );
    fails_with(
        s.export(&["--from", "2026-11-05", "--to", "2026-11-01"]),
        "is after",
    );
}

/// Tokens in the exported files decrypt with Python's `cryptography`, read with `pyarrow`.
#[tokio::test]
async fn exported_tokens_decrypt_with_python_cryptography() {
    let Some(python) = common::python() else {
        return;
    };
    let s = setup().await;
    let mut users = Vec::new();
    for hour in 0..3 {
        let p = payment(100 + hour as i64, "USD", "pending", at(8, hour));
        users.push(p.user_id.to_string());
        insert(&s.pool, &p, 0).await;
    }
    ok(s.export(&["--from", "2026-11-08", "--to", "2026-11-08"]));
    let decrypted = common::run_python(
        &python,
        "import sys, pyarrow.parquet as pq\n\
         from cryptography.fernet import Fernet\n\
         key = Fernet(open(sys.argv[1], 'rb').read().strip())\n\
         table = pq.read_table(sys.argv[2]).sort_by('date')\n\
         for token in table.column('encoded_user_id').to_pylist():\n\
         \x20   print(key.decrypt(token).decode())\n",
        &[
            s.dir.path().join("key").to_str().unwrap(),
            s.day_file("2026-11-08").to_str().unwrap(),
        ],
    );
    assert_eq!(decrypted.lines().collect::<Vec<_>>(), users);
}

/// The risk model's columns: a decided, disputed payment carries its dispute, the rules'
/// outcome, the feature values bit for bit, and the model's and shadow's scores; a pending
/// one has them all NULL. The file's schema is the contract's.
#[tokio::test]
async fn the_risk_model_columns_are_exported_exactly() {
    let s = setup().await;
    let decided = payment(7050, "USD", "approved", at(2, 9));
    let pending = payment(100, "USD", "pending", at(2, 10));
    insert(&s.pool, &decided, 0).await;
    insert(&s.pool, &pending, 0).await;
    let features = vec![7050.0, 7050f64.ln_1p(), 0.1 + 0.2, -0.0, 1e300, 1.0 / 3.0];
    sqlx::query(
        "UPDATE payments SET
            decision = decision || jsonb_build_object(
                'rules_outcome', 'declined',
                'model', '{\"version\": \"m-1\", \"score\": 0.30000000000000004, \"threshold\": 0.8}'::jsonb,
                'shadow', '{\"version\": \"m-2\", \"score\": 0.1, \"threshold\": 0.5}'::jsonb),
            decision_features_version = 'payment-features/1', decision_features = $2,
            dispute_reason = 'fraudulent', disputed_at = '2026-11-20T08:00:00.25Z'
         WHERE id = $1",
    )
    .bind(decided.id)
    .bind(&features)
    .execute(&s.pool)
    .await
    .unwrap();
    ok(s.export(&["--from", "2026-11-02", "--to", "2026-11-02"]));

    let batches = query(
        Path::new(&s.out()),
        "SELECT payment_id, CAST(disputed_at AS BIGINT) AS disputed, dispute_reason,
                rules_outcome, features_version, features, model_version, model_score,
                model_threshold, shadow_model_version, shadow_score
         FROM t ORDER BY created_at",
    )
    .await;
    let b = &batches[0];
    assert_eq!(b.num_rows(), 2);
    let text = |c: usize, r: usize| {
        let column = b.column(c).as_string::<i32>();
        column.is_valid(r).then(|| column.value(r).to_owned())
    };
    let float = |c: usize, r: usize| {
        let column = b
            .column(c)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        column.is_valid(r).then(|| column.value(r))
    };
    assert_eq!(text(0, 0).unwrap(), decided.id.to_string());
    let disputed = at(20, 8).timestamp_micros() + 250_000;
    assert_eq!(b.column(1).as_primitive::<Int64Type>().value(0), disputed);
    assert_eq!(text(2, 0).as_deref(), Some("fraudulent"));
    assert_eq!(text(3, 0).as_deref(), Some("declined"));
    assert_eq!(text(4, 0).as_deref(), Some("payment-features/1"));
    let list = b.column(5).as_list::<i32>();
    let exported = list.value(0);
    let exported = exported.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
    assert_eq!(
        exported
            .values()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        features.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "bit for bit"
    );
    assert_eq!(text(6, 0).as_deref(), Some("m-1"));
    assert_eq!(float(7, 0), Some(0.1 + 0.2));
    assert_eq!(float(8, 0), Some(0.8));
    assert_eq!(text(9, 0).as_deref(), Some("m-2"));
    assert_eq!(float(10, 0), Some(0.1));
    // The pending payment: every risk-model column is NULL.
    assert!(b.column(1).is_null(1));
    for c in [2, 3, 4, 6, 9] {
        assert_eq!(text(c, 1), None, "column {c}");
    }
    assert!(list.is_null(1));
    for c in [7, 8, 10] {
        assert_eq!(float(c, 1), None, "column {c}");
    }

    // The contract's names and types, straight from the file.
    let file = std::fs::File::open(s.day_file("2026-11-02")).unwrap();
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap();
    let schema = reader.schema();
    use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
    let utc_us = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let list_of_doubles = DataType::List(std::sync::Arc::new(Field::new(
        "item",
        DataType::Float64,
        false,
    )));
    for (name, data_type) in [
        ("disputed_at", utc_us),
        ("dispute_reason", DataType::Utf8),
        ("rules_outcome", DataType::Utf8),
        ("features_version", DataType::Utf8),
        ("features", list_of_doubles),
        ("model_version", DataType::Utf8),
        ("model_score", DataType::Float64),
        ("model_threshold", DataType::Float64),
        ("shadow_model_version", DataType::Utf8),
        ("shadow_score", DataType::Float64),
    ] {
        let field = schema.field_with_name(name).unwrap();
        assert_eq!(field.data_type(), &data_type, "{name}");
        assert!(field.is_nullable(), "{name}");
    }
}

/// Refunds: `refunded_amount_minor` is the sum of the payment's refunds (0 without any), next
/// to its refund status.
#[tokio::test]
async fn refunded_amounts_are_exported_exactly() {
    let s = setup().await;
    let refunded = payment(7050, "USD", "captured", at(2, 9));
    let untouched = payment(100, "USD", "captured", at(2, 10));
    insert(&s.pool, &refunded, 0).await;
    insert(&s.pool, &untouched, 0).await;
    sqlx::query(
        "UPDATE payments SET status = 'partially_refunded', refunded_minor = 2051 WHERE id = $1",
    )
    .bind(refunded.id)
    .execute(&s.pool)
    .await
    .unwrap();
    ok(s.export(&["--from", "2026-11-02", "--to", "2026-11-02"]));

    let batches = query(
        Path::new(&s.out()),
        "SELECT status, refunded_amount_minor FROM t ORDER BY created_at",
    )
    .await;
    let b = &batches[0];
    assert_eq!(b.num_rows(), 2);
    let status = b.column(0).as_string::<i32>();
    let refunded_minor = b.column(1).as_primitive::<Int64Type>();
    assert_eq!(
        (status.value(0), refunded_minor.value(0)),
        ("partially_refunded", 2051)
    );
    assert_eq!((status.value(1), refunded_minor.value(1)), ("captured", 0));
    assert!(!b.schema().field(1).is_nullable());
}
