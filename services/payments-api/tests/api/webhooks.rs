//! Merchant webhooks against the real PostgreSQL, with real HTTP receivers on 127.0.0.1:
//! endpoints and their bad input, the events the triggers write, the address checks at
//! registration and delivery, and delivery under faults (receiver down, failing, hanging,
//! slow; the database cut; the API killed with SIGKILL mid-delivery).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use base64::Engine;
use futures::StreamExt;
use paysys_testkit::webhook_receiver::{self, Mode, Received, Receiver};
use paysys_testkit::{FaultProxy, TestBroker, TestDb};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::harness::*;

/// The test key of WEBHOOK_SECRETS_KEY (32 bytes).
fn secrets_key() -> String {
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

/// Webhooks on, plain http and loopback allowed (tests deliver to 127.0.0.1), short waits.
fn webhook_env(key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("WEBHOOKS_ENABLED", "true".into()),
        ("WEBHOOK_SECRETS_KEY", key.into()),
        ("WEBHOOK_ALLOW_HTTP", "true".into()),
        ("WEBHOOK_ALLOWED_CIDRS", "127.0.0.0/8".into()),
        ("WEBHOOK_RETRY_FIRST_MS", "100".into()),
        ("WEBHOOK_RETRY_LONGEST_MS", "1000".into()),
        ("WEBHOOK_TIMEOUT_MS", "1000".into()),
        ("WEBHOOK_POLL_INTERVAL_MS", "20".into()),
        ("DB_MAX_CONNECTIONS", "8".into()),
    ]
}

async fn start_webhooks(extra: &[(&'static str, &str)]) -> TestApi {
    let key = secrets_key();
    let mut env = webhook_env(&key);
    for (name, value) in extra {
        env.retain(|(n, _)| n != name);
        env.push((*name, value.to_string()));
    }
    let refs: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
    TestApi::start_with(&refs).await
}

/// Registers `url` for `types` as `auth`; returns (endpoint id, secret).
async fn register(api: &TestApi, auth: &str, url: &str, types: &[&str]) -> (String, String) {
    let reply = api
        .post(
            "/v1/webhook-endpoints",
            Some(auth),
            &json!({"url": url, "eventTypes": types}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    (
        reply.body["id"].as_str().unwrap().to_owned(),
        reply.body["secret"].as_str().unwrap().to_owned(),
    )
}

const ALL_TYPES: [&str; 7] = [
    "payment.created",
    "payment.approved",
    "payment.declined",
    "payment.captured",
    "payment.canceled",
    "payment.refunded",
    "payment.disputed",
];

async fn endpoint_count(api: &TestApi) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(&api.pool)
        .await
        .unwrap()
}

/// The ids of the principal's events, once every event written so far is sequenced.
async fn event_ids(api: &TestApi, principal: &str) -> HashSet<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let unsequenced: i64 = sqlx::query_scalar("SELECT count(*) FROM events_unsequenced")
            .fetch_one(&api.pool)
            .await
            .unwrap();
        if unsequenced == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "events were not sequenced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM events WHERE principal = $1")
        .bind(principal)
        .fetch_all(&api.pool)
        .await
        .unwrap();
    ids.into_iter().collect()
}

/// Events owed to an endpoint but not yet made into its delivery rows (above its cursor, of
/// its principal and a type it subscribes to).
const NOT_FANNED_OUT: &str = "SELECT count(*) FROM webhook_endpoints e
    JOIN events v ON v.principal = e.principal AND v.id > e.fanned_out_through
    WHERE v.type = ANY (e.event_types)";

/// The endpoint's delivery rows.
async fn delivery_rows(api: &TestApi, endpoint: uuid::Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1")
        .bind(endpoint)
        .fetch_one(&api.pool)
        .await
        .unwrap()
}

/// Pauses (`Some("infinity")`) or resumes (`None`) the endpoint, as the dispatcher would.
async fn set_paused_until(api: &TestApi, endpoint: uuid::Uuid, until: Option<&str>) {
    sqlx::query("UPDATE webhook_endpoints SET paused_until = $2::timestamptz WHERE id = $1")
        .bind(endpoint)
        .bind(until)
        .execute(&api.pool)
        .await
        .unwrap();
}

/// Creates `n` payments as alice, `concurrency` at a time; returns their ids.
async fn create_many(api: &TestApi, n: usize, concurrency: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|_| async { api.create(&demo_payment()).await })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Checks that each payment's events were first accepted in the order of their ids.
fn assert_in_order_per_payment(received: &[Received]) {
    if let Some((payment, id, previous)) = webhook_receiver::out_of_order(received) {
        panic!("payment {payment}: event {id} arrived after {previous}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_owner_scoped_and_bad_input_stores_nothing() {
    let api = start_webhooks(&[]).await;
    let url = "http://127.0.0.1:9/hook";

    let created = api
        .post(
            "/v1/webhook-endpoints",
            Some(ALICE),
            &json!({"url": url, "eventTypes": ["payment.approved", "payment.approved"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created.body["eventTypes"], json!(["payment.approved"]));
    assert_eq!(
        created.headers["location"].to_str().unwrap(),
        format!("/v1/webhook-endpoints/{id}")
    );
    // The secret is stored sealed: the database does not hold it.
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT secret_encrypted FROM webhook_endpoints WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert!(
        !stored
            .windows(10)
            .any(|w| secret.as_bytes().windows(10).any(|s| s == w))
    );

    // Shown once: never in the listing or the endpoint.
    let one = api
        .get(&format!("/v1/webhook-endpoints/{id}"), Some(ALICE))
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert!(one.body.get("secret").is_none());
    assert_eq!(one.body["url"], url);
    let list = api.get("/v1/webhook-endpoints", Some(ALICE)).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    assert!(!list.body.to_string().contains(&secret));

    // Someone else's endpoint does not exist for bob.
    let bobs = api.get("/v1/webhook-endpoints", Some(BOB)).await;
    assert_eq!(bobs.body["data"], json!([]));
    for (method, path) in [
        (Method::GET, format!("/v1/webhook-endpoints/{id}")),
        (Method::DELETE, format!("/v1/webhook-endpoints/{id}")),
        (
            Method::POST,
            format!("/v1/webhook-endpoints/{id}/rotate-secret"),
        ),
        (Method::GET, format!("/v1/webhook-endpoints/{id}/attempts")),
    ] {
        let reply = api
            .request(method.clone(), &path, Some(BOB), &[], None)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            reply.body
        );
    }

    // Bad input: 400 naming the field, nothing stored.
    for (body, field) in [
        (
            json!({"url": "not a url", "eventTypes": ["payment.created"]}),
            "url",
        ),
        (
            json!({"url": "ftp://example.com/x", "eventTypes": ["payment.created"]}),
            "url",
        ),
        (json!({"url": 42, "eventTypes": ["payment.created"]}), "url"),
        (
            json!({"url": url, "eventTypes": ["payment.exploded"]}),
            "eventTypes",
        ),
        (json!({"url": url, "eventTypes": []}), "eventTypes"),
        (
            json!({"url": url, "eventTypes": "payment.created"}),
            "eventTypes",
        ),
        (json!({"url": url}), "eventTypes"),
        (
            json!({"url": url, "eventTypes": ["payment.created"], "extra": 1}),
            "extra",
        ),
    ] {
        let reply = api.post("/v1/webhook-endpoints", Some(ALICE), &body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.body
        );
        assert!(
            reply.body.to_string().contains(field),
            "{body}: {}",
            reply.body
        );
    }
    let unknown = api
        .post(
            "/v1/webhook-endpoints",
            Some(ALICE),
            &json!({"url": url, "eventTypes": ["payment.exploded"]}),
        )
        .await;
    assert!(
        unknown.body.to_string().contains("payment.captured"),
        "names the known types"
    );
    for path in [
        "/v1/webhook-endpoints/not-a-uuid",
        "/v1/webhook-endpoints/not-a-uuid/attempts",
    ] {
        assert_eq!(
            api.get(path, Some(ALICE)).await.status,
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(endpoint_count(&api).await, 1, "bad input stored nothing");

    // Rotation: a new secret, shown once.
    let rotated = api
        .request(
            Method::POST,
            &format!("/v1/webhook-endpoints/{id}/rotate-secret"),
            Some(ALICE),
            &[],
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    assert_ne!(rotated.body["secret"].as_str().unwrap(), secret);
    assert!(rotated.body["secretRotatedAt"].is_string());

    let deleted = api
        .request(
            Method::DELETE,
            &format!("/v1/webhook-endpoints/{id}"),
            Some(ALICE),
            &[],
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let again = api
        .get(&format!("/v1/webhook-endpoints/{id}"), Some(ALICE))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(endpoint_count(&api).await, 0);
    assert_eq!(
        api.get("/v1/webhook-endpoints", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_destinations_are_a_400_at_registration() {
    // No allow-list: loopback and private ranges are refused, names included.
    let api = start_webhooks(&[("WEBHOOK_ALLOWED_CIDRS", "")]).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://172.16.5.4/hook",
        "http://100.64.0.1/hook",
        "http://[fd00::1]/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://0x7f000001/hook",
        "http://no-such-host.invalid/hook",
    ] {
        let reply = api
            .post(
                "/v1/webhook-endpoints",
                Some(ALICE),
                &json!({"url": url, "eventTypes": ["payment.created"]}),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{url}: {}",
            reply.body
        );
        assert!(
            reply.body.to_string().contains("url"),
            "{url}: {}",
            reply.body
        );
    }
    assert_eq!(endpoint_count(&api).await, 0);
    api.stop().await;

    // Without WEBHOOK_ALLOW_HTTP only https is accepted.
    let api = start_webhooks(&[("WEBHOOK_ALLOW_HTTP", "false")]).await;
    let reply = api
        .post(
            "/v1/webhook-endpoints",
            Some(ALICE),
            &json!({"url": "http://127.0.0.1:9/hook", "eventTypes": ["payment.created"]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.body.to_string().contains("https"), "{}", reply.body);
    assert_eq!(endpoint_count(&api).await, 0);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_checks_the_destination_again() {
    // Registered while allowed (an allow-list later narrowed, or DNS that changed): the
    // endpoints are in the database, the running API does not allow loopback.
    let api = start_webhooks(&[("WEBHOOK_ALLOWED_CIDRS", "")]).await;
    let receiver = Receiver::start(Mode::Ok).await;
    let key = payments_api::webhooks::secrets::SecretBox::from_base64(&secrets_key()).unwrap();
    let port = receiver.addr.port();
    let mut endpoints = Vec::new();
    for url in [
        format!("http://localhost:{port}/hook"),
        format!("http://127.0.0.1:{port}/hook"),
    ] {
        let id = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, principal, url, event_types, secret_encrypted)
             VALUES ($1, 'alice', $2, ARRAY['payment.created'], $3)",
        )
        .bind(id)
        .bind(&url)
        .bind(key.seal(id, "whsec_x"))
        .execute(&api.pool)
        .await
        .unwrap();
        endpoints.push(id);
    }
    receiver.set_secret("whsec_x");
    api.create(&demo_payment()).await;
    // Both attempts are made and refused before any connection.
    for id in &endpoints {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let reply = api
                .get(&format!("/v1/webhook-endpoints/{id}/attempts"), Some(ALICE))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            if let Some(attempt) = reply.body["data"].as_array().unwrap().first() {
                assert!(attempt["httpStatus"].is_null(), "{attempt}");
                let error = attempt["error"].as_str().unwrap();
                assert!(error.contains("refused"), "{error}");
                break;
            }
            assert!(Instant::now() < deadline, "no attempt recorded for {id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(receiver.requests(), 0, "nothing reached loopback");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_of_a_payment_is_one_event_listed_in_commit_order() {
    let api = start_webhooks(&[]).await;
    let canceled = api.create(&demo_payment()).await;
    let captured = api.create(&demo_payment()).await;
    let bobs = api.post("/payments", Some(BOB), &demo_payment()).await;
    assert_eq!(bobs.status, StatusCode::CREATED);
    assert_eq!(
        api.post(
            &format!("/payments/{canceled}/cancel"),
            Some(ALICE),
            &json!({})
        )
        .await
        .status,
        StatusCode::OK
    );
    // The decision as the consumer applies it, then a capture and a dispute.
    sqlx::query("UPDATE payments SET status = 'approved', decision = $2 WHERE id = $1::uuid")
        .bind(&captured)
        .bind(
            json!({"schema_version": 2, "payment_id": captured, "outcome": "approved", "score": 0,
                 "reasons": [], "rules_version": "test", "decided_at": "2026-01-01T00:00:00Z"}),
        )
        .execute(&api.pool)
        .await
        .unwrap();
    let capture = api
        .post(
            &format!("/payments/{captured}/capture"),
            Some(ALICE),
            &json!({}),
        )
        .await;
    assert_eq!(capture.status, StatusCode::OK, "{}", capture.body);
    let dispute = api
        .post(
            &format!("/payments/{captured}/disputes"),
            Some(ALICE),
            &json!({"reason": "fraudulent"}),
        )
        .await;
    assert_eq!(dispute.status, StatusCode::CREATED, "{}", dispute.body);
    // An update that changes no status and no dispute is no event.
    sqlx::query("UPDATE payments SET updated_at = now()")
        .execute(&api.pool)
        .await
        .unwrap();

    let ids = event_ids(&api, "alice").await;
    assert_eq!(
        ids.len(),
        6,
        "created ×2, canceled, approved, captured, disputed"
    );
    let page = api.get("/v1/events?limit=500", Some(ALICE)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let events = page.body["data"].as_array().unwrap();
    let listed: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["payment"]["id"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let of = |payment: &str| -> Vec<&str> {
        listed
            .iter()
            .filter(|(p, _)| p == payment)
            .map(|(_, t)| t.as_str())
            .collect()
    };
    assert_eq!(of(&canceled), ["payment.created", "payment.canceled"]);
    assert_eq!(
        of(&captured),
        [
            "payment.created",
            "payment.approved",
            "payment.captured",
            "payment.disputed"
        ]
    );
    // The payment as it was at each event, in the view of GET /payments/{id}.
    let captured_event = &events
        .iter()
        .find(|e| e["type"] == "payment.captured")
        .unwrap()["payment"];
    assert_eq!(captured_event["status"], "captured");
    assert_eq!(captured_event["amountMinor"], 7050);
    assert_eq!(captured_event["amount"], json!(70.5));
    assert_eq!(captured_event["decision"]["outcome"], "approved");
    assert!(captured_event["dispute"].is_null());
    let disputed_event = &events.last().unwrap()["payment"];
    assert_eq!(disputed_event["dispute"]["reason"], "fraudulent");
    assert!(captured_event.get("history").is_none());
    assert!(captured_event.get("principal").is_none());
    // Ids increase; paging by `after` gives the rest.
    let id_list: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(id_list.windows(2).all(|w| w[0] < w[1]), "{id_list:?}");
    let rest = api
        .get(
            &format!("/v1/events?after={}&limit=2", id_list[1]),
            Some(ALICE),
        )
        .await;
    let rest_ids: Vec<i64> = rest.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(rest_ids, id_list[2..4]);
    assert_eq!(rest.body["hasMore"], true);
    // Bob sees only his own.
    let bob = api.get("/v1/events", Some(BOB)).await;
    assert_eq!(bob.body["data"].as_array().unwrap().len(), 1);
    for query in ["after=-1", "after=x", "limit=0", "limit=501", "cursor=1"] {
        let reply = api.get(&format!("/v1/events?{query}"), Some(ALICE)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            reply.body
        );
    }
    api.stop().await;
}

/// The acceptance run: 2,000 payments, a receiver verifying every signature gets every
/// event (each id at least once), each payment's events in order; bob's endpoint gets none
/// of alice's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_2000_payments_arrives_signed_and_in_order() {
    let api = start_webhooks(&[]).await;
    let receiver = Receiver::start(Mode::Ok).await;
    let (_, secret) = register(&api, ALICE, &receiver.url(), &ALL_TYPES).await;
    receiver.set_secret(&secret);
    let bobs = Receiver::start(Mode::Ok).await;
    let (_, bob_secret) = register(&api, BOB, &bobs.url(), &ALL_TYPES).await;
    bobs.set_secret(&bob_secret);

    let payments = create_many(&api, 2000, 16).await;
    cancel_every_other(&api, &payments, 16).await;

    let expected = event_ids(&api, "alice").await;
    assert_eq!(expected.len(), 3000);
    assert!(
        receiver.wait_for(&expected, Duration::from_secs(120)).await,
        "missing: {} of {}",
        expected.difference(&receiver.distinct()).count(),
        expected.len()
    );
    assert_eq!(receiver.bad_signatures(), 0);
    assert_eq!(receiver.distinct(), expected, "nothing but alice's events");
    assert_in_order_per_payment(&receiver.accepted());
    let created = receiver
        .accepted()
        .iter()
        .filter(|e| e.event_type == "payment.created")
        .map(|e| e.payment_id.clone())
        .collect::<HashSet<_>>();
    assert_eq!(created.len(), 2000);
    assert!(
        bobs.accepted().is_empty(),
        "bob gets none of alice's events"
    );
    api.stop().await;
}

/// Faults on the receiver's side, one after the other, each with events waiting: every
/// event still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_through_a_receiver_down_failing_hanging_and_slow() {
    let api = start_webhooks(&[("WEBHOOK_TIMEOUT_MS", "300")]).await;
    // Down: the port is reserved, then closed, when the payments are made.
    let placeholder = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = placeholder.local_addr().unwrap();
    drop(placeholder);
    let (endpoint, secret) =
        register(&api, ALICE, &format!("http://{addr}/hook"), &ALL_TYPES).await;
    create_many(&api, 50, 8).await;
    let expected = event_ids(&api, "alice").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let receiver = Receiver::start_on(addr, Mode::FailFirst).await;
    receiver.set_secret(&secret);
    assert!(
        receiver.wait_for(&expected, Duration::from_secs(60)).await,
        "after down and 500s"
    );

    // Hanging past the timeout the first time each event comes.
    receiver.set_mode(Mode::HangFirst);
    create_many(&api, 30, 8).await;
    let expected = event_ids(&api, "alice").await;
    assert!(
        receiver.wait_for(&expected, Duration::from_secs(60)).await,
        "after hangs"
    );

    // Slow (below the timeout).
    receiver.set_mode(Mode::Slow(150));
    create_many(&api, 30, 8).await;
    let expected = event_ids(&api, "alice").await;
    assert!(
        receiver.wait_for(&expected, Duration::from_secs(60)).await,
        "while slow"
    );

    assert_eq!(receiver.bad_signatures(), 0);
    assert_in_order_per_payment(&receiver.accepted());
    // The attempts tell what happened.
    let attempts = api
        .get(
            &format!("/v1/webhook-endpoints/{endpoint}/attempts?limit=100"),
            Some(ALICE),
        )
        .await;
    let mut errors = String::new();
    let mut before = None;
    loop {
        let path = match before {
            None => format!("/v1/webhook-endpoints/{endpoint}/attempts?limit=100"),
            Some(id) => format!("/v1/webhook-endpoints/{endpoint}/attempts?limit=100&before={id}"),
        };
        let page = api.get(&path, Some(ALICE)).await;
        for attempt in page.body["data"].as_array().unwrap() {
            errors.push_str(attempt["error"].as_str().unwrap_or("ok"));
            errors.push('\n');
            before = attempt["id"].as_i64();
        }
        if page.body["hasMore"] != true {
            break;
        }
    }
    assert_eq!(attempts.status, StatusCode::OK);
    for what in ["cannot connect", "HTTP 500", "timed out"] {
        assert!(errors.contains(what), "no attempt says {what:?}:\n{errors}");
    }
    api.stop().await;
}

/// Dead (refused) and hanging endpoints next to a live one: the live one gets every event
/// while the others fail, and the dead ones are paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_hanging_endpoints_do_not_delay_a_live_one() {
    let api = start_webhooks(&[("WEBHOOK_TIMEOUT_MS", "60000")]).await;
    let mut dead = Vec::new();
    for _ in 0..40 {
        let placeholder = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", placeholder.local_addr().unwrap());
        drop(placeholder);
        dead.push(register(&api, ALICE, &url, &["payment.created"]).await.0);
    }
    let hanging = Receiver::start(Mode::Hang).await;
    let mut hung = Vec::new();
    for _ in 0..5 {
        hung.push(
            register(&api, ALICE, &hanging.url(), &["payment.created"])
                .await
                .0,
        );
    }
    let live = Receiver::start(Mode::Ok).await;
    let (live_id, secret) = register(&api, ALICE, &live.url(), &["payment.created"]).await;
    live.set_secret(&secret);

    create_many(&api, 200, 8).await;
    let expected = event_ids(&api, "alice").await;
    assert!(
        live.wait_for(&expected, Duration::from_secs(50)).await,
        "live endpoint starved"
    );
    // The hanging endpoints' first requests are all still open (they end only at the 60 s
    // timeout): the live endpoint got every event without waiting for any of them.
    assert!(hanging.requests() > 0, "the hanging ones were tried");
    let hung_attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_attempts WHERE endpoint_id = ANY($1)")
            .bind(
                hung.iter()
                    .map(|id| id.parse::<uuid::Uuid>().unwrap())
                    .collect::<Vec<_>>(),
            )
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert_eq!(
        hung_attempts, 0,
        "no attempt to a hanging endpoint has ended yet"
    );
    let dead: Vec<uuid::Uuid> = dead.iter().map(|id| id.parse().unwrap()).collect();
    // The dead and hanging ones never succeeded: each is fanned out one event at a time (the
    // one it is tried with), not one row per event.
    let most: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM webhook_deliveries
                                          WHERE endpoint_id <> $1 GROUP BY endpoint_id) t",
    )
    .bind(live_id.parse::<uuid::Uuid>().unwrap())
    .fetch_one(&api.pool)
    .await
    .unwrap();
    assert_eq!(most, 1, "rows of a failing endpoint");
    // Paused after 5 failures in a row (their retries 0.1 s doubling to 1 s apart).
    let paused = paysys_testkit::eventually(Duration::from_secs(20), || async {
        let paused: i64 = sqlx::query_scalar(
            // Set when paused, cleared only by a success (the pauses here last at most 1 s).
            "SELECT count(*) FROM webhook_endpoints WHERE paused_until IS NOT NULL AND id = ANY($1)",
        )
        .bind(&dead)
        .fetch_one(&api.pool)
        .await
        .unwrap();
        (paused > 0).then_some(())
    })
    .await;
    assert!(paused.is_some(), "failing endpoints are paused");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_given_up_after_the_retry_window_and_the_endpoint_marked_failing() {
    let api = start_webhooks(&[("WEBHOOK_RETRY_WINDOW_SECONDS", "1")]).await;
    let receiver = Receiver::start(Mode::Fail).await;
    let (endpoint, secret) = register(&api, ALICE, &receiver.url(), &ALL_TYPES).await;
    receiver.set_secret(&secret);
    api.create(&demo_payment()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = api
            .get(&format!("/v1/webhook-endpoints/{endpoint}"), Some(ALICE))
            .await;
        if reply.body["failingSince"].is_string() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never marked failing: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(pending, 0, "the given-up delivery is dropped");
    // The next success clears the mark.
    receiver.set_mode(Mode::Ok);
    let expected: HashSet<i64> = {
        api.create(&demo_payment()).await;
        let all = event_ids(&api, "alice").await;
        all.into_iter().max().into_iter().collect()
    };
    assert!(receiver.wait_for(&expected, Duration::from_secs(30)).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = api
            .get(&format!("/v1/webhook-endpoints/{endpoint}"), Some(ALICE))
            .await;
        if reply.body["failingSince"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "still failing: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.stop().await;
}

/// Retention: the periodic task deletes, in batches, the events and attempts older than
/// their retention, and keeps every event still owed to an endpoint however old, and the
/// recent ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_attempts_past_their_retention_are_deleted_but_never_an_owed_event() {
    let api = start_webhooks(&[
        ("WEBHOOK_EVENTS_RETENTION_DAYS", "30"),
        ("WEBHOOK_ATTEMPTS_RETENTION_DAYS", "30"),
        // Several batches per run, a run every second.
        ("WEBHOOK_RETENTION_BATCH_SIZE", "7"),
        ("WEBHOOK_RETENTION_INTERVAL_SECONDS", "1"),
    ])
    .await;
    // Bob's receiver fails: his events stay owed (retried for the 3-day window).
    let failing = Receiver::start(Mode::Fail).await;
    let (_, secret) = register(&api, BOB, &failing.url(), &ALL_TYPES).await;
    failing.set_secret(&secret);
    // Alice has no endpoint: her events are owed to no one.
    create_many(&api, 20, 4).await;
    for _ in 0..3 {
        let reply = api.post("/payments", Some(BOB), &demo_payment()).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    let alices = event_ids(&api, "alice").await;
    let bobs = event_ids(&api, "bob").await;
    assert_eq!((alices.len(), bobs.len()), (20, 3));
    let deadline = Instant::now() + Duration::from_secs(20);
    while failing.requests() < 3 {
        assert!(Instant::now() < deadline, "bob's endpoint was never tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 40 days old: every event but one of alice's, and the attempts so far.
    let kept = *alices.iter().max().unwrap();
    sqlx::query("UPDATE events SET created_at = now() - interval '40 days' WHERE id <> $1")
        .bind(kept)
        .execute(&api.pool)
        .await
        .unwrap();
    let old_attempts =
        sqlx::query("UPDATE webhook_attempts SET attempted_at = now() - interval '40 days'")
            .execute(&api.pool)
            .await
            .unwrap()
            .rows_affected();
    assert!(old_attempts > 0);

    let count = |sql: &'static str| {
        let pool = api.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let gone = paysys_testkit::eventually(Duration::from_secs(20), || async {
        let old_events = count(
            "SELECT count(*) FROM events
             WHERE principal = 'alice' AND created_at < now() - interval '30 days'",
        )
        .await;
        let old_attempts = count(
            "SELECT count(*) FROM webhook_attempts WHERE attempted_at < now() - interval '30 days'",
        )
        .await;
        (old_events == 0 && old_attempts == 0).then_some(())
    })
    .await;
    assert!(gone.is_some(), "old events and attempts are still there");
    let listed = api.get("/v1/events?limit=100", Some(ALICE)).await;
    let listed: Vec<i64> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        listed,
        [kept],
        "alice's recent event is kept, the old ones gone"
    );
    // Bob's are as old, but still owed: kept, and still delivered to (attempts go on).
    assert_eq!(event_ids(&api, "bob").await, bobs);
    // Owed: one delivery row (a failing endpoint is fanned out one event ahead, the one it is
    // retried with) and two events above its cursor, kept without any row referring to them.
    assert_eq!(
        count("SELECT count(*) FROM webhook_deliveries").await,
        1,
        "fanned out one at a time while failing"
    );
    assert_eq!(count(NOT_FANNED_OUT).await, 2, "still owed");
    let tried = failing.requests();
    let deadline = Instant::now() + Duration::from_secs(20);
    while failing.requests() == tried {
        assert!(Instant::now() < deadline, "bob's deliveries stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.stop().await;
}

/// The database cut (every connection reset, new ones refused) while events are being
/// delivered: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_cut_mid_delivery_loses_no_event() {
    let db = TestDb::create().await;
    let (proxy, database_url) = FaultProxy::in_front_of(&db.url).await;
    let key = secrets_key();
    let mut env = webhook_env(&key);
    env.push(("DATABASE_URL", database_url.clone()));
    let refs: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let api = TestApi::start_on(db, TestBroker::new(), &refs).await;
    let receiver = Receiver::start(Mode::Slow(20)).await;
    let (_, secret) = register(&api, ALICE, &receiver.url(), &ALL_TYPES).await;
    receiver.set_secret(&secret);
    create_many(&api, 300, 8).await;
    // Cut while the receiver is still taking them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    let expected = event_ids(&api, "alice").await;
    assert_eq!(expected.len(), 300);
    assert!(
        receiver.wait_for(&expected, Duration::from_secs(90)).await,
        "missing {}",
        expected.difference(&receiver.distinct()).count()
    );
    assert_eq!(receiver.bad_signatures(), 0);
    api.stop().await;
}

/// PostgreSQL itself crashed (`pg_ctl stop -m immediate`: every backend gone, no checkpoint)
/// while deliveries are in flight and results unrecorded, then started again on the same
/// data: every event still arrives (some twice), each payment's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_crash_and_restart_mid_delivery_loses_no_event() {
    let server = paysys_testkit::private_postgres::PrivatePostgres::start().await;
    let key = secrets_key();
    let mut env = webhook_env(&key);
    // 2 at a time to a receiver taking 100 ms: at most 20 events/s, so that the crash comes
    // while most of the 300 are still to deliver, however slowly they were made.
    env.push(("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "2".into()));
    let refs: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let api = TestApi::start_on(server.database(), TestBroker::new(), &refs).await;
    let receiver = Receiver::start(Mode::Slow(100)).await;
    let (_, secret) = register(&api, ALICE, &receiver.url(), &ALL_TYPES).await;
    receiver.set_secret(&secret);
    // Two events per canceled payment, so that order per payment is tested across the crash.
    let payments = create_many(&api, 200, 8).await;
    cancel_every_other(&api, &payments, 8).await;
    // Crash while the receiver is still taking them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.requests() < 10 {
        assert!(Instant::now() < deadline, "no delivery started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.crash();
    let before = receiver.distinct().len();
    assert!(
        before < 300,
        "crashed mid-delivery ({before} of 300 delivered)"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart().await;
    // And the API takes payments again afterwards, their events delivered like the rest.
    let after = paysys_testkit::eventually(Duration::from_secs(30), || async {
        let reply = api.post("/payments", Some(ALICE), &demo_payment()).await;
        (reply.status == StatusCode::CREATED).then_some(())
    })
    .await;
    assert!(after.is_some(), "the API takes payments after the restart");
    create_many(&api, 20, 4).await;

    let expected = event_ids(&api, "alice").await;
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert!(payments >= 221, "{payments} payments");
    assert_eq!(
        expected.len() as i64,
        payments + 100,
        "an event for every payment and every cancel committed before the crash"
    );
    assert!(
        receiver.wait_for(&expected, Duration::from_secs(90)).await,
        "missing {} of {}",
        expected.difference(&receiver.distinct()).count(),
        expected.len()
    );
    assert_eq!(receiver.bad_signatures(), 0);
    assert_in_order_per_payment(&receiver.accepted());
    api.stop().await;
}

/// The real binary, killed with SIGKILL while deliveries are in flight, then started again:
/// every event arrives (at least once; the ones in flight may come twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_killed_mid_delivery_loses_no_event() {
    use std::process::{Command, Stdio};
    let db = TestDb::create().await;
    let broker = TestBroker::new();
    let port = paysys_testkit::free_port();
    let key = secrets_key();
    let spawn = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_payments-api"));
        command
            .env_clear()
            .env("PORT", port.to_string())
            .env("DATABASE_URL", &db.url)
            .env("AMQP_URL", &broker.url)
            .env("AMQP_PREFIX", &broker.prefix)
            .env("API_KEYS", format!("alice={ALICE}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, value) in webhook_env(&key) {
            command.env(name, value);
        }
        command.spawn().unwrap()
    };
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let wait_up = || async {
        for _ in 0..400 {
            if client.get(format!("{base}/healthz")).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the API did not start");
    };
    let mut child = spawn();
    wait_up().await;
    let receiver = Receiver::start(Mode::Slow(100)).await;
    let created: Value = client
        .post(format!("{base}/v1/webhook-endpoints"))
        .header("authorization", ALICE)
        .json(&json!({"url": receiver.url(), "eventTypes": ALL_TYPES}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    receiver.set_secret(created["secret"].as_str().unwrap());
    for _ in 0..100 {
        let reply = client
            .post(format!("{base}/payments"))
            .header("authorization", ALICE)
            .json(&demo_payment())
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::CREATED);
    }
    // Some delivered, some in flight (the receiver takes 100 ms each): kill.
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.requests() < 10 {
        assert!(Instant::now() < deadline, "no delivery started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before_restart = receiver.distinct().len();
    assert!(
        before_restart < 100,
        "killed mid-delivery ({before_restart} delivered)"
    );
    let mut child = spawn();
    wait_up().await;
    let pool = db.pool().await;
    // Every event gets its id once the new process sequences what the old one left.
    let deadline = Instant::now() + Duration::from_secs(30);
    let expected: HashSet<i64> = loop {
        let ids: HashSet<i64> = sqlx::query_scalar::<_, i64>("SELECT id FROM events")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
        if ids.len() == 100 || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(expected.len(), 100);
    // The claims of the killed process come due after their lease (2 × timeout + 5 s).
    let arrived = receiver.wait_for(&expected, Duration::from_secs(60)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        arrived,
        "missing {} after the restart",
        expected.difference(&receiver.distinct()).count()
    );
    assert_eq!(receiver.bad_signatures(), 0);
    receiver.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_do_not_start_without_their_key_and_are_off_by_default() {
    let db = TestDb {
        name: String::new(),
        url: "postgres://127.0.0.1:1/none".into(),
    };
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_payments-api"))
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("AMQP_URL", "amqp://127.0.0.1:1")
        .env("API_KEYS", format!("alice={ALICE}"))
        .env("WEBHOOKS_ENABLED", "true")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("WEBHOOK_SECRETS_KEY"));

    let api = TestApi::start().await;
    let reply = api
        .post(
            "/v1/webhook-endpoints",
            Some(ALICE),
            &json!({"url": "https://example.com/", "eventTypes": ["payment.created"]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    assert!(reply.body.to_string().contains("not enabled"));
    // Events are written and listed all the same.
    api.create(&demo_payment()).await;
    assert_eq!(event_ids(&api, "alice").await.len(), 1);
    api.stop().await;
}

/// Cancels every other payment as alice, `concurrency` at a time.
async fn cancel_every_other(api: &TestApi, payments: &[String], concurrency: usize) {
    futures::stream::iter(payments.iter().step_by(2))
        .map(|id| async move {
            api.post(&format!("/payments/{id}/cancel"), Some(ALICE), &json!({}))
                .await
        })
        .buffer_unordered(concurrency)
        .for_each(|reply| async move { assert_eq!(reply.status, StatusCode::OK) })
        .await;
}

/// Lazy fan-out (migration 0011): a paused endpoint gets no delivery rows while events are
/// made (they wait above its cursor, and the outbox gauge counts them); resumed, it catches up
/// a bounded batch at a time and gets every event, in order per payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_endpoint_gets_no_rows_then_catches_up_in_order() {
    use payments_api::webhooks::dispatcher::{CLAIM_AHEAD, FAN_OUT_AHEAD};
    // One in flight: a window of 4 × 8 rows, well below the 450 events.
    let api = start_webhooks(&[("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "1")]).await;
    let receiver = Receiver::start(Mode::Ok).await;
    let (endpoint, secret) = register(&api, ALICE, &receiver.url(), &ALL_TYPES).await;
    receiver.set_secret(&secret);
    let endpoint: uuid::Uuid = endpoint.parse().unwrap();
    set_paused_until(&api, endpoint, Some("infinity")).await;

    let payments = create_many(&api, 300, 8).await;
    cancel_every_other(&api, &payments, 8).await;
    let expected = event_ids(&api, "alice").await;
    assert_eq!(expected.len(), 450);
    // The gauge (refreshed every 2 s) counts what is owed, fanned out or not.
    let counted = paysys_testkit::eventually(Duration::from_secs(10), || async {
        (api.metric("paysys_events_outbox_depth").await == Some(450.0)).then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "outbox depth {:?}",
        api.metric("paysys_events_outbox_depth").await
    );
    // Counted up to a cap per endpoint: an endpoint dead for days is owed every event since.
    let mut conn = api.pool.acquire().await.unwrap();
    let (capped, oldest) = payments_api::store::events::outbox(&mut conn, 100)
        .await
        .unwrap();
    drop(conn);
    assert_eq!(capped, 100);
    assert!(oldest > 0.0, "the oldest owed event's age: {oldest}");
    // Many dispatcher rounds (20 ms apart) went by meanwhile.
    assert_eq!(
        delivery_rows(&api, endpoint).await,
        0,
        "no row while paused"
    );
    assert_eq!(receiver.requests(), 0);

    set_paused_until(&api, endpoint, None).await;
    let bound = (CLAIM_AHEAD * FAN_OUT_AHEAD) as i64;
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !expected.is_subset(&receiver.distinct()) {
        most = most.max(delivery_rows(&api, endpoint).await);
        assert!(
            Instant::now() < deadline,
            "missing {} after the resume",
            expected.difference(&receiver.distinct()).count()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(most <= bound, "{most} rows at once, more than {bound}");
    assert!(most > 0);
    assert_eq!(receiver.distinct(), expected);
    assert_eq!(receiver.bad_signatures(), 0);
    assert_in_order_per_payment(&receiver.accepted());
    let count = |sql: &'static str| {
        let pool = api.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(NOT_FANNED_OUT).await, 0);
    api.stop().await;
}

/// An endpoint receives the events sequenced after its registration, none before (as when
/// the sequencer fanned out to the endpoints that existed then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_registered_after_events_gets_exactly_the_later_ones() {
    let api = start_webhooks(&[]).await;
    create_many(&api, 20, 4).await;
    let before = event_ids(&api, "alice").await;
    assert_eq!(before.len(), 20);
    let receiver = Receiver::start(Mode::Ok).await;
    let (_, secret) = register(&api, ALICE, &receiver.url(), &ALL_TYPES).await;
    receiver.set_secret(&secret);
    create_many(&api, 30, 4).await;
    let after: HashSet<i64> = event_ids(&api, "alice")
        .await
        .difference(&before)
        .copied()
        .collect();
    assert_eq!(after.len(), 30);
    assert!(receiver.wait_for(&after, Duration::from_secs(30)).await);
    // A while longer: nothing older comes, nothing is owed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.distinct(), after);
    assert_eq!(receiver.accepted().len(), 30);
    let owed: i64 = sqlx::query_scalar(NOT_FANNED_OUT)
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(owed, 0);
    api.stop().await;
}

/// Retention keeps an event owed to an endpoint that has no delivery row for it yet (above
/// the endpoint's cursor: here, paused), however old; once delivered it goes like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_events_not_yet_fanned_out_to_an_endpoint() {
    let api = start_webhooks(&[
        ("WEBHOOK_RETENTION_BATCH_SIZE", "5"),
        ("WEBHOOK_RETENTION_INTERVAL_SECONDS", "1"),
    ])
    .await;
    let receiver = Receiver::start(Mode::Ok).await;
    let (endpoint, secret) = register(&api, BOB, &receiver.url(), &["payment.created"]).await;
    receiver.set_secret(&secret);
    let endpoint: uuid::Uuid = endpoint.parse().unwrap();
    set_paused_until(&api, endpoint, Some("infinity")).await;
    for _ in 0..3 {
        let reply = api.post("/payments", Some(BOB), &demo_payment()).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    create_many(&api, 10, 4).await;
    let bobs = event_ids(&api, "bob").await;
    assert_eq!(bobs.len(), 3);
    assert_eq!(event_ids(&api, "alice").await.len(), 10);
    sqlx::query("UPDATE events SET created_at = now() - interval '40 days'")
        .execute(&api.pool)
        .await
        .unwrap();
    let principal_events = |principal: &'static str| {
        let pool = api.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE principal = $1")
                .bind(principal)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    // Alice's are owed to no one: deleted. Bob's stay, though no delivery row refers to them.
    let gone = paysys_testkit::eventually(Duration::from_secs(20), || async {
        (principal_events("alice").await == 0).then_some(())
    })
    .await;
    assert!(gone.is_some(), "alice's old events are still there");
    assert_eq!(delivery_rows(&api, endpoint).await, 0);
    assert_eq!(event_ids(&api, "bob").await, bobs, "owed, kept");

    set_paused_until(&api, endpoint, None).await;
    assert!(receiver.wait_for(&bobs, Duration::from_secs(30)).await);
    let gone = paysys_testkit::eventually(Duration::from_secs(20), || async {
        (principal_events("bob").await == 0).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "delivered, bob's old events are deleted too"
    );
    api.stop().await;
}

/// Fan-outs running at once (replicas) never make the same (endpoint, event) twice: each
/// locks the endpoint rows it takes and moves their cursors in the same statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fan_outs_make_each_delivery_once() {
    use payments_api::store::webhooks::{FanOut, FannedOut, fan_out};
    // Webhooks off: the API sequences events but fans nothing out; the test does.
    let api = TestApi::start().await;
    let payments = create_many(&api, 200, 8).await;
    cancel_every_other(&api, &payments, 8).await;
    assert_eq!(event_ids(&api, "alice").await.len(), 300);
    let subscriptions: [&[&str]; 6] = [
        &ALL_TYPES,
        &ALL_TYPES,
        &["payment.created"],
        &["payment.canceled"],
        &["payment.disputed"],
        &["payment.created", "payment.canceled"],
    ];
    for types in subscriptions {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, principal, url, event_types, secret_encrypted,
                                            fanned_out_through)
             VALUES ($1, 'alice', 'http://127.0.0.1:9/hook', $2, '\\x00', 0)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(types.iter().map(|t| t.to_string()).collect::<Vec<_>>())
        .execute(&api.pool)
        .await
        .unwrap();
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&api._db.url)
        .await
        .unwrap();
    // Small steps, many statements: 300 events, 7 at a time, 2 endpoints per statement.
    let limits = FanOut {
        ahead: 1_000_000,
        unproven_ahead: 1_000_000,
        scan: 7,
        endpoints: 2,
        per_statement: 1_000_000,
        failing: true,
    };
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                let mut total = FannedOut::default();
                loop {
                    let step = fan_out(&mut conn, limits).await.unwrap();
                    total.deliveries += step.deliveries;
                    total.skipped += step.skipped;
                    // None left, or every due one locked by another worker (which goes on).
                    if step.endpoints == 0 {
                        return total;
                    }
                }
            })
        })
        .collect();
    let mut made = 0;
    let mut skipped = 0;
    for worker in workers {
        let total = worker.await.unwrap();
        made += total.deliveries;
        skipped += total.skipped;
    }
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        fan_out(&mut conn, limits).await.unwrap(),
        FannedOut::default()
    );
    assert_eq!(skipped, 0, "no (endpoint, event) taken twice");
    // 200 created and 100 canceled: 300 + 300 + 200 + 100 + 0 + 300.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((made, rows), (1200, 1200));
    let owed: i64 = sqlx::query_scalar(NOT_FANNED_OUT)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(owed, 0);
    drop(conn);
    pool.close().await;
    api.stop().await;
}

/// Writes `n` sequenced `payment.created` events of alice directly (the store's tests need
/// events, not payments).
async fn insert_created_events(pool: &sqlx::PgPool, n: i64) {
    sqlx::query(
        "INSERT INTO events (type, payment_id, principal, created_at, payment)
         SELECT 'payment.created', gen_random_uuid(), 'alice', now(), '{}'
         FROM generate_series(1, $1)",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

/// A claim takes each endpoint's oldest due rows up to its room, and endpoints whose latest
/// attempts failed only when asked (the dispatcher asks once per first retry wait): beside
/// many endpoints holding one row each (as dead ones do), with statistics that show it, on a
/// connection of the dispatcher's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_takes_each_room_oldest_first_and_failing_endpoints_only_when_asked() {
    use payments_api::store::webhooks::{claim, dispatcher_pool};
    use uuid::Uuid;
    // Webhooks off: nothing claims but the test.
    let api = TestApi::start().await;
    insert_created_events(&api.pool, 300).await;
    let endpoint = |failures: i32, paused: bool| {
        let pool = api.pool.clone();
        async move {
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, principal, url, event_types,
                     secret_encrypted, consecutive_failures, paused_until)
                 VALUES ($1, 'alice', 'http://127.0.0.1:9/hook', '{payment.created}', '\\x00',
                         $2, CASE WHEN $3 THEN now() + interval '1 hour' END)",
            )
            .bind(id)
            .bind(failures)
            .bind(paused)
            .execute(&pool)
            .await
            .unwrap();
            id
        }
    };
    // Rows for the endpoint: of the first `events` events, due now.
    let rows = |id: Uuid, events: i64| {
        let pool = api.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO webhook_deliveries (endpoint_id, event_id, payment_id,
                                                 event_created_at)
                 SELECT $1, id, payment_id, created_at FROM events ORDER BY id LIMIT $2",
            )
            .bind(id)
            .bind(events)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    let busy = [endpoint(0, false).await, endpoint(0, false).await];
    for id in busy {
        rows(id, 300).await;
    }
    let mut failing = HashSet::new();
    for _ in 0..900 {
        let id = endpoint(1, false).await;
        rows(id, 1).await;
        failing.insert(id);
    }
    let paused = endpoint(5, true).await;
    rows(paused, 1).await;
    sqlx::query("ANALYZE webhook_deliveries")
        .execute(&api.pool)
        .await
        .unwrap();
    let lease = Duration::from_secs(60);
    let dispatcher = dispatcher_pool(&api.pool, 1);
    let mut conn = dispatcher.acquire().await.unwrap();

    // The healthy endpoints only, each its 32 oldest (one of them holding 30 already: 2).
    let claimed = claim(&mut conn, &[(busy[1], 30)], 32, 5, 500, lease, false)
        .await
        .unwrap();
    let events_of = |id: Uuid| -> Vec<i64> {
        claimed
            .iter()
            .filter(|c| c.endpoint_id == id)
            .map(|c| c.event_id)
            .collect()
    };
    let first: Vec<i64> = sqlx::query_scalar("SELECT id FROM events ORDER BY id LIMIT 32")
        .fetch_all(&api.pool)
        .await
        .unwrap();
    let mut taken = events_of(busy[0]);
    taken.sort_unstable();
    assert_eq!(taken, first, "the 32 oldest of the first endpoint");
    let mut taken = events_of(busy[1]);
    taken.sort_unstable();
    assert_eq!(taken, first[..2], "the 2 oldest of the one holding 30");
    assert_eq!(
        claimed.len(),
        34,
        "nothing of the failing or paused endpoints"
    );

    // Asked for the failing ones: each its one row; the paused one still nothing, and the busy
    // ones (held full) nothing.
    let held = [(busy[0], 32), (busy[1], 32)];
    let claimed = claim(&mut conn, &held, 32, 5, 2000, lease, true)
        .await
        .unwrap();
    let endpoints: HashSet<Uuid> = claimed.iter().map(|c| c.endpoint_id).collect();
    assert_eq!(claimed.len(), 900);
    assert_eq!(endpoints, failing);
    // What was claimed is leased: nothing of it is claimed again.
    let again = claim(&mut conn, &[], 32, 5, 2000, lease, true)
        .await
        .unwrap();
    assert!(again.iter().all(|c| busy.contains(&c.endpoint_id)));
    assert_eq!(again.len(), 64, "the busy ones' next 32 each");
    drop(conn);
    dispatcher.close().await;
    api.stop().await;
}

/// What the dispatcher's statements read, as far as the session's statistics know: whole-table
/// scans of the deliveries, the attempts and the events (the endpoints are read whole by
/// design: every round looks at each), and probes of `webhook_deliveries_order` (the claim's
/// "is it the oldest of its payment", one per row it looks at). Inside one transaction, the
/// difference of two readings counts that transaction's.
async fn dispatcher_reads(conn: &mut sqlx::PgConnection) -> (Vec<(String, i64)>, i64) {
    let tables: Vec<(String, i64)> = sqlx::query_as(
        "SELECT relname::text, seq_scan FROM pg_stat_xact_user_tables
         WHERE relname IN ('webhook_deliveries', 'webhook_attempts', 'events')
         ORDER BY relname",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let probes: i64 = sqlx::query_scalar(
        "SELECT pg_stat_get_xact_numscans('webhook_deliveries_order'::regclass)",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    (tables, probes)
}

/// The dispatcher's statements (fan-out, claim, record) on its connections reach rows by
/// index, with plans made on empty tables (a connection keeps its plans; the deliveries table
/// swings from empty to tens of thousands of rows between two analyses) and with plans made
/// once the statistics show 900 endpoints holding one row beside 100 busy ones: no table is
/// scanned whole, and the claim probes at most its room's worth of each endpoint's rows, not
/// every due row of the busy ones. (Planned from the statistics alone, the fan-out counted each
/// endpoint's rows by a sequential scan of the deliveries, 70–150 ms per fan-out beside 900
/// dead endpoints in the benchmark, and the claim could read and probe each busy endpoint's
/// whole backlog.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_reaches_rows_by_index_whatever_the_statistics() {
    use chrono::Utc;
    use payments_api::store::webhooks::{
        FanOut, Next, Outcome, Pause, claim, dispatcher_pool, fan_out, record,
    };
    use sqlx::Connection;
    const BUSY: i64 = 100;
    const ROOM: i32 = 32;
    // Webhooks off: nothing runs these but the test.
    let api = TestApi::start().await;
    let limits = FanOut {
        ahead: 256,
        unproven_ahead: 1,
        scan: 4096,
        endpoints: 1000,
        per_statement: 256,
        failing: true,
    };
    let pause = Pause {
        after_failures: 5,
        first: Duration::from_secs(5),
        longest: Duration::from_secs(3600),
    };
    let lease = Duration::from_secs(60);
    let dispatcher = dispatcher_pool(&api.pool, 1);
    let mut planned = dispatcher.acquire().await.unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *planned)
        .await
        .unwrap();
    // Every statement of this connection is planned here, on empty tables.
    fan_out(&mut planned, limits).await.unwrap();
    claim(&mut planned, &[], ROOM, 5, 500, lease, true)
        .await
        .unwrap();
    record(&mut planned, &[], &[], pause).await.unwrap();

    // The tables grow, written by another connection: 2,000 events; 100 busy endpoints (their
    // latest attempt succeeded) with 128 rows due and 128 more owed; 900 dead ones (their
    // latest attempt failed) each holding one row, due in an hour.
    let setup = [
        "INSERT INTO webhook_endpoints (id, principal, url, event_types, secret_encrypted,
                                        consecutive_failures, fanned_out_through)
         SELECT gen_random_uuid(), 'alice', 'http://127.0.0.1:9/hook', '{payment.created}',
                '\\x00', CASE WHEN g <= 900 THEN 1 ELSE 0 END,
                CASE WHEN g <= 900 THEN 1 ELSE 128 END
         FROM generate_series(1, 1000) g",
        "INSERT INTO webhook_attempts (endpoint_id, event_id, attempted_at, http_status,
                                       latency_ms, error)
         SELECT id, 1, now(), CASE WHEN consecutive_failures = 0 THEN 200 END, 1,
                CASE WHEN consecutive_failures > 0 THEN 'cannot connect' END
         FROM webhook_endpoints",
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, payment_id, event_created_at,
                                         next_attempt_at)
         SELECT e.id, v.id, v.payment_id, v.created_at,
                CASE WHEN e.consecutive_failures > 0 THEN now() + interval '1 hour'
                     ELSE now() END
         FROM webhook_endpoints e JOIN events v ON v.id <= e.fanned_out_through
         ORDER BY v.id, e.id",
    ];
    insert_created_events(&api.pool, 2000).await;
    for statement in setup {
        sqlx::query(statement).execute(&api.pool).await.unwrap();
    }

    for statistics in ["from the empty tables", "of 900 one-row endpoints"] {
        if statistics == "of 900 one-row endpoints" {
            // As autovacuum would, in time: every plan is made again from these.
            sqlx::query("ANALYZE").execute(&api.pool).await.unwrap();
        }
        let mut tx = planned.begin().await.unwrap();
        let (scans_before, probes_before) = dispatcher_reads(&mut tx).await;
        let fanned = fan_out(&mut tx, limits).await.unwrap();
        assert_eq!(
            (fanned.endpoints, fanned.deliveries),
            (BUSY, BUSY * 128),
            "statistics {statistics}: the busy endpoints' next 128 each"
        );
        let claimed = claim(&mut tx, &[], ROOM, 5, 500, lease, true)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 500, "statistics {statistics}");
        let (_, probes_after) = dispatcher_reads(&mut tx).await;
        let outcomes: Vec<Outcome> = claimed
            .iter()
            .enumerate()
            .map(|(i, row)| Outcome {
                delivery_id: row.delivery_id,
                attempt: row.attempt,
                endpoint_id: row.endpoint_id,
                event_id: row.event_id,
                attempted_at: Utc::now(),
                http_status: Some(if i % 2 == 0 { 200 } else { 500 }),
                latency_ms: 1,
                error: (i % 2 == 1).then(|| "HTTP 500".to_owned()),
                next: if i % 2 == 0 {
                    Next::Delivered
                } else {
                    Next::RetryIn(Duration::from_secs(5))
                },
            })
            .collect();
        record(&mut tx, &outcomes, &[], pause).await.unwrap();
        let (scans_after, _) = dispatcher_reads(&mut tx).await;
        tx.rollback().await.unwrap();
        let scanned: Vec<_> = scans_after
            .iter()
            .filter(|(table, scans)| {
                scans_before
                    .iter()
                    .find(|(t, _)| t == table)
                    .is_none_or(|(_, before)| before != scans)
            })
            .collect();
        assert_eq!(
            scanned,
            Vec::<&(String, i64)>::new(),
            "statistics {statistics}: tables scanned whole (table, scans)"
        );
        // Each busy endpoint's room, and a look at nothing more.
        let probes = probes_after - probes_before;
        assert!(
            probes <= BUSY * i64::from(ROOM),
            "statistics {statistics}: the claim probed {probes} rows for 500"
        );
    }
    drop(planned);
    dispatcher.close().await;
    api.stop().await;
}

/// Two API processes on one database (each sequencing, fanning out, claiming, delivering):
/// every event reaches each endpoint once, in order per payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_on_one_database_deliver_each_event_once() {
    let db = TestDb::create().await;
    let broker = TestBroker::new();
    let key = secrets_key();
    let env = webhook_env(&key);
    let refs: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let first = TestApi::start_on(
        TestDb {
            name: db.name.clone(),
            url: db.url.clone(),
        },
        broker.sharing(&broker.url),
        &refs,
    )
    .await;
    let second = TestApi::start_on(db, broker, &refs).await;
    let mut receivers = Vec::new();
    for _ in 0..3 {
        let receiver = Receiver::start(Mode::Ok).await;
        let (_, secret) = register(&first, ALICE, &receiver.url(), &ALL_TYPES).await;
        receiver.set_secret(&secret);
        receivers.push(receiver);
    }
    let (made_by_first, _) =
        tokio::join!(create_many(&first, 150, 8), create_many(&second, 150, 8));
    cancel_every_other(&second, &made_by_first, 8).await;
    let expected = event_ids(&first, "alice").await;
    assert_eq!(expected.len(), 375);
    for receiver in &receivers {
        assert!(
            receiver.wait_for(&expected, Duration::from_secs(60)).await,
            "missing {}",
            expected.difference(&receiver.distinct()).count()
        );
    }
    // A moment for any duplicate to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for receiver in &receivers {
        assert_eq!(receiver.accepted().len(), expected.len(), "each event once");
        assert_eq!(receiver.bad_signatures(), 0);
        assert_in_order_per_payment(&receiver.accepted());
    }
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM webhook_attempts
                               GROUP BY endpoint_id, event_id HAVING count(*) > 1) t",
    )
    .fetch_one(&first.pool)
    .await
    .unwrap();
    assert_eq!(twice, 0, "no delivery attempted twice");
    second.stop().await;
    first.stop().await;
}
