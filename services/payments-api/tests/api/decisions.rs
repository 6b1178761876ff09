use std::time::Duration;

use serde_json::json;

use crate::harness::*;

async fn events(api: &TestApi, id: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT to_status, cause FROM payment_events WHERE payment_id = $1::uuid ORDER BY id",
    )
    .bind(id)
    .fetch_all(&api.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_decision_changes_nothing() {
    let api = TestApi::start().await;
    let (_conn, channel) = api.broker.channel().await;
    let id = api.create(&demo_payment()).await;
    api.publish_decision(&channel, &id, "approved").await;
    api.publish_decision(&channel, &id, "approved").await;
    let payment = api.wait_for_status(&id, "approved").await;
    assert_eq!(payment["decision"]["rulesVersion"], "test");
    // Let the duplicate be consumed, then check it left no trace.
    paysys_testkit::eventually(Duration::from_secs(10), || async {
        let metrics = api
            .get("/metrics", None)
            .await
            .body
            .as_str()
            .unwrap()
            .to_owned();
        metrics.contains("outcome=\"duplicate\"").then_some(())
    })
    .await
    .expect("the duplicate is consumed");
    assert_eq!(
        events(&api, &id).await,
        vec![
            ("pending".into(), "created".into()),
            ("approved".into(), "risk_decision".into())
        ]
    );
    api.broker.delete().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_decision_is_recorded_and_ignored() {
    let api = TestApi::start().await;
    let (_conn, channel) = api.broker.channel().await;
    let id = api.create(&demo_payment()).await;
    let reply = api
        .post(&format!("/payments/{id}/cancel"), Some(ALICE), &json!({}))
        .await;
    assert_eq!(reply.status, axum::http::StatusCode::OK);
    api.publish_decision(&channel, &id, "approved").await;
    let trail = paysys_testkit::eventually(Duration::from_secs(10), || async {
        let trail = events(&api, &id).await;
        (trail.len() == 3).then_some(trail)
    })
    .await
    .expect("the late decision is recorded");
    assert_eq!(
        trail[2],
        ("canceled".into(), "risk_decision_ignored".into())
    );
    let payment = api.get(&format!("/payments/{id}"), Some(ALICE)).await.body;
    assert_eq!(payment["status"], "canceled");
    api.broker.delete().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_decisions_are_dead_lettered_with_their_reason() {
    let api = TestApi::start().await;
    let (_conn, channel) = api.broker.channel().await;
    let stranger = uuid::Uuid::new_v4().to_string();
    api.publish_decision(&channel, &stranger, "approved").await;
    api.publish_raw(&channel, b"{\"payment_id\": 42").await;
    api.publish_raw(&channel, br#"{"schema_version": 9, "payment_id": "x"}"#)
        .await;

    let dead = &api.broker.topology.decisions_dead_queue;
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let message = api
            .broker
            .get(&channel, dead, Duration::from_secs(10))
            .await
            .expect("dead-lettered decision");
        reasons.push(
            paysys_amqp::header_str(
                &message.delivery.properties,
                paysys_amqp::DEAD_LETTER_REASON_HEADER,
            )
            .expect("reason header"),
        );
    }
    reasons.sort();
    assert!(
        reasons.iter().any(|r| r == "unknown payment"),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("malformed message")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("unsupported schema_version 9")),
        "{reasons:?}"
    );
    // Nothing is left to redeliver.
    assert!(
        api.broker
            .get(
                &channel,
                &api.broker.topology.decisions_queue,
                Duration::from_millis(300)
            )
            .await
            .is_none()
    );
    api.broker.delete().await;
    api.stop().await;
}
