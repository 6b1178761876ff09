//! The proof that training reads what serving saw: payments with history go through the real
//! payments API (in-process, on real PostgreSQL and RabbitMQ), the risk engine's side decides
//! them with the features it computes from the very message the API's relay published, the
//! API stores the decisions, `paysys-feed export` writes Parquet, and the exported `features`
//! equal, bit for bit, `FeatureVector::of` of the message the engine received.
//!
//! The risk engine on main does not send features yet, so this test plays its part through the
//! real broker: it consumes each payment message from the real payments queue, computes
//! `FeatureVector::of` on it as the engine does, and publishes the decision to the real
//! decisions exchange. Once the engine sends features, the engine's own consumer can take
//! this part (see docs/data-feed.md).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use common::{feed, ok, query};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Float64Type;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use paysys_core::messages::SCHEMA_VERSION;
use paysys_core::{
    DecisionMessage, FEATURES_VERSION, FeatureVector, Outcome, PaymentMessage, Reason,
};
use paysys_testkit::{TestBroker, TestDb};
use serde_json::{Value, json};
use uuid::Uuid;

const KEY: &str = "feed-test-key-0123456789abcdef";

struct Api {
    base: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    async fn start(db: &TestDb, broker: &TestBroker) -> (Api, tokio::sync::oneshot::Sender<()>) {
        let env: HashMap<String, String> = [
            ("DATABASE_URL", db.url.as_str()),
            ("AMQP_URL", broker.url.as_str()),
            ("AMQP_PREFIX", broker.prefix.as_str()),
            ("API_KEYS", &format!("feed={KEY}")),
            ("DB_MAX_CONNECTIONS", "4"),
            ("OUTBOX_POLL_INTERVAL_MS", "100"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config = payments_api::config::Config::from_source(&env).expect("configuration");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(payments_api::run(config, listener, async {
            let _ = stopped.await;
        }));
        let api = Api {
            base,
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        let up = paysys_testkit::eventually(Duration::from_secs(20), || async {
            api.call("GET", "/healthz", None).await.ok().map(drop)
        })
        .await;
        assert!(up.is_some(), "the API did not start");
        (api, stop)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", KEY)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .map_err(|_| "timeout".to_owned())?
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    async fn create(&self, user: Uuid, payee: Uuid, method: Uuid, amount: &str) -> String {
        let body = json!({"amount": serde_json::from_str::<Value>(amount).unwrap(),
            "currency": "EUR", "userId": user, "payeeId": payee, "paymentMethodId": method});
        let (status, reply) = self.call("POST", "/payments", Some(&body)).await.unwrap();
        assert_eq!(status, 201, "{reply}");
        reply["PaymentId"].as_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_features_are_the_ones_the_engine_scored() {
    let db = TestDb::create().await;
    let broker = TestBroker::new();
    let (api, stop) = Api::start(&db, &broker).await;
    let (_conn, channel) = broker.channel().await;

    // A payer with history: a repeat payee and method, a new payee, a new method; another
    // payer of the same payee. Created one by one, so each message knows the ones before.
    let [u, v] = [Uuid::new_v4(), Uuid::new_v4()];
    let [shop, other_shop] = [Uuid::new_v4(), Uuid::new_v4()];
    let [card, other_card] = [Uuid::new_v4(), Uuid::new_v4()];
    let plan = [
        (u, shop, card, "12.5"),
        (u, shop, card, "40"),
        (u, other_shop, card, "0.99"),
        (u, shop, other_card, "300"),
        (v, shop, other_card, "7.25"),
        (u, shop, card, "12.5"),
    ];
    let mut ids = Vec::new();
    let mut received: BTreeMap<Uuid, PaymentMessage> = BTreeMap::new();
    for (user, payee, method, amount) in plan {
        ids.push(api.create(user, payee, method, amount).await);
        // The engine's part: the message as the relay published it, from the real queue.
        let delivery = broker
            .get(
                &channel,
                &broker.topology.payments_queue,
                Duration::from_secs(20),
            )
            .await
            .expect("the relay publishes each payment");
        let message = PaymentMessage::decode(&delivery.delivery.data).unwrap();
        let features = FeatureVector::of(&message, Utc::now());
        let decision = DecisionMessage {
            schema_version: SCHEMA_VERSION,
            payment_id: message.payment_id,
            outcome: Outcome::Approved,
            score: 0,
            reasons: Vec::<Reason>::new(),
            rules_version: "served-features-test".into(),
            decided_at: Utc::now(),
            rules_outcome: Some(Outcome::Approved),
            features: Some(features.log()),
            model: None,
            shadow: None,
        };
        paysys_amqp::publish_confirmed(
            &channel,
            &broker.topology.decisions_exchange,
            paysys_core::topology::DECISION_ROUTING_KEY,
            &decision.encode(),
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish the decision");
        received.insert(message.payment_id, message);
    }
    // The messages did carry history (otherwise this would prove little).
    let last = &received[&Uuid::parse_str(&ids[5]).unwrap()];
    let history = last.history.expect("history in the message");
    assert_eq!(history.payer_payment_count, 4);
    assert!(!history.new_payee && !history.new_payment_method);
    assert_eq!(history.payee_window_count, 4);
    assert!(
        received[&Uuid::parse_str(&ids[3]).unwrap()]
            .history
            .unwrap()
            .new_payment_method
    );

    // Every decision applied, then one payment disputed.
    for id in &ids {
        let decided = paysys_testkit::eventually(Duration::from_secs(20), || async {
            let (_, payment) = api
                .call("GET", &format!("/payments/{id}"), None)
                .await
                .ok()?;
            (payment["status"] == "approved").then_some(())
        })
        .await;
        assert!(decided.is_some(), "payment {id} was not decided");
    }
    let (status, _) = api
        .call(
            "POST",
            &format!("/payments/{}/disputes", ids[3]),
            Some(&json!({"reason": "fraudulent"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);

    // Export every day the payments were created on, and read the files back.
    let dir = tempfile::tempdir().unwrap();
    let key = ok(feed(&["keygen"], &[])).trim().to_owned();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, &key).unwrap();
    let out = dir.path().join("feed");
    let days: Vec<String> = received
        .values()
        .map(|m| m.payment_data.created_at.unwrap().date_naive().to_string())
        .collect();
    let (first, last_day) = (days.iter().min().unwrap(), days.iter().max().unwrap());
    ok(feed(
        &[
            "export",
            "--out",
            out.to_str().unwrap(),
            "--key-file",
            key_file.to_str().unwrap(),
            "--from",
            first,
            "--to",
            last_day,
        ],
        &[("DATABASE_URL", &db.url)],
    ));
    let batches = query(
        Path::new(&out),
        "SELECT payment_id, features_version, features, dispute_reason FROM t",
    )
    .await;
    let mut exported = BTreeMap::new();
    for b in &batches {
        let list = b.column(2).as_list::<i32>();
        for row in 0..b.num_rows() {
            let id = Uuid::parse_str(b.column(0).as_string::<i32>().value(row)).unwrap();
            assert_eq!(b.column(1).as_string::<i32>().value(row), FEATURES_VERSION);
            let values = list.value(row);
            let values: Vec<u64> = values
                .as_primitive::<Float64Type>()
                .values()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let reason = b.column(3).as_string::<i32>();
            let reason = (!b.column(3).is_null(row)).then(|| reason.value(row).to_owned());
            exported.insert(id, (values, reason));
        }
    }
    assert_eq!(exported.len(), plan.len(), "every payment is exported");
    for (id, message) in &received {
        let served = FeatureVector::of(message, Utc::now());
        let bits: Vec<u64> = served.0.iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            exported[id].0, bits,
            "payment {id}: exported features differ from served"
        );
    }
    let disputed: Vec<_> = exported
        .iter()
        .filter_map(|(id, (_, reason))| reason.as_deref().map(|r| (id.to_string(), r.to_owned())))
        .collect();
    assert_eq!(disputed, vec![(ids[3].clone(), "fraudulent".to_owned())]);

    let _ = stop.send(());
    broker.delete().await;
}
