//! The store's group insert, exercised directly.

use std::time::Duration;

use payments_api::store::payments::{Insert, insert_many};
use payments_api::validation::parse_new_payment;
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
