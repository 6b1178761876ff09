//! The store's group insert, exercised directly.

use std::time::Duration;

use payments_api::store::payments::{Insert, insert_many};
use payments_api::validation::parse_new_payment;
use paysys_testkit::TestDb;
use rust_decimal::Decimal;
use serde_json::json;

use crate::harness::*;

fn insert(principal: &str, amount: &str, currency: &str, user: &str) -> Insert {
    let body = json!({"amount": serde_json::from_str::<serde_json::Value>(amount).unwrap(), "currency": currency,
        "userId": user, "payeeId": PAYEE, "paymentMethodId": METHOD});
    Insert {
        id: uuid::Uuid::now_v7(),
        principal: principal.into(),
        payment: parse_new_payment(body.to_string().as_bytes(), Decimal::from(1000)).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_counts_its_own_earlier_payments_in_velocity() {
    let api = TestApi::start().await;
    let other = uuid::Uuid::new_v4().to_string();
    api.create(&json!({"amount": 1, "currency": "USD", "userId": USER, "payeeId": PAYEE, "paymentMethodId": METHOD})).await;
    let group = vec![
        insert("alice", "2", "USD", USER),
        insert("alice", "3", "EUR", USER),
        insert("bob", "4", "USD", &other),
        insert("alice", "5", "USD", USER),
    ];
    let mut conn = api.pool.acquire().await.unwrap();
    let created = insert_many(&mut conn, &group, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(created.len(), 4);
    let mut velocities = Vec::new();
    for row in &group {
        let v: (i64, i64) = sqlx::query_as(
            "SELECT velocity_count, velocity_total_minor FROM payments WHERE id = $1",
        )
        .bind(row.id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        velocities.push(v);
    }
    // USER had one committed USD payment of 1.00 before the group.
    assert_eq!(velocities, vec![(1, 100), (2, 0), (0, 0), (3, 300)]);
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment_events WHERE payment_id = ANY($1)")
            .bind(group.iter().map(|row| row.id).collect::<Vec<_>>())
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(
        events, 4,
        "each payment of the group has its creation event"
    );
    drop(conn);
    api.stop().await;
}

fn decision(payment_id: uuid::Uuid, outcome: &str) -> paysys_core::DecisionMessage {
    serde_json::from_value(json!({
        "schema_version": 1, "payment_id": payment_id, "outcome": outcome, "score": 0,
        "reasons": [], "rules_version": "test", "decided_at": "2026-01-01T00:00:00Z"
    }))
    .unwrap()
}

/// One statement applies a batch of decisions, each with its own outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_decisions_is_applied_each_on_its_own_terms() {
    use payments_api::store::decisions::{Applied, apply, apply_many};
    let api = TestApi::start().await;
    let group: Vec<Insert> = (0..3).map(|_| insert("alice", "2", "USD", USER)).collect();
    let mut conn = api.pool.acquire().await.unwrap();
    insert_many(&mut conn, &group, Duration::from_secs(3600))
        .await
        .unwrap();
    let (fresh, decided, again) = (group[0].id, group[1].id, group[2].id);
    let before = [decision(decided, "approved"), decision(again, "declined")];
    for earlier in &before {
        assert_eq!(apply(&mut conn, earlier).await.unwrap(), Applied::Decided);
    }
    let unknown = uuid::Uuid::now_v7();
    let batch = [
        decision(fresh, "declined"),
        decision(unknown, "approved"),
        decision(decided, "declined"),
        before[1].clone(),
    ];
    let applied = apply_many(&mut conn, &batch).await.unwrap();
    assert_eq!(
        applied,
        vec![
            Applied::Decided,
            Applied::UnknownPayment,
            Applied::Ignored {
                current: paysys_core::PaymentStatus::Approved
            },
            Applied::Duplicate,
        ]
    );
    let events: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "SELECT payment_id, cause FROM payment_events
         WHERE cause <> 'created' AND payment_id = ANY($1) ORDER BY id",
    )
    .bind([fresh, decided, again])
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        events,
        vec![
            (decided, "risk_decision".into()),
            (again, "risk_decision".into()),
            (fresh, "risk_decision".into()),
            (decided, "risk_decision_ignored".into()),
        ],
        "a duplicate adds nothing to the trail"
    );
    drop(conn);
    api.stop().await;
}

/// Tables the payment path reads or writes on every payment, decision and relay batch.
const HOT_TABLES: [&str; 11] = [
    "payments",
    "payment_events",
    "outbox",
    "velocity_payers",
    "velocity_totals",
    "payer_history",
    "payer_currency_history",
    "payer_payees",
    "payer_methods",
    "method_history",
    "payee_history",
];

/// How many times `conn` scanned each hot table whole, as far as its session statistics
/// know: inside one transaction, the difference of two readings counts that transaction's
/// scans (the session may hold counts of earlier transactions not reported yet).
async fn seq_scans(conn: &mut sqlx::PgConnection) -> std::collections::BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT relname::text, seq_scan FROM pg_stat_xact_user_tables WHERE relname = ANY($1)",
    )
    .bind(HOT_TABLES)
    .fetch_all(conn)
    .await
    .unwrap();
    rows.into_iter().collect()
}

/// Accepting a group, relaying a batch and applying decisions reach rows by key only, even
/// with plans made while the tables were empty: a connection reuses its plans (a new
/// deployment makes them on small tables), and a plan that scans a small table whole keeps
/// scanning it once it holds millions of rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payment_path_reaches_rows_by_key_with_plans_made_on_empty_tables() {
    use payments_api::store::{decisions::apply_many, outbox};
    let pool = TestDb::create().await.pool().await;
    payments_api::store::MIGRATOR.run(&pool).await.unwrap();
    let mut planned = pool.acquire().await.unwrap();
    // Every statement of this connection is planned once, here, on empty tables.
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *planned)
        .await
        .unwrap();
    let payers: Vec<String> = (0..50).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let round = |n: usize| -> Vec<Insert> {
        (0..n)
            .map(|i| insert("alice", "2", "USD", &payers[i % payers.len()]))
            .collect()
    };
    let window = Duration::from_secs(3600);
    insert_many(&mut planned, &round(2), window).await.unwrap();
    let first = outbox::take(&mut planned, 10).await.unwrap();
    let decided: Vec<_> = first
        .iter()
        .map(|row| decision(row.id, "approved"))
        .collect();
    apply_many(&mut planned, &decided).await.unwrap();

    // The tables grow, written by another connection.
    let mut other = pool.acquire().await.unwrap();
    for _ in 0..20 {
        insert_many(&mut other, &round(100), window).await.unwrap();
    }

    // The same statements on the connection that planned them, counted in one transaction.
    sqlx::query("BEGIN").execute(&mut *planned).await.unwrap();
    let before = seq_scans(&mut planned).await;
    insert_many(&mut planned, &round(20), window).await.unwrap();
    let batch = outbox::take(&mut planned, 50).await.unwrap();
    assert_eq!(batch.len(), 50);
    let decided: Vec<_> = batch
        .iter()
        .map(|row| decision(row.id, "declined"))
        .collect();
    apply_many(&mut planned, &decided).await.unwrap();
    let after = seq_scans(&mut planned).await;
    sqlx::query("ROLLBACK")
        .execute(&mut *planned)
        .await
        .unwrap();
    let scanned: Vec<_> = after
        .into_iter()
        .filter(|(table, scans)| before.get(table).copied().unwrap_or(0) != *scans)
        .collect();
    assert_eq!(scanned, vec![], "tables scanned whole (table, scans)");
}

/// The rows each node of an executed plan (`EXPLAIN (ANALYZE, FORMAT JSON)`) handled:
/// returned over all its loops, plus those its filters removed.
fn rows_handled_per_node(plan: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    let number = |key: &str| plan.get(key).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let loops = number("Actual Loops");
    // EXPLAIN reports rows and removed rows per loop.
    let handled = loops
        * (number("Actual Rows")
            + number("Rows Removed by Filter")
            + number("Rows Removed by Join Filter"));
    let name = format!(
        "{} {}",
        plan["Node Type"].as_str().unwrap_or("?"),
        plan.get("CTE Name")
            .or(plan.get("Relation Name"))
            .and_then(|v| v.as_str())
            .unwrap_or("")
    );
    out.push((name, handled));
    for child in plan["Plans"].as_array().into_iter().flatten() {
        rows_handled_per_node(child, out);
    }
}

/// Applying a batch of decisions costs in proportion to its size: no node of its plan
/// handles more than a few rows per decision. The plan is made once the tables hold rows,
/// most of them decided, as in service. (A plan that joined two of the statement's own lists
/// by a nested loop handled every decision once per decision: a batch of 128, common once a
/// backlog forms, cost as much as 1,600 decisions. It took about 20,000 payments in the
/// table for the planner to choose it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_decisions_costs_in_proportion_to_the_batch() {
    const BATCH: usize = 200;
    const PAYMENTS: usize = 20_000;
    let pool = TestDb::create().await.pool().await;
    payments_api::store::MIGRATOR.run(&pool).await.unwrap();
    let mut other = pool.acquire().await.unwrap();
    let mut newest = Vec::new();
    for _ in 0..PAYMENTS / 1000 {
        let group: Vec<Insert> = (0..1000)
            .map(|_| insert("alice", "2", "USD", &uuid::Uuid::new_v4().to_string()))
            .collect();
        insert_many(&mut other, &group, Duration::from_secs(3600))
            .await
            .unwrap();
        newest = group.iter().map(|row| row.id).collect();
    }
    let pending = &newest[newest.len() - BATCH..];
    sqlx::query(
        "UPDATE payments SET status = CASE WHEN random() < 0.7 THEN 'approved' ELSE 'declined' END
         WHERE id <> ALL($1)",
    )
    .bind(pending)
    .execute(&mut *other)
    .await
    .unwrap();
    // As autovacuum would have by now: the planner knows the tables' sizes and contents.
    sqlx::query("ANALYZE").execute(&mut *other).await.unwrap();

    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    prepare_apply(&mut conn, "apply_plan").await;
    let ids: Vec<String> = pending.iter().map(|id| id.to_string()).collect();
    let explain = format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE apply_plan('{{{}}}',
            array_fill('approved'::text, ARRAY[{BATCH}]),
            array_fill('{{\"outcome\": \"approved\"}}'::jsonb, ARRAY[{BATCH}]), 'pending',
            array_fill('payment-features/1'::text, ARRAY[{BATCH}]),
            array_fill('{{1.5,2,3}}'::text, ARRAY[{BATCH}]))",
        ids.join(",")
    );
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    let (plan,): (serde_json::Value,) = sqlx::query_as(sqlx::AssertSqlSafe(explain))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();

    let mut nodes = Vec::new();
    rows_handled_per_node(&plan[0]["Plan"], &mut nodes);
    assert!(
        nodes
            .iter()
            .any(|(name, rows)| name == "ModifyTable payments" && *rows == BATCH as f64),
        "every payment of the batch was updated: {nodes:?}"
    );
    let too_many: Vec<_> = nodes
        .into_iter()
        .filter(|(_, rows)| *rows > (4 * BATCH) as f64)
        .collect();
    assert_eq!(
        too_many,
        vec![],
        "nodes handling more than 4 rows per decision (node, rows), {BATCH} decisions"
    );
}

/// Prepares `store::decisions::APPLY` as `name` and runs it once (on no decisions), which
/// makes and keeps its generic plan on the tables as they are now.
async fn prepare_apply(conn: &mut sqlx::PgConnection, name: &str) {
    use payments_api::store::decisions::APPLY;
    // Built from the constant and a fixed name only.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PREPARE {name}(uuid[], text[], jsonb[], text, text[], text[]) AS {APPLY};
         EXECUTE {name}('{{}}', '{{}}', '{{}}', 'pending', '{{}}', '{{}}')"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
}
