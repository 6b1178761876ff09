use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_commits_the_payment_and_publishes_it() {
    let api = TestApi::start().await;
    let reply = api.post("/payments", Some(ALICE), &demo_payment()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body["StatusCode"], 201);
    assert_eq!(reply.body["Status"], "Success");
    let id = reply.body["PaymentId"].as_str().unwrap().to_owned();
    uuid::Uuid::parse_str(&id).unwrap();

    let (amount_minor, currency, status): (i64, String, String) =
        sqlx::query_as("SELECT amount_minor, currency, status FROM payments WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert_eq!(
        (amount_minor, currency.as_str(), status.as_str()),
        (7050, "USD", "pending")
    );

    let (_conn, channel) = api.broker.channel().await;
    let message = api
        .broker
        .get(
            &channel,
            &api.broker.topology.payments_queue,
            Duration::from_secs(10),
        )
        .await
        .expect("the payment reaches the payments queue");
    let body: Value = serde_json::from_slice(&message.delivery.data).unwrap();
    assert_eq!(body["payment_id"], id.as_str());
    assert_eq!(body["schema_version"], 1);
    assert_eq!(body["payment_data"]["amount"], json!(70.5));
    assert_eq!(body["payment_data"]["currency"], "USD");
    assert_eq!(body["payment_data"]["userId"], USER);
    assert_eq!(body["velocity"]["count"], 0);
    let raw = String::from_utf8(message.delivery.data.clone()).unwrap();
    assert!(
        raw.contains("\"amount\":70.5"),
        "amount must be an exact JSON number: {raw}"
    );
    assert_eq!(
        message.delivery.properties.delivery_mode(),
        &Some(2),
        "messages are persistent"
    );

    // The row goes once the relay's transaction commits, just after the broker's confirm.
    let drained = paysys_testkit::eventually(Duration::from_secs(10), || async {
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&api.pool)
            .await
            .unwrap();
        (outbox == 0).then_some(())
    })
    .await;
    assert!(drained.is_some(), "a confirmed row leaves the outbox");
    api.broker.delete().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_shows_amounts_exactly_and_the_audit_trail() {
    let api = TestApi::start().await;
    let mut body = demo_payment();
    body["currency"] = json!("KWD");
    body["amount"] = serde_json::from_str("1234.567").unwrap();
    let id = api.create(&body).await;

    let reply = api.get(&format!("/payments/{id}"), Some(ALICE)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let payment = reply.body;
    assert_eq!(payment["id"], id.as_str());
    assert_eq!(payment["status"], "pending");
    assert_eq!(payment["amount"].to_string(), "1234.567");
    assert_eq!(payment["amountMinor"], 1_234_567);
    assert_eq!(payment["currency"], "KWD");
    assert_eq!(payment["payeeId"], PAYEE);
    assert_eq!(payment["paymentMethodId"], METHOD);
    assert!(payment["decision"].is_null());
    assert_eq!(payment["history"][0]["to"], "pending");
    assert_eq!(payment["history"][0]["cause"], "created");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn velocity_counts_the_payers_earlier_payments() {
    let api = TestApi::start().await;
    let mut usd = demo_payment();
    usd["amount"] = json!(10);
    api.create(&usd).await;
    api.create(&usd).await;
    let mut eur = demo_payment();
    eur["currency"] = json!("EUR");
    api.create(&eur).await;
    let id = api.create(&usd).await;
    let row: (i64, i64) = sqlx::query_as(
        "SELECT velocity_count, velocity_total_minor FROM payments WHERE id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    // Three earlier payments by the user; 20.00 of them in USD.
    assert_eq!(row, (3, 2000));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_endpoints_answer() {
    let api = TestApi::start().await;
    api.create(&demo_payment()).await;
    let ready = paysys_testkit::eventually(Duration::from_secs(10), || async {
        let reply = api.get("/readyz", None).await;
        (reply.status == StatusCode::OK).then_some(reply.body)
    })
    .await
    .expect("ready once connected");
    assert_eq!(ready["checks"]["database"], "up");

    let metrics = api.get("/metrics", None).await;
    let text = metrics.body.as_str().unwrap().to_owned();
    assert!(
        text.contains(
            "paysys_api_http_requests_total{route=\"/payments\",method=\"POST\",status=\"201\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("paysys_api_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("# TYPE paysys_outbox_depth gauge"), "{text}");
    // The build, and the pool of DB_MAX_CONNECTIONS=4 (the harness's) with every open
    // connection either idle or in use.
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!(
            "paysys_build_info{{version=\"{version}\",commit=\""
        )),
        "{text}"
    );
    assert_eq!(
        api.metric("paysys_db_pool_max_connections").await,
        Some(4.0)
    );
    let idle = api
        .metric("paysys_db_pool_connections{state=\"idle\"}")
        .await;
    let in_use = api
        .metric("paysys_db_pool_connections{state=\"in_use\"}")
        .await;
    let open = idle.unwrap() + in_use.unwrap();
    assert!(
        (1.0..=4.0).contains(&open),
        "{idle:?} idle, {in_use:?} in use"
    );

    // The document is made from the routes themselves; each operation it lists is served
    // (answered by its handler, not by the 404/405 fallbacks).
    let openapi = api.get("/openapi.json", None).await.body;
    let paths = openapi["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path.replace("{id}", &uuid::Uuid::now_v7().to_string());
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let reply = api
                .request(method.clone(), &concrete, Some(ALICE), &[], None)
                .await;
            assert!(
                reply.status != StatusCode::METHOD_NOT_ALLOWED
                    && reply.body["detail"] != "no such route",
                "{method} {path} is documented but not routed: {}",
                reply.body
            );
            operations += 1;
        }
    }
    assert!(
        paths.contains_key("/payments") && operations >= 10,
        "{paths:?}"
    );
    assert!(openapi["components"]["schemas"]["Problem"].is_object());
    assert!(openapi["components"]["securitySchemes"]["api_key"].is_object());
    api.stop().await;
}
