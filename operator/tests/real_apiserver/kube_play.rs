//! The operator's pods, played: a `PaymentSystem` with external PostgreSQL and RabbitMQ is
//! reconciled on the real API server; the pod templates of its API and risk-engine Deployments,
//! with the Secrets and ConfigMaps they reference, are exported and run by `podman kube play`
//! from the locally built images (`scripts/kube-play.sh`); then the original demo's POST with
//! the operator-generated key answers 201 and the risk engine decides it. The service binaries
//! run unchanged inside the operator's pods.
//!
//! What Debian's podman 4.3 cannot take as the operator writes it, and what this test changes:
//! - Networking: no bridge networks in the sandbox, so the pods get `hostNetwork: true`, each
//!   container's `PORT` becomes a free host port, its `ports` are dropped (podman refuses port
//!   mappings with the host's network) and its probes name that port by number.
//! - Secret volumes: without `optional` set podman panics (nil pointer in `VolumeFromSecret`);
//!   with it, podman writes each value's base64 text instead of the value, whatever form the
//!   Secret is given in, and ignores `items`. So each Secret volume becomes a ConfigMap volume
//!   (`<secret>-files`, played with `--configmap`) holding the decoded values under the items'
//!   paths: the files a kubelet would write.
//! - `secretKeyRef`: podman reads a podman secret of that name holding a JSON map of base64
//!   values, i.e. the Secret's `data`; the script creates them from the exported files.
//! - Images: the locally built ones, pull policy `Never`.
//! - Names: podman keeps pods, secrets and the volumes it makes of ConfigMaps by name (and
//!   volumes outlive the pods, keeping stale content), so each gets a suffix of this run's own
//!   and the script removes them afterwards.
//!
//! Everything else (security contexts, probes, resources, mounts, environment) is played as the
//!   operator wrote it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, Pod, Secret, SecretVolumeSource,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{ListParams, ObjectMeta};
use paysys_operator::crd::PaymentSystem;
use paysys_testkit::{TestDb, amqp_url, free_port, unique_name};

use crate::reconcile::create_secret;
use crate::support::{Env, Operator, apply_system, env, eventually};

const TIMEOUT: Duration = Duration::from_secs(30);

/// What `podman kube play` gets: Pods, the ConfigMaps they mount, the Secrets they read.
struct Export {
    /// Appended to every name podman keeps (pods, secrets, volumes): runs never share one.
    run: String,
    pods: Vec<Pod>,
    config_maps: BTreeMap<String, ConfigMap>,
    /// Secrets read through `secretKeyRef`: their `data` as it is (base64 in JSON).
    env_secrets: BTreeMap<String, serde_json::Value>,
}

impl Export {
    fn new(run: &str) -> Export {
        Export {
            run: run.to_owned(),
            pods: Vec::new(),
            config_maps: BTreeMap::new(),
            env_secrets: BTreeMap::new(),
        }
    }

    /// `name` made this run's own.
    fn own(&self, name: &str) -> String {
        format!("{name}-{}", self.run)
    }

    /// Adds the pod template of `deployment`, made playable (see the module documentation),
    /// and returns the pod's name.
    async fn add(&mut self, env: &Env, deployment: &Deployment, image: &str, port: u16) -> String {
        let template = deployment.spec.template.clone();
        let mut spec = template.spec.expect("pod spec");
        spec.host_network = Some(true);
        for container in &mut spec.containers {
            on_host_port(container, image, port);
            self.own_env_secrets(env, container).await;
        }
        for volume in spec.volumes.iter_mut().flatten() {
            if let Some(source) = volume.secret.take() {
                let config_map = secret_files(env, &source).await;
                let name = format!("{}-files", source.secret_name.expect("secretName"));
                volume.config_map =
                    Some(self.own_config_map(&name, config_map, source.default_mode));
            } else if let Some(source) = volume.config_map.as_mut() {
                let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.namespace);
                let config_map = api.get(&source.name).await.expect("mounted ConfigMap");
                *source = self.own_config_map(&source.name, config_map, source.default_mode);
            }
        }
        let name = self.own(deployment.metadata.name.as_deref().expect("a name"));
        self.pods.push(Pod {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: template.metadata.and_then(|meta| meta.labels),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: None,
        });
        name
    }

    /// Points each `secretKeyRef` of `container` at this run's copy of the Secret's data.
    async fn own_env_secrets(&mut self, env: &Env, container: &mut Container) {
        let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
        for var in container.env.iter_mut().flatten() {
            let source = var.value_from.as_mut();
            assert!(
                source
                    .as_ref()
                    .is_none_or(|from| from.config_map_key_ref.is_none()),
                "configMapKeyRef: not handled here yet"
            );
            if let Some(reference) = source.and_then(|from| from.secret_key_ref.as_mut()) {
                let secret = secrets
                    .get(&reference.name)
                    .await
                    .expect("referenced Secret");
                reference.name = self.own(&reference.name);
                let data = serde_json::to_value(secret.data.unwrap_or_default()).unwrap();
                self.env_secrets.insert(reference.name.clone(), data);
            }
        }
    }

    /// Keeps `config_map` as this run's `name` and returns a volume source for it.
    fn own_config_map(
        &mut self,
        name: &str,
        config_map: ConfigMap,
        default_mode: Option<i32>,
    ) -> ConfigMapVolumeSource {
        let name = self.own(name);
        let config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..config_map
        };
        self.config_maps.insert(name.clone(), config_map);
        ConfigMapVolumeSource {
            name,
            default_mode,
            optional: Some(false),
            ..ConfigMapVolumeSource::default()
        }
    }

    /// Writes the files `scripts/kube-play.sh` reads into `dir`.
    fn write(&self, dir: &Path) {
        let pods: Vec<String> = self
            .pods
            .iter()
            .map(|pod| serde_norway::to_string(pod).unwrap())
            .collect();
        std::fs::write(dir.join("pods.yaml"), pods.join("---\n")).unwrap();
        // One file each: podman reads the first document of a --configmap file only.
        let folder = dir.join("configmaps");
        std::fs::create_dir_all(&folder).unwrap();
        for (name, config_map) in &self.config_maps {
            let yaml = serde_norway::to_string(config_map).unwrap();
            std::fs::write(folder.join(format!("{name}.yaml")), yaml).unwrap();
        }
        let folder = dir.join("secrets");
        std::fs::create_dir_all(&folder).unwrap();
        for (name, data) in &self.env_secrets {
            std::fs::write(folder.join(format!("{name}.json")), data.to_string()).unwrap();
        }
    }
}

/// The local image, never pulled, on a host port of its own: the pods share the host's network.
fn on_host_port(container: &mut Container, image: &str, port: u16) {
    container.image = Some(image.to_owned());
    container.image_pull_policy = Some("Never".into());
    // podman refuses port mappings with the host's network; the probes named the port.
    container.ports = None;
    for probe in [
        &mut container.startup_probe,
        &mut container.liveness_probe,
        &mut container.readiness_probe,
    ] {
        if let Some(http) = probe.as_mut().and_then(|probe| probe.http_get.as_mut()) {
            http.port = IntOrString::Int(port.into());
        }
    }
    for var in container.env.iter_mut().flatten() {
        if var.name == "PORT" {
            var.value = Some(port.to_string());
        }
    }
}

/// The files a kubelet would write for the Secret volume `source`: decoded values, under the
/// items' paths when it has items.
async fn secret_files(env: &Env, source: &SecretVolumeSource) -> ConfigMap {
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    let name = source.secret_name.as_deref().expect("secretName");
    let data = secrets
        .get(name)
        .await
        .expect("mounted Secret")
        .data
        .unwrap_or_default();
    let decoded = |key: &str| String::from_utf8(data[key].0.clone()).expect("a text value");
    let files: BTreeMap<String, String> = match &source.items {
        Some(items) => items
            .iter()
            .map(|item| (item.path.clone(), decoded(&item.key)))
            .collect(),
        None => data.keys().map(|key| (key.clone(), decoded(key))).collect(),
    };
    ConfigMap {
        data: Some(files),
        ..ConfigMap::default()
    }
}

/// `amqp_url()` with its virtual host replaced.
fn with_vhost(url: &str, vhost: &str) -> String {
    let (server, _) = url
        .rsplit_once('/')
        .expect("an AMQP URL with a virtual host");
    format!("{server}/{vhost}")
}

/// The Deployment of component `name` (label `app.kubernetes.io/name`) in the test's namespace.
async fn deployment(env: &Env, name: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let labels = format!("app.kubernetes.io/name={name}");
    eventually(&format!("the {name} Deployment"), TIMEOUT, || async {
        api.list(&ListParams::default().labels(&labels))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await
}

#[tokio::test]
async fn the_operators_pods_run_under_podman_kube_play_and_decide_the_demo_payment() {
    let Some(env) = env("kube-play").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    let database = TestDb::create().await;
    let vhost = unique_name("paysys-test_kube-play");
    create_secret(&env, "shop-database", &[("url", &database.url)]).await;
    create_secret(
        &env,
        "shop-broker",
        &[("url", &with_vhost(&amqp_url(), &vhost))],
    )
    .await;
    apply_system(
        &env,
        "apiVersion: paysys.io/v1alpha1\nkind: PaymentSystem\nmetadata: {name: shop}\nspec:\n  \
         database: {external: {secretName: shop-database}}\n  \
         rabbitmq: {external: {secretName: shop-broker}}\n",
    )
    .await;

    let systems: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    let key_secret = eventually("status.apiKeySecret", TIMEOUT, || async {
        systems.get("shop").await.ok()?.status?.api_key_secret
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    let key = secrets.get(&key_secret).await.unwrap().data.unwrap()["api-key"]
        .0
        .clone();
    let key = String::from_utf8(key).expect("a text API key");

    let tag = format!("kube-play-{}", std::process::id());
    let (api_port, risk_port) = (free_port(), free_port());
    let api = deployment(&env, "payments-api").await;
    let risk = deployment(&env, "risk-engine").await;
    let mut export = Export::new(&tag);
    let api_pod = export
        .add(
            &env,
            &api,
            &format!("ghcr.io/paysys/payments-api:{tag}"),
            api_port,
        )
        .await;
    let risk_pod = export
        .add(
            &env,
            &risk,
            &format!("ghcr.io/paysys/risk-engine:{tag}"),
            risk_port,
        )
        .await;
    let dir = std::env::temp_dir().join(unique_name("paysys-kube-play"));
    std::fs::create_dir_all(&dir).unwrap();
    export.write(&dir);

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(root.join("scripts/kube-play.sh"))
        .arg(&dir)
        .env("KUBE_PLAY_TAG", &tag)
        .env("KUBE_PLAY_API_PORT", api_port.to_string())
        .env("KUBE_PLAY_RISK_PORT", risk_port.to_string())
        .env("KUBE_PLAY_KEY", &key)
        .env("KUBE_PLAY_VHOST", &vhost)
        .env("KUBE_PLAY_API_POD", api_pod)
        .env("KUBE_PLAY_RISK_POD", risk_pod)
        .status()
        .expect("scripts/kube-play.sh runs");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(status.success(), "scripts/kube-play.sh failed: {status}");
}
