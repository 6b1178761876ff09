//! The payer's, payee's and payment method's history sent with each payment
//! (`paysys_core::History`): exact values for a sequence of payments, and exact under
//! concurrent groups of several writers (as several API replicas write), checked against the
//! definition computed from the stored payments themselves.

use std::time::Duration;

use chrono::{DateTime, Utc};
use payments_api::store::payments::{Insert, find, insert_many};
use payments_api::validation::parse_new_payment;
use paysys_core::History;
use paysys_testkit::TestDb;
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

const WINDOW: Duration = Duration::from_secs(3600);

fn payment(user: Uuid, payee: Uuid, method: Uuid, minor: i64, currency: &str) -> Insert {
    let amount = format!("{}.{:02}", minor / 100, minor % 100);
    let body = json!({"amount": serde_json::from_str::<serde_json::Value>(&amount).unwrap(),
        "currency": currency, "userId": user, "payeeId": payee, "paymentMethodId": method});
    Insert {
        id: Uuid::now_v7(),
        principal: "alice".into(),
        payment: parse_new_payment(body.to_string().as_bytes(), Decimal::from(1000)).unwrap(),
    }
}

async fn migrated() -> (TestDb, sqlx::PgPool) {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    payments_api::store::MIGRATOR.run(&pool).await.unwrap();
    (db, pool)
}

/// Inserts `group` as one call; returns the creation times.
async fn insert(pool: &sqlx::PgPool, group: &[Insert]) -> Vec<DateTime<Utc>> {
    let mut conn = pool.acquire().await.unwrap();
    insert_many(&mut conn, group, WINDOW).await.unwrap()
}

/// The history the relay sends with the payment.
async fn history_of(pool: &sqlx::PgPool, row: &Insert) -> History {
    let mut conn = pool.acquire().await.unwrap();
    let record = find(&mut conn, "alice", row.id).await.unwrap().unwrap();
    payments_api::relay::message_for(&record)
        .history
        .expect("a payment accepted with history")
}

#[allow(clippy::too_many_arguments)]
fn history(
    payer_payment_count: u64,
    payer_first_payment_at: Option<DateTime<Utc>>,
    payer_currency_count: u64,
    payer_currency_total_minor: i64,
    new_payee: bool,
    new_payment_method: bool,
    method_payment_count: u64,
    payee_window_count: u64,
) -> History {
    History {
        payer_payment_count,
        payer_first_payment_at,
        payer_currency_count,
        payer_currency_total_minor,
        new_payee,
        new_payment_method,
        method_payment_count,
        payee_window_count,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_of_payments_gets_exact_history() {
    let (_db, pool) = migrated().await;
    let [u, v, w] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let [p1, p2, p3] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let [m1, m2, m3] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];

    // A first payment knows nothing.
    let a1 = payment(u, p1, m1, 100, "USD");
    let first = insert(&pool, std::slice::from_ref(&a1)).await[0];
    assert_eq!(
        history_of(&pool, &a1).await,
        history(0, None, 0, 0, true, true, 0, 0)
    );
    // The same payee and method again.
    let a2 = payment(u, p1, m1, 200, "USD");
    insert(&pool, std::slice::from_ref(&a2)).await;
    assert_eq!(
        history_of(&pool, &a2).await,
        history(1, Some(first), 1, 100, false, false, 1, 1)
    );
    // A new payee, a new method, another currency.
    let a3 = payment(u, p2, m2, 300, "EUR");
    insert(&pool, std::slice::from_ref(&a3)).await;
    assert_eq!(
        history_of(&pool, &a3).await,
        history(2, Some(first), 0, 0, true, true, 0, 0)
    );
    // Another payer, new to it all, of a payee and method used twice by someone else.
    let b1 = payment(v, p1, m1, 500, "USD");
    insert(&pool, std::slice::from_ref(&b1)).await;
    assert_eq!(
        history_of(&pool, &b1).await,
        history(0, None, 0, 0, true, true, 2, 2)
    );
    // The payee's first payment leaves its window.
    sqlx::query("UPDATE payments SET created_at = created_at - interval '2 hours' WHERE id = $1")
        .bind(a1.id)
        .execute(&pool)
        .await
        .unwrap();
    // A group: each payment counts the group's earlier ones.
    let group = [
        payment(u, p1, m2, 400, "USD"),
        payment(u, p1, m2, 100, "USD"),
    ];
    insert(&pool, &group).await;
    assert_eq!(
        history_of(&pool, &group[0]).await,
        history(3, Some(first), 2, 300, false, false, 1, 2)
    );
    assert_eq!(
        history_of(&pool, &group[1]).await,
        history(4, Some(first), 3, 700, false, false, 2, 3)
    );
    // A new payer's first two payments in one group: the second knows the first.
    let group = [
        payment(w, p3, m3, 100, "EUR"),
        payment(w, p3, m3, 100, "EUR"),
    ];
    let created = insert(&pool, &group).await;
    assert_eq!(
        history_of(&pool, &group[0]).await,
        history(0, None, 0, 0, true, true, 0, 0)
    );
    assert_eq!(
        history_of(&pool, &group[1]).await,
        history(1, Some(created[0]), 1, 100, false, false, 1, 1)
    );
}

/// Payments whose stored history differs from the definition, computed from the stored
/// payments: each payer's payments are ordered by `velocity_seq`, each payee's by
/// `payee_seq`; both orders must number 0, 1, 2... with creation times that never go back,
/// and each method's counts must be 0, 1, 2... (any payer).
async fn wrong_histories(pool: &sqlx::PgPool) -> Vec<String> {
    let wrong: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT p.id FROM payments p
         WHERE (p.history_payer_payment_count,
                p.history_payer_first_payment_at,
                p.history_payer_currency_count,
                p.history_payer_currency_total_minor,
                p.history_new_payee,
                p.history_new_payment_method,
                p.history_payee_window_count)
           IS DISTINCT FROM (
                (SELECT count(*) FROM payments q
                 WHERE q.user_id = p.user_id AND q.velocity_seq < p.velocity_seq),
                (SELECT min(created_at) FROM payments q
                 WHERE q.user_id = p.user_id AND q.velocity_seq < p.velocity_seq),
                (SELECT count(*) FROM payments q WHERE q.user_id = p.user_id
                   AND q.currency = p.currency AND q.velocity_seq < p.velocity_seq),
                (SELECT coalesce(sum(amount_minor), 0)::bigint FROM payments q
                 WHERE q.user_id = p.user_id AND q.currency = p.currency
                   AND q.velocity_seq < p.velocity_seq),
                NOT EXISTS (SELECT FROM payments q WHERE q.user_id = p.user_id
                   AND q.payee_id = p.payee_id AND q.velocity_seq < p.velocity_seq),
                NOT EXISTS (SELECT FROM payments q WHERE q.user_id = p.user_id
                   AND q.payment_method_id = p.payment_method_id
                   AND q.velocity_seq < p.velocity_seq),
                (SELECT count(*) FROM payments q WHERE q.payee_id = p.payee_id
                   AND q.payee_seq < p.payee_seq
                   AND q.created_at > p.created_at - make_interval(secs => $1))
           )",
    )
    .bind(WINDOW.as_secs_f64())
    .fetch_all(pool)
    .await
    .unwrap();
    let mut problems: Vec<String> = wrong
        .into_iter()
        .map(|(id,)| format!("payment {id}: history differs from the definition"))
        .collect();
    for (what, key, seq) in [
        ("payer", "user_id", "velocity_seq"),
        ("payee", "payee_id", "payee_seq"),
        (
            "method",
            "payment_method_id",
            "history_method_payment_count",
        ),
    ] {
        // Built from the fixed names above only.
        let numbered: Vec<(Uuid, i64, i64, i64, bool)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {key}, count(*), count(DISTINCT {seq}), max({seq}),
                        bool_and(created_at >= coalesce(previous, '-infinity'))
                 FROM (SELECT {key}, {seq}, created_at,
                              lag(created_at) OVER (PARTITION BY {key} ORDER BY {seq}) AS previous
                       FROM payments) t
                 GROUP BY {key}"
            )))
            .fetch_all(pool)
            .await
            .unwrap();
        for (id, n, distinct, max, monotone) in numbered {
            if distinct != n || max != n - 1 || !monotone {
                problems.push(format!(
                    "{what} {id}: {n} payments numbered {distinct} distinct up to {max}, times monotone {monotone}"
                ));
            }
        }
    }
    problems
}

/// Several writers (as several API replicas would) insert groups that share a payer, a payee
/// and a payment method, concurrently: every payment's history is still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_groups_sharing_a_payer_payee_and_method_stay_exact() {
    const WRITERS: usize = 4;
    const GROUPS: usize = 15;
    let (_db, pool) = migrated().await;
    let shared_payer = Uuid::new_v4();
    let shared_payee = Uuid::new_v4();
    let shared_method = Uuid::new_v4();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let own_payer = Uuid::new_v4();
                let own_payee = Uuid::new_v4();
                let own_method = Uuid::new_v4();
                let mut conn = pool.acquire().await.unwrap();
                for round in 0..GROUPS {
                    // Every other group has no payer in common with any other writer's: only
                    // the payee's and the method's locks keep those exact. Mixed groups, in an
                    // order that differs by writer: locks are still taken in one global
                    // order, so no two groups deadlock.
                    let mut group = vec![
                        payment(own_payer, shared_payee, own_method, 250, "USD"),
                        payment(own_payer, own_payee, shared_method, 125, "USD"),
                        payment(own_payer, shared_payee, shared_method, 75, "EUR"),
                    ];
                    if round % 2 == 0 {
                        group.extend([
                            payment(shared_payer, shared_payee, shared_method, 100, "USD"),
                            payment(shared_payer, own_payee, own_method, 300, "EUR"),
                        ]);
                    }
                    let turn = (writer + round) % group.len();
                    group.rotate_left(turn);
                    insert_many(&mut conn, &group, WINDOW).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        total,
        (WRITERS * (GROUPS * 3 + GROUPS.div_ceil(2) * 2)) as i64
    );
    assert_eq!(wrong_histories(&pool).await, Vec::<String>::new());
}

/// Payments accepted before the history existed (migration 0006) are counted in it: the
/// migration builds the running counts from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_builds_history_from_existing_payments() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    // The schema of the previous release: migrations 0001 to 0005.
    let before = std::env::temp_dir().join(paysys_testkit::unique_name("migrations_0005"));
    std::fs::create_dir_all(&before).unwrap();
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"));
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.as_str() < "0006" {
            std::fs::copy(dir.join(&name), before.join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(before.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    std::fs::remove_dir_all(&before).unwrap();
    let (u, p, m) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut conn = pool.acquire().await.unwrap();
    insert_many(&mut conn, &[payment(u, p, m, 100, "USD")], WINDOW)
        .await
        .unwrap();
    insert_many(&mut conn, &[payment(u, p, m, 200, "USD")], WINDOW)
        .await
        .unwrap();
    drop(conn);
    payments_api::store::MIGRATOR.run(&pool).await.unwrap();
    let next = payment(u, p, m, 300, "USD");
    insert(&pool, std::slice::from_ref(&next)).await;
    let first: DateTime<Utc> = sqlx::query_scalar("SELECT min(created_at) FROM payments")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        history_of(&pool, &next).await,
        history(2, Some(first), 2, 300, false, false, 2, 2)
    );
}
