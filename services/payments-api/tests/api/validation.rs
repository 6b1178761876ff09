use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

fn field_errors(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no Errors in {body}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_field_gets_a_400_naming_it() {
    let api = TestApi::start_with(&[("MAX_AMOUNT", "50000")]).await;
    let cases: Vec<(&str, Value)> = vec![
        ("amount", json!(0)),
        ("amount", json!(-5)),
        ("amount", json!("70.5")),
        ("amount", json!(70.555)),
        ("amount", json!(50000.01)),
        ("amount", Value::Null),
        ("currency", json!("ZZZ")),
        ("currency", json!("usd")),
        ("currency", json!(1)),
        ("userId", json!("not-a-uuid")),
        ("payeeId", json!(12)),
        ("paymentMethodId", json!("")),
    ];
    for (field, value) in cases {
        let mut body = demo_payment();
        body[field] = value.clone();
        let reply = api.post("/payments", Some(ALICE), &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{field}={value}");
        assert_eq!(reply.body["status"], 400);
        assert_eq!(reply.body["title"], "The request has invalid fields");
        assert_eq!(
            field_errors(&reply.body),
            vec![field],
            "{field}={value}: {}",
            reply.body
        );
    }

    let mut missing = demo_payment();
    missing.as_object_mut().unwrap().remove("payeeId");
    missing["extra"] = json!(1);
    let reply = api.post("/payments", Some(ALICE), &missing).await;
    let mut fields = field_errors(&reply.body);
    fields.sort();
    assert_eq!(fields, vec!["extra", "payeeId"]);

    let jpy = json!({"amount": 100.5, "currency": "JPY", "userId": USER, "payeeId": PAYEE, "paymentMethodId": METHOD});
    let reply = api.post("/payments", Some(ALICE), &jpy).await;
    assert_eq!(field_errors(&reply.body), vec!["amount"]);

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing invalid is stored");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors_never_5xx() {
    let api = TestApi::start().await;
    let post = |body: &'static [u8], headers: &'static [(&'static str, &'static str)]| {
        api.request(
            Method::POST,
            "/payments",
            Some(ALICE),
            headers,
            Some(body.to_vec()),
        )
    };
    let reply = post(b"{\"amount\": 70.5,", &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(field_errors(&reply.body), vec!["body"]);

    let reply = post(b"[1, 2]", &[]).await;
    assert_eq!(field_errors(&reply.body), vec!["body"]);

    let reply = post(
        b"amount=70.5",
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reply.body["status"], 415);

    let huge = format!("{{\"amount\": 1, \"pad\": \"{}\"}}", "x".repeat(20_000));
    let reply = api
        .request(
            Method::POST,
            "/payments",
            Some(ALICE),
            &[],
            Some(huge.into_bytes()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.body["status"], 413);

    let reply = api.get("/nowhere", Some(ALICE)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["status"], 404);

    let reply = api
        .request(Method::DELETE, "/payments", Some(ALICE), &[], None)
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.body["status"], 405);

    let reply = api.get("/payments/not-a-uuid", Some(ALICE)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(field_errors(&reply.body), vec!["id"]);

    let reply = api
        .request(
            Method::POST,
            "/payments",
            Some(ALICE),
            &[("idempotency-key", "")],
            Some(demo_payment().to_string().into_bytes()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(field_errors(&reply.body), vec!["Idempotency-Key"]);
    api.stop().await;
}
