//! `crds/paymentsystems.yaml` on a real API server: accepted (the test harness installs it),
//! its defaults applied, and every CEL rule rejecting its own bad case with its own message.

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use paysys_operator::crd::{PaymentSystem, PaymentSystemSpec, SecurityContextSpec};
use paysys_operator::validate::checks::security_conflict;
use serde_json::{Value, json};

use crate::support::{TEST_MANAGER, env, shipped_crd};

/// `(schema path of the rule, a spec that breaks it)`; for a transition rule, the spec it
/// is updated to from [`starting_spec`].
fn bad_cases() -> Vec<(&'static str, Value)> {
    vec![
        (".spec.riskEngine", json!({"riskEngine": {"mode": "model"}})),
        (
            ".spec.riskEngine.model",
            json!({"riskEngine": {"model": {"configMap": {"name": "m"}, "persistentVolumeClaim": {"claimName": "c", "version": "v"}}}}),
        ),
        (
            ".spec.riskEngine.model",
            json!({"riskEngine": {"model": {"configMap": {"name": "m"}, "secret": {"name": "m"}}}}),
        ),
        (
            ".spec.riskEngine.model.configMap.name",
            json!({"riskEngine": {"model": {"configMap": {"name": ""}}}}),
        ),
        (
            ".spec.riskEngine.model.secret.name",
            json!({"riskEngine": {"model": {"secret": {"name": ""}}}}),
        ),
        (
            ".spec.riskEngine.model.persistentVolumeClaim.claimName",
            json!({"riskEngine": {"model": {"persistentVolumeClaim": {"claimName": "", "version": "v"}}}}),
        ),
        (
            ".spec.riskEngine.model.persistentVolumeClaim.version",
            json!({"riskEngine": {"model": {"persistentVolumeClaim": {"claimName": "c", "version": ""}}}}),
        ),
        (
            ".spec.riskEngine.model.shadow",
            json!({"riskEngine": {"model": {"configMap": {"name": "m"}, "shadow": {}}}}),
        ),
        (
            ".spec.riskEngine.model.shadow",
            json!({"riskEngine": {"model": {"configMap": {"name": "m"}, "shadow": {"secret": {"name": "s"}, "persistentVolumeClaim": {"claimName": "c", "version": "v"}}}}}),
        ),
        (
            ".spec.riskEngine.model.shadow.secret.name",
            json!({"riskEngine": {"model": {"configMap": {"name": "m"}, "shadow": {"secret": {"name": ""}}}}}),
        ),
        (
            ".spec.riskEngine.model.shadow.configMap.name",
            json!({"riskEngine": {"model": {"configMap": {"name": "m"}, "shadow": {"configMap": {"name": ""}}}}}),
        ),
        (
            ".spec.riskEngine.model.shadow.persistentVolumeClaim.claimName",
            json!({"riskEngine": {"model": {"configMap": {"name": "m"}, "shadow": {"persistentVolumeClaim": {"claimName": "", "version": "v"}}}}}),
        ),
        (
            ".spec.riskEngine.model.shadow.persistentVolumeClaim.version",
            json!({"riskEngine": {"model": {"configMap": {"name": "m"}, "shadow": {"persistentVolumeClaim": {"claimName": "c", "version": ""}}}}}),
        ),
        (
            ".spec.dataFeed.schedule",
            json!({"dataFeed": {"schedule": "every hour"}}),
        ),
        (
            ".spec.dataFeed.destination",
            json!({"dataFeed": {"destination": {"existingClaim": "lake", "claim": {}}}}),
        ),
        (
            ".spec.dataFeed.destination",
            json!({"dataFeed": {"destination": {"claim": {"ephemeral": true}}}}),
        ),
        (
            ".spec.dataFeed.destination.claim",
            json!({"dataFeed": {"destination": {"claim": {"ephemeral": true, "storageClassName": "slow"}}}}),
        ),
        (
            ".spec.dataFeed.destination.existingClaim",
            json!({"dataFeed": {"destination": {"existingClaim": ""}}}),
        ),
        (
            ".spec.dataFeed.destination.claim.size",
            json!({"dataFeed": {"destination": {"claim": {"size": "big"}}}}),
        ),
        (
            ".spec.dataFeed.destination.claim.storageClassName",
            json!({"dataFeed": {"destination": {"claim": {"storageClassName": "slow"}}}}),
        ),
        (
            ".spec.dataFeed.keySecret.secretName",
            json!({"dataFeed": {"keySecret": {"secretName": ""}}}),
        ),
        (
            ".spec.dataFeed.retentionDays",
            json!({"dataFeed": {"retentionDays": 0}}),
        ),
        (
            ".spec.database",
            json!({"database": {"managed": {}, "external": {"secretName": "db"}}}),
        ),
        (
            ".spec.database.cloudNativePG.instances",
            json!({"database": {"cloudNativePG": {"instances": 0}}}),
        ),
        (
            ".spec.database.cloudNativePG.storage.size",
            json!({"database": {"cloudNativePG": {"storage": {"size": "big"}}}}),
        ),
        (
            ".spec.rabbitmq.clusterOperator.replicas",
            json!({"rabbitmq": {"clusterOperator": {"replicas": 0}}}),
        ),
        (
            ".spec.rabbitmq.clusterOperator.storage.size",
            json!({"rabbitmq": {"clusterOperator": {"storage": {"size": "10 GB"}}}}),
        ),
        (
            ".spec.database.external.secretName",
            json!({"database": {"external": {"secretName": ""}}}),
        ),
        (
            ".spec.database.managed.storage",
            json!({"database": {"managed": {"storage": {"ephemeral": true, "storageClassName": "slow"}}}}),
        ),
        (
            ".spec.database.managed.storage.size",
            json!({"database": {"managed": {"storage": {"size": "lots"}}}}),
        ),
        (
            ".spec.database.managed.storage.storageClassName",
            json!({"database": {"managed": {"storage": {"storageClassName": "slow"}}}}),
        ),
        (
            ".spec.image.repository",
            json!({"image": {"repository": ""}}),
        ),
        (".spec.image.tag", json!({"image": {"tag": ""}})),
        (
            ".spec.paymentsApi.auth",
            json!({"paymentsApi": {"auth": {"jwt": {"algorithm": "HS256"}}}}),
        ),
        (
            ".spec.paymentsApi.auth.jwt",
            json!({"paymentsApi": {"auth": {"secretName": "auth", "jwt": {"algorithm": "HS256", "jwksUrl": "https://idp.example.com/jwks"}}}}),
        ),
        (
            ".spec.paymentsApi.auth.jwt",
            json!({"paymentsApi": {"auth": {"secretName": "auth", "jwt": {"algorithm": "RS256", "jwksUrl": "http://idp.example.com/jwks"}}}}),
        ),
        (
            ".spec.paymentsApi.autoscaling",
            json!({"paymentsApi": {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}}),
        ),
        (
            ".spec.paymentsApi.autoscaling.minReplicas",
            json!({"paymentsApi": {"autoscaling": {"minReplicas": 0, "maxReplicas": 3}}}),
        ),
        (
            ".spec.paymentsApi.autoscaling.targetCPUUtilizationPercentage",
            json!({"paymentsApi": {"autoscaling": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 0}}}),
        ),
        (
            ".spec.paymentsApi.dbMaxConnections",
            json!({"paymentsApi": {"dbMaxConnections": 0}}),
        ),
        (
            ".spec.paymentsApi.maxAmount",
            json!({"paymentsApi": {"maxAmount": "0.00"}}),
        ),
        (
            ".spec.paymentsApi.replicas",
            json!({"paymentsApi": {"replicas": -1}}),
        ),
        (
            ".spec.paymentsApi.service.port",
            json!({"paymentsApi": {"service": {"port": 70000}}}),
        ),
        (
            ".spec.rabbitmq",
            json!({"rabbitmq": {"managed": {}, "external": {"secretName": "mq"}}}),
        ),
        (
            ".spec.rabbitmq.external.secretName",
            json!({"rabbitmq": {"external": {"secretName": ""}}}),
        ),
        (
            ".spec.rabbitmq.managed.storage",
            json!({"rabbitmq": {"managed": {"storage": {"ephemeral": true, "storageClassName": "slow"}}}}),
        ),
        (
            ".spec.rabbitmq.managed.storage.size",
            json!({"rabbitmq": {"managed": {"storage": {"size": "1 GB"}}}}),
        ),
        (
            ".spec.rabbitmq.managed.storage.storageClassName",
            json!({"rabbitmq": {"managed": {"storage": {"storageClassName": "slow"}}}}),
        ),
        (
            ".spec.riskEngine.approvalProbability",
            json!({"riskEngine": {"approvalProbability": 1.5}}),
        ),
        (
            ".spec.riskEngine.autoscaling",
            json!({"riskEngine": {"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}}),
        ),
        (
            ".spec.riskEngine.autoscaling.minReplicas",
            json!({"riskEngine": {"autoscaling": {"minReplicas": -1, "maxReplicas": 2}}}),
        ),
        (
            ".spec.riskEngine.autoscaling.targetCPUUtilizationPercentage",
            json!({"riskEngine": {"autoscaling": {"maxReplicas": 2, "targetCPUUtilizationPercentage": 101}}}),
        ),
        (
            ".spec.riskEngine.prefetch",
            json!({"riskEngine": {"prefetch": 0}}),
        ),
        (
            ".spec.riskEngine.replicas",
            json!({"riskEngine": {"replicas": -2}}),
        ),
        (
            ".spec.securityContext",
            json!({"securityContext": {"mode": "OpenShiftRestricted", "runAsUser": 1000}}),
        ),
        (
            ".spec.securityContext",
            json!({"securityContext": {"mode": "OpenShiftRestricted", "runAsGroup": 1000}}),
        ),
        (
            ".spec.securityContext",
            json!({"securityContext": {"mode": "OpenShiftRestricted", "fsGroup": 1000}}),
        ),
        (
            ".spec.securityContext.runAsUser",
            json!({"securityContext": {"runAsUser": 0}}),
        ),
        (
            ".spec.securityContext.runAsGroup",
            json!({"securityContext": {"runAsGroup": -1}}),
        ),
        (
            ".spec.securityContext.fsGroup",
            json!({"securityContext": {"fsGroup": -1}}),
        ),
        (
            ".spec.webhooks.retryWindowSeconds",
            json!({"webhooks": {"retryWindowSeconds": 0}}),
        ),
        (
            ".spec.webhooks.timeoutSeconds",
            json!({"webhooks": {"timeoutSeconds": 121}}),
        ),
        (
            ".spec.webhooks.maxInFlightPerEndpoint",
            json!({"webhooks": {"maxInFlightPerEndpoint": 0}}),
        ),
        (
            ".spec.webhooks.allowedCIDRs",
            json!({"webhooks": {"allowedCIDRs": ["10.0.0.0/8", "10.0.0.0/33"]}}),
        ),
        (
            ".spec.webhooks.egressPorts",
            json!({"webhooks": {"egressPorts": [443, 70000]}}),
        ),
        (
            ".spec.webhooks.secretsKeySecret.secretName",
            json!({"webhooks": {"enabled": true, "secretsKeySecret": {"secretName": ""}}}),
        ),
    ]
}

/// The valid spec a transition rule's (`oldSelf`) case is an update of.
fn starting_spec(path: &str) -> Option<Value> {
    let parent = path.split('.').nth(2)?;
    if !path.ends_with("storageClassName") {
        return None;
    }
    Some(match parent {
        "dataFeed" => {
            json!({"dataFeed": {"destination": {"claim": {"storageClassName": "fast"}}}})
        }
        dependency => json!({dependency: {"managed": {"storage": {"storageClassName": "fast"}}}}),
    })
}

/// Every rule of the schema: `(path, message)`.
fn rules() -> Vec<(String, String)> {
    fn walk(node: &Value, path: &str, out: &mut Vec<(String, String)>) {
        for rule in node["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out.push((
                path.to_owned(),
                rule["message"].as_str().unwrap().to_owned(),
            ));
        }
        for (key, child) in node["properties"].as_object().into_iter().flatten() {
            walk(child, &format!("{path}.{key}"), out);
        }
        walk_if_object(&node["items"], &format!("{path}[]"), out);
        walk_if_object(&node["additionalProperties"], &format!("{path}{{}}"), out);
    }
    fn walk_if_object(node: &Value, path: &str, out: &mut Vec<(String, String)>) {
        if node.is_object() {
            walk(node, path, out);
        }
    }
    let crd = serde_json::to_value(shipped_crd()).unwrap();
    let mut out = Vec::new();
    walk(
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        "",
        &mut out,
    );
    out
}

fn resource(name: &str, spec: &Value) -> Value {
    json!({
        "apiVersion": "paysys.io/v1alpha1",
        "kind": "PaymentSystem",
        "metadata": {"name": name},
        "spec": spec,
    })
}

#[tokio::test]
async fn every_cel_rule_rejects_its_bad_case_with_its_own_message() {
    let Some(env) = env("crd-cel").await else {
        return;
    };
    let api: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    let cases = bad_cases();
    let rules = rules();
    for (path, _) in &rules {
        assert!(
            cases.iter().any(|(case, _)| case == path),
            "rule at {path} has no bad case in this test"
        );
    }
    // A field may carry several rules: each case must trip one of its field's rules, and every
    // rule must be tripped by some case.
    let mut tripped = std::collections::BTreeSet::new();
    for (index, (path, spec)) in cases.iter().enumerate() {
        let messages: Vec<&String> = rules
            .iter()
            .filter(|(rule, _)| rule == path)
            .map(|(_, message)| message)
            .collect();
        assert!(!messages.is_empty(), "no rule at {path} any more");
        let name = format!("bad-{index}");
        let params = PatchParams::apply(TEST_MANAGER);
        if let Some(old) = starting_spec(path) {
            api.patch(&name, &params, &Patch::Apply(resource(&name, &old)))
                .await
                .unwrap_or_else(|e| panic!("{path}: the starting spec is valid: {e}"));
        }
        let error = api
            .patch(&name, &params, &Patch::Apply(resource(&name, spec)))
            .await
            .expect_err(&format!("{path}: {spec} must be rejected"));
        let kube::Error::Api(status) = &error else {
            panic!("{path}: not an API answer: {error}");
        };
        assert_eq!(status.code, 422, "{path}: {status:?}");
        let matched: Vec<&String> = messages
            .into_iter()
            .filter(|message| status.message.contains(message.as_str()))
            .collect();
        assert!(
            !matched.is_empty(),
            "{path}: expected one of its rules' messages in {:?}",
            status.message
        );
        tripped.extend(
            matched
                .into_iter()
                .map(|message| (path.to_string(), message.clone())),
        );
        // The message names the field, so a user can find it.
        let field = path.trim_start_matches('.');
        assert!(
            status.message.contains(field),
            "{path}: the field is not named in {:?}",
            status.message
        );
    }
    for rule in &rules {
        assert!(
            tripped.contains(rule),
            "rule {rule:?} was never tripped by this test's bad cases"
        );
    }
}

#[tokio::test]
async fn the_server_fills_the_same_defaults_the_operator_assumes() {
    let Some(env) = env("crd-defaults").await else {
        return;
    };
    let api: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(resource("shop", &json!({}))).unwrap(),
        )
        .await
        .expect("spec: {} is valid");
    let operator_defaults: PaymentSystemSpec = serde_json::from_value(json!({})).unwrap();
    assert_eq!(created.spec, operator_defaults);
    // No storage default is written: an absent `storage` is how the operator tells a server
    // left on the old emptyDir default from a new one (which gets the default claim).
    assert_eq!(created.spec.database.managed.unwrap().storage, None);
    // Within what the user wrote, the nested defaults are the operator's own too.
    let written = json!({
        "paymentsApi": {"autoscaling": {"maxReplicas": 4}},
        "database": {"managed": {"storage": {"ephemeral": true}}},
    });
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(resource("shop-nested", &written)).unwrap(),
        )
        .await
        .expect("valid");
    let operator_defaults: PaymentSystemSpec = serde_json::from_value(written).unwrap();
    assert_eq!(created.spec, operator_defaults);
    let autoscaling = created.spec.payments_api.autoscaling.unwrap();
    assert_eq!(
        (
            autoscaling.min_replicas,
            autoscaling.target_cpu_utilization_percentage
        ),
        (2, 70)
    );
    let storage = created.spec.database.managed.unwrap().storage.unwrap();
    assert!(storage.ephemeral);
}

/// A fixed user in the mode that leaves users to OpenShift is refused at apply time, with the
/// field to drop named, in the words the operator's own check uses (for resources that
/// predate the rule); each id alone is accepted in mode Fixed, the mode alone too.
#[tokio::test]
async fn a_fixed_id_in_openshift_restricted_mode_is_refused_naming_the_field_to_drop() {
    let Some(env) = env("crd-security").await else {
        return;
    };
    let api: Api<PaymentSystem> = Api::namespaced(env.client.clone(), &env.namespace);
    let params = PatchParams::apply(TEST_MANAGER);
    for (index, field) in ["runAsUser", "runAsGroup", "fsGroup"]
        .into_iter()
        .enumerate()
    {
        let security = json!({"mode": "OpenShiftRestricted", field: 1000650000});
        let name = format!("restricted-{index}");
        let error = api
            .patch(
                &name,
                &params,
                &Patch::Apply(resource(&name, &json!({"securityContext": security}))),
            )
            .await
            .expect_err("a fixed id with mode OpenShiftRestricted is refused");
        let kube::Error::Api(status) = &error else {
            panic!("not an API answer: {error}");
        };
        assert_eq!(status.code, 422, "{status:?}");
        let operator_says =
            security_conflict(&serde_json::from_value::<SecurityContextSpec>(security).unwrap())
                .expect("the operator's check refuses it too");
        assert!(
            operator_says.contains(&format!("drop securityContext.{field}")),
            "{operator_says}"
        );
        assert!(
            status.message.contains(&operator_says),
            "the API server's message {:?} is not the operator's {operator_says:?}",
            status.message
        );
        // Either half alone is fine.
        let fixed = json!({"securityContext": {"mode": "Fixed", field: 1000650000}});
        api.patch(&name, &params, &Patch::Apply(resource(&name, &fixed)))
            .await
            .unwrap_or_else(|e| panic!("{field} in mode Fixed is valid: {e}"));
    }
    let restricted = json!({"securityContext": {"mode": "OpenShiftRestricted"}});
    let created = api
        .patch(
            "restricted",
            &params,
            &Patch::Apply(resource("restricted", &restricted)),
        )
        .await
        .expect("mode OpenShiftRestricted alone is valid");
    assert_eq!(
        serde_json::to_value(&created.spec.security_context).unwrap(),
        json!({"mode": "OpenShiftRestricted"})
    );
}
