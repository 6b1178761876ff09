//! Velocity kept as running totals: exact at the window's edges, under concurrent groups of
//! several API replicas, after the migration that builds it for existing payments, and after
//! idle payers are forgotten. Every payment is checked against the definition, computed from
//! the stored payments themselves.

use std::time::Duration;

use payments_api::store::payments::{Insert, insert_many};
use payments_api::store::velocity;
use payments_api::validation::parse_new_payment;
use payments_api::writer::PaymentWriter;
use paysys_testkit::TestDb;
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

use crate::harness::{METHOD, PAYEE};

fn payment(user: Uuid, minor: i64, currency: &str) -> Insert {
    let amount = format!("{}.{:02}", minor / 100, minor % 100);
    let body = json!({"amount": serde_json::from_str::<serde_json::Value>(&amount).unwrap(),
        "currency": currency, "userId": user, "payeeId": PAYEE, "paymentMethodId": METHOD});
    Insert {
        id: Uuid::now_v7(),
        principal: "alice".into(),
        payment: parse_new_payment(body.to_string().as_bytes(), Decimal::from(1000)).unwrap(),
    }
}

async fn migrated(db: &TestDb) -> sqlx::PgPool {
    let pool = db.pool().await;
    payments_api::store::MIGRATOR.run(&pool).await.unwrap();
    pool
}

/// Payments whose stored velocity differs from the definition: the payer's payments created
/// within `window` before it (the payment's own creation time) and ordered before it, in any
/// currency for the count and in its currency for the total. Also checks that each payer's
/// payments are numbered 0, 1, 2... and that creation times never go back in that order.
async fn wrong_velocities(pool: &sqlx::PgPool, window: Duration) -> Vec<String> {
    let wrong: Vec<(Uuid, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT p.id, p.velocity_count, p.velocity_total_minor,
                (SELECT count(*) FROM payments q WHERE q.user_id = p.user_id
                   AND q.velocity_seq < p.velocity_seq
                   AND q.created_at > p.created_at - make_interval(secs => $1)),
                (SELECT coalesce(sum(q.amount_minor), 0)::bigint FROM payments q
                   WHERE q.user_id = p.user_id AND q.currency = p.currency
                   AND q.velocity_seq < p.velocity_seq
                   AND q.created_at > p.created_at - make_interval(secs => $1))
         FROM payments p",
    )
    .bind(window.as_secs_f64())
    .fetch_all(pool)
    .await
    .unwrap();
    let mut problems: Vec<String> = wrong
        .into_iter()
        .filter(|(_, count, total, want_count, want_total)| {
            (count, total) != (want_count, want_total)
        })
        .map(|(id, count, total, want_count, want_total)| {
            format!("{id}: ({count}, {total}) instead of ({want_count}, {want_total})")
        })
        .collect();
    let numbering: Vec<(Uuid, i64, i64, i64, bool)> = sqlx::query_as(
        "SELECT user_id, count(*), count(DISTINCT velocity_seq), max(velocity_seq),
                bool_and(monotone)
         FROM (SELECT user_id, velocity_seq,
                      created_at >= coalesce(lag(created_at) OVER w, '-infinity') AS monotone
               FROM payments WINDOW w AS (PARTITION BY user_id ORDER BY velocity_seq)) s
         GROUP BY user_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for (user, n, distinct, max, monotone) in numbering {
        if n != distinct || max != n - 1 || !monotone {
            problems.push(format!(
                "payer {user}: {n} payments, {distinct} distinct numbers up to {max}, creation times monotone: {monotone}"
            ));
        }
    }
    problems
}

/// Three "replicas" (each its own pool and group-commit writers) and direct group inserts
/// write for the same few payers at once, with a 1 s window, for about 2.5 s: payments keep
/// crossing each other's window edges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn velocity_is_exact_under_concurrent_replicas_and_at_window_edges() {
    let db = TestDb::create().await;
    let pool = migrated(&db).await;
    let window = Duration::from_secs(1);
    let payers: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let mut tasks = Vec::new();
    for replica in 0..3 {
        let writer = PaymentWriter::start(db.pool().await, window);
        for client in 0..4 {
            let (writer, payers) = (writer.clone(), payers.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..120u64 {
                    let user = payers[((n + client) % 3) as usize];
                    let currency = if (n + replica) % 4 == 0 { "EUR" } else { "USD" };
                    writer
                        .insert(payment(user, 100 + n as i64, currency))
                        .await
                        .expect("insert");
                    tokio::time::sleep(Duration::from_millis(5 + (n * 7 + client) % 20)).await;
                }
            }));
        }
    }
    // A fourth writer inserting whole groups of every payer at once (as a busy replica does).
    let groups = {
        let (pool, payers) = (db.pool().await, payers.clone());
        tokio::spawn(async move {
            for n in 0..60i64 {
                let group: Vec<Insert> = (0..6)
                    .map(|i| payment(payers[(i % 3) as usize], 1000 + n, "USD"))
                    .collect();
                let mut conn = pool.acquire().await.unwrap();
                insert_many(&mut conn, &group, window).await.expect("group");
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    groups.await.unwrap();

    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, 3 * 4 * 120 + 60 * 6);
    let problems = wrong_velocities(&pool, window).await;
    assert!(
        problems.is_empty(),
        "{} wrong: {problems:#?}",
        problems.len()
    );
    // The window's edge was really exercised: payments with an earlier payment of theirs
    // within 20 ms either side of their window's start.
    let near_edge: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payments p WHERE EXISTS (
            SELECT 1 FROM payments q WHERE q.user_id = p.user_id
              AND q.created_at BETWEEN p.created_at - interval '1020 ms'
                                   AND p.created_at - interval '980 ms')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(near_edge > 50, "only {near_edge} payments near an edge");
    let counted: (i64, i64) =
        sqlx::query_as("SELECT sum(payments)::bigint, count(*) FROM velocity_payers")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(counted, (total, 3), "running counts match the payments");
}

/// The migration numbers existing payments and builds the running totals, so the first
/// payment after the upgrade already gets the exact velocity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_builds_the_aggregates_for_existing_payments() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let before = std::env::temp_dir().join(paysys_testkit::unique_name("migrations_0001"));
    std::fs::create_dir_all(&before).unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    std::fs::copy(
        format!("{dir}/0001_payments.sql"),
        before.join("0001_payments.sql"),
    )
    .unwrap();
    sqlx::migrate::Migrator::new(before.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    std::fs::remove_dir_all(&before).unwrap();

    // History written by the previous version: one payer, two currencies, over three hours.
    let user = Uuid::new_v4();
    for (minutes_ago, minor, currency) in [
        (180, 100, "USD"),
        (90, 200, "USD"),
        (50, 300, "EUR"),
        (30, 400, "USD"),
        (10, 500, "USD"),
    ] {
        sqlx::query(
            "INSERT INTO payments (id, principal, amount_minor, currency, user_id, payee_id,
                payment_method_id, status, velocity_window_seconds, velocity_count,
                velocity_total_minor, created_at)
             VALUES ($1, 'alice', $2, $3, $4, $5::uuid, $6::uuid, 'pending', 3600, 0, 0,
                     now() - make_interval(mins => $7))",
        )
        .bind(Uuid::now_v7())
        .bind(minor as i64)
        .bind(currency)
        .bind(user)
        .bind(PAYEE)
        .bind(METHOD)
        .bind(minutes_ago)
        .execute(&pool)
        .await
        .unwrap();
    }
    payments_api::store::MIGRATOR.run(&pool).await.unwrap();

    let payer: (i64,) = sqlx::query_as("SELECT payments FROM velocity_payers WHERE user_id = $1")
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(payer.0, 5);
    let new = payment(user, 1, "USD");
    let mut conn = pool.acquire().await.unwrap();
    insert_many(
        &mut conn,
        std::slice::from_ref(&new),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let velocity: (i64, i64) =
        sqlx::query_as("SELECT velocity_count, velocity_total_minor FROM payments WHERE id = $1")
            .bind(new.id)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    // Within the hour: 50, 30 and 10 minutes ago; in USD 4.00 + 5.00.
    assert_eq!(velocity, (3, 900));
    let numbered: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT velocity_seq, velocity_running_total FROM payments WHERE user_id = $1
         ORDER BY created_at",
    )
    .bind(user)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    // In creation order; running totals per currency (the third is the only EUR one).
    assert_eq!(
        numbered,
        vec![(0, 0), (1, 100), (2, 0), (3, 300), (4, 700), (5, 1200)]
    );
}

/// Payers idle for longer than the window are forgotten, and their next payment starts afresh
/// with the exact velocity (none of their old payments is inside its window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_payers_are_forgotten_and_start_afresh() {
    let db = TestDb::create().await;
    let pool = migrated(&db).await;
    let window = Duration::from_secs(3600);
    let (idle, active) = (Uuid::new_v4(), Uuid::new_v4());
    let mut conn = pool.acquire().await.unwrap();
    let group = [
        payment(idle, 100, "USD"),
        payment(idle, 200, "USD"),
        payment(active, 300, "USD"),
    ];
    insert_many(&mut conn, &group, window).await.unwrap();
    // The idle payer's payments (and its row) age by two hours.
    for statement in [
        "UPDATE payments SET created_at = created_at - interval '2 hours' WHERE user_id = $1",
        "UPDATE velocity_payers SET since = since - interval '2 hours',
                last_at = last_at - interval '2 hours' WHERE user_id = $1",
    ] {
        sqlx::query(statement)
            .bind(idle)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    assert_eq!(velocity::forget_idle(&mut conn, window).await.unwrap(), 1);
    let left: Vec<(Uuid,)> = sqlx::query_as("SELECT user_id FROM velocity_payers")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(left, vec![(active,)]);
    let totals: i64 = sqlx::query_scalar("SELECT count(*) FROM velocity_totals WHERE user_id = $1")
        .bind(idle)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(totals, 0, "the payer's totals go with it");

    let next = payment(idle, 400, "USD");
    insert_many(&mut conn, std::slice::from_ref(&next), window)
        .await
        .unwrap();
    let velocity: (i64, i64) =
        sqlx::query_as("SELECT velocity_count, velocity_total_minor FROM payments WHERE id = $1")
            .bind(next.id)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(velocity, (0, 0));
    let since: (i64, bool) = sqlx::query_as(
        "SELECT v.payments, v.since > (SELECT max(created_at) FROM payments
                                        WHERE user_id = $1 AND id <> $2)
         FROM velocity_payers v WHERE v.user_id = $1",
    )
    .bind(idle)
    .bind(next.id)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(since, (1, true), "counting restarts after the old payments");
}
