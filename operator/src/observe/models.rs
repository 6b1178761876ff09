//! What the risk model depends on: the ConfigMaps and Secrets holding the models the spec
//! names (read so `validate` can check them before anything is rolled out), the models the
//! live risk engine pod template mounts (the last good ones, kept while a new one is refused),
//! and, for a model on a PersistentVolumeClaim the operator cannot read, the risk engine pods
//! that refused it. A Secret's content is only ever checked and copied, never logged.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodTemplateSpec, Secret, Volume};
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
/// Name of the champion's volume in the risk engine pod template.
pub const MODEL_VOLUME: &str = "model";
/// Name of the challenger's volume in the risk engine pod template.
pub const SHADOW_MODEL_VOLUME: &str = "shadow-model";

/// Exit status of a paysys service refusing its configuration (a model among it).
pub const REFUSED_EXIT_CODE: i32 = 2;

/// The kind of object a model is read from and its operator copy served in: the same kind as
/// the user's source, so a model kept in a Secret never lands in a ConfigMap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelStore {
    ConfigMap,
    Secret,
}

impl ModelStore {
    /// The Kubernetes kind, as messages name it.
    pub fn kind(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        }
    }
}

/// The object a readable source names (`None` for a claim, which the operator cannot read).
pub fn readable(source: ModelSourceRef<'_>) -> Option<(ModelStore, &str)> {
    match source {
        ModelSourceRef::ConfigMap(config_map) => Some((ModelStore::ConfigMap, &config_map.name)),
        ModelSourceRef::Secret(secret) => Some((ModelStore::Secret, &secret.name)),
        ModelSourceRef::Claim(_) => None,
    }
}

/// The model sources of `spec`: the champion's, then the challenger's.
pub fn sources(spec: &RiskModelSpec) -> Vec<ModelSourceRef<'_>> {
    spec.champion()
        .into_iter()
        .chain(spec.shadow.as_ref().and_then(|shadow| shadow.source()))
        .collect()
}

/// Whether `ps` reads a model (champion or challenger) from the `store` object `name`.
pub fn reads_model(ps: &PaymentSystem, store: ModelStore, name: &str) -> bool {
    ps.spec.risk_engine.model.as_ref().is_some_and(|spec| {
        sources(spec)
            .into_iter()
            .filter_map(readable)
            .any(|read| read == (store, name))
    })
}

/// Reads each ConfigMap and Secret holding a model of `ps` (absent ones left out).
pub async fn read_sources(client: &Client, ps: &PaymentSystem) -> Result<ModelFiles, Error> {
    let mut files = ModelFiles::new();
    let Some(spec) = &ps.spec.risk_engine.model else {
        return Ok(files);
    };
    let namespace = ps.namespace().unwrap_or_default();
    for (store, name) in sources(spec).into_iter().filter_map(readable) {
        let read_failed = |source| Error::ModelReadFailed {
            name: format!("{} {name}", store.kind()),
            source,
        };
        let data: Option<BTreeMap<String, Vec<u8>>> = match store {
            ModelStore::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), &namespace)
                .get_opt(name)
                .await
                .map_err(read_failed)?
                .map(|read| {
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
                    text.chain(binary).collect()
                }),
            ModelStore::Secret => Api::<Secret>::namespaced(client.clone(), &namespace)
                .get_opt(name)
                .await
                .map_err(read_failed)?
                .map(|read| {
                    read.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(key, value)| (key, value.0))
                        .collect()
                }),
        };
        if let Some(data) = data {
            files.insert((store, name.to_owned()), data);
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
            .into_iter()
            .any(|source| readable(source).is_none())
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

/// The live risk engine Deployment of `ps` as far as its models go (read only when the spec
/// has a model).
pub async fn live_engine(client: &Client, ps: &PaymentSystem) -> Result<LiveEngine, Error> {
    if ps.spec.risk_engine.model.is_none() {
        return Ok(LiveEngine::default());
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
    Ok(LiveEngine::of(&names, deployment.map(|d| d.spec.template)))
}

/// What the live risk engine pod template runs: the last good models (every model reaches a
/// template only after passing the checks), kept while a newer one is refused.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LiveEngine {
    /// The pod template, kept as it is when a refused model leaves no good champion to serve
    /// (`None`: there is no risk engine Deployment yet).
    pub template: Option<PodTemplateSpec>,
    pub champion: Option<LiveModel>,
    pub shadow: Option<LiveModel>,
    /// The operator's model copies (ConfigMaps or Secrets) the template mounts: kept from
    /// pruning while it does, so the pods of a rollout's old side never lose their model.
    pub copies: Vec<String>,
}

/// One model the live pod template mounts: its version (the template's annotation), its
/// volume and the mount's `subPath`.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveModel {
    pub version: String,
    pub volume: Volume,
    pub sub_path: Option<String>,
}

impl LiveEngine {
    /// The models `template` (of the system `names`) mounts.
    pub fn of(names: &Names, template: Option<PodTemplateSpec>) -> Self {
        let Some(template) = template else {
            return Self::default();
        };
        let annotations = template
            .metadata
            .as_ref()
            .and_then(|meta| meta.annotations.clone())
            .unwrap_or_default();
        let pod = template.spec.clone().unwrap_or_default();
        let volumes = pod.volumes.unwrap_or_default();
        let mounts: Vec<_> = pod
            .containers
            .iter()
            .flat_map(|container| container.volume_mounts.iter().flatten())
            .collect();
        let slot = |volume_name: &str, annotation: &str| {
            let volume = volumes.iter().find(|volume| volume.name == volume_name)?;
            Some(LiveModel {
                version: annotations.get(annotation)?.clone(),
                volume: volume.clone(),
                sub_path: mounts
                    .iter()
                    .find(|mount| mount.name == volume_name)
                    .and_then(|mount| mount.sub_path.clone()),
            })
        };
        let prefix = names.model_copy("");
        let copies = volumes
            .iter()
            .filter_map(|volume| {
                let config_map = volume.config_map.as_ref().map(|c| c.name.clone());
                let secret = volume.secret.as_ref().and_then(|s| s.secret_name.clone());
                config_map.or(secret)
            })
            .filter(|name| name.starts_with(&prefix))
            .collect();
        Self {
            champion: slot(MODEL_VOLUME, MODEL_VERSION),
            shadow: slot(SHADOW_MODEL_VOLUME, SHADOW_MODEL_VERSION),
            copies,
            template: Some(template),
        }
    }
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
