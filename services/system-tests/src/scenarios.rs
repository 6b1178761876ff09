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
    let mut system = System::start(scenario.apis, scenario.risks).await;
    let driver = Driver::new(system.api_urls());
    let (stats, faults_ended) = tokio::join!(
        driver.run(scenario.rate, scenario.duration),
        inject(&mut system, scenario.fault, scenario.duration)
    );
    let settled = system.settle(Duration::from_secs(90)).await;
    let recovery = settled.map(|_| faults_ended.elapsed());
    let verdict = invariants::check(&system, &stats).await;
    let row = Row {
        scenario: scenario.name.to_owned(),
        stats,
        verdict,
        recovery,
    };
    if !row.verdict.failures().is_empty() || recovery.is_none() {
        eprintln!(
            "scenario '{}' failed; service logs in {}",
            scenario.name,
            system.log_dir.display()
        );
    }
    system.shutdown().await;
    row
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
