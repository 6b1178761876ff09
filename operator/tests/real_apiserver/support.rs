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

/// One test's view of the cluster: its own namespace and an admin client.
pub struct Env {
    pub namespace: String,
    pub client: Client,
}

/// The control plane with `crds/paymentsystems.yaml` installed and a fresh namespace named
/// after the test; `None` when the test is skipped (see [`ControlPlane::get`]).
pub async fn env(test: &str) -> Option<Env> {
    let cluster = ControlPlane::get()?;
    let client = cluster.admin();
    install_crd(cluster).await;
    let namespace = cluster.namespace(test).await;
    Some(Env { namespace, client })
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
