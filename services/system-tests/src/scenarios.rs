//! The fault scenarios: each starts a fresh system, drives payments while injecting its
//! fault, lets the system settle and checks the invariants.

use std::time::{Duration, Instant};

use crate::driver::Driver;
use crate::invariants;
use crate::report::Row;
use crate::system::System;

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
    let scenario = |name, apis, risks, fault| Scenario {
        name,
        apis,
        risks,
        rate,
        duration,
        fault,
    };
    vec![
        scenario("baseline", 1, 1, Fault::None),
        scenario("broker cut once", 1, 1, Fault::BrokerCut { times: 1, down }),
        scenario(
            "broker cut repeatedly",
            1,
            1,
            Fault::BrokerCut {
                times: times.max(2) + 1,
                down: down / 2,
            },
        ),
        scenario(
            "broker SIGKILL and restart",
            1,
            1,
            Fault::BrokerRestart { times: 1, down },
        ),
        scenario("database cut", 1, 1, Fault::DatabaseCut { times, down }),
        scenario(
            "risk engine SIGKILL",
            1,
            1,
            Fault::KillRiskEngine { times, down },
        ),
        scenario(
            "payments API SIGKILL",
            1,
            1,
            Fault::KillApi {
                times: times.max(2),
                down: down / 3,
            },
        ),
        scenario(
            "2+2 replicas, one of each SIGKILLed",
            2,
            2,
            Fault::KillOneOfEach { down },
        ),
    ]
}

/// Runs one scenario to completion.
pub async fn run(scenario: &Scenario) -> Row {
    let mut system = match scenario.fault {
        Fault::BrokerRestart { .. } => {
            System::start_on_private_broker(scenario.apis, scenario.risks).await
        }
        _ => System::start(scenario.apis, scenario.risks).await,
    };
    let system_pool = system.pool.clone();
    let driver = Driver::new(system.api_urls());
    let (stats, (faults_ended, backlog)) =
        tokio::join!(driver.run(scenario.rate, scenario.duration), async {
            let monitoring = Instant::now() + scenario.duration;
            tokio::join!(
                inject(&mut system, scenario.fault, scenario.duration),
                sample_backlog(&system_pool, monitoring)
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
    let verdict = invariants::check(&system, &stats).await;
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
