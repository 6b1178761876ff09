//! The operator binary against a real control plane (`paysys_testkit::envtest`, binaries from
//! `KUBEBUILDER_ASSETS`), for issue 9's targets. Prints numbers; asserts nothing:
//!
//! 1. how long a new `PaymentSystem` waits for all of its children (target: 2 s), over
//!    `SAMPLES` systems created one after another;
//! 2. the operator's resident memory idling with `SYSTEMS` reconciled systems (target: 30 MiB),
//!    and the size of its `/metrics` scrape then (issue 24's target: 64 KiB), with the deepest
//!    reconcile queue (`paysys_operator_reconcile_queue_depth`) seen while they were created.
//!
//! `cargo bench -p paysys-operator --bench real_apiserver` (a release build of the operator);
//! `PAYSYS_OPERATOR_BIN` runs another build of the binary (e.g. `target/release/...` while
//! the bench itself runs with `cargo test --bench real_apiserver`).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use paysys_operator::crd::PaymentSystem;
use paysys_testkit::envtest::ControlPlane;
use serde::de::DeserializeOwned;
use serde_json::json;

const SAMPLES: usize = 10;
const SYSTEMS: usize = 100;
const CHILDREN_TARGET: Duration = Duration::from_secs(2);
const RSS_TARGET_KIB: u64 = 30 * 1024;
const SCRAPE_TARGET_BYTES: usize = 64 * 1024;
/// Children of `spec: {}`: 4 Deployments, 3 Services, 1 ConfigMap, 3 Secrets, 4
/// NetworkPolicies, 1 PodDisruptionBudget.
const CHILDREN_OF_MINIMAL: usize = 16;

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let Some(cluster) = ControlPlane::get() else {
        return;
    };
    let client = cluster.admin();
    install_crd(&client).await;
    let namespace = cluster.namespace("bench").await;
    let log = cluster.dir().join("operator.log");
    let binary = std::env::var("PAYSYS_OPERATOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_paysys-operator").to_owned());
    println!("operator binary: {binary}");
    let http_port = paysys_testkit::free_port();
    let mut operator = tokio::process::Command::new(binary)
        .env_clear()
        .env("KUBECONFIG", cluster.admin_kubeconfig())
        .env("HTTP_PORT", http_port.to_string())
        .env("WATCH_NAMESPACE", &namespace)
        .env("LEADER_ELECTION", "false")
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start the operator");

    let mut waits = Vec::new();
    for i in 0..SAMPLES {
        let name = format!("sample-{i}");
        let started = Instant::now();
        create(&client, &namespace, &name).await;
        while children(&client, &namespace, &name).await < CHILDREN_OF_MINIMAL {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no children for {name}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        waits.push(started.elapsed());
    }
    waits.sort();
    let p50 = waits[waits.len() / 2];
    let max = waits[waits.len() - 1];
    println!(
        "children of a new PaymentSystem: p50 {:.0} ms, max {:.0} ms over {SAMPLES} (target {} ms: max is {:.2}x of it)",
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        CHILDREN_TARGET.as_millis(),
        max.as_secs_f64() / CHILDREN_TARGET.as_secs_f64()
    );

    let started = Instant::now();
    for i in SAMPLES..SYSTEMS {
        create(&client, &namespace, &format!("system-{i}")).await;
    }
    let systems: Api<PaymentSystem> = Api::namespaced(client.clone(), &namespace);
    let mut deepest_queue = 0.0_f64;
    loop {
        if let Some(depth) = metric(http_port, "paysys_operator_reconcile_queue_depth").await {
            deepest_queue = deepest_queue.max(depth);
        }
        let reconciled = systems
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|ps| {
                ps.status.as_ref().and_then(|s| s.observed_generation) == ps.metadata.generation
            })
            .count();
        if reconciled == SYSTEMS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{reconciled} of {SYSTEMS} reconciled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = started.elapsed();
    // Idle: the Deployments' pods stay Pending, so nothing changes any more.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pid = operator.id().expect("running");
    let status = ProcStatus::read(pid).expect("/proc/<pid>/status");
    println!(
        "{SYSTEMS} PaymentSystems reconciled in {:.1} s; operator idle RSS {:.1} MiB (target 30 MiB: {:.2}x of it)",
        all.as_secs_f64(),
        status.rss_kib as f64 / 1024.0,
        status.rss_kib as f64 / RSS_TARGET_KIB as f64
    );
    println!(
        "  of which heap and stacks {:.1} MiB, mapped files (the binary, libraries) {:.1} MiB; peak RSS {:.1} MiB; {} threads, {} open sockets",
        status.anon_kib as f64 / 1024.0,
        status.file_kib as f64 / 1024.0,
        status.peak_kib as f64 / 1024.0,
        status.threads,
        sockets(pid)
    );
    let scrape = http_get(http_port, "/metrics").await.unwrap_or_default();
    let conditions = scrape
        .lines()
        .filter(|line| line.starts_with("paysys_operator_paymentsystem_condition{"))
        .count();
    println!(
        "/metrics with {SYSTEMS} PaymentSystems: {} bytes ({conditions} condition series; target {} KiB: {:.2}x of it); reconcile queue: deepest {deepest_queue} while they were created, {} idle",
        scrape.len(),
        SCRAPE_TARGET_BYTES / 1024,
        scrape.len() as f64 / SCRAPE_TARGET_BYTES as f64,
        metric(http_port, "paysys_operator_reconcile_queue_depth")
            .await
            .map_or("none".to_owned(), |depth| depth.to_string()),
    );
    let _ = operator.start_kill();
}

/// The body of `GET path` on the operator's HTTP port.
async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some(body.to_owned())
}

/// The value of an unlabelled series in the operator's `/metrics`.
async fn metric(port: u16, name: &str) -> Option<f64> {
    http_get(port, "/metrics")
        .await?
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn install_crd(client: &Client) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/paymentsystems.yaml"
    ))
    .unwrap();
    let crd: CustomResourceDefinition = serde_norway::from_str(&text).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply("bench").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    loop {
        let established = crds
            .get(&name)
            .await
            .ok()
            .and_then(|crd| crd.status?.conditions)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(client: &Client, namespace: &str, name: &str) {
    let api: Api<PaymentSystem> = Api::namespaced(client.clone(), namespace);
    let body = json!({
        "apiVersion": "paysys.io/v1alpha1", "kind": "PaymentSystem",
        "metadata": {"name": name}, "spec": {},
    });
    api.patch(name, &PatchParams::apply("bench"), &Patch::Apply(body))
        .await
        .unwrap();
}

async fn count<K>(client: &Client, namespace: &str, selector: &str) -> usize
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .map(|list| list.items.len())
        .unwrap_or(0)
}

async fn children(client: &Client, namespace: &str, instance: &str) -> usize {
    let selector = format!("app.kubernetes.io/instance={instance}");
    count::<Deployment>(client, namespace, &selector).await
        + count::<Service>(client, namespace, &selector).await
        + count::<ConfigMap>(client, namespace, &selector).await
        + count::<Secret>(client, namespace, &selector).await
        + count::<NetworkPolicy>(client, namespace, &selector).await
        + count::<PodDisruptionBudget>(client, namespace, &selector).await
}

/// How many sockets `pid` has open (its API server connections, idle ones included).
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// The memory figures of `/proc/<pid>/status`, in KiB.
struct ProcStatus {
    rss_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    peak_kib: u64,
    threads: u64,
}

impl ProcStatus {
    fn read(pid: u32) -> Option<ProcStatus> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find(|line| line.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        Some(ProcStatus {
            rss_kib: field("VmRSS:")?,
            anon_kib: field("RssAnon:")?,
            file_kib: field("RssFile:")?,
            peak_kib: field("VmHWM:")?,
            threads: field("Threads:")?,
        })
    }
}
