//! The operator binary itself against the real API server: two replicas with leader election
//! (only the leader writes; the other takes over within the lease time after the leader is
//! killed, and a spec change made during the handover is applied), and an API server restart
//! under a running operator (watches resume, nothing is lost).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use paysys_operator::crd::PaymentSystem;
use paysys_testkit::envtest::ControlPlane;
use paysys_testkit::free_port;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::support::{
    DISRUPTION, Env, apply_system, delete_deployment_and_wait_restored, env, eventually,
    exclusive_env, http, wait_condition,
};

const TIMEOUT: Duration = Duration::from_secs(30);
/// The operator's lease: 15 s, renewed with 5 s of grace (operator/src/main.rs).
const LEASE: Duration = Duration::from_secs(15);

/// One operator process (the built binary), watching the test's namespace.
struct OperatorProcess {
    name: String,
    port: u16,
    child: Child,
    log: std::path::PathBuf,
}

/// A failing test shows the end of the operator's log (its folder goes at exit).
impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- log of operator {} ---\n{}",
                self.name,
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
    }
}

impl OperatorProcess {
    fn start(env: &Env, name: &str, leader_election: bool) -> OperatorProcess {
        let cluster = ControlPlane::get().expect("started");
        let port = free_port();
        let log = cluster.dir().join(format!("{}-{name}.log", env.namespace));
        let out = std::fs::File::create(&log).unwrap();
        // `PAYSYS_OPERATOR_BIN` runs another build (a release one, or an older version).
        let binary = std::env::var("PAYSYS_OPERATOR_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_paysys-operator").to_owned());
        let mut command = Command::new(binary);
        command.env_clear();
        // `OPERATOR_RUST_LOG=kube_runtime=debug` to see the watches in the processes' logs.
        if let Ok(filter) = std::env::var("OPERATOR_RUST_LOG") {
            command.env("RUST_LOG", filter);
        }
        let child = command
            .env("KUBECONFIG", cluster.admin_kubeconfig())
            .env("HTTP_PORT", port.to_string())
            .env("WATCH_NAMESPACE", &env.namespace)
            .env("LEADER_ELECTION", leader_election.to_string())
            .env("POD_NAMESPACE", &env.namespace)
            .env("POD_NAME", name)
            .env("LOG_FORMAT", "text")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("start the operator binary");
        OperatorProcess {
            name: name.to_owned(),
            port,
            child,
            log,
        }
    }

    /// `paysys_operator_<metric>` from its `/metrics`.
    async fn metric(&self, metric: &str) -> Option<f64> {
        let (_, body) = http(self.port, "GET", "/metrics", &[], "").await?;
        body.lines()
            .find(|line| line.starts_with(&format!("paysys_operator_{metric} ")))
            .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
    }
}

/// The Lease's holder when exactly one replica says it leads and it is that holder.
async fn one_leader(env: &Env, replicas: &[OperatorProcess]) -> Option<String> {
    let holder = holder(env).await?;
    let mut leaders = Vec::new();
    for process in replicas {
        if process.metric("leader").await? == 1.0 {
            leaders.push(&process.name);
        }
    }
    (leaders.len() == 1 && *leaders[0] == holder).then_some(holder)
}

async fn holder(env: &Env) -> Option<String> {
    Api::<Lease>::namespaced(env.client.clone(), &env.namespace)
        .get_opt("paysys-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
}

async fn api_replicas(env: &Env) -> Option<i32> {
    Api::<Deployment>::namespaced(env.client.clone(), &env.namespace)
        .get_opt("shop-payments-api")
        .await
        .ok()??
        .spec
        .replicas
}

async fn set_api_replicas(env: &Env, replicas: i32) {
    Api::<PaymentSystem>::namespaced(env.client.clone(), &env.namespace)
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paymentsApi": {"replicas": replicas}}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn only_the_leader_writes_and_the_other_takes_over_when_it_is_killed() {
    let Some(env) = env("leader").await else {
        return;
    };
    let mut replicas = vec![
        OperatorProcess::start(&env, "operator-a", true),
        OperatorProcess::start(&env, "operator-b", true),
    ];
    apply_system(
        &env,
        include_str!("../../../examples/paymentsystem-minimal.yaml"),
    )
    .await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    // Exactly one replica leads, and it is the Lease's holder. On a loaded machine a replica
    // may miss a renewal and the lease move once before it settles: allow one lease more. A
    // replica that lost its lease exits (its view may be stale); its kubelet would start it
    // again, and so does this test.
    let deadline = Instant::now() + LEASE + LEASE + TIMEOUT;
    let leader = loop {
        for process in &mut replicas {
            if let Ok(Some(status)) = process.child.try_wait() {
                eprintln!(
                    "{} exited ({status}), as a replica that lost its lease does; started again",
                    process.name
                );
                let name = process.name.clone();
                *process = OperatorProcess::start(&env, &name, true);
            }
        }
        if let Some(holder) = one_leader(&env, &replicas).await {
            break holder;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for one leader, holding the Lease"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (leading, standby): (Vec<_>, Vec<_>) = replicas.drain(..).partition(|p| p.name == leader);
    let (mut leading, standby) = (
        leading.into_iter().next().unwrap(),
        standby.into_iter().next().unwrap(),
    );
    assert!(leading.metric("reconciliations_total").await.unwrap_or(0.0) >= 1.0);
    // Reconciled, the system has nothing due (its resync is 10 minutes away): the leader's
    // queue drains.
    eventually("the leader's reconcile queue to drain", TIMEOUT, || async {
        (leading.metric("reconcile_queue_depth").await? == 0.0).then_some(())
    })
    .await;
    // The standby never reconciled, so it never wrote.
    assert_eq!(standby.metric("reconciliations_total").await, Some(0.0));

    // Kill the leader (no chance to release the lease) and change the spec at once.
    leading.child.start_kill().unwrap();
    let killed = Instant::now();
    set_api_replicas(&env, 3).await;
    eventually(
        "the standby to apply the change",
        LEASE + TIMEOUT,
        || async { (api_replicas(&env).await == Some(3)).then_some(()) },
    )
    .await;
    let takeover = killed.elapsed();
    assert_eq!(holder(&env).await.as_deref(), Some(standby.name.as_str()));
    assert_eq!(standby.metric("leader").await, Some(1.0));
    eprintln!(
        "leader election: the standby applied a change made at the leader's death after {:.1} s (lease {} s)",
        takeover.as_secs_f64(),
        LEASE.as_secs()
    );
    assert!(
        takeover <= LEASE + Duration::from_secs(10),
        "takeover took {takeover:?}, lease {LEASE:?}"
    );
}

/// Found a stall, fixed in `operator/src/watch.rs`: after a restart every watch gets
/// `410 Gone`, and with kube's default (one backoff shared by all the controller's watches,
/// capped at 30 s plus jitter) a change made after the restart waited over a minute.
#[tokio::test]
async fn an_api_server_restart_under_the_operator_loses_nothing() {
    // Alone: every other test holds DISRUPTION for reading.
    let _alone = DISRUPTION.write().await;
    let Some(env) = exclusive_env("restart").await else {
        return;
    };
    let operator = OperatorProcess::start(&env, "operator", false);
    apply_system(
        &env,
        include_str!("../../../examples/paymentsystem-minimal.yaml"),
    )
    .await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;

    let restarted = Instant::now();
    ControlPlane::get().unwrap().restart_api_server().await;
    let back = restarted.elapsed();

    // Watches resumed: a spec change after the restart is applied, and a deleted child comes
    // back. Each watch retries at most every 5 s (up to 10 s with jitter), then lists again.
    set_api_replicas(&env, 4).await;
    eventually("the change after the restart applied", TIMEOUT, || async {
        (api_replicas(&env).await == Some(4)).then_some(())
    })
    .await;
    eprintln!(
        "API server restart: back after {:.1} s; the operator applied a change made then after {:.1} s more",
        back.as_secs_f64(),
        (restarted.elapsed() - back).as_secs_f64()
    );
    delete_deployment_and_wait_restored(&env, "shop-risk-engine", TIMEOUT).await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    drop(operator);
}
