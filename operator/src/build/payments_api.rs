//! The payments API Deployment and Service.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ContainerPort, EnvVar, KeyToPath, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta;
use super::pod::{self, Rollout, SERVICE_UID};
use crate::names::{Component, Workload};
use crate::validate::{
    AUTH_API_KEYS, AUTH_JWT_PUBLIC_KEY, AUTH_JWT_SECRET, Auth, GENERATED_API_KEYS_FILE, JwtKey,
    Validated, Webhooks,
};

/// Port the API listens on inside its pods (`PORT`).
pub const API_PORT: i32 = 5000;
/// Directory the auth Secret is mounted in.
pub const AUTH_DIR: &str = "/etc/paysys/auth";

pub fn deployment(system: &Validated) -> Deployment {
    let component = Component::PaymentsApi;
    let api = &system.payments_api;
    let mut container = pod::container(system, component.name(), &api.image);
    container.ports = Some(vec![ContainerPort {
        name: Some("http".into()),
        container_port: API_PORT,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }]);
    container.env = Some(environment(system));
    container.resources = Some(api.resources.clone());
    container.volume_mounts = Some(vec![pod::mount("auth", AUTH_DIR, true)]);
    pod::service_probes(&mut container);
    let volumes = vec![auth_volume(&system.auth)];
    let mut secrets = vec![
        system.auth.secret_name(),
        system.database.url_source().0,
        system.rabbitmq.url_source().0,
    ];
    secrets.extend(system.webhooks.as_ref().map(|w| w.key_secret.as_str()));
    let hash = meta::config_hash(system, &secrets, &[]);
    pod::deployment(
        system,
        component,
        system.fixed_replicas(Workload::PaymentsApi),
        Rollout::Surge,
        hash,
        pod::pod_spec(system, SERVICE_UID, vec![container], volumes),
    )
}

/// The API's environment contract (see the payments API's configuration).
fn environment(system: &Validated) -> Vec<EnvVar> {
    let spec = &system.payments_api;
    let mut env = vec![pod::env("PORT", API_PORT.to_string())];
    env.extend(pod::connection_env("DATABASE_URL", &system.database));
    env.extend(pod::connection_env("AMQP_URL", &system.rabbitmq));
    env.push(pod::env("LOG_FORMAT", "json"));
    let file = |key: &str| format!("{AUTH_DIR}/{key}");
    match &system.auth {
        Auth::Generated { .. } => {
            env.push(pod::env("API_KEYS_FILE", file(GENERATED_API_KEYS_FILE)));
        }
        Auth::User { api_keys, jwt, .. } => {
            if *api_keys {
                env.push(pod::env("API_KEYS_FILE", file(AUTH_API_KEYS)));
            }
            if let Some((jwt, key)) = jwt {
                env.push(pod::env("JWT_ALGORITHM", jwt.algorithm.as_str()));
                match key {
                    JwtKey::SecretKey(key) => {
                        let variable = if *key == AUTH_JWT_SECRET {
                            "JWT_SECRET_FILE"
                        } else {
                            debug_assert_eq!(*key, AUTH_JWT_PUBLIC_KEY);
                            "JWT_PUBLIC_KEY_FILE"
                        };
                        env.push(pod::env(variable, file(key)));
                    }
                    JwtKey::Jwks(url) => env.push(pod::env("JWT_JWKS_URL", url)),
                }
                if let Some(issuer) = &jwt.issuer {
                    env.push(pod::env("JWT_ISSUER", issuer));
                }
                if let Some(audience) = &jwt.audience {
                    env.push(pod::env("JWT_AUDIENCE", audience));
                }
            }
        }
    }
    if let Some(amount) = &spec.max_amount {
        env.push(pod::env("MAX_AMOUNT", amount));
    }
    if let Some(connections) = spec.db_max_connections {
        env.push(pod::env("DB_MAX_CONNECTIONS", connections.to_string()));
    }
    if let Some(window) = spec.velocity_window_seconds {
        env.push(pod::env("VELOCITY_WINDOW_SECONDS", window.to_string()));
    }
    if let Some(level) = &spec.log_level {
        env.push(pod::env("RUST_LOG", level));
    }
    if let Some(webhooks) = &system.webhooks {
        env.extend(webhooks_environment(webhooks));
    }
    env
}

/// The dispatcher's settings (docs/webhooks.md, "Configuration"); the key only by reference
/// to its Secret, never as a value in the Deployment. `WEBHOOK_ALLOW_HTTP` is never set: plain
/// http is for tests on loopback.
fn webhooks_environment(webhooks: &Webhooks) -> Vec<EnvVar> {
    let mut env = vec![
        pod::env("WEBHOOKS_ENABLED", "true"),
        pod::env_from_secret("WEBHOOK_SECRETS_KEY", &webhooks.key_secret, &webhooks.key),
        pod::env(
            "WEBHOOK_RETRY_WINDOW_SECONDS",
            webhooks.retry_window_seconds.to_string(),
        ),
        pod::env(
            "WEBHOOK_TIMEOUT_MS",
            (i64::from(webhooks.timeout_seconds) * 1000).to_string(),
        ),
        pod::env(
            "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT",
            webhooks.max_in_flight_per_endpoint.to_string(),
        ),
    ];
    if !webhooks.allowed_cidrs.is_empty() {
        let cidrs: Vec<String> = webhooks
            .allowed_cidrs
            .iter()
            .map(|n| n.to_string())
            .collect();
        env.push(pod::env("WEBHOOK_ALLOWED_CIDRS", cidrs.join(",")));
    }
    env
}

/// Only the auth keys in use are projected, so a missing optional key never becomes an
/// empty file the API would try to parse.
fn auth_volume(auth: &Auth) -> Volume {
    let items = auth
        .mounted_keys()
        .into_iter()
        .map(|key| KeyToPath {
            key: key.into(),
            path: key.into(),
            mode: None,
            user: None,
        })
        .collect();
    Volume {
        name: "auth".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(auth.secret_name().into()),
            items: Some(items),
            default_mode: Some(0o440),
            optional: Some(false),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

pub fn service(system: &Validated) -> Service {
    let component = Component::PaymentsApi;
    let api = &system.payments_api;
    Service {
        metadata: meta::object_meta(system, component, system.names.workload(component)),
        spec: Some(ServiceSpec {
            type_: Some(api.service_type.as_str().into()),
            selector: Some(meta::selector_labels(&system.names, component)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: api.service_port,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The URL other workloads in the cluster reach the API at.
pub fn in_cluster_url(system: &Validated) -> String {
    let port = system.payments_api.service_port;
    let host = format!(
        "{}.{}.svc",
        system.names.workload(Component::PaymentsApi),
        system.namespace
    );
    if port == 80 {
        format!("http://{host}")
    } else {
        format!("http://{host}:{port}")
    }
}
