//! What a kubelet would do, for a control plane that has none: a `Node`, pods bound to it, and
//! their status patched to `Running` and `Ready`, so the Deployment controller counts them.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

/// The one Node every fake kubelet binds pods to.
pub const NODE: &str = "envtest-node";

/// Creates [`NODE`] (once) with a `Ready` condition.
pub async fn ensure_node(client: &Client) -> kube::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(NODE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error),
    }
    let status = json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "envtest",
    }]}});
    nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
}

/// Binds every unscheduled pod of `namespace` to [`NODE`] and marks it running and ready;
/// returns how many it started. Pods being deleted are left alone.
pub async fn start_pods(client: &Client, namespace: &str) -> kube::Result<usize> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut started = 0;
    for pod in pods.list(&ListParams::default()).await? {
        let scheduled = pod
            .spec
            .as_ref()
            .is_some_and(|spec| spec.node_name.is_some());
        if scheduled || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.name_any();
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            target: ObjectReference {
                kind: Some("Node".into()),
                name: Some(NODE.into()),
                api_version: Some("v1".into()),
                ..Default::default()
            },
        };
        match pods
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => {}
            // Deleted or bound meanwhile.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => continue,
            Err(error) => return Err(error),
        }
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(running(&pod)))
            .await?;
        started += 1;
    }
    Ok(started)
}

/// The status a kubelet reports for a pod whose containers all started and passed readiness.
fn running(pod: &Pod) -> serde_json::Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now});
    let containers: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .map(|container| {
            json!({
                "name": container.name,
                "image": container.image,
                "imageID": "",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    json!({"status": {
        "phase": "Running",
        "startTime": now,
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "conditions": [
            condition("PodScheduled"),
            condition("Initialized"),
            condition("ContainersReady"),
            condition("Ready"),
        ],
        "containerStatuses": containers,
    }})
}

/// A fake kubelet for one namespace: starts its new pods every 100 ms until dropped.
pub struct FakeKubelet {
    task: JoinHandle<()>,
}

impl FakeKubelet {
    /// Creates the Node and starts the loop (errors are retried: pods come and go).
    pub async fn start(client: Client, namespace: &str) -> kube::Result<FakeKubelet> {
        ensure_node(&client).await?;
        let namespace = namespace.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let _ = start_pods(&client, &namespace).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Ok(FakeKubelet { task })
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}
