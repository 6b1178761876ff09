//! Short versions of every fault scenario (the full suite: `cargo run --release -p
//! paysys-system-tests --bin fault-suite`), each with a webhook receiver subscribed that must
//! get every event. Each needs the built `payments-api` and `risk-engine` binaries,
//! PostgreSQL and RabbitMQ.

use paysys_system_tests::report;
use paysys_system_tests::scenarios::{self, ReceiverFault, Scenario};

async fn check(scenario: &Scenario) {
    let row = scenarios::run(scenario).await;
    println!("{}", report::table(std::slice::from_ref(&row)));
    let failures = row.verdict.failures();
    assert!(failures.is_empty(), "{}: {failures:?}", scenario.name);
    assert!(row.recovery.is_some(), "{}: never settled", scenario.name);
    assert!(
        row.verdict.accepted > 0,
        "{}: nothing was accepted",
        scenario.name
    );
    let webhooks = row
        .verdict
        .webhooks
        .as_ref()
        .expect("a receiver was subscribed");
    assert!(
        webhooks.events >= 2 * row.verdict.accepted,
        "{}: a created and a decided event per accepted payment",
        scenario.name
    );
    if scenario.receiver != ReceiverFault::None {
        assert!(
            webhooks.failed_attempts > 0,
            "{}: the receiver's fault never failed a delivery",
            scenario.name
        );
    }
}

fn short(name: &str) -> Scenario {
    scenarios::short()
        .into_iter()
        .find(|s| s.name == name)
        .expect("scenario exists")
}

// One test per scenario, so a failure names its scenario; they run one at a time.
use paysys_system_tests::SERIAL;

macro_rules! scenario_test {
    ($test:ident, $name:literal) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let _serial = SERIAL.lock().await;
            check(&short($name)).await;
        }
    };
}

scenario_test!(baseline, "baseline");
scenario_test!(
    broker_cut_once_receiver_down,
    "broker cut once, receiver down"
);
scenario_test!(
    broker_cut_repeatedly_receiver_failing,
    "broker cut repeatedly, receiver failing"
);
scenario_test!(broker_sigkill_and_restart, "broker SIGKILL and restart");
scenario_test!(database_cut, "database cut");
scenario_test!(database_crash_and_restart, "database crash and restart");
scenario_test!(
    risk_engine_sigkill_receiver_hanging,
    "risk engine SIGKILL, receiver hanging"
);
scenario_test!(payments_api_sigkill, "payments API SIGKILL");
scenario_test!(
    replicas_one_of_each_sigkilled,
    "2+2 replicas, one of each SIGKILLed"
);
