//! The CRD's CEL rules (`x-kubernetes-validations`), evaluated offline the way the API
//! server does at admission (defaults applied first), on valid and invalid resources.

use kube::core::cel::{Validator, compile_schema};
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = paysys_operator::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn resource(spec: Value) -> Value {
    json!({
        "apiVersion": "paysys.io/v1alpha1",
        "kind": "PaymentSystem",
        "metadata": {"name": "shop", "namespace": "payments"},
        "spec": spec,
    })
}

/// The messages of the rules `spec` breaks (empty when valid).
fn violations(spec: Value) -> Vec<String> {
    match Validator::new().validate(&schema(), &resource(spec), None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn update_violations(old: Value, new: Value) -> Vec<String> {
    match Validator::new().validate(&schema(), &resource(new), Some(&resource(old))) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

#[test]
fn every_rule_compiles() {
    let compiled = compile_schema(&schema());
    assert!(
        !compiled.has_errors(),
        "{:?}",
        compiled.compilation_errors()
    );
}

#[test]
fn the_minimal_and_full_examples_are_valid() {
    assert_eq!(violations(json!({})), Vec::<String>::new());
    let full = json!({
        "image": {"repository": "registry.example.com/paysys", "tag": "0.1.0", "pullPolicy": "Always"},
        "paymentsApi": {
            "replicas": 3,
            "service": {"type": "LoadBalancer", "port": 443},
            "auth": {"secretName": "shop-auth", "jwt": {"algorithm": "RS256", "issuer": "idp"}},
            "maxAmount": "50000.00",
            "dbMaxConnections": 10
        },
        "riskEngine": {
            "replicas": 2, "mode": "random", "approvalProbability": 1, "prefetch": 100,
            "rules": {"declineThreshold": 80, "velocity": {"windowSeconds": 600, "maxCount": 10}}
        },
        "rabbitmq": {"external": {"secretName": "broker"}},
        "database": {"managed": {"storage": {"size": "10Gi", "storageClassName": "fast"}}},
        "networkPolicy": {"enabled": false},
        "paused": false
    });
    assert_eq!(violations(full), Vec::<String>::new());
    for probability in [json!(0), json!(0.0), json!(0.5), json!(1.0)] {
        assert_eq!(
            violations(json!({"riskEngine": {"approvalProbability": probability}})),
            Vec::<String>::new(),
            "{probability}"
        );
    }
}

#[test]
fn negative_replicas_are_refused() {
    assert_eq!(
        violations(json!({"paymentsApi": {"replicas": -1}})),
        ["paymentsApi.replicas must be >= 0"]
    );
    assert_eq!(
        violations(json!({"riskEngine": {"replicas": -3}})),
        ["riskEngine.replicas must be >= 0"]
    );
    assert_eq!(
        violations(json!({"riskEngine": {"replicas": 0}})),
        Vec::<String>::new()
    );
}

#[test]
fn probability_outside_zero_one_is_refused() {
    for probability in [json!(-0.1), json!(1.01), json!(2)] {
        assert_eq!(
            violations(json!({"riskEngine": {"approvalProbability": probability}})),
            ["riskEngine.approvalProbability must be within [0, 1]"],
            "{probability}"
        );
    }
}

#[test]
fn exactly_one_way_to_provide_each_dependency() {
    const RABBITMQ: &str = "rabbitmq: set exactly one of managed, external or clusterOperator";
    const DATABASE: &str = "database: set exactly one of managed, external or cloudNativePG";
    let both = json!({"rabbitmq": {"managed": {}, "external": {"secretName": "broker"}}});
    assert_eq!(violations(both), [RABBITMQ]);
    let neither = json!({"database": {}});
    assert_eq!(violations(neither), [DATABASE]);
    let external = json!({"database": {"external": {"secretName": "db"}}});
    assert_eq!(violations(external), Vec::<String>::new());
    for (spec, message) in [
        (
            json!({"database": {"managed": {}, "cloudNativePG": {}}}),
            DATABASE,
        ),
        (
            json!({"database": {"external": {"secretName": "db"}, "cloudNativePG": {}}}),
            DATABASE,
        ),
        (
            json!({"rabbitmq": {"managed": {}, "clusterOperator": {}}}),
            RABBITMQ,
        ),
        (
            json!({"rabbitmq": {"external": {"secretName": "mq"}, "clusterOperator": {}}}),
            RABBITMQ,
        ),
    ] {
        assert_eq!(violations(spec.clone()), [message], "{spec}");
    }
    // Each operator's field exists only on its own dependency (pruned elsewhere, so the
    // dependency is left with nothing chosen).
    let operated = json!({"database": {"cloudNativePG": {}}, "rabbitmq": {"clusterOperator": {}}});
    assert_eq!(violations(operated), Vec::<String>::new());
}

#[test]
fn operated_clusters_refuse_bad_sizes() {
    let cases = [
        (
            json!({"database": {"cloudNativePG": {"instances": 0}}}),
            "database.cloudNativePG.instances must be >= 1",
        ),
        (
            json!({"rabbitmq": {"clusterOperator": {"replicas": 0}}}),
            "rabbitmq.clusterOperator.replicas must be >= 1",
        ),
        (
            json!({"rabbitmq": {"clusterOperator": {"storage": {"size": "lots"}}}}),
            "storage.size must be a quantity such as 10Gi",
        ),
    ];
    for (spec, message) in cases {
        assert_eq!(violations(spec.clone()), [message], "{spec}");
    }
}

#[test]
fn field_rules_refuse_bad_values() {
    let cases = [
        (
            json!({"paymentsApi": {"service": {"port": 0}}}),
            "paymentsApi.service.port must be between 1 and 65535",
        ),
        (
            json!({"paymentsApi": {"service": {"port": 70000}}}),
            "paymentsApi.service.port must be between 1 and 65535",
        ),
        (
            json!({"paymentsApi": {"maxAmount": "-1"}}),
            "paymentsApi.maxAmount must be a positive decimal number such as \"1000000\" or \"999.99\"",
        ),
        (
            json!({"paymentsApi": {"maxAmount": "0.00"}}),
            "paymentsApi.maxAmount must be a positive decimal number such as \"1000000\" or \"999.99\"",
        ),
        (
            json!({"paymentsApi": {"maxAmount": "1e6"}}),
            "paymentsApi.maxAmount must be a positive decimal number such as \"1000000\" or \"999.99\"",
        ),
        (
            json!({"paymentsApi": {"dbMaxConnections": 0}}),
            "paymentsApi.dbMaxConnections must be >= 1",
        ),
        (
            json!({"paymentsApi": {"auth": {"jwt": {"algorithm": "HS256"}}}}),
            "auth.jwt needs auth.secretName holding jwt-secret or jwt-public-key.pem",
        ),
        (
            json!({"paymentsApi": {"auth": {"secretName": "a", "jwt": {"algorithm": "HS256", "jwksUrl": "https://idp.example.com/jwks"}}}}),
            "auth.jwt.jwksUrl needs algorithm RS256 or ES256: an HS256 secret is never published in a JWKS",
        ),
        (
            json!({"paymentsApi": {"auth": {"secretName": "a", "jwt": {"algorithm": "ES256", "jwksUrl": "http://idp.example.com/jwks"}}}}),
            "auth.jwt.jwksUrl must be an https URL (plain http only to a loopback address)",
        ),
        (
            json!({"paymentsApi": {"auth": {"secretName": "a", "jwt": {"algorithm": "ES256", "jwksUrl": "http://127.0.0.1.evil.example/jwks"}}}}),
            "auth.jwt.jwksUrl must be an https URL (plain http only to a loopback address)",
        ),
        (
            json!({"riskEngine": {"prefetch": 0}}),
            "riskEngine.prefetch must be between 1 and 65535",
        ),
        (json!({"image": {"tag": ""}}), "image.tag must not be empty"),
        (
            json!({"database": {"external": {"secretName": ""}}}),
            "external.secretName must not be empty",
        ),
        (
            json!({"database": {"managed": {"storage": {"size": "ten gigs"}}}}),
            "storage.size must be a quantity such as 10Gi",
        ),
        (
            json!({"rabbitmq": {"managed": {"storage": {"ephemeral": true, "storageClassName": "fast"}}}}),
            "storage.ephemeral keeps no volume: remove storage.storageClassName",
        ),
        (
            json!({"paymentsApi": {"autoscaling": {"minReplicas": 4, "maxReplicas": 3}}}),
            "autoscaling.minReplicas must be <= autoscaling.maxReplicas",
        ),
        (
            json!({"riskEngine": {"autoscaling": {"minReplicas": 0, "maxReplicas": 3}}}),
            "autoscaling.minReplicas must be >= 1",
        ),
        (
            json!({"paymentsApi": {"autoscaling": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 120}}}),
            "autoscaling.targetCPUUtilizationPercentage must be between 1 and 100",
        ),
    ];
    for (spec, message) in cases {
        assert_eq!(violations(spec.clone()), [message], "{spec}");
    }
}

#[test]
fn ephemeral_storage_and_autoscaling_with_defaults_are_valid() {
    for spec in [
        json!({"rabbitmq": {"managed": {"storage": {"ephemeral": true}}}}),
        json!({"database": {"managed": {"storage": {"ephemeral": false, "storageClassName": "fast"}}}}),
        json!({"paymentsApi": {"autoscaling": {"maxReplicas": 2}}}),
        json!({"riskEngine": {"autoscaling": {"minReplicas": 1, "maxReplicas": 1, "targetCPUUtilizationPercentage": 100}}}),
    ] {
        assert_eq!(violations(spec.clone()), Vec::<String>::new(), "{spec}");
    }
}

#[test]
fn storage_class_cannot_change_after_creation() {
    let with_class = |class: &str| json!({"database": {"managed": {"storage": {"size": "10Gi", "storageClassName": class}}}});
    assert_eq!(
        update_violations(with_class("fast"), with_class("slow")),
        ["storage.storageClassName is immutable"]
    );
    assert_eq!(
        update_violations(with_class("fast"), with_class("fast")),
        Vec::<String>::new()
    );
    // Growing the volume is allowed.
    let grown =
        json!({"database": {"managed": {"storage": {"size": "20Gi", "storageClassName": "fast"}}}});
    assert_eq!(
        update_violations(with_class("fast"), grown),
        Vec::<String>::new()
    );
}

/// The files under `examples/` pass the CRD's rules and the operator's own checks.
#[test]
fn committed_examples_are_valid() {
    for file in [
        "paymentsystem-minimal.yaml",
        "paymentsystem-full.yaml",
        "paymentsystem-dev.yaml",
        "paymentsystem-model.yaml",
    ] {
        let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut object: Value = serde_norway::from_str(&text).unwrap();
        object["metadata"]["namespace"] = json!("payments");
        if let Err(errors) = Validator::new().validate(&schema(), &object, None) {
            panic!("{file}: {errors:?}");
        }
        let ps: paysys_operator::crd::PaymentSystem = serde_json::from_value(object).unwrap();
        paysys_operator::validate::check(&ps).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn data_feed_rules_refuse_bad_values_with_their_own_messages() {
    assert_eq!(violations(json!({"dataFeed": {}})), Vec::<String>::new());
    let every_field = json!({"dataFeed": {
        "schedule": "15 2 * * MON-FRI",
        "destination": {"existingClaim": "lake"},
        "keySecret": {"secretName": "feed", "key": "k"},
        "retentionDays": 400,
        "suspend": true,
        "image": "registry.example.com/paysys-feed:1",
    }});
    assert_eq!(violations(every_field), Vec::<String>::new());
    let schedule = paysys_operator::crd::SCHEDULE_MESSAGE;
    let cases = [
        (json!({"dataFeed": {"schedule": "every hour"}}), schedule),
        (json!({"dataFeed": {"schedule": "* * * *"}}), schedule),
        (json!({"dataFeed": {"schedule": "* * * * * *"}}), schedule),
        (json!({"dataFeed": {"schedule": "@every 5m"}}), schedule),
        (
            json!({"dataFeed": {"schedule": "TZ=UTC 0 0 * * *"}}),
            schedule,
        ),
        (
            json!({"dataFeed": {"schedule": "0 0 * * * ; rm"}}),
            schedule,
        ),
        (
            json!({"dataFeed": {"destination": {"existingClaim": "lake", "claim": {}}}}),
            "dataFeed.destination: set exactly one of claim or existingClaim",
        ),
        (
            json!({"dataFeed": {"destination": {}}}),
            "dataFeed.destination: set exactly one of claim or existingClaim",
        ),
        (
            json!({"dataFeed": {"destination": {"existingClaim": ""}}}),
            "dataFeed.destination.existingClaim must not be empty",
        ),
        (
            json!({"dataFeed": {"destination": {"claim": {"ephemeral": true}}}}),
            "dataFeed.destination.claim cannot be ephemeral: the exported files must outlive each run",
        ),
        (
            json!({"dataFeed": {"retentionDays": 0}}),
            "dataFeed.retentionDays must be between 1 and 36500",
        ),
        (
            json!({"dataFeed": {"keySecret": {"secretName": ""}}}),
            "keySecret.secretName must not be empty",
        ),
    ];
    for (spec, message) in cases {
        assert_eq!(violations(spec.clone()), [message], "{spec}");
    }
    // The shape passes CEL; the ranges are the operator's (`validate::is_schedule`).
    for shape_only in ["61 * * * *", "0 0 31 2 SUN"] {
        assert_eq!(
            violations(json!({"dataFeed": {"schedule": shape_only}})),
            Vec::<String>::new(),
            "{shape_only}"
        );
    }
}

#[test]
fn jwks_urls_over_https_or_to_loopback_are_accepted() {
    for url in [
        "https://idp.example.com/.well-known/openid-configuration",
        "http://127.0.0.1:8080/jwks",
        "http://localhost/jwks",
        "http://[::1]:5556/keys",
    ] {
        assert_eq!(
            violations(
                json!({"paymentsApi": {"auth": {"secretName": "a", "jwt": {"algorithm": "RS256", "jwksUrl": url}}}})
            ),
            Vec::<String>::new(),
            "{url}"
        );
    }
}

#[test]
fn a_fixed_id_with_openshift_restricted_names_the_field_to_drop() {
    for field in ["runAsUser", "runAsGroup", "fsGroup"] {
        let found =
            violations(json!({"securityContext": {"mode": "OpenShiftRestricted", field: 1000}}));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains(&format!("drop securityContext.{field}")),
            "{found:?}"
        );
        assert_eq!(
            violations(json!({"securityContext": {field: 1000}})),
            Vec::<String>::new()
        );
    }
    assert_eq!(
        violations(json!({"securityContext": {"mode": "OpenShiftRestricted"}})),
        Vec::<String>::new()
    );
    let root = violations(json!({"securityContext": {"runAsUser": 0}}));
    assert!(
        root.iter().any(|m| m.contains("never run as root")),
        "{root:?}"
    );
}

#[test]
fn the_risk_model_needs_exactly_one_source_and_mode_model_needs_a_model() {
    let config_map = json!({"configMap": {"name": "risk-model"}});
    let claim = json!({"persistentVolumeClaim": {"claimName": "models", "subPath": "m1", "version": "m-1"}});
    for spec in [
        json!({"riskEngine": {"mode": "model", "model": config_map}}),
        json!({"riskEngine": {"mode": "model", "model": claim}}),
        json!({"riskEngine": {"mode": "model", "model": {
            "configMap": {"name": "champion"},
            "shadow": {"persistentVolumeClaim": {"claimName": "models", "version": "m-2"}}
        }}}),
        // A challenger beside the rules: scored in shadow, never deciding.
        json!({"riskEngine": {"mode": "rules", "model": config_map}}),
        json!({"riskEngine": {"mode": "model", "model": {
            "secret": {"name": "champion"},
            "shadow": {"secret": {"name": "challenger"}}
        }}}),
    ] {
        assert_eq!(violations(spec.clone()), Vec::<String>::new(), "{spec}");
    }
    assert_eq!(
        violations(json!({"riskEngine": {"mode": "model"}})),
        ["riskEngine.mode model needs riskEngine.model"]
    );
    assert_eq!(
        violations(json!({"riskEngine": {"mode": "model", "model": {
            "configMap": {"name": "a"},
            "persistentVolumeClaim": {"claimName": "models", "version": "m-1"}
        }}})),
        ["riskEngine.model: set exactly one of configMap, secret or persistentVolumeClaim"]
    );
    for two in [
        json!({"configMap": {"name": "a"}, "secret": {"name": "a"}}),
        json!({"secret": {"name": "a"}, "persistentVolumeClaim": {"claimName": "models", "version": "m-1"}}),
    ] {
        assert_eq!(
            violations(json!({"riskEngine": {"mode": "model", "model": two}})),
            ["riskEngine.model: set exactly one of configMap, secret or persistentVolumeClaim"]
        );
    }
    assert_eq!(
        violations(json!({"riskEngine": {"mode": "model", "model": {
            "secret": {"name": "a"},
            "shadow": {"secret": {"name": "b"}, "configMap": {"name": "b"}}
        }}})),
        ["riskEngine.model.shadow: set exactly one of configMap, secret or persistentVolumeClaim"]
    );
    assert_eq!(
        violations(json!({"riskEngine": {"mode": "model", "model": {"secret": {"name": ""}}}})),
        ["model secret.name must not be empty"]
    );
    assert_eq!(
        violations(json!({"riskEngine": {"mode": "model", "model": {}}})),
        ["riskEngine.model: set exactly one of configMap, secret or persistentVolumeClaim"]
    );
    assert_eq!(
        violations(json!({"riskEngine": {"mode": "model", "model": {
            "configMap": {"name": "a"}, "shadow": {}
        }}})),
        ["riskEngine.model.shadow: set exactly one of configMap, secret or persistentVolumeClaim"]
    );
    assert_eq!(
        violations(json!({"riskEngine": {"mode": "model", "model": {
            "persistentVolumeClaim": {"claimName": "models", "version": ""}
        }}})),
        ["model persistentVolumeClaim.version must not be empty"]
    );
}

#[test]
fn webhook_rules_refuse_bad_values_with_their_own_messages() {
    assert_eq!(violations(json!({"webhooks": {}})), Vec::<String>::new());
    let every_field = json!({"webhooks": {
        "enabled": true,
        "retryWindowSeconds": 2592000,
        "timeoutSeconds": 120,
        "maxInFlightPerEndpoint": 256,
        "allowedCIDRs": ["10.20.0.0/16", "192.168.7.1/32", "fd00:1::/64", "::ffff:10.0.0.0/104", "0.0.0.0/0"],
        "egressPorts": [443, 8443, 65535],
        "secretsKeySecret": {"secretName": "vault-webhooks", "key": "aes"},
    }});
    assert_eq!(violations(every_field), Vec::<String>::new());
    let cidrs = paysys_operator::crd::CIDRS_MESSAGE;
    let cases = [
        (
            json!({"webhooks": {"retryWindowSeconds": 0}}),
            "webhooks.retryWindowSeconds must be between 1 and 2592000 (30 days)",
        ),
        (
            json!({"webhooks": {"retryWindowSeconds": 2592001}}),
            "webhooks.retryWindowSeconds must be between 1 and 2592000 (30 days)",
        ),
        (
            json!({"webhooks": {"timeoutSeconds": 0}}),
            "webhooks.timeoutSeconds must be between 1 and 120",
        ),
        (
            json!({"webhooks": {"maxInFlightPerEndpoint": 257}}),
            "webhooks.maxInFlightPerEndpoint must be between 1 and 256",
        ),
        (
            json!({"webhooks": {"egressPorts": [443, 0]}}),
            "webhooks.egressPorts must be between 1 and 65535",
        ),
        (
            json!({"webhooks": {"egressPorts": [65536]}}),
            "webhooks.egressPorts must be between 1 and 65535",
        ),
        (
            json!({"webhooks": {"allowedCIDRs": ["10.0.0.0/33"]}}),
            cidrs,
        ),
        (
            json!({"webhooks": {"allowedCIDRs": ["256.0.0.0/8"]}}),
            cidrs,
        ),
        (json!({"webhooks": {"allowedCIDRs": ["10.0.0.1"]}}), cidrs),
        (json!({"webhooks": {"allowedCIDRs": ["fd00::/129"]}}), cidrs),
        (
            json!({"webhooks": {"allowedCIDRs": ["example.com/8"]}}),
            cidrs,
        ),
        (
            json!({"webhooks": {"allowedCIDRs": ["10.0.0.0/8", "10.0.0.0/8; rm"]}}),
            cidrs,
        ),
        (
            json!({"webhooks": {"secretsKeySecret": {"secretName": ""}}}),
            "webhooks.secretsKeySecret.secretName must not be empty",
        ),
    ];
    for (spec, message) in cases {
        assert_eq!(violations(spec.clone()), [message], "{spec}");
    }
}
