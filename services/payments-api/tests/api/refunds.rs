//! Refunds: full and partial, their refusals, idempotency, and their sum under concurrency.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

/// A captured demo payment (70.50 USD) of alice's.
async fn captured(api: &TestApi, channel: &lapin::Channel) -> String {
    let id = api.create(&demo_payment()).await;
    api.publish_decision(channel, &id, "approved").await;
    api.wait_for_status(&id, "approved").await;
    let reply = api
        .post(&format!("/payments/{id}/capture"), Some(ALICE), &json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    id
}

async fn refund(api: &TestApi, id: &str, body: &Value) -> Reply {
    api.post(&format!("/v1/payments/{id}/refunds"), Some(ALICE), body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_in_parts_then_whole_and_their_refusals() {
    let api = TestApi::start().await;
    let (_conn, channel) = api.broker.channel().await;
    let id = captured(&api, &channel).await;

    // A part: the payment becomes partially refunded.
    let reply = refund(&api, &id, &json!({"amount": 20.5})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["amount"].to_string(), "20.5");
    assert_eq!(reply.body["amountMinor"], 2050);
    assert_eq!(reply.body["currency"], "USD");
    assert_eq!(reply.body["paymentId"], id.as_str());
    assert_eq!(reply.body["paymentStatus"], "partially_refunded");
    assert_eq!(reply.body["paymentRefundedAmountMinor"], 2050);
    assert_eq!(
        reply.headers["location"],
        format!("/v1/payments/{id}").as_str()
    );
    let first = reply.body["id"].as_str().unwrap().to_owned();

    // Bad amounts: 400 naming the field, nothing recorded.
    for bad in [
        json!({"amount": 0.001}),
        json!({"amount": -1}),
        json!({"amount": "5"}),
    ] {
        let reply = refund(&api, &id, &bad).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.body
        );
        assert_eq!(reply.body["errors"][0]["field"], "amount", "{bad}");
    }
    let reply = refund(&api, &id, &json!({"amount": 1, "reason": "x"})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // More than is left: 409 naming what is left.
    let reply = refund(&api, &id, &json!({"amount": 50.01})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    let message = reply.body["detail"].as_str().unwrap();
    assert!(message.contains("50 USD left"), "{message}");
    assert_eq!(reply.body["code"], "refund_exceeds_amount_left");
    assert_eq!(reply.body["amountLeft"].to_string(), "50");
    assert_eq!(reply.body["amountLeftMinor"], 5000);

    // Without an amount: all that is left; then nothing more.
    let reply = api
        .request(
            Method::POST,
            &format!("/v1/payments/{id}/refunds"),
            Some(ALICE),
            &[],
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["amountMinor"], 5000);
    assert_eq!(reply.body["paymentStatus"], "refunded");
    let reply = refund(&api, &id, &json!({"amount": 0.01})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body["currentStatus"], "refunded");

    // The payment shows its refunds and their sum; the trail has each.
    let payment = api
        .get(&format!("/v1/payments/{id}"), Some(ALICE))
        .await
        .body;
    assert_eq!(payment["status"], "refunded");
    assert_eq!(payment["refundedAmount"].to_string(), "70.5");
    assert_eq!(payment["refundedAmountMinor"], 7050);
    let refunds = payment["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 2);
    assert_eq!(refunds[0]["id"], first.as_str());
    assert_eq!(refunds[1]["amount"].to_string(), "50");
    let history = payment["history"].as_array().unwrap();
    let trail: Vec<(&Value, &Value, &Value)> = history
        .iter()
        .map(|e| (&e["from"], &e["to"], &e["cause"]))
        .skip(3)
        .collect();
    assert_eq!(
        trail,
        vec![
            (
                &json!("captured"),
                &json!("partially_refunded"),
                &json!("refunded")
            ),
            (
                &json!("partially_refunded"),
                &json!("refunded"),
                &json!("refunded")
            ),
        ]
    );
    assert_eq!(history[3]["detail"]["refundId"], first.as_str());
    assert_eq!(history[3]["detail"]["amountMinor"], 2050);

    // Only captured payments; only the owner's.
    let approved = api.create(&demo_payment()).await;
    api.publish_decision(&channel, &approved, "approved").await;
    api.wait_for_status(&approved, "approved").await;
    let reply = refund(&api, &approved, &json!({})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body["currentStatus"], "approved");
    let other = captured(&api, &channel).await;
    let reply = api
        .post(
            &format!("/v1/payments/{other}/refunds"),
            Some(BOB),
            &json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = refund(&api, &uuid::Uuid::now_v7().to_string(), &json!({})).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    api.broker.delete().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_refund_is_recorded_once() {
    let api = TestApi::start().await;
    let (_conn, channel) = api.broker.channel().await;
    let id = captured(&api, &channel).await;
    let path = format!("/v1/payments/{id}/refunds");
    let body = json!({"amount": 10}).to_string().into_bytes();
    let key = [("idempotency-key", "refund-once")];
    let first = api
        .request(Method::POST, &path, Some(ALICE), &key, Some(body.clone()))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = api
        .request(Method::POST, &path, Some(ALICE), &key, Some(body))
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body);
    let other = json!({"amount": 11}).to_string().into_bytes();
    let mismatch = api
        .request(Method::POST, &path, Some(ALICE), &key, Some(other))
        .await;
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);
    let refunded = sqlx::query_scalar!(
        "SELECT refunded_minor FROM payments WHERE id = $1",
        uuid::Uuid::parse_str(&id).unwrap()
    )
    .fetch_one(&api.pool)
    .await
    .unwrap();
    assert_eq!(refunded, 1000);
    api.broker.delete().await;
    api.stop().await;
}

/// Many refunds of the same payment at once, through HTTP and a pool large enough for all of
/// them to hold a connection: those that fit are recorded, the others refused with 409, and
/// the sum never exceeds the captured amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_refunds_never_exceed_the_captured_amount() {
    let api =
        TestApi::start_with(&[("DB_MAX_CONNECTIONS", "24"), ("RATE_LIMIT_PER_SECOND", "0")]).await;
    let (_conn, channel) = api.broker.channel().await;
    let id = captured(&api, &channel).await;
    // 40 × 3.00 asked of 70.50: 23 fit (69.00), 17 cannot.
    let path = format!("/v1/payments/{id}/refunds");
    let body = json!({"amount": 3});
    let replies =
        futures::future::join_all((0..40).map(|_| api.post(&path, Some(ALICE), &body))).await;
    let created = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    let refused: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .collect();
    assert_eq!((created, refused.len()), (23, 17));
    for reply in &refused {
        let message = reply.body["detail"].as_str().unwrap();
        assert!(message.contains("1.5 USD left"), "{message}");
    }
    let payment_id = uuid::Uuid::parse_str(&id).unwrap();
    let (refunds, sum) = sqlx::query!(
        r#"SELECT count(*) AS "count!", coalesce(sum(amount_minor), 0)::bigint AS "sum!"
           FROM refunds WHERE payment_id = $1"#,
        payment_id
    )
    .fetch_one(&api.pool)
    .await
    .map(|row| (row.count, row.sum))
    .unwrap();
    assert_eq!((refunds, sum), (23, 6900));
    let row = sqlx::query!(
        "SELECT refunded_minor, status FROM payments WHERE id = $1",
        payment_id
    )
    .fetch_one(&api.pool)
    .await
    .unwrap();
    assert_eq!(
        (row.refunded_minor, row.status.as_str()),
        (6900, "partially_refunded")
    );
    let events = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM payment_events
           WHERE payment_id = $1 AND cause = 'refunded'"#,
        payment_id
    )
    .fetch_one(&api.pool)
    .await
    .unwrap();
    assert_eq!(events, 23);
    api.broker.delete().await;
    api.stop().await;
}
