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
    // The time to a decision is observed once, for the decision that decided.
    let latency = "paysys_payment_decision_latency_seconds";
    assert_eq!(api.metric(&format!("{latency}_count")).await, Some(1.0));
    let seconds = api.metric(&format!("{latency}_sum")).await.unwrap();
    assert!(seconds > 0.0 && seconds < 60.0, "{seconds} s");
    assert_eq!(
        api.metric(&format!("{latency}_bucket{{le=\"600.0\"}}"))
            .await,
        Some(1.0)
    );
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

/// Decisions arrive in bursts, so batches mix decisions to apply with poison messages to
/// dead-letter, and several batches are in hand at once, each acknowledged with one
/// `multiple` ack: every decision is applied once, every poison message dead-lettered once,
/// and nothing stays unacknowledged (the stop would hand it back to the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_bursts_of_decisions_settle_every_message_exactly_once() {
    let mut api = TestApi::start().await;
    let (_conn, channel) = api.broker.channel().await;
    let mut ids = Vec::new();
    for _ in 0..60 {
        ids.push(api.create(&demo_payment()).await);
    }
    let poison = b"{\"payment_id\": 42";
    let stranger = uuid::Uuid::new_v4().to_string();
    let publishes = ids.iter().enumerate().map(|(i, id)| {
        let (api, channel, stranger) = (&api, &channel, &stranger);
        async move {
            match i % 10 {
                3 => api.publish_raw(channel, poison).await,
                7 => api.publish_decision(channel, stranger, "declined").await,
                _ => {}
            }
            api.publish_decision(channel, id, "approved").await;
        }
    });
    futures::future::join_all(publishes).await;
    for id in &ids {
        api.wait_for_status(id, "approved").await;
    }
    let dead = api.broker.topology.decisions_dead_queue.clone();
    for _ in 0..12 {
        assert!(
            api.broker
                .get(&channel, &dead, Duration::from_secs(10))
                .await
                .is_some(),
            "each poison message and each decision for an unknown payment is dead-lettered"
        );
    }

    // Stop the API but keep the queues: whatever it left unacknowledged returns to them.
    let kept = api.broker.sharing(&api.broker.url);
    let broker = std::mem::replace(&mut api.broker, kept);
    let pool = api.pool.clone();
    api.stop().await;
    for queue in [&broker.topology.decisions_queue, &dead] {
        let left = broker
            .get(&channel, queue, Duration::from_millis(500))
            .await;
        assert!(left.is_none(), "{queue} still holds a message");
    }
    let decided: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE cause = 'risk_decision') FROM payment_events
         WHERE payment_id = ANY($1::uuid[]) GROUP BY payment_id",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        decided,
        vec![1; ids.len()],
        "one decision event per payment"
    );
}
