use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

async fn post_keyed(api: &TestApi, auth: &str, key: &str, body: &serde_json::Value) -> Reply {
    api.request(
        Method::POST,
        "/payments",
        Some(auth),
        &[("idempotency-key", key)],
        Some(body.to_string().into_bytes()),
    )
    .await
}

async fn payment_count(api: &TestApi) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&api.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_replays_the_first_response() {
    let api = TestApi::start().await;
    let first = post_keyed(&api, ALICE, "order-1", &demo_payment()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    // Same request, reformatted: still the same request.
    let reformatted = serde_json::to_string_pretty(&demo_payment()).unwrap();
    let retry = api
        .request(
            Method::POST,
            "/payments",
            Some(ALICE),
            &[("idempotency-key", "order-1")],
            Some(reformatted.into_bytes()),
        )
        .await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(payment_count(&api).await, 1);

    // Keys are scoped to the caller: bob's "order-1" is his own.
    let bobs = post_keyed(&api, BOB, "order-1", &demo_payment()).await;
    assert_eq!(bobs.status, StatusCode::CREATED);
    assert_ne!(bobs.body["PaymentId"], first.body["PaymentId"]);
    assert_eq!(payment_count(&api).await, 2);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_with_another_body_is_refused() {
    let api = TestApi::start().await;
    assert_eq!(
        post_keyed(&api, ALICE, "k-2", &demo_payment()).await.status,
        StatusCode::CREATED
    );
    let mut other = demo_payment();
    other["amount"] = json!(99);
    let reply = post_keyed(&api, ALICE, "k-2", &other).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["status"], 422);
    assert_eq!(payment_count(&api).await, 1);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_flight_answers_409() {
    let api = TestApi::start().await;
    // Hold the key's lock from another session, as a concurrent request would.
    let mut holder = api.pool.begin().await.unwrap();
    let locked: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtextextended($1 || E'\\n' || $2, 0))",
    )
    .bind("alice")
    .bind("busy-key")
    .fetch_one(&mut *holder)
    .await
    .unwrap();
    assert!(locked);
    let reply = post_keyed(&api, ALICE, "busy-key", &demo_payment()).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap()
            .contains("in progress")
    );
    holder.rollback().await.unwrap();
    assert_eq!(
        post_keyed(&api, ALICE, "busy-key", &demo_payment())
            .await
            .status,
        StatusCode::CREATED
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_create_one_payment() {
    let api = TestApi::start().await;
    let body = demo_payment();
    let attempts =
        futures::future::join_all((0..8).map(|_| post_keyed(&api, ALICE, "race", &body))).await;
    let created: Vec<_> = attempts
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert!(!created.is_empty());
    for reply in &attempts {
        assert!(
            matches!(reply.status, StatusCode::CREATED | StatusCode::CONFLICT),
            "{}",
            reply.status
        );
    }
    let ids: std::collections::HashSet<_> = created
        .iter()
        .map(|r| r.body["PaymentId"].clone())
        .collect();
    assert_eq!(ids.len(), 1, "every 201 names the same payment");
    assert_eq!(payment_count(&api).await, 1);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_are_idempotent_too() {
    let api = TestApi::start().await;
    let id = api.create(&demo_payment()).await;
    let path = format!("/payments/{id}/cancel");
    let cancel = |key: &'static str| {
        let path = path.clone();
        let api = &api;
        async move {
            api.request(
                Method::POST,
                &path,
                Some(ALICE),
                &[("idempotency-key", key)],
                None,
            )
            .await
        }
    };
    let first = cancel("cancel-1").await;
    assert_eq!(first.status, StatusCode::OK);
    let replay = cancel("cancel-1").await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    // A new key runs again and meets the final state.
    assert_eq!(cancel("cancel-2").await.status, StatusCode::CONFLICT);
    api.stop().await;
}
