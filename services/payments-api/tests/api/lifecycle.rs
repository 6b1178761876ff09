use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_and_cancel_follow_the_status_machine() {
    let api = TestApi::start().await;
    let (_conn, channel) = api.broker.channel().await;

    // pending: capture refused with the current status; cancel allowed.
    let pending = api.create(&demo_payment()).await;
    let reply = api
        .post(
            &format!("/payments/{pending}/capture"),
            Some(ALICE),
            &json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body["currentStatus"], "pending");
    assert!(reply.body["detail"].as_str().unwrap().contains("pending"));

    // approved -> captured (with PUT, as the original demo's client did), then nothing more.
    let approved = api.create(&demo_payment()).await;
    api.publish_decision(&channel, &approved, "approved").await;
    let payment = api.wait_for_status(&approved, "approved").await;
    assert_eq!(payment["decision"]["outcome"], "approved");
    let reply = api
        .request(
            Method::PUT,
            &format!("/payments/{approved}/capture"),
            Some(ALICE),
            &[],
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["PaymentStatus"], "captured");
    let reply = api
        .post(
            &format!("/payments/{approved}/capture"),
            Some(ALICE),
            &json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body["currentStatus"], "captured");
    let reply = api
        .post(
            &format!("/payments/{approved}/cancel"),
            Some(ALICE),
            &json!({}),
        )
        .await;
    assert_eq!(reply.body["currentStatus"], "captured");

    // approved -> canceled with a reason.
    let to_cancel = api.create(&demo_payment()).await;
    api.publish_decision(&channel, &to_cancel, "approved").await;
    api.wait_for_status(&to_cancel, "approved").await;
    let reply = api
        .post(
            &format!("/payments/{to_cancel}/cancel"),
            Some(ALICE),
            &json!({"reason": "customer changed their mind"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let history = api
        .get(&format!("/payments/{to_cancel}"), Some(ALICE))
        .await
        .body["history"]
        .clone();
    let causes: Vec<_> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["cause"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(causes, vec!["created", "risk_decision", "canceled"]);
    assert_eq!(
        history[2]["detail"]["reason"],
        "customer changed their mind"
    );
    assert_eq!(history[2]["from"], "approved");

    // declined is final.
    let declined = api.create(&demo_payment()).await;
    api.publish_decision(&channel, &declined, "declined").await;
    api.wait_for_status(&declined, "declined").await;
    for action in ["capture", "cancel"] {
        let reply = api
            .post(
                &format!("/payments/{declined}/{action}"),
                Some(ALICE),
                &json!({}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{action}");
        assert_eq!(reply.body["currentStatus"], "declined");
    }

    // pending -> canceled.
    let reply = api
        .post(
            &format!("/payments/{pending}/cancel"),
            Some(ALICE),
            &json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    // Bad bodies and unknown payments.
    let reply = api
        .post(
            &format!("/payments/{pending}/cancel"),
            Some(ALICE),
            &json!({"reason": 5}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = api
        .post(
            &format!("/payments/{pending}/capture"),
            Some(ALICE),
            &json!({"amount": 5}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let unknown = uuid::Uuid::new_v4();
    let reply = api
        .post(
            &format!("/payments/{unknown}/capture"),
            Some(ALICE),
            &json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    api.broker.delete().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_captures_capture_once() {
    let api = TestApi::start().await;
    let (_conn, channel) = api.broker.channel().await;
    let id = api.create(&demo_payment()).await;
    api.publish_decision(&channel, &id, "approved").await;
    api.wait_for_status(&id, "approved").await;
    let path = format!("/payments/{id}/capture");
    let empty = json!({});
    let replies =
        futures::future::join_all((0..6).map(|_| api.post(&path, Some(ALICE), &empty))).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let conflicts = replies
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .count();
    assert_eq!((ok, conflicts), (1, 5));
    let captured_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payment_events WHERE payment_id = $1::uuid AND to_status = 'captured'",
    )
    .bind(&id)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    assert_eq!(captured_events, 1);
    api.broker.delete().await;
    api.stop().await;
}
