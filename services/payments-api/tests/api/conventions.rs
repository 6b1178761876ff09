//! The API's conventions: `/v1` routes with camelCase bodies and `Location`, the original
//! demo's `POST /payments` as it was, RFC 9457 problem details with the request id, and the
//! committed OpenAPI document.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_the_demo_alias_answer_in_their_own_shapes() {
    let api = TestApi::start().await;
    let v1 = api.post("/v1/payments", Some(ALICE), &demo_payment()).await;
    assert_eq!(v1.status, StatusCode::CREATED, "{}", v1.body);
    let id = v1.body["id"].as_str().unwrap().to_owned();
    assert_eq!(v1.body, json!({"id": id, "status": "pending"}));
    assert_eq!(
        v1.headers["location"],
        format!("/v1/payments/{id}").as_str()
    );
    let payment = api.get(&format!("/v1/payments/{id}"), Some(ALICE)).await;
    assert_eq!(payment.body["amountMinor"], 7050);

    // The original demo's body, exactly (plus the status it always had), and a Location.
    let demo = api.post("/payments", Some(ALICE), &demo_payment()).await;
    assert_eq!(demo.status, StatusCode::CREATED);
    let keys: Vec<&str> = demo
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["PaymentId", "PaymentStatus", "Status", "StatusCode"]);
    let demo_id = demo.body["PaymentId"].as_str().unwrap();
    assert_eq!(
        demo.headers["location"],
        format!("/v1/payments/{demo_id}").as_str()
    );

    // A keyed replay has the first answer's Location.
    let key = [("idempotency-key", "v1-create")];
    let body = demo_payment().to_string().into_bytes();
    let first = api
        .request(
            Method::POST,
            "/v1/payments",
            Some(ALICE),
            &key,
            Some(body.clone()),
        )
        .await;
    let again = api
        .request(Method::POST, "/v1/payments", Some(ALICE), &key, Some(body))
        .await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.headers["location"], first.headers["location"]);

    // /v1 capture and cancel answer camelCase too.
    let reply = api
        .post(
            &format!("/v1/payments/{id}/cancel"),
            Some(ALICE),
            &json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"id": id, "status": "canceled"}));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_problem_details_with_the_request_id() {
    let api = TestApi::start().await;
    // A valid id is kept; the body names it.
    let reply = api
        .request(
            Method::GET,
            "/v1/nothing-here",
            Some(ALICE),
            &[("x-request-id", "trace-me.42")],
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    assert_eq!(reply.headers["x-request-id"], "trace-me.42");
    assert_eq!(
        reply.body,
        json!({
            "type": "urn:paysys:problem:not_found", "code": "not_found", "title": "Not found",
            "status": 404, "detail": "no such route", "requestId": "trace-me.42"
        })
    );
    // An invalid one is replaced by a UUID; so is a missing one, on successes too.
    let reply = api
        .request(
            Method::POST,
            "/v1/payments",
            None,
            &[("x-request-id", "two words")],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let generated = reply.headers["x-request-id"].to_str().unwrap();
    uuid::Uuid::parse_str(generated).unwrap();
    assert_eq!(reply.body["requestId"], generated);
    assert_eq!(reply.body["code"], "unauthorized");
    let ok = api.get("/healthz", None).await;
    uuid::Uuid::parse_str(ok.headers["x-request-id"].to_str().unwrap()).unwrap();
    // Validation lists every field.
    let reply = api
        .post("/v1/payments", Some(ALICE), &json!({"amount": 1}))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    assert_eq!(reply.body["code"], "invalid_request");
    assert_eq!(reply.body["errors"].as_array().unwrap().len(), 4);
    api.stop().await;
}

/// The committed `openapi.json` is what the API serves (the unit test
/// `the_committed_document_is_the_served_one` says how to regenerate it), with links from
/// both creates to what can follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_committed_one() {
    let api = TestApi::start().await;
    let served = api.get("/openapi.json", None).await.body;
    let committed: Value =
        serde_json::from_str(include_str!("../../openapi.json")).expect("openapi.json parses");
    assert!(
        served == committed,
        "services/payments-api/openapi.json is not the served document: regenerate it with \
         `UPDATE_OPENAPI=1 cargo test -p payments-api --lib the_committed_document`"
    );
    for (path, pointer) in [("/v1/payments", "/id"), ("/payments", "/PaymentId")] {
        let links = &served["paths"][path]["post"]["responses"]["201"]["links"];
        for (name, operation) in [
            ("GetPayment", "get_one"),
            ("CapturePayment", "capture"),
            ("CancelPayment", "cancel"),
            ("RefundPayment", "refunds"),
        ] {
            assert_eq!(links[name]["operationId"], operation, "{path} {name}");
            assert_eq!(
                links[name]["parameters"]["id"],
                format!("$response.body#{pointer}").as_str()
            );
        }
    }
    api.stop().await;
}
