//! `POST /payments/{id}/disputes`, and what a decision carries for the risk model, through the
//! real API, PostgreSQL and RabbitMQ.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

/// A payment of alice's that the risk engine approved.
async fn approved(api: &TestApi, channel: &lapin::Channel) -> String {
    let id = api.create(&demo_payment()).await;
    api.publish_decision(channel, &id, "approved").await;
    api.wait_for_status(&id, "approved").await;
    id
}

async fn dispute(api: &TestApi, id: &str, auth: &str, body: &Value) -> Reply {
    api.post(&format!("/payments/{id}/disputes"), Some(auth), body)
        .await
}

async fn metrics(api: &TestApi) -> String {
    api.get("/metrics", None)
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_payment_is_disputed_once_and_keeps_its_status() {
    let api = TestApi::start().await;
    let (_conn, channel) = api.broker.channel().await;
    let id = approved(&api, &channel).await;

    let reply = dispute(
        &api,
        &id,
        ALICE,
        &json!({"reason": "fraudulent", "note": "cardholder denies it"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["reason"], "fraudulent");
    assert_eq!(reply.body["note"], "cardholder denies it");
    let disputed_at = reply.body["disputedAt"].clone();
    assert!(disputed_at.is_string(), "{}", reply.body);

    let payment = api.get(&format!("/payments/{id}"), Some(ALICE)).await.body;
    assert_eq!(payment["status"], "approved", "a dispute is not a state");
    assert_eq!(payment["dispute"]["reason"], "fraudulent");
    assert_eq!(payment["dispute"]["disputedAt"], disputed_at);
    let trail = payment["history"].as_array().unwrap();
    let last = trail.last().unwrap();
    assert_eq!(last["cause"], "disputed");
    assert_eq!(
        (&last["from"], &last["to"]),
        (&json!("approved"), &json!("approved"))
    );
    assert_eq!(last["detail"]["reason"], "fraudulent");

    // A second dispute: 409 with the first, which stands.
    let again = dispute(&api, &id, ALICE, &json!({"reason": "duplicate"})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(again.body["status"], 409);
    assert_eq!(again.body["dispute"]["reason"], "fraudulent");
    assert_eq!(again.body["dispute"]["disputedAt"], disputed_at);
    let payment = api.get(&format!("/payments/{id}"), Some(ALICE)).await.body;
    assert_eq!(payment["dispute"]["reason"], "fraudulent");
    assert!(
        metrics(&api)
            .await
            .contains("paysys_api_disputes_total{reason=\"fraudulent\"} 1\n")
    );
    api.broker.delete().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_payments_that_were_approved_can_be_disputed() {
    let api = TestApi::start().await;
    let (_conn, channel) = api.broker.channel().await;
    let body = json!({"reason": "product_not_received"});

    let pending = api.create(&demo_payment()).await;
    let declined = api.create(&demo_payment()).await;
    api.publish_decision(&channel, &declined, "declined").await;
    api.wait_for_status(&declined, "declined").await;
    let canceled_pending = api.create(&demo_payment()).await;
    let canceled_approved = approved(&api, &channel).await;
    let captured = approved(&api, &channel).await;
    for (id, action) in [
        (&canceled_pending, "cancel"),
        (&canceled_approved, "cancel"),
        (&captured, "capture"),
    ] {
        let reply = api
            .post(&format!("/payments/{id}/{action}"), Some(ALICE), &json!({}))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }

    for (id, status) in [
        (&pending, "pending"),
        (&declined, "declined"),
        (&canceled_pending, "canceled"),
    ] {
        let reply = dispute(&api, id, ALICE, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::CONFLICT,
            "{status}: {}",
            reply.body
        );
        assert_eq!(reply.body["currentStatus"], status);
        let message = reply.body["detail"].as_str().unwrap();
        assert!(message.contains("never approved"), "{message}");
    }
    // Approved at some point: disputable whatever became of it.
    for id in [&canceled_approved, &captured] {
        let reply = dispute(&api, id, ALICE, &body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    api.broker.delete().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_unknown_and_malformed_disputes_are_refused() {
    let api = TestApi::start().await;
    let (_conn, channel) = api.broker.channel().await;
    let id = approved(&api, &channel).await;
    let body = json!({"reason": "fraudulent"});

    let foreign = dispute(&api, &id, BOB, &body).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{}", foreign.body);
    let unknown = dispute(&api, &uuid::Uuid::now_v7().to_string(), ALICE, &body).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad_id = dispute(&api, "nope", ALICE, &body).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);

    let bad = dispute(&api, &id, ALICE, &json!({"reason": "chargeback"})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["errors"][0]["field"], "reason");
    assert_eq!(
        bad.body["errors"][0]["message"],
        "must be one of fraudulent, product_not_received, duplicate, unrecognized, other"
    );
    let missing = dispute(&api, &id, ALICE, &json!({"note": "x"})).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let long = dispute(
        &api,
        &id,
        ALICE,
        &json!({"reason": "other", "note": "x".repeat(501)}),
    )
    .await;
    assert_eq!(long.body["errors"][0]["field"], "note");
    let no_body = api
        .request(
            Method::POST,
            &format!("/payments/{id}/disputes"),
            Some(ALICE),
            &[("content-type", "application/json")],
            Some(Vec::new()),
        )
        .await;
    assert_eq!(no_body.status, StatusCode::BAD_REQUEST, "{}", no_body.body);

    // None of these recorded anything.
    let payment = api.get(&format!("/payments/{id}"), Some(ALICE)).await.body;
    assert_eq!(payment["dispute"], Value::Null);
    api.broker.delete().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_dispute_is_replayed_not_recorded_twice() {
    let api = TestApi::start().await;
    let (_conn, channel) = api.broker.channel().await;
    let id = approved(&api, &channel).await;
    let path = format!("/payments/{id}/disputes");
    let body = json!({"reason": "unrecognized"}).to_string().into_bytes();
    let send = |body: Vec<u8>| {
        api.request(
            Method::POST,
            &path,
            Some(ALICE),
            &[("idempotency-key", "dispute-1")],
            Some(body),
        )
    };
    let first = send(body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let replay = send(body).await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    let other = send(json!({"reason": "other"}).to_string().into_bytes()).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payment_events WHERE payment_id = $1::uuid AND cause = 'disputed'",
    )
    .bind(&id)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    assert_eq!(events, 1);
    assert!(
        metrics(&api)
            .await
            .contains("paysys_api_disputes_total{reason=\"unrecognized\"} 1\n")
    );
    api.broker.delete().await;
    api.stop().await;
}

/// Every reason the API accepts is one the database's CHECK accepts (one list, two places).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reason_is_accepted_by_the_database() {
    use payments_api::store::disputes::DisputeReason;
    use strum::VariantArray;
    let api = TestApi::start().await;
    let (_conn, channel) = api.broker.channel().await;
    for reason in DisputeReason::VARIANTS {
        let id = approved(&api, &channel).await;
        let reply = dispute(&api, &id, ALICE, &json!({"reason": reason})).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{reason}: {}",
            reply.body
        );
    }
    let refused = sqlx::query("UPDATE payments SET dispute_reason = 'chargeback'")
        .execute(&api.pool)
        .await;
    assert!(refused.is_err(), "the CHECK names exactly the reasons");
    api.broker.delete().await;
    api.stop().await;
}

/// A decision's rules outcome, model and shadow scores and feature values are stored as the
/// engine sent them; `GET /payments/{id}` shows the scores and the features' version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_keeps_what_the_model_saw_and_said() {
    let api = TestApi::start().await;
    let (_conn, channel) = api.broker.channel().await;
    let id = api.create(&demo_payment()).await;
    let values = vec![7050.0, 7050f64.ln_1p(), 0.1 + 0.2, 1e300, -0.0, 1.0 / 3.0];
    let decision = json!({
        "schema_version": 1, "payment_id": id, "outcome": "declined", "score": 0,
        "reasons": [{"rule": "model", "detail": "model score 0.93 >= threshold 0.80"}],
        "rules_version": "test", "decided_at": "2026-01-01T00:00:00Z",
        "rules_outcome": "approved",
        "features": {"version": "payment-features/1", "values": values},
        "model": {"version": "m-0123456789abcdef", "score": 0.93, "threshold": 0.8},
        "shadow": {"version": "m-fedcba9876543210", "score": 0.1 + 0.2, "threshold": 0.75},
    });
    api.publish_raw(&channel, decision.to_string().as_bytes())
        .await;
    let payment = api.wait_for_status(&id, "declined").await;
    let shown = &payment["decision"];
    assert_eq!(shown["rulesOutcome"], "approved");
    assert_eq!(shown["model"]["version"], "m-0123456789abcdef");
    assert_eq!(shown["model"]["score"], 0.93);
    assert_eq!(shown["model"]["threshold"], 0.8);
    assert_eq!(shown["shadow"]["score"], 0.1 + 0.2);
    assert_eq!(shown["featuresVersion"], "payment-features/1");
    assert!(shown.get("features").is_none(), "{shown}");

    let (version, stored): (String, Vec<f64>) = sqlx::query_as(
        "SELECT decision_features_version, decision_features FROM payments WHERE id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    assert_eq!(version, "payment-features/1");
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&stored), bits(&values), "bit for bit");
    api.broker.delete().await;
    api.stop().await;
}
