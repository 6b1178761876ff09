use std::collections::HashSet;

use axum::http::StatusCode;
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_walk_every_payment_newest_first() {
    let api = TestApi::start().await;
    let mut created = Vec::new();
    for i in 0..23 {
        let mut body = demo_payment();
        body["amount"] = json!(i + 1);
        created.push(api.create(&body).await);
    }
    api.create(&demo_payment()).await; // a 24th, then bob's, which alice never sees
    api.post("/payments", Some(BOB), &demo_payment()).await;
    created.push(
        api.get("/v1/payments?limit=1", Some(ALICE)).await.body["data"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );

    let mut seen = Vec::new();
    let mut path = "/v1/payments?limit=10".to_owned();
    let mut pages = 0;
    loop {
        let reply = api.get(&path, Some(ALICE)).await;
        assert_eq!(reply.status, StatusCode::OK);
        pages += 1;
        for payment in reply.body["data"].as_array().unwrap() {
            seen.push(payment["id"].as_str().unwrap().to_owned());
        }
        if reply.body["hasMore"] == json!(false) {
            assert!(reply.body["nextCursor"].is_null());
            break;
        }
        path = format!(
            "/v1/payments?limit=10&cursor={}",
            reply.body["nextCursor"].as_str().unwrap()
        );
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 24);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        24,
        "no payment twice"
    );
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let reply = api.get("/v1/payments", Some(ALICE)).await;
    assert_eq!(
        reply.body["data"].as_array().unwrap().len(),
        10,
        "default page size"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_by_status_and_user() {
    let api = TestApi::start().await;
    let other_user = uuid::Uuid::new_v4().to_string();
    let mine = api.create(&demo_payment()).await;
    let mut body = demo_payment();
    body["userId"] = json!(other_user);
    let theirs = api.create(&body).await;
    api.post(
        &format!("/payments/{theirs}/cancel"),
        Some(ALICE),
        &json!({}),
    )
    .await;

    let by_user = api
        .get(&format!("/v1/payments?userId={other_user}"), Some(ALICE))
        .await
        .body;
    assert_eq!(by_user["data"].as_array().unwrap().len(), 1);
    assert_eq!(by_user["data"][0]["id"], theirs.as_str());
    let pending = api
        .get("/v1/payments?status=pending", Some(ALICE))
        .await
        .body;
    assert_eq!(pending["data"].as_array().unwrap().len(), 1);
    assert_eq!(pending["data"][0]["id"], mine.as_str());
    let none = api
        .get(
            &format!("/v1/payments?status=pending&userId={other_user}"),
            Some(ALICE),
        )
        .await
        .body;
    assert_eq!(none["data"], json!([]));

    for bad in [
        "limit=0",
        "limit=101",
        "limit=ten",
        "status=done",
        "userId=me",
        "cursor=abc",
        "sort=asc",
    ] {
        let reply = api.get(&format!("/v1/payments?{bad}"), Some(ALICE)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.body["status"], 400);
    }
    api.stop().await;
}
