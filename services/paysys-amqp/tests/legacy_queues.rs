//! The move from version-1 classic queues to version-2 quorum queues, against the local
//! RabbitMQ, with messages waiting and messages in flight.

use std::collections::HashMap;
use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicNackOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};
use paysys_amqp as amqp;
use paysys_amqp::legacy_queues::retire;
use paysys_core::topology::Topology;
use paysys_testkit::TestBroker;

/// Declares what the previous release declared: classic queues under the unversioned names,
/// the work queues dead-lettering to the dead-letter exchange.
async fn declare_version_1(channel: &Channel, topology: &Topology) {
    for exchange in [
        &topology.payments_exchange,
        &topology.decisions_exchange,
        &topology.dead_letter_exchange,
    ] {
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    for (index, legacy) in topology.legacy_queues().iter().enumerate() {
        let mut arguments = FieldTable::default();
        if index < 2 {
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(topology.dead_letter_exchange.as_str().into()),
            );
        }
        channel
            .queue_declare(
                legacy.queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments,
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                legacy.queue.as_str().into(),
                legacy.exchange.as_str().into(),
                legacy.routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
}

/// As the old release's publishers do (the relay, the risk engine): a message the broker
/// refuses (a quorum queue declared an instant ago may nack) is published again. Returns the
/// number of attempts it took.
async fn publish_until_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    id: &str,
) -> usize {
    for attempt in 1..=50 {
        match amqp::publish_confirmed(
            channel,
            exchange,
            routing_key,
            id.as_bytes(),
            amqp::persistent_json(id, FieldTable::default()),
        )
        .await
        {
            Ok(()) => return attempt,
            Err(amqp::PublishError::Nacked) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("publish {id}: {e}"),
        }
    }
    panic!("publish {id}: refused 50 times")
}

/// What an old release's publisher sends during the upgrade: `count` messages to each legacy
/// queue's binding, each id with the number of attempts it took.
async fn fill_in_flight(
    channel: &Channel,
    topology: &Topology,
    count: usize,
) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for legacy in topology.legacy_queues() {
        for n in 0..count {
            let id = format!("in-flight-{}-{n}", legacy.routing_key);
            let attempts =
                publish_until_confirmed(channel, &legacy.exchange, legacy.routing_key, &id).await;
            ids.insert(id, attempts);
        }
    }
    ids
}

/// Publishes `count` messages to each legacy queue's binding; returns their ids per queue.
async fn fill(channel: &Channel, topology: &Topology, tag: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for legacy in topology.legacy_queues() {
        for n in 0..count {
            let id = format!("{tag}-{}-{n}", legacy.routing_key);
            publish_until_confirmed(channel, &legacy.exchange, legacy.routing_key, &id).await;
            ids.push(id);
        }
    }
    ids
}

/// Takes everything from the version-2 queues: message id -> times seen.
async fn drain_version_2(channel: &Channel, topology: &Topology) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for queue in [
        &topology.payments_queue,
        &topology.decisions_queue,
        &topology.payments_dead_queue,
        &topology.decisions_dead_queue,
    ] {
        while let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let id = String::from_utf8(message.delivery.data.clone()).unwrap();
            *seen.entry(id).or_default() += 1;
        }
    }
    seen
}

/// One message, left unacked, waiting up to 5 s for it.
async fn get_unacked(channel: &Channel, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    for _ in 0..250 {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap();
        if got.is_some() {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn queue_exists(connection: &Connection, queue: &str) -> bool {
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .is_ok()
}

async fn connect() -> Connection {
    amqp::connect(&paysys_testkit::amqp_url(), "legacy-queues-test")
        .await
        .expect("RabbitMQ at AMQP_URL / 127.0.0.1:5672")
}

#[tokio::test]
async fn waiting_and_in_flight_messages_move_to_the_quorum_queues_and_the_classic_ones_go() {
    let broker = TestBroker::new();
    let topology = broker.topology.clone();
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    declare_version_1(&channel, &topology).await;
    let waiting = fill(&channel, &topology, "waiting", 150).await;

    // A publisher of the old release keeps going while two new processes (the API and the
    // risk engine) declare version 2 and retire version 1 at the same time.
    let in_flight = {
        let topology = topology.clone();
        tokio::spawn(async move {
            let connection = connect().await;
            let channel = connection.create_channel().await.unwrap();
            channel.confirm_select(Default::default()).await.unwrap();
            fill_in_flight(&channel, &topology, 100).await
        })
    };
    let upgrade = || {
        let topology = topology.clone();
        tokio::spawn(async move {
            let connection = connect().await;
            let channel = amqp::open_confirm_channel(&connection, &topology)
                .await
                .unwrap();
            drop(channel);
            retire(&connection, &topology).await.unwrap()
        })
    };
    let (api, engine) = (upgrade(), upgrade());
    let in_flight = in_flight.await.unwrap();
    let (api, engine) = (api.await.unwrap(), engine.await.unwrap());
    // Whatever reached a legacy queue after both had looked is moved by the next start.
    let last = retire(&connection, &topology).await.unwrap();
    assert!(last.remaining.is_empty(), "{last:?}");

    let seen = drain_version_2(&channel, &topology).await;
    let lost: Vec<_> = waiting
        .iter()
        .chain(in_flight.keys())
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "lost {} messages, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // A waiting message is moved exactly once; an in-flight one may reach both queues while
    // they are both bound (every consumer is idempotent), never more, per attempt.
    let doubled_waiting: Vec<_> = waiting.iter().filter(|id| seen[*id] > 1).collect();
    assert!(doubled_waiting.is_empty(), "{doubled_waiting:?}");
    assert!(
        in_flight
            .iter()
            .all(|(id, attempts)| seen[id] <= 2 * attempts)
    );
    assert!(api.moved + engine.moved + last.moved >= waiting.len() as u64);
    for legacy in topology.legacy_queues() {
        assert!(
            !queue_exists(&connection, &legacy.queue).await,
            "{} should be deleted",
            legacy.queue
        );
    }
    broker.delete().await;
}

#[tokio::test]
async fn a_legacy_queue_an_old_replica_still_consumes_is_kept_until_it_lets_go() {
    let broker = TestBroker::new();
    let topology = broker.topology.clone();
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    declare_version_1(&channel, &topology).await;
    let ids = fill(&channel, &topology, "held", 20).await;

    // The old risk engine holds every payment it got, unacked.
    let old = connect().await;
    let old_channel = old.create_channel().await.unwrap();
    let legacy_payments = topology.legacy_queues()[0].queue.clone();
    let _consumer = old_channel
        .basic_consume(
            legacy_payments.as_str().into(),
            "old-risk-engine".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    amqp::open_confirm_channel(&connection, &topology)
        .await
        .unwrap();
    let first = retire(&connection, &topology).await.unwrap();
    assert_eq!(first.remaining, vec![legacy_payments.clone()], "{first:?}");
    assert!(queue_exists(&connection, &legacy_payments).await);

    // The old replica stops: what it held returns to the legacy queue and moves on.
    old.close(200, "replaced".into()).await.unwrap();
    let second = retire(&connection, &topology).await.unwrap();
    assert!(second.remaining.is_empty(), "{second:?}");
    let seen = drain_version_2(&channel, &topology).await;
    let lost: Vec<_> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(lost.is_empty(), "lost {lost:?}");
    broker.delete().await;
}

#[tokio::test]
async fn version_2_queues_are_quorum_queues_that_dead_letter_past_the_delivery_limit() {
    let mut broker = TestBroker::new();
    broker.topology.delivery_limit = 2;
    let (connection, channel) = broker.channel().await;
    let topology = &broker.topology;

    // Redeclaring as a classic queue is refused: the queue's type is quorum.
    let probe = connection.create_channel().await.unwrap();
    let classic = probe
        .queue_declare(
            topology.payments_queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    let refused = classic
        .expect_err("a classic declaration of a quorum queue")
        .to_string();
    assert!(refused.contains("PRECONDITION_FAILED"), "{refused}");

    publish_until_confirmed(
        &channel,
        &topology.payments_exchange,
        "payment.created",
        "crashes-consumers",
    )
    .await;
    // A consumer that dies on this message, again and again (each delivery returned).
    for _ in 0..3 {
        let Some(message) = get_unacked(&channel, &topology.payments_queue).await else {
            break;
        };
        message
            .delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let dead = broker
        .get(
            &channel,
            &topology.payments_dead_queue,
            Duration::from_secs(5),
        )
        .await
        .expect("dead-lettered after the delivery limit");
    assert_eq!(dead.delivery.data, b"crashes-consumers");
    broker.delete().await;
}
