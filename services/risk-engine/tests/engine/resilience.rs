//! The broker going away mid-stream, and stopping mid-stream: every payment is decided, none
//! is lost, and a payment decided twice gets an identical decision.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use paysys_core::PaymentMessage;
use paysys_testkit::FaultProxy;
use risk_engine::decide::Decider;
use uuid::Uuid;

use crate::harness::{Engine, WAIT, essence, payment};

/// A mix of approvals and declines (payer = payee on every seventh).
fn payments(n: usize) -> Vec<PaymentMessage> {
    (0..n)
        .map(|i| {
            let mut p = payment();
            if i % 7 == 0 {
                p.payment_data.payee_id = p.payment_data.user_id;
            }
            p
        })
        .collect()
}

#[tokio::test]
async fn a_broker_cut_mid_stream_loses_nothing() {
    let mut engine = Engine::prepare().await;
    let all = payments(3000);
    engine.publish_all(&all).await;
    let (proxy, url) = FaultProxy::in_front_of(&engine.broker.url).await;
    engine.run(Decider::Rules(Box::default()), &url, 200).await;

    for (cut_at, outage) in [(300, 200), (1200, 1500)] {
        engine.wait_decided(cut_at).await;
        proxy.cut().await;
        // While the broker is away the engine is not ready.
        let consuming = engine.consuming.clone();
        paysys_testkit::eventually(WAIT, || {
            let up = consuming.load(Ordering::SeqCst);
            async move { (!up).then_some(()) }
        })
        .await
        .expect("not ready while the broker is away");
        tokio::time::sleep(Duration::from_millis(outage)).await;
        proxy.restore();
    }

    let ids: Vec<Uuid> = all.iter().map(|p| p.payment_id).collect();
    let decisions = engine.decisions_for(&ids).await;
    let missing = ids.iter().filter(|id| !decisions.contains_key(id)).count();
    assert_eq!(missing, 0, "payments without a decision");
    let mut duplicates = 0;
    for copies in decisions.values() {
        duplicates += copies.len() - 1;
        for copy in &copies[1..] {
            assert_eq!(
                essence(copy),
                essence(&copies[0]),
                "duplicates must be identical"
            );
        }
    }
    assert!(engine.metrics.reconnects.get() >= 2);
    // Every payment acked in the end: nothing waits in the queue.
    let queue = engine.broker.topology.payments_queue.clone();
    let engine_ref = &engine;
    paysys_testkit::eventually(WAIT, || {
        let queue = queue.clone();
        async move { (engine_ref.queue_len(&queue).await == 0).then_some(()) }
    })
    .await
    .expect("the payments queue drains");
    // Payments dropped with a broken session are no longer counted as in hand.
    let metrics = engine.metrics.clone();
    paysys_testkit::eventually(WAIT, || {
        let in_flight = metrics.in_flight.get();
        async move { (in_flight == 0).then_some(()) }
    })
    .await
    .expect("nothing left in hand");
    eprintln!(
        "broker cut: {} payments, {duplicates} duplicate decisions",
        ids.len()
    );
    engine.finish().await;
}

#[tokio::test]
async fn starts_without_the_broker_and_becomes_ready_when_it_appears() {
    let engine = Engine::prepare().await;
    let (proxy, url) = FaultProxy::in_front_of(&engine.broker.url).await;
    proxy.cut().await;
    let p = payment();
    engine.publish(&p).await;
    let run = {
        let consumer = risk_engine::consumer::Consumer {
            amqp_url: url,
            topology: engine.broker.topology.clone(),
            prefetch: 10,
            decider: std::sync::Arc::new(Decider::Rules(Box::default())),
            metrics: engine.metrics.clone(),
            consuming: engine.consuming.clone(),
        };
        let stop = tokio_util::sync::CancellationToken::new();
        (tokio::spawn(consumer.run(stop.clone())), stop)
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!engine.consuming.load(Ordering::SeqCst));
    proxy.restore();
    let decision = engine
        .next_decision(WAIT)
        .await
        .expect("decided once the broker is back");
    assert_eq!(decision.payment_id, p.payment_id);
    assert!(engine.consuming.load(Ordering::SeqCst));
    run.1.cancel();
    run.0.await.unwrap();
    engine.finish().await;
}

#[tokio::test]
async fn a_graceful_stop_finishes_what_is_in_hand() {
    let mut engine = Engine::prepare().await;
    let all = payments(5000);
    engine.publish_all(&all).await;
    let url = engine.broker.url.clone();
    engine.run(Decider::Rules(Box::default()), &url, 300).await;
    engine.wait_decided(200).await;
    engine.stop().await;
    assert_eq!(engine.metrics.in_flight.get(), 0);

    // Every payment is either decided exactly once or back in the queue, never both: what
    // was in hand was finished and acked, what was not was returned undecided. The queue is
    // read message by message (a quorum queue's depth counter lags its last acks and returns).
    let decided = engine.metrics.decided("approved") + engine.metrics.decided("declined");
    let mut seen = HashSet::new();
    while let Some(d) = engine.next_decision(Duration::from_millis(300)).await {
        assert!(seen.insert(d.payment_id), "no duplicate on a graceful stop");
    }
    assert_eq!(seen.len() as u64, decided);
    assert!(decided < 5000, "stopped mid-stream");
    let queue = engine.broker.topology.payments_queue.clone();
    let returned = engine.take_all(&queue).await;
    let both: Vec<_> = returned.iter().filter(|id| seen.contains(id)).collect();
    assert!(
        both.is_empty(),
        "{} payments were decided and also returned, e.g. {:?}",
        both.len(),
        &both[..both.len().min(3)]
    );
    let everything: HashSet<Uuid> = seen.union(&returned).copied().collect();
    assert_eq!(everything.len(), 5000, "every payment decided or returned");
    engine.finish().await;
}

/// Under a memory or disk alarm RabbitMQ stops reading from the engine's connection once it
/// publishes a decision: the payments in hand wait, unacked. A stop does not spend its drain
/// time on confirms that cannot come, and after the alarm a new session decides every
/// payment (a payment whose decision got out before the block may be decided twice;
/// the API applies a decision once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_alarm_holds_payments_and_never_hangs_a_stop() {
    let node = paysys_testkit::private_broker::PrivateBroker::start().await;
    let shared = paysys_testkit::TestBroker::new();
    let mut engine = Engine::prepare_on(shared.sharing(&node.url())).await;
    let all = payments(50);
    engine.publish_all(&all).await;
    node.raise_memory_alarm();
    engine
        .run(Decider::Rules(Box::default()), &node.url(), 200)
        .await;
    let metrics = engine.metrics.clone();
    let held = paysys_testkit::eventually(WAIT, || {
        let in_hand = metrics.in_flight.get();
        async move { (in_hand > 0).then_some(()) }
    })
    .await;
    assert!(held.is_some(), "the engine holds payments while blocked");

    let stopping = std::time::Instant::now();
    engine.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "a stop under an alarm took {:?}",
        stopping.elapsed()
    );

    node.clear_alarm();
    engine
        .run(Decider::Rules(Box::default()), &node.url(), 200)
        .await;
    let ids: Vec<Uuid> = all.iter().map(|p| p.payment_id).collect();
    let mut decided = HashSet::new();
    let deadline = std::time::Instant::now() + WAIT * 2;
    while decided.len() < ids.len() && std::time::Instant::now() < deadline {
        if let Some(decision) = engine.next_decision(Duration::from_secs(1)).await {
            decided.insert(decision.payment_id);
        }
    }
    assert_eq!(decided, ids.into_iter().collect::<HashSet<_>>());
    engine.finish().await;
}
