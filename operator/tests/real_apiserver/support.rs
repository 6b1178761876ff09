//! What every real-API-server test needs: the control plane with the shipped CRD installed,
//! a namespace, the operator running in-process, and ways to wait for the cluster.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use paysys_operator::controller::{self, Context, Scope};
use paysys_operator::crd::PaymentSystem;
use paysys_operator::metrics::Metrics;
use paysys_testkit::envtest::ControlPlane;
use tokio::sync::{OnceCell, oneshot};
use tokio::task::JoinHandle;

/// Field manager of the tests' own writes (as a user's `kubectl apply --server-side`).
pub const TEST_MANAGER: &str = "paysys-test";

/// Tests share the control plane; one that disrupts it (restarting the API server) takes
/// this for writing, every other test holds it for reading while it runs.
pub static DISRUPTION: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// One test's view of the cluster: its own namespace and an admin client.
pub struct Env {
    _shared: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
    pub namespace: String,
    pub client: Client,
}

/// The control plane with `crds/paymentsystems.yaml` installed and a fresh namespace named
/// after the test; `None` when the test is skipped (see [`ControlPlane::get`]).
pub async fn env(test: &str) -> Option<Env> {
    let shared = DISRUPTION.read().await;
    let mut env = exclusive_env(test).await?;
    env._shared = Some(shared);
    Some(env)
}

/// [`env`] without the shared hold, for a test that takes [`DISRUPTION`] for writing.
pub async fn exclusive_env(test: &str) -> Option<Env> {
    let cluster = ControlPlane::get()?;
    let client = cluster.admin();
    install_crd(cluster).await;
    let namespace = cluster.namespace(test).await;
    Some(Env {
        _shared: None,
        namespace,
        client,
    })
}

/// The CRD file as shipped, parsed.
pub fn shipped_crd() -> CustomResourceDefinition {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/paymentsystems.yaml"
    ))
    .expect("read crds/paymentsystems.yaml");
    serde_norway::from_str(&text).expect("crds/paymentsystems.yaml parses")
}

/// Applies the shipped CRD once per test binary and waits until it is Established.
async fn install_crd(cluster: &ControlPlane) {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let crds: Api<CustomResourceDefinition> = Api::all(cluster.admin());
            let crd = shipped_crd();
            let name = crd.metadata.name.clone().expect("the CRD has a name");
            crds.patch(
                &name,
                &PatchParams::apply(TEST_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .expect("the API server accepts crds/paymentsystems.yaml");
            eventually(
                "the CRD to be Established",
                Duration::from_secs(30),
                || async {
                    let crd = crds.get(&name).await.ok()?;
                    let established = crd.status?.conditions?.into_iter().any(|condition| {
                        condition.type_ == "Established" && condition.status == "True"
                    });
                    established.then_some(())
                },
            )
            .await;
        })
        .await;
}

/// Polls `check` every 50 ms until it gives `Some`; panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    paysys_testkit::eventually(timeout, check)
        .await
        .unwrap_or_else(|| panic!("timed out after {} s waiting for {what}", timeout.as_secs()))
}

/// Deletes the operator's Deployment `name` and waits until the operator has created it
/// again: a new object (another uid), not the old one on its way out.
pub async fn delete_deployment_and_wait_restored(env: &Env, name: &str, timeout: Duration) {
    use k8s_openapi::api::apps::v1::Deployment;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let old = deployments
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get Deployment {name}: {e}"))
        .metadata
        .uid;
    deployments
        .delete(name, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("delete Deployment {name}: {e}"));
    eventually(
        &format!("the deleted Deployment {name} restored"),
        timeout,
        || async {
            let restored = deployments.get_opt(name).await.ok()??.metadata;
            (restored.uid != old && restored.deletion_timestamp.is_none()).then_some(())
        },
    )
    .await;
}

/// The operator's controller running in this process, watching one namespace (so tests in
/// other namespaces never see it). Stops when dropped.
pub struct Operator {
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Operator {
    pub fn start(client: Client, namespace: &str) -> Operator {
        let metrics = Arc::new(Metrics::default());
        let ctx = Arc::new(Context::new(
            client,
            metrics.clone(),
            Some("test-operator".into()),
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(
            ctx,
            Scope::Namespace(namespace.to_owned()),
            async move {
                let _ = stopped.await;
            },
        ));
        Operator {
            metrics,
            stop: Some(stop),
            task,
        }
    }

    /// Stops the controller and waits for the reconciles in flight.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Applies a `PaymentSystem` given as YAML (with or without `metadata.namespace`) as the test
/// user, and returns its name.
pub async fn apply_system(env: &Env, yaml: &str) -> PaymentSystem {
    let mut value: serde_json::Value = serde_norway::from_str(yaml).expect("YAML");
    value["metadata"]["namespace"] = env.namespace.clone().into();
    let name = value["metadata"]["name"]
        .as_str()
        .expect("metadata.name")
        .to_owned();
    let api: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    api.patch(
        &name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .unwrap_or_else(|e| panic!("apply PaymentSystem {name}: {e}"))
}

/// The `PaymentSystem` once its status describes its current generation and has a condition
/// `kind` with `status`.
pub async fn wait_condition(
    env: &Env,
    name: &str,
    kind: &str,
    status: &str,
    timeout: Duration,
) -> PaymentSystem {
    let api: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    let found = paysys_testkit::eventually(timeout, || async {
        let ps = api.get(name).await.ok()?;
        let current = ps.status.as_ref()?.observed_generation == ps.metadata.generation;
        let matches = condition(&ps, kind).is_some_and(|c| c.status == status);
        (current && matches).then_some(ps)
    })
    .await;
    match found {
        Some(ps) => ps,
        None => {
            // Say what the operator reported instead.
            let last = api.get(name).await.ok().and_then(|ps| ps.status);
            panic!(
                "timed out after {} s waiting for {}/{name} to have {kind}={status}; status: {last:#?}",
                timeout.as_secs(),
                env.namespace
            )
        }
    }
}

/// Condition `kind` of `ps`.
pub fn condition<'a>(
    ps: &'a PaymentSystem,
    kind: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    ps.status
        .as_ref()?
        .conditions
        .iter()
        .find(|condition| condition.type_ == kind)
}

/// The helm 4 binary: `HELM` (scripts/test.sh exports it), else what scripts/ensure-helm.sh
/// finds or fetches; panics with its reason when there is none.
pub fn helm() -> std::path::PathBuf {
    if let Some(helm) = std::env::var_os("HELM").filter(|helm| !helm.is_empty()) {
        return helm.into();
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let output = std::process::Command::new(format!("{root}/scripts/ensure-helm.sh"))
        .current_dir(root)
        .output()
        .expect("run scripts/ensure-helm.sh");
    assert!(
        output.status.success(),
        "scripts/ensure-helm.sh found no helm 4:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().into()
}

/// `helm template <release> charts/paysys -n <namespace> <extra...>` as JSON documents.
pub fn helm_template(release: &str, namespace: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    use serde::Deserialize as _;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let output = std::process::Command::new(helm())
        .current_dir(root)
        .args(["template", release, "charts/paysys", "-n", namespace])
        .args(extra)
        .output()
        .expect("run helm template");
    assert!(
        output.status.success(),
        "helm template failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|document| serde_json::Value::deserialize(document).expect("valid YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

/// Server-side applies arbitrary objects (as the admin), like `kubectl apply --server-side`.
pub async fn apply_objects(client: &Client, objects: &[serde_json::Value]) {
    use kube::api::{DynamicObject, GroupVersionKind};
    for object in objects {
        let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", object["apiVersion"].as_str().unwrap()),
        };
        let kind = object["kind"].as_str().unwrap();
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("discover {kind}: {e}"));
        let name = object["metadata"]["name"].as_str().unwrap();
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(namespace) if capabilities.scope == kube::discovery::Scope::Namespaced => {
                Api::namespaced_with(client.clone(), namespace, &resource)
            }
            _ => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
    }
}

/// A minimal HTTP/1.1 exchange with 127.0.0.1:`port`: `(status, body)`.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
