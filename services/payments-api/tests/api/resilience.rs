use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use paysys_testkit::{FaultProxy, TestBroker, TestDb};
use serde_json::Value;

use crate::harness::*;

async fn outbox_len(api: &TestApi) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&api.pool)
        .await
        .unwrap()
}

async fn drain_queue(api: &TestApi, channel: &lapin::Channel, expected: usize) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < expected {
        let Some(message) = api
            .broker
            .get(
                channel,
                &api.broker.topology.payments_queue,
                Duration::from_secs(15),
            )
            .await
        else {
            break;
        };
        let body: Value = serde_json::from_slice(&message.delivery.data).unwrap();
        ids.push(body["payment_id"].as_str().unwrap().to_owned());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_request_time_still_201_and_published_once_back() {
    let broker = TestBroker::new();
    let (proxy, amqp_url) = FaultProxy::in_front_of(&broker.url).await;
    proxy.cut().await;

    let api = TestApi::start_on(TestDb::create().await, broker, &[("AMQP_URL", &amqp_url)]).await;

    let mut ids = HashSet::new();
    for _ in 0..5 {
        ids.insert(api.create(&demo_payment()).await);
    }
    assert_eq!(
        outbox_len(&api).await,
        5,
        "accepted payments wait in the outbox"
    );
    let ready = api.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.body["checks"]["broker"], "down");
    // The metrics see the outbox grow while no relay reaches the broker.
    let waiting = paysys_testkit::eventually(Duration::from_secs(10), || async {
        let depth = api.metric("paysys_outbox_depth").await?;
        let age = api.metric("paysys_outbox_oldest_age_seconds").await?;
        (depth == 5.0 && age > 0.0).then_some(age)
    })
    .await
    .expect("paysys_outbox_depth reaches 5 with an oldest age");
    assert!(waiting < 60.0, "oldest age {waiting} s");

    proxy.restore();
    let (_conn, channel) = api.broker.channel().await;
    let published: HashSet<String> = drain_queue(&api, &channel, 5).await.into_iter().collect();
    assert_eq!(published, ids);
    let drained = paysys_testkit::eventually(Duration::from_secs(10), || async {
        (outbox_len(&api).await == 0).then_some(())
    })
    .await;
    assert!(drained.is_some(), "the outbox drains");
    let emptied = paysys_testkit::eventually(Duration::from_secs(10), || async {
        let depth = api.metric("paysys_outbox_depth").await?;
        let age = api.metric("paysys_outbox_oldest_age_seconds").await?;
        (depth == 0.0 && age == 0.0).then_some(())
    })
    .await;
    assert!(emptied.is_some(), "the outbox metrics return to 0");
    api.broker.delete().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_cut_mid_stream_loses_nothing() {
    let broker = TestBroker::new();
    let (proxy, amqp_url) = FaultProxy::in_front_of(&broker.url).await;

    let api = TestApi::start_on(TestDb::create().await, broker, &[("AMQP_URL", &amqp_url)]).await;
    let mut ids = HashSet::new();
    for round in 0..4 {
        for _ in 0..10 {
            ids.insert(api.create(&demo_payment()).await);
        }
        if round % 2 == 0 {
            proxy.cut().await;
        } else {
            proxy.restore();
        }
    }
    proxy.restore();
    let (_conn, channel) = api.broker.channel().await;
    // At-least-once: every accepted payment arrives; a redelivery may repeat one.
    let mut published = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while published.len() < ids.len() && Instant::now() < deadline {
        published.extend(drain_queue(&api, &channel, 1).await);
    }
    assert_eq!(published, ids);
    api.broker.delete().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_api_publishes_what_a_stopped_one_left() {
    let db = TestDb::create().await;
    let broker = TestBroker::new();
    let (proxy, amqp_url) = FaultProxy::in_front_of(&broker.url).await;
    proxy.cut().await;

    let first = TestApi::start_on(
        TestDb {
            name: db.name.clone(),
            url: db.url.clone(),
        },
        broker.sharing(&broker.url),
        &[("AMQP_URL", &amqp_url)],
    )
    .await;
    let mut ids = HashSet::new();
    for _ in 0..3 {
        ids.insert(first.create(&demo_payment()).await);
    }
    first.stop().await; // committed, never published

    let second = TestApi::start_on(db, broker, &[]).await;
    let (_conn, channel) = second.broker.channel().await;
    let published: HashSet<String> = drain_queue(&second, &channel, 3)
        .await
        .into_iter()
        .collect();
    assert_eq!(published, ids);
    second.broker.delete().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_answers_503_with_retry_after_quickly() {
    let db = TestDb::create().await;
    let (proxy, url) = FaultProxy::in_front_of(&db.url).await;
    let api = TestApi::start_on(
        db,
        TestBroker::new(),
        &[("DATABASE_URL", &url), ("REQUEST_TIMEOUT_MS", "5000")],
    )
    .await;
    api.create(&demo_payment()).await;

    proxy.cut().await;
    let started = Instant::now();
    let reply = api.post("/payments", Some(ALICE), &demo_payment()).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert!(reply.headers.contains_key("retry-after"));
    assert_eq!(reply.body["status"], 503);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "no hang: {:?}",
        started.elapsed()
    );
    let reply = api.get("/readyz", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body["checks"]["database"], "down");

    proxy.restore();
    let recovered = paysys_testkit::eventually(Duration::from_secs(15), || async {
        let reply = api.post("/payments", Some(ALICE), &demo_payment()).await;
        (reply.status == StatusCode::CREATED).then_some(())
    })
    .await;
    assert!(
        recovered.is_some(),
        "the API recovers when the database returns"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_resume_after_a_broker_cut_mid_stream() {
    use payments_api::store::payments::{Insert, insert_many};
    use payments_api::validation::parse_new_payment;

    let broker = TestBroker::new();
    let (proxy, amqp_url) = FaultProxy::in_front_of(&broker.url).await;

    let api = TestApi::start_on(TestDb::create().await, broker, &[("AMQP_URL", &amqp_url)]).await;

    // Many pending payments, then a decision for each straight onto the decisions queue.
    let body = demo_payment().to_string();
    let payment = parse_new_payment(body.as_bytes(), rust_decimal::Decimal::from(1000)).unwrap();
    let rows: Vec<Insert> = (0..2000)
        .map(|_| Insert {
            id: uuid::Uuid::now_v7(),
            principal: "alice".into(),
            payment: payment.clone(),
        })
        .collect();
    let mut conn = api.pool.acquire().await.unwrap();
    insert_many(&mut conn, &rows, Duration::from_secs(3600))
        .await
        .unwrap();
    drop(conn);
    let (_conn, channel) = api.broker.channel().await;
    for row in &rows {
        api.publish_decision(&channel, &row.id.to_string(), "approved")
            .await;
    }
    let pending = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM payments WHERE status = 'pending'")
            .fetch_one(&api.pool)
            .await
            .unwrap()
    };
    // Cut while the consumer is busy applying and acking.
    paysys_testkit::eventually(Duration::from_secs(20), || async {
        (pending().await < 1900).then_some(())
    })
    .await
    .expect("decisions start flowing");
    proxy.cut().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.restore();

    let drained = paysys_testkit::eventually(Duration::from_secs(30), || async {
        (pending().await == 0).then_some(())
    })
    .await;
    assert!(
        drained.is_some(),
        "{} payments still pending after the broker came back",
        pending().await
    );
    api.broker.delete().await;
    api.stop().await;
}

/// Under a memory or disk alarm RabbitMQ stops reading from every connection that publishes,
/// so confirms never come until the alarm clears. Payments are still accepted (each `201` is
/// durable in the outbox), the blocked connection shows in the metrics, a stop still ends
/// promptly, and once the alarm clears the next start publishes every payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_alarm_holds_payments_in_the_outbox_and_never_hangs_a_stop() {
    let node = paysys_testkit::private_broker::PrivateBroker::start().await;
    let db = TestDb::create().await;
    let shared = TestBroker::new();
    let on_node = || shared.sharing(&node.url());
    let first = TestApi::start_on(
        TestDb {
            name: db.name.clone(),
            url: db.url.clone(),
        },
        on_node(),
        &[],
    )
    .await;
    let ready = paysys_testkit::eventually(Duration::from_secs(30), || async {
        (first.get("/readyz", None).await.status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the API connected to the private node");

    node.raise_memory_alarm();
    let mut ids = HashSet::new();
    for _ in 0..3 {
        ids.insert(first.create(&demo_payment()).await);
    }
    let blocked = paysys_testkit::eventually(Duration::from_secs(20), || async {
        let metrics = first.get("/metrics", None).await.body;
        let metrics = metrics.as_str().unwrap_or_default().to_owned();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("paysys_api_broker_blocked "))
            .and_then(|value| value.parse::<i64>().ok())
            .filter(|blocked| *blocked >= 1)
    })
    .await;
    assert!(blocked.is_some(), "the blocked relay shows in the metrics");
    assert_eq!(
        outbox_len(&first).await,
        3,
        "the payments wait in the outbox"
    );

    let stopping = Instant::now();
    first.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "a stop under an alarm took {:?}",
        stopping.elapsed()
    );

    node.clear_alarm();
    let second = TestApi::start_on(db, on_node(), &[]).await;
    let (_conn, channel) = second.broker.channel().await;
    // At-least-once: a payment the blocked connection had sent before the broker stopped
    // reading is published again by the next start.
    let mut published = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while published.len() < ids.len() && Instant::now() < deadline {
        published.extend(drain_queue(&second, &channel, 1).await);
    }
    assert_eq!(published, ids);
    second.stop().await;
}
