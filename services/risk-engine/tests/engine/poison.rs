//! Poison messages go to the dead-letter queue with their reason, once; a decision the broker
//! refuses never leads to an ack.

use std::time::Duration;

use lapin::options::QueueDeleteOptions;
use paysys_amqp::{DEAD_LETTER_REASON_HEADER, DEAD_LETTER_SOURCE_HEADER, header_str};
use risk_engine::decide::Decider;

use crate::harness::{Engine, WAIT, payment};

#[tokio::test]
async fn poison_messages_are_dead_lettered_with_their_reason() {
    let engine = Engine::start(Decider::Rules(Box::default())).await;
    let good = payment();
    let mut too_precise = serde_json::to_value(payment()).unwrap();
    too_precise["payment_data"]["amount"] = serde_json::from_str("1.001").unwrap();
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    let poison: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            b"not json at all".to_vec(),
            "malformed",
            "malformed message",
        ),
        (
            br#"{"schema_version": 2, "payment_id": "x"}"#.to_vec(),
            "unsupported_version",
            "unsupported schema_version 2",
        ),
        (
            br#"{"payment_id": 5}"#.to_vec(),
            "malformed",
            "malformed message",
        ),
        (
            serde_json::to_vec(&too_precise).unwrap(),
            "malformed",
            "decimal places",
        ),
        (
            huge.into_bytes(),
            "too_large",
            "exceeds the 65536-byte limit",
        ),
    ];
    for (body, _, _) in &poison {
        engine.publish_raw(body).await;
    }
    // The engine keeps going after poison.
    engine.publish(&good).await;
    let decision = engine
        .next_decision(WAIT)
        .await
        .expect("the good payment is decided");
    assert_eq!(decision.payment_id, good.payment_id);

    let dead_queue = &engine.broker.topology.payments_dead_queue;
    // Dead letters arrive in the order the engine settled them, which need not be the
    // publishing order: match each to its poison message by body.
    for _ in 0..poison.len() {
        let dead = engine
            .broker
            .get(&engine.channel, dead_queue, WAIT)
            .await
            .expect("every poison message reaches the dead-letter queue");
        let (_, _, reason) = poison
            .iter()
            .find(|(body, _, _)| *body == dead.delivery.data)
            .expect("the dead letter carries the original body unchanged");
        let header = header_str(&dead.delivery.properties, DEAD_LETTER_REASON_HEADER)
            .expect("a reason header");
        assert!(
            header.contains(reason),
            "reason {header:?} lacks {reason:?}"
        );
        let source = header_str(&dead.delivery.properties, DEAD_LETTER_SOURCE_HEADER);
        assert_eq!(
            source.as_deref(),
            Some(engine.broker.topology.payments_queue.as_str())
        );
    }
    // Each exactly once: nothing left to redeliver, nothing more dead-lettered.
    assert!(
        engine
            .broker
            .get(&engine.channel, dead_queue, Duration::from_millis(300))
            .await
            .is_none()
    );
    assert_eq!(
        engine
            .queue_len(&engine.broker.topology.payments_queue)
            .await,
        0
    );
    for label in ["malformed", "unsupported_version", "too_large"] {
        let expected = poison.iter().filter(|(_, l, _)| *l == label).count() as u64;
        assert_eq!(engine.metrics.dead_letters(label), expected, "{label}");
    }
    assert!(
        engine
            .metrics
            .render()
            .contains("paysys_risk_dead_lettered_total{reason=\"malformed\"} 3")
    );
    engine.finish().await;
}

#[tokio::test]
async fn a_refused_decision_is_never_acked_and_is_retried() {
    let engine = Engine::start(Decider::Rules(Box::default())).await;
    let topology = engine.broker.topology.clone();
    // Without its queue the decision is unroutable: the broker returns it (mandatory).
    engine
        .channel
        .queue_delete(
            topology.decisions_queue.as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let p = payment();
    engine.publish(&p).await;
    let metrics = engine.metrics.clone();
    paysys_testkit::eventually(WAIT, || {
        let failures = metrics.publish_failures.get();
        async move { (failures >= 1).then_some(()) }
    })
    .await
    .expect("the refused decision is counted");
    assert_eq!(
        engine.metrics.decided("approved"),
        0,
        "nothing decided without a confirm"
    );
    // Put the queue back: the held payment's decision is published again and lands.
    paysys_amqp::declare_topology(&engine.channel, &topology)
        .await
        .unwrap();
    let decision = engine
        .next_decision(WAIT)
        .await
        .expect("decided once routable");
    assert_eq!(decision.payment_id, p.payment_id);
    engine.wait_decided(1).await;
    assert_eq!(engine.metrics.decided("approved"), 1);
    engine.finish().await;
}
