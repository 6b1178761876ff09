//! The fault scenarios: each starts a fresh system with a merchant's webhook receiver
//! subscribed to every event, drives payments while injecting its fault (and, in some, a
//! fault of the receiver), lets the system settle and checks the invariants, webhooks
//! included: every event delivered, each payment's in order.

use std::time::{Duration, Instant};

use paysys_testkit::webhook_receiver::{Mode, Receiver};

use crate::driver::{self, Driver};
use crate::invariants;
use crate::report::Row;
use crate::system::{Private, System};

/// Webhooks on, to plain http on loopback (the receiver), with the short waits of a test: a
/// retry after 100 ms to 1 s, an attempt timed out after 1 s (a claim's lease is then 7 s).
const WEBHOOK_ENV: [(&str, &str); 9] = [
    ("WEBHOOKS_ENABLED", "true"),
    // 32 bytes of 7, base64: a test key.
    (
        "WEBHOOK_SECRETS_KEY",
        "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
    ),
    ("WEBHOOK_ALLOW_HTTP", "true"),
    ("WEBHOOK_ALLOWED_CIDRS", "127.0.0.0/8"),
    ("WEBHOOK_RETRY_FIRST_MS", "100"),
    ("WEBHOOK_RETRY_LONGEST_MS", "1000"),
    ("WEBHOOK_TIMEOUT_MS", "1000"),
    ("WEBHOOK_POLL_INTERVAL_MS", "50"),
    ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "32"),
];

/// Every event type: the receiver is told of every change.
const EVENT_TYPES: [&str; 7] = [
    "payment.created",
    "payment.approved",
    "payment.declined",
    "payment.captured",
    "payment.canceled",
    "payment.refunded",
    "payment.disputed",
];

/// What the merchant's receiver does for a while in the middle of the drive (then it
/// answers 2xx again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverFault {
    None,
    /// Down: its port refuses connections.
    Down(Duration),
    /// Answering 500 to everything.
    Failing(Duration),
    /// Never answering the first request for each event, past the API's timeout.
    Hanging(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Cut every RabbitMQ connection `times` times, each for `down`.
    BrokerCut {
        times: u32,
        down: Duration,
    },
    /// SIGKILL the RabbitMQ node itself (the scenario's own) `times` times, with messages
    /// in flight, and start it again on the same data after `down`.
    BrokerRestart {
        times: u32,
        down: Duration,
    },
    /// Cut every PostgreSQL connection `times` times, each for `down`.
    DatabaseCut {
        times: u32,
        down: Duration,
    },
    /// Crash PostgreSQL itself (the scenario's own server: `pg_ctl stop -m immediate`)
    /// `times` times, and start it again on the same data after `down`.
    DatabaseRestart {
        times: u32,
        down: Duration,
    },
    /// SIGKILL the (first) risk engine `times` times, restarting it after `down`.
    KillRiskEngine {
        times: u32,
        down: Duration,
    },
    /// SIGKILL the (first) payments API `times` times, restarting it after `down`.
    KillApi {
        times: u32,
        down: Duration,
    },
    /// Two replicas of each; SIGKILL one API and one risk engine, restart after `down`.
    KillOneOfEach {
        down: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub apis: usize,
    pub risks: usize,
    /// Payments per second offered.
    pub rate: u32,
    pub duration: Duration,
    pub fault: Fault,
    /// The receiver's own fault, during the system's.
    pub receiver: ReceiverFault,
}

/// Short versions of every scenario, for the test command.
pub fn short() -> Vec<Scenario> {
    scaled(100, Duration::from_secs(4), 1)
}

/// The full suite: more load, longer, repeated faults.
pub fn full() -> Vec<Scenario> {
    scaled(300, Duration::from_secs(20), 4)
}

fn scaled(rate: u32, duration: Duration, times: u32) -> Vec<Scenario> {
    let down = Duration::from_millis(1500);
    let scenario = |name, apis, risks, fault, receiver| Scenario {
        name,
        apis,
        risks,
        rate,
        duration,
        fault,
        receiver,
    };
    // The receiver's faults ride along with faults of the broker and the risk engine, which
    // webhooks do not depend on: one scenario each, no longer runs.
    let receiver_down = duration / 4;
    vec![
        scenario("baseline", 1, 1, Fault::None, ReceiverFault::None),
        scenario(
            "broker cut once, receiver down",
            1,
            1,
            Fault::BrokerCut { times: 1, down },
            ReceiverFault::Down(receiver_down),
        ),
        scenario(
            "broker cut repeatedly, receiver failing",
            1,
            1,
            Fault::BrokerCut {
                times: times.max(2) + 1,
                down: down / 2,
            },
            ReceiverFault::Failing(receiver_down),
        ),
        scenario(
            "broker SIGKILL and restart",
            1,
            1,
            Fault::BrokerRestart { times: 1, down },
            ReceiverFault::None,
        ),
        scenario(
            "database cut",
            1,
            1,
            Fault::DatabaseCut { times, down },
            ReceiverFault::None,
        ),
        scenario(
            "database crash and restart",
            1,
            1,
            Fault::DatabaseRestart { times, down },
            ReceiverFault::None,
        ),
        scenario(
            "risk engine SIGKILL, receiver hanging",
            1,
            1,
            Fault::KillRiskEngine { times, down },
            ReceiverFault::Hanging(receiver_down),
        ),
        scenario(
            "payments API SIGKILL",
            1,
            1,
            Fault::KillApi {
                times: times.max(2),
                down: down / 3,
            },
            ReceiverFault::None,
        ),
        scenario(
            "2+2 replicas, one of each SIGKILLed",
            2,
            2,
            Fault::KillOneOfEach { down },
            ReceiverFault::None,
        ),
    ]
}

/// Runs one scenario to completion.
pub async fn run(scenario: &Scenario) -> Row {
    let private = Private {
        broker: matches!(scenario.fault, Fault::BrokerRestart { .. }),
        postgres: matches!(scenario.fault, Fault::DatabaseRestart { .. }),
    };
    let mut system = System::start_on(scenario.apis, scenario.risks, &WEBHOOK_ENV, private).await;
    let receiver = subscribe(&system).await;
    let system_pool = system.pool.clone();
    let driver = Driver::new(system.api_urls());
    let (stats, (faults_ended, backlog, ())) =
        tokio::join!(driver.run(scenario.rate, scenario.duration), async {
            let monitoring = Instant::now() + scenario.duration;
            tokio::join!(
                inject(&mut system, scenario.fault, scenario.duration),
                sample_backlog(&system_pool, monitoring),
                upset(&receiver, scenario.receiver, scenario.duration)
            )
        });
    let drained = system.settle(Duration::from_secs(90)).await;
    // Recovery: from the end of the fault until the backlog of undecided payments is back
    // to what 200 ms of load leaves in flight (or until drained, if the load ended first).
    let normal = u64::from(scenario.rate) / 5;
    let recovered_at = backlog
        .iter()
        .find(|(at, pending)| *at >= faults_ended && *pending <= normal)
        .map(|(at, _)| *at);
    let recovery = match (scenario.fault, recovered_at, drained) {
        (_, _, None) => None,
        (Fault::None, _, Some(_)) => Some(Duration::ZERO),
        (_, Some(at), Some(_)) => Some(at.duration_since(faults_ended)),
        (_, None, Some(_)) => Some(faults_ended.elapsed()),
    };
    let verdict = invariants::check(&system, &stats, Some(&receiver)).await;
    let row = Row {
        scenario: scenario.name.to_owned(),
        stats,
        verdict,
        recovery,
    };
    if !row.verdict.failures().is_empty() || drained.is_none() {
        eprintln!(
            "scenario '{}' failed; service logs in {}",
            scenario.name,
            system.log_dir.display()
        );
    }
    system.shutdown().await;
    row
}

/// A receiver subscribed to every event of the driver's, verifying every signature.
async fn subscribe(system: &System) -> Receiver {
    let receiver = Receiver::start(Mode::Ok).await;
    let (status, body) = driver::call(
        "POST",
        &format!("{}/v1/webhook-endpoints", system.api_urls()[0]),
        Some(serde_json::json!({"url": receiver.url(), "eventTypes": EVENT_TYPES})),
    )
    .await;
    assert_eq!(status, 201, "register the receiver: {body}");
    receiver.set_secret(body["secret"].as_str().expect("the secret, shown once"));
    receiver
}

/// Applies the receiver's fault from a third of the drive on, for its duration.
async fn upset(receiver: &Receiver, fault: ReceiverFault, duration: Duration) {
    let (mode, lasting) = match fault {
        ReceiverFault::None => return,
        ReceiverFault::Down(lasting) => (None, lasting),
        ReceiverFault::Failing(lasting) => (Some(Mode::Fail), lasting),
        ReceiverFault::Hanging(lasting) => (Some(Mode::HangFirst), lasting),
    };
    tokio::time::sleep(duration / 3).await;
    match mode {
        None => receiver.stop(),
        Some(mode) => receiver.set_mode(mode),
    }
    tokio::time::sleep(lasting).await;
    match mode {
        None => receiver.restart().await,
        Some(_) => receiver.set_mode(Mode::Ok),
    }
}

/// Samples the number of undecided payments every 100 ms until `until`.
async fn sample_backlog(pool: &sqlx::PgPool, until: Instant) -> Vec<(Instant, u64)> {
    let mut samples = Vec::new();
    while Instant::now() < until {
        if let Ok(pending) =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM payments WHERE status = 'pending'")
                .fetch_one(pool)
                .await
        {
            samples.push((Instant::now(), pending as u64));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples
}

/// Applies the fault spread over the drive; returns when the last fault ended.
async fn inject(system: &mut System, fault: Fault, duration: Duration) -> Instant {
    let pause = |times: u32| duration / (times + 1);
    match fault {
        Fault::None => {}
        Fault::BrokerCut { times, down } => {
            for _ in 0..times {
                tokio::time::sleep(pause(times).saturating_sub(down)).await;
                system.amqp_proxy.cut().await;
                tokio::time::sleep(down).await;
                system.amqp_proxy.restore();
            }
        }
        Fault::BrokerRestart { times, down } => {
            for _ in 0..times {
                tokio::time::sleep(pause(times).saturating_sub(down)).await;
                let broker = system.private_broker.as_ref().expect("a private broker");
                broker.kill();
                tokio::time::sleep(down).await;
                broker.restart().await;
            }
        }
        Fault::DatabaseCut { times, down } => {
            for _ in 0..times {
                tokio::time::sleep(pause(times).saturating_sub(down)).await;
                system.pg_proxy.cut().await;
                tokio::time::sleep(down).await;
                system.pg_proxy.restore();
            }
        }
        Fault::DatabaseRestart { times, down } => {
            for _ in 0..times {
                tokio::time::sleep(pause(times).saturating_sub(down)).await;
                let server = system
                    .private_postgres
                    .as_ref()
                    .expect("a private PostgreSQL");
                server.crash();
                tokio::time::sleep(down).await;
                server.restart().await;
            }
        }
        Fault::KillRiskEngine { times, down } => {
            for _ in 0..times {
                tokio::time::sleep(pause(times).saturating_sub(down)).await;
                system.risks[0].kill().await;
                tokio::time::sleep(down).await;
                system.risks[0].start();
            }
        }
        Fault::KillApi { times, down } => {
            for _ in 0..times {
                tokio::time::sleep(pause(times).saturating_sub(down)).await;
                system.apis[0].kill().await;
                tokio::time::sleep(down).await;
                system.apis[0].start();
            }
        }
        Fault::KillOneOfEach { down } => {
            tokio::time::sleep(pause(1)).await;
            system.apis[0].kill().await;
            system.risks[0].kill().await;
            tokio::time::sleep(down).await;
            system.apis[0].start();
            system.risks[0].start();
        }
    }
    Instant::now()
}
