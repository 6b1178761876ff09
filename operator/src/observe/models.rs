//! What the risk model depends on: the ConfigMaps holding the models the spec names (read so
//! `validate` can check them before anything is rolled out), and, for a model on a
//! PersistentVolumeClaim the operator cannot read, the risk engine pods that refused it.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::{Error, ModelFiles, RefusedPod};
use crate::crd::{ModelSourceRef, PaymentSystem, RiskModelSpec};
use crate::names::{Component, Names};

/// Pod-template annotation holding the champion's model version: a new version rolls the pods,
/// and a pod tells which version it was started for.
pub const MODEL_VERSION: &str = "paysys.io/model-version";
/// Pod-template annotation holding the challenger's model version.
pub const SHADOW_MODEL_VERSION: &str = "paysys.io/shadow-model-version";

/// Exit status of a paysys service refusing its configuration (a model among it).
pub const REFUSED_EXIT_CODE: i32 = 2;

/// The model sources of `spec`: the champion's, then the challenger's.
pub fn sources(spec: &RiskModelSpec) -> Vec<ModelSourceRef<'_>> {
    spec.champion()
        .into_iter()
        .chain(spec.shadow.as_ref().and_then(|shadow| shadow.source()))
        .collect()
}

/// Reads each ConfigMap holding a model of `ps`.
pub async fn read_config_maps(client: &Client, ps: &PaymentSystem) -> Result<ModelFiles, Error> {
    let mut files = ModelFiles::new();
    let Some(spec) = &ps.spec.risk_engine.model else {
        return Ok(files);
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ps.namespace().unwrap_or_default());
    for source in sources(spec) {
        let ModelSourceRef::ConfigMap(config_map) = source else {
            continue;
        };
        let name = &config_map.name;
        let read = api
            .get_opt(name)
            .await
            .map_err(|source| Error::ModelReadFailed {
                name: format!("ConfigMap {name}"),
                source,
            })?;
        if let Some(read) = read {
            let text = read
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(key, value)| (key, value.into_bytes()));
            let binary = read
                .binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(key, value)| (key, value.0));
            files.insert(name.clone(), text.chain(binary).collect());
        }
    }
    Ok(files)
}

/// The risk engine pods of `ps` that exited with [`REFUSED_EXIT_CODE`] (now or before their
/// last restart), when a model is on a claim: only the engine can check that one. One list
/// per reconcile of such a system, none otherwise.
pub async fn refused_pods(client: &Client, ps: &PaymentSystem) -> Result<Vec<RefusedPod>, Error> {
    let on_claim = ps.spec.risk_engine.model.as_ref().is_some_and(|spec| {
        sources(spec)
            .iter()
            .any(|source| matches!(source, ModelSourceRef::Claim(_)))
    });
    if !on_claim {
        return Ok(Vec::new());
    }
    let names = Names::new(&ps.name_any());
    let selector = format!(
        "app.kubernetes.io/name={},app.kubernetes.io/instance={}",
        Component::RiskEngine.name(),
        names.instance
    );
    let api: Api<Pod> = Api::namespaced(client.clone(), &ps.namespace().unwrap_or_default());
    let pods = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::PodReadFailed {
            selector: selector.clone(),
            source,
        })?;
    Ok(pods.items.iter().filter_map(refused).collect())
}

/// The refusal of `pod`, if one of its containers exited with [`REFUSED_EXIT_CODE`].
pub fn refused(pod: &Pod) -> Option<RefusedPod> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let message = statuses.iter().find_map(|status| {
        [status.state.as_ref(), status.last_state.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|state| state.terminated.as_ref())
            .find(|terminated| terminated.exit_code == REFUSED_EXIT_CODE)
            .map(|terminated| {
                terminated
                    .message
                    .clone()
                    .filter(|message| !message.trim().is_empty())
                    .unwrap_or_else(|| {
                        format!(
                            "container {} exited with status {REFUSED_EXIT_CODE} (refused its configuration) and left no message",
                            status.name
                        )
                    })
            })
    })?;
    let annotation = |key: &str| pod.annotations().get(key).cloned();
    Some(RefusedPod {
        name: pod.name_any(),
        champion: annotation(MODEL_VERSION),
        shadow: annotation(SHADOW_MODEL_VERSION),
        message: message.trim().to_owned(),
    })
}

/// The operator's model copies the live risk engine Deployment of `ps` mounts (read only when
/// the spec has a model): kept while a pod template still mounts them, so the pods of a
/// rollout's old side never lose their model.
pub async fn copies_in_use(client: &Client, ps: &PaymentSystem) -> Result<Vec<String>, Error> {
    use k8s_openapi::api::apps::v1::Deployment;
    if ps.spec.risk_engine.model.is_none() {
        return Ok(Vec::new());
    }
    let names = Names::new(&ps.name_any());
    let name = names.workload(Component::RiskEngine);
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ps.namespace().unwrap_or_default());
    let deployment = api
        .get_opt(&name)
        .await
        .map_err(|source| Error::ModelReadFailed {
            name: format!("Deployment {name}"),
            source,
        })?;
    let prefix = names.model_copy("");
    Ok(deployment
        .and_then(|deployment| deployment.spec.template.spec?.volumes)
        .into_iter()
        .flatten()
        .filter_map(|volume| volume.config_map.map(|config_map| config_map.name))
        .filter(|name| name.starts_with(&prefix))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(container_status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "shop-risk-engine-abc",
                "annotations": {MODEL_VERSION: "m-2"},
            },
            "status": {"containerStatuses": [container_status]},
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_is_refused_when_a_container_exited_2_now_or_before_its_restart() {
        let restarting = pod(serde_json::json!({
            "name": "risk-engine", "image": "x", "imageID": "", "ready": false, "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 2, "message": "risk-engine: invalid configuration: MODEL_VERSION: ...\n"}},
        }));
        assert_eq!(
            refused(&restarting),
            Some(RefusedPod {
                name: "shop-risk-engine-abc".into(),
                champion: Some("m-2".into()),
                shadow: None,
                message: "risk-engine: invalid configuration: MODEL_VERSION: ...".into(),
            })
        );
        let silent = pod(serde_json::json!({
            "name": "risk-engine", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 2}},
        }));
        assert!(
            refused(&silent)
                .unwrap()
                .message
                .contains("left no message")
        );
        let crashed = pod(serde_json::json!({
            "name": "risk-engine", "image": "x", "imageID": "", "ready": false, "restartCount": 1,
            "lastState": {"terminated": {"exitCode": 1, "message": "broker gone"}},
        }));
        assert_eq!(
            refused(&crashed),
            None,
            "exit 1 is a failure, not a refusal"
        );
        let running = pod(serde_json::json!({
            "name": "risk-engine", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}},
        }));
        assert_eq!(refused(&running), None);
    }
}
