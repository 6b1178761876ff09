use std::time::Duration;

use axum::http::StatusCode;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_rate_gets_429_with_retry_after() {
    let api =
        TestApi::start_with(&[("RATE_LIMIT_PER_SECOND", "2"), ("RATE_LIMIT_BURST", "3")]).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(api.get("/v1/payments", Some(ALICE)).await);
    }
    let limited: Vec<_> = statuses
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        limited.len() >= 2,
        "{:?}",
        statuses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(limited[0].body["status"], 429);
    assert!(
        limited[0].headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(
        api.get("/v1/payments", Some(BOB)).await.status,
        StatusCode::OK,
        "bob is not limited by alice"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        api.get("/v1/payments", Some(ALICE)).await.status,
        StatusCode::OK,
        "the bucket refills"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_beyond_max_in_flight_is_shed_at_once_but_probes_answer() {
    let api = TestApi::start_with(&[("MAX_IN_FLIGHT", "1")]).await;
    // Block payment inserts so one request stays in flight.
    let mut lock = api.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let body = demo_payment();
    let stuck = api.post("/payments", Some(ALICE), &body);
    let probe = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let shed = api
            .get(
                "/payments/00000000-0000-0000-0000-000000000000",
                Some(ALICE),
            )
            .await;
        let health = api.get("/healthz", None).await;
        lock.rollback().await.unwrap();
        (shed, started.elapsed(), health)
    };
    let (stuck, (shed, took, health)) = tokio::join!(stuck, probe);
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(shed.headers.contains_key("retry-after"));
    assert_eq!(
        shed.body["detail"], "the server is at capacity; retry shortly",
        "shed by the in-flight bound, with the JSON error body"
    );
    assert!(
        took < Duration::from_secs(1),
        "shed without waiting: {took:?}"
    );
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        stuck.status,
        StatusCode::CREATED,
        "the request in flight completes"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_timeout_gets_503_with_retry_after() {
    let api = TestApi::start_with(&[("REQUEST_TIMEOUT_MS", "300")]).await;
    // Block payment inserts so the request cannot finish in time.
    let mut lock = api.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let reply = api.post("/payments", Some(ALICE), &demo_payment()).await;
    let took = started.elapsed();
    lock.rollback().await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(reply.headers["retry-after"], "1");
    assert_eq!(reply.body["status"], 503);
    assert_eq!(reply.body["detail"], "the request timed out; retry shortly");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "answered at the deadline: {took:?}"
    );
    // Probes answer within the deadline as before.
    assert_eq!(api.get("/healthz", None).await.status, StatusCode::OK);
    api.stop().await;
}

/// With no risk engine, decisions never come: past `MAX_UNDECIDED` undecided payments new
/// ones get `503` + `Retry-After` (the backlog and its age are in the metrics), and admission
/// reopens once decisions bring the backlog back under the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_are_refused_while_too_many_wait_for_a_decision() {
    let api = TestApi::start_with(&[("MAX_UNDECIDED", "2")]).await;
    // Admission closes within the backlog's refresh delay: keep every payment accepted.
    let mut ids = Vec::new();
    let mut refused = None;
    for _ in 0..250 {
        let reply = api.post("/payments", Some(ALICE), &demo_payment()).await;
        if reply.status != StatusCode::CREATED {
            refused = Some(reply);
            break;
        }
        ids.push(reply.body["PaymentId"].as_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("admission never closed");
    assert!(ids.len() >= 3, "closed before the bound: {}", ids.len());
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.body
    );
    assert_eq!(refused.body["status"], 503);
    assert!(refused.headers.contains_key("retry-after"));
    let metrics = api
        .get("/metrics", None)
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned();
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from {metrics}"))
            .parse()
            .unwrap()
    };
    assert!(gauge("paysys_api_undecided_payments") >= 3.0, "{metrics}");
    assert!(
        gauge("paysys_api_undecided_oldest_age_seconds") > 0.0,
        "{metrics}"
    );
    // Other requests are still served.
    assert_eq!(
        api.get("/v1/payments", Some(ALICE)).await.status,
        StatusCode::OK
    );

    let (_conn, channel) = api.broker.channel().await;
    for id in &ids {
        api.publish_decision(&channel, id, "approved").await;
    }
    let reopened = paysys_testkit::eventually(Duration::from_secs(10), || async {
        let reply = api.post("/payments", Some(ALICE), &demo_payment()).await;
        (reply.status == StatusCode::CREATED).then_some(())
    })
    .await;
    assert!(reopened.is_some(), "admission never reopened");
    api.broker.delete().await;
    api.stop().await;
}
