//! The payment states as the database sees them: the `payments.status` CHECK constraint and
//! `PaymentStatus` must list the same states (a state added to one only fails here, not at
//! compile time), and each state round-trips through the column.

use std::collections::BTreeSet;
use std::time::Duration;

use payments_api::store::MIGRATOR;
use payments_api::store::payments::{Insert, UNDECIDED, insert_many};
use payments_api::validation::parse_new_payment;
use paysys_core::PaymentStatus;
use paysys_testkit::TestDb;
use rust_decimal::Decimal;
use sqlx::PgPool;

use crate::harness::*;

async fn migrated() -> PgPool {
    let pool = TestDb::create().await.pool().await;
    MIGRATOR.run(&pool).await.expect("migrations apply");
    pool
}

async fn insert(pool: &PgPool, count: usize) -> Vec<uuid::Uuid> {
    let rows: Vec<Insert> = (0..count)
        .map(|_| Insert {
            id: uuid::Uuid::now_v7(),
            principal: "alice".into(),
            payment: parse_new_payment(demo_payment().to_string().as_bytes(), Decimal::from(1000))
                .unwrap(),
        })
        .collect();
    let mut conn = pool.acquire().await.unwrap();
    insert_many(&mut conn, &rows, Duration::from_secs(60))
        .await
        .unwrap();
    rows.into_iter().map(|row| row.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_check_lists_exactly_the_enum() {
    let pool = migrated().await;
    // The CHECK as PostgreSQL keeps it: `CHECK ((status = ANY (ARRAY['pending'::text, ...])))`.
    let definition: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint
         WHERE conrelid = 'payments'::regclass AND conname = 'payments_status_check'",
    )
    .fetch_one(&pool)
    .await
    .expect("payments_status_check exists");
    let in_check: BTreeSet<&str> = definition.split('\'').skip(1).step_by(2).collect();
    let in_enum: BTreeSet<&str> = PaymentStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        in_check, in_enum,
        "the payments.status CHECK ({definition}) and PaymentStatus disagree: add a migration \
         (docs/architecture.md, \"How to add a payment state\")"
    );

    // Every state is stored and read back as itself; anything else is refused by the database.
    let id = insert(&pool, 1).await[0];
    for &status in PaymentStatus::ALL {
        let stored: PaymentStatus =
            sqlx::query_scalar("UPDATE payments SET status = $2 WHERE id = $1 RETURNING status")
                .bind(id)
                .bind(status)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(stored, status);
    }
    let error = sqlx::query("UPDATE payments SET status = 'settled' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap_err();
    assert_eq!(
        error.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("23514"),
        "{error}"
    );
}

/// `store::payments::undecided` binds the status; PostgreSQL must still answer it from the
/// partial index `payments_undecided` (`WHERE status = 'pending'`), also once the prepared
/// statement has run often enough for the planner to consider a generic plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecided_uses_the_partial_index() {
    let pool = migrated().await;
    insert(&pool, 2000).await;
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("UPDATE payments SET status = 'approved' WHERE id NOT IN (SELECT id FROM payments ORDER BY id LIMIT 3)")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("ANALYZE payments")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PREPARE undecided(text) AS {UNDECIDED}"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    for _ in 0..10 {
        let (count, _): (i64, f64) = sqlx::query_as("EXECUTE undecided('pending')")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(count, 3);
    }
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE undecided('pending')")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("payments_undecided"), "{plan}");
}
