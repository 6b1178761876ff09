//! The proof behind history mode: a live run through the real API and risk engine, exported
//! by the real `paysys-feed export`, has exactly the features that HistoryTracker and
//! FeatureVector::of compute when the same payments are replayed with the API's own creation
//! times. If the API's history (SQL) and the tracker (memory) disagreed on any payment, one
//! of the 300 vectors would differ.
//!
//! Needs the workspace built (`cargo build --workspace`: the test starts the binaries).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use paysys_core::{Currency, Money};
use paysys_sim::serve::Serving;
use paysys_sim::tracker::{DEFAULT_WINDOW_SECONDS, Seen};
use paysys_system_tests::process::binary;
use paysys_system_tests::system::API_KEY;
use paysys_system_tests::{SERIAL, System};
use risk_engine::rules::CompiledRules;
use serde_json::Value;
use uuid::Uuid;

const PAYMENTS: usize = 300;

/// Exported features by payment id.
fn exported_features(feed: &Path) -> HashMap<Uuid, Vec<f64>> {
    let mut features = HashMap::new();
    for day in std::fs::read_dir(feed).unwrap() {
        let path = day.unwrap().path().join("payments.parquet");
        if !path.exists() {
            continue;
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let Some(column) = batch.column_by_name("features") else {
                panic!(
                    "{} has no `features` column: the data feed's part of issue 20 is not merged",
                    path.display()
                );
            };
            let lists = column.as_list::<i32>();
            let ids = batch
                .column_by_name("payment_id")
                .unwrap()
                .as_string::<i32>();
            for i in 0..batch.num_rows() {
                assert!(
                    lists.is_valid(i),
                    "payment {} exported without features",
                    ids.value(i)
                );
                let values = lists.value(i);
                let values = values.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
                features.insert(
                    Uuid::parse_str(ids.value(i)).unwrap(),
                    values.values().to_vec(),
                );
            }
        }
    }
    features
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_features_equal_the_replayed_ones() {
    let _serial = SERIAL.lock().await;
    let system = System::start_with(1, 1, &[("RISK_MODE", "rules")]).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("live.jsonl");
    let live = Command::new(env!("CARGO_BIN_EXE_paysys-sim"))
        .args(["live", "--api", &system.api_urls()[0], "--seed", "20"])
        .args(["--payments", &PAYMENTS.to_string(), "--rate", "30"])
        .args(["--dispute-after", "1", "--log"])
        .arg(&log)
        .env("PAYSYS_API_KEY", API_KEY)
        .output()
        .unwrap();
    assert!(
        live.status.success(),
        "paysys-sim live failed: {}",
        String::from_utf8_lossy(&live.stderr)
    );

    let key = dir.path().join("feed.key");
    std::fs::write(&key, paysys_feed::key::generate()).unwrap();
    let feed = dir.path().join("feed");
    let export = Command::new(binary("paysys-feed"))
        .args(["export", "--database-url", &system.db.url, "--out"])
        .arg(&feed)
        .arg("--key-file")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "paysys-feed export failed: {}",
        String::from_utf8_lossy(&export.stderr)
    );
    let exported = exported_features(&feed);

    // The payments as sent, with the API's creation times.
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let created: HashMap<&str, DateTime<Utc>> = lines
        .iter()
        .filter(|l| l["kind"] == "decision")
        .map(|l| {
            let at = serde_json::from_value(l["created_at"].clone()).unwrap();
            (l["payment_id"].as_str().unwrap(), at)
        })
        .collect();
    let mut payments: Vec<(DateTime<Utc>, Uuid, Seen)> = lines
        .iter()
        .filter(|l| l["kind"] == "payment")
        .map(|l| {
            let id = l["payment_id"].as_str().unwrap();
            let e = &l["event"];
            let uuid = |k: &str| Uuid::parse_str(e[k].as_str().unwrap()).unwrap();
            let at = created[id];
            let seen = Seen {
                user_id: uuid("userId"),
                payee_id: uuid("payeeId"),
                payment_method_id: uuid("paymentMethodId"),
                money: Money {
                    minor: e["amount_minor"].as_i64().unwrap(),
                    currency: e["currency"].as_str().unwrap().parse::<Currency>().unwrap(),
                },
                created_at: at,
            };
            (at, Uuid::parse_str(id).unwrap(), seen)
        })
        .collect();
    assert_eq!(payments.len(), PAYMENTS, "every payment accepted");
    // Creation order, as the API saw it (sent one at a time, so times are distinct).
    payments.sort_by_key(|p| p.0);

    let mut serving = Serving::new(DEFAULT_WINDOW_SECONDS, CompiledRules::default());
    let mut compared = 0;
    for (_, id, seen) in &payments {
        let replayed = serving.serve(*id, seen).unwrap().features.0.to_vec();
        let Some(served) = exported.get(id) else {
            panic!("payment {id} is not in the export");
        };
        assert_eq!(
            served, &replayed,
            "payment {id}: exported features differ from the replay ({seen:?})"
        );
        compared += 1;
    }
    assert_eq!(compared, PAYMENTS);
    system.shutdown().await;
}
