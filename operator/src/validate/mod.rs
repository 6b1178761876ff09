//! Second step of the pipeline: from the observed world (the resource and the Secrets read for
//! it) to a [`Validated`] system every builder can trust, or the reason it cannot be one.
//! Pure: no client, no clock.
//!
//! The CRD's CEL rules already refuse most bad specs at admission; they are checked again here
//! because a resource may predate the current CRD, and because some facts (does the referenced
//! Secret hold the key?) can only be known from what was read. The parts: the resolved model
//! ([`model`]), the spec's checks ([`checks`]), resolution against the Secrets read
//! ([`secrets`]), the risk models against the ConfigMaps and pods read ([`risk_model`]) and
//! the data feed's schedule ([`schedule`]).

pub mod checks;
pub mod error;
pub mod model;
pub mod risk_model;
pub mod schedule;
pub mod secrets;

use kube::Resource;
use kube::ResourceExt;

pub use self::checks::check;
pub use self::error::ValidationError;
use self::error::invalid;
pub use self::model::{
    AUTH_API_KEYS, AUTH_JWT_PUBLIC_KEY, AUTH_JWT_SECRET, Auth, CREDENTIALS_URL, Connection,
    DataFeed, Ephemeral, FEED_IMAGE, GENERATED_API_KEY, GENERATED_API_KEYS_FILE,
    GENERATED_FEED_KEY, HeldBack, HeldEngine, JwtKey, ManagedServer, ModelCopy, ModelLocation,
    Models, Operated, POSTGRES_IMAGE, PaymentsApi, PodIds, RABBITMQ_IMAGE, RiskEngine, ServedModel,
    Storage, Validated, Webhooks, resources,
};
pub use self::schedule::is_schedule;
use crate::crd::{
    DataFeedSpec, ExternalSpec, ManagedSpec, PaymentSystem, PaymentSystemSpec, WebhooksSpec,
};
use crate::names::{Names, Server, Workload};
use crate::observe::models::LiveEngine;
use crate::observe::{ModelFiles, Observed, RefusedPod, SecretData};

/// Children kept as long as the `PaymentSystem` exists once made, even when the spec no longer
/// asks for them: the API key (switching auth back and forth never changes the key clients
/// hold), the data feed's Fernet key (the files written with it stay readable), the data
/// feed's claim (switching the feed off never deletes the exported files) and the webhook
/// secrets key (the signing secrets stored under it stay readable when webhooks are switched
/// off and on again).
pub fn kept_for_life(names: &Names) -> Vec<String> {
    vec![
        names.api_key(),
        names.feed_key(),
        names.feed_claim(),
        names.webhooks_key(),
    ]
}

/// [`validate_observed`] of everything observe read.
pub fn observed(observed: &Observed<'_>) -> Result<Validated, ValidationError> {
    validate_all(
        observed.resource,
        &observed.secrets,
        &observed.on_empty_dir,
        (
            &observed.model_files,
            &observed.refused_pods,
            &observed.live_engine,
        ),
    )
}

/// Checks `ps` against itself and the Secrets read from the cluster, for a system none of
/// whose managed servers runs on the emptyDir of releases before 0.2.0.
pub fn validate(ps: &PaymentSystem, secrets: &SecretData) -> Result<Validated, ValidationError> {
    validate_observed(ps, secrets, &[])
}

/// [`validate`], where the managed servers `on_empty_dir` (see
/// `observe::children::servers_on_empty_dir`) keep their emptyDir when the spec sets no storage.
pub fn validate_observed(
    ps: &PaymentSystem,
    secrets: &SecretData,
    on_empty_dir: &[Server],
) -> Result<Validated, ValidationError> {
    validate_all(
        ps,
        secrets,
        on_empty_dir,
        (&ModelFiles::new(), &[], &LiveEngine::default()),
    )
}

/// [`validate`], with the files of the model ConfigMaps and Secrets read, the risk engine
/// pods that refused their model and the live risk engine template (see `observe::models`).
pub fn validate_with_models(
    ps: &PaymentSystem,
    secrets: &SecretData,
    model_files: &ModelFiles,
    refused_pods: &[RefusedPod],
    live_engine: &LiveEngine,
) -> Result<Validated, ValidationError> {
    validate_all(ps, secrets, &[], (model_files, refused_pods, live_engine))
}

fn validate_all(
    ps: &PaymentSystem,
    secrets: &SecretData,
    on_empty_dir: &[Server],
    (model_files, refused_pods, live_engine): (&ModelFiles, &[RefusedPod], &LiveEngine),
) -> Result<Validated, ValidationError> {
    let name = ps.name_any();
    checks::check_spec(&name, &ps.spec)?;
    let namespace = ps
        .namespace()
        .ok_or_else(|| invalid("the resource has no namespace"))?;
    let owner = ps
        .controller_owner_ref(&())
        .ok_or_else(|| invalid("the resource has no uid yet"))?;
    let names = Names::new(&name);
    let spec = &ps.spec;
    let rules_yaml = serde_norway::to_string(&spec.risk_engine.rules)
        .map_err(|e| invalid(format!("riskEngine.rules cannot be rendered: {e}")))?;
    let rabbitmq = match &spec.rabbitmq.cluster_operator {
        Some(operated) => Connection::Operated(Operated::rabbitmq(&names, operated)),
        None => connection(
            &names,
            Server::RabbitMq,
            (&spec.rabbitmq.managed, &spec.rabbitmq.external),
            secrets,
            on_empty_dir,
        )?,
    };
    let database = match &spec.database.cloud_native_pg {
        Some(operated) => Connection::Operated(Operated::cloud_native_pg(&names, operated)),
        None => connection(
            &names,
            Server::Postgres,
            (&spec.database.managed, &spec.database.external),
            secrets,
            on_empty_dir,
        )?,
    };
    let auth = secrets::auth(&names, spec, secrets)?;
    let models = spec
        .risk_engine
        .model
        .as_ref()
        .map(|model| risk_model::resolve(&names, model, model_files, refused_pods, live_engine))
        .transpose()?
        .unwrap_or_default();
    let data_feed = spec
        .data_feed
        .as_ref()
        .map(|feed| data_feed(&names, spec, feed, secrets))
        .transpose()?;
    let webhooks = spec
        .webhooks
        .enabled
        .then(|| webhooks(&names, &spec.webhooks, secrets))
        .transpose()?;
    let used: SecretData = secrets
        .iter()
        .filter(|(name, _)| {
            [
                auth.secret_name(),
                rabbitmq.url_source().0,
                database.url_source().0,
            ]
            .contains(&name.as_str())
                || webhooks
                    .as_ref()
                    .is_some_and(|webhooks| webhooks.key_secret == **name)
        })
        .map(|(name, data)| (name.clone(), data.clone()))
        .collect();
    let api = &spec.payments_api;
    let risk = &spec.risk_engine;
    let api_resources = api
        .resources
        .clone()
        .unwrap_or_else(|| resources("100m", "128Mi", "512Mi"));
    let risk_resources = risk
        .resources
        .clone()
        .unwrap_or_else(|| resources("100m", "64Mi", "256Mi"));
    for (field, autoscaling, resources) in [
        ("paymentsApi", &api.autoscaling, &api_resources),
        ("riskEngine", &risk.autoscaling, &risk_resources),
    ] {
        if autoscaling.is_some() && !checks::requests_cpu(resources) {
            return Err(invalid(format!(
                "{field}.autoscaling targets CPU use relative to the CPU request, but \
                 {field}.resources requests no cpu"
            )));
        }
    }
    Ok(Validated {
        payments_api: PaymentsApi {
            image: api
                .image
                .clone()
                .unwrap_or_else(|| service_image(spec, Workload::PaymentsApi)),
            resources: api_resources,
            replicas: api.replicas,
            autoscaling: api.autoscaling.clone(),
            service_type: api.service.type_,
            service_port: api.service.port,
            max_amount: api.max_amount.clone(),
            db_max_connections: api.db_max_connections,
            velocity_window_seconds: risk
                .rules
                .velocity
                .as_ref()
                .map(|velocity| velocity.window_seconds),
            log_level: api.log_level.clone(),
        },
        risk_engine: RiskEngine {
            image: risk
                .image
                .clone()
                .unwrap_or_else(|| service_image(spec, Workload::RiskEngine)),
            resources: risk_resources,
            replicas: risk.replicas,
            autoscaling: risk.autoscaling.clone(),
            mode: risk.mode,
            approval_probability: risk.approval_probability,
            prefetch: risk.prefetch,
            log_level: risk.log_level.clone(),
            rules_yaml,
            model: models.model,
            held_back: models.held_back,
        },
        version: spec.image.tag.clone(),
        pull_policy: spec.image.pull_policy,
        pull_secrets: spec.image.pull_secrets.clone(),
        pod_ids: PodIds::of(&spec.security_context),
        network_policies: spec.network_policy.enabled,
        service_monitor: spec.monitoring.service_monitor.clone(),
        webhooks,
        names,
        namespace,
        owner,
        auth,
        rabbitmq,
        database,
        data_feed,
        secrets: used,
    })
}

fn data_feed(
    names: &Names,
    spec: &PaymentSystemSpec,
    feed: &DataFeedSpec,
    secrets: &SecretData,
) -> Result<DataFeed, ValidationError> {
    let (key_secret, key) = secrets::feed_key(names, feed, secrets)?;
    let (claim_name, created_claim) =
        match (&feed.destination.claim, &feed.destination.existing_claim) {
            (_, Some(existing)) => (existing.clone(), None),
            (Some(storage), None) => (names.feed_claim(), Some(storage.clone())),
            (None, None) => {
                return Err(invalid(
                    "dataFeed.destination: set exactly one of claim or existingClaim",
                ));
            }
        };
    Ok(DataFeed {
        schedule: feed.schedule.clone(),
        image: feed.image.clone().unwrap_or_else(|| {
            let repository = spec.image.repository.trim_end_matches('/');
            format!("{repository}/{FEED_IMAGE}:{}", spec.image.tag)
        }),
        resources: feed
            .resources
            .clone()
            .unwrap_or_else(|| resources("100m", "128Mi", "512Mi")),
        claim_name,
        created_claim,
        key_secret,
        key,
        retention_days: feed.retention_days,
        suspend: feed.suspend,
    })
}

fn webhooks(
    names: &Names,
    spec: &WebhooksSpec,
    secrets: &SecretData,
) -> Result<Webhooks, ValidationError> {
    let (key_secret, key) = secrets::webhooks_key(names, spec, secrets)?;
    Ok(Webhooks {
        retry_window_seconds: spec.retry_window_seconds,
        timeout_seconds: spec.timeout_seconds,
        max_in_flight_per_endpoint: spec.max_in_flight_per_endpoint,
        allowed_cidrs: checks::parse_cidrs(&spec.allowed_cidrs)?,
        egress_ports: spec.egress_ports.clone(),
        key_secret,
        key,
    })
}

fn service_image(spec: &PaymentSystemSpec, workload: Workload) -> String {
    let repository = spec.image.repository.trim_end_matches('/');
    format!(
        "{repository}/{}:{}",
        workload.component().name(),
        spec.image.tag
    )
}

fn connection(
    names: &Names,
    server: Server,
    dependency: (&Option<ManagedSpec>, &Option<ExternalSpec>),
    secrets: &SecretData,
    on_empty_dir: &[Server],
) -> Result<Connection, ValidationError> {
    match dependency {
        (Some(managed), None) => Ok(Connection::Managed(managed_server(
            names,
            server,
            managed,
            on_empty_dir.contains(&server),
        ))),
        (None, Some(external)) => {
            secrets::require_key(secrets, &external.secret_name, &external.key)?;
            Ok(Connection::External {
                secret_name: external.secret_name.clone(),
                key: external.key.clone(),
            })
        }
        // Unreachable after `check_spec`, which names the dependency's three ways.
        _ => Err(invalid(format!(
            "{}: set exactly one way to provide it",
            server.component().name()
        ))),
    }
}

fn managed_server(
    names: &Names,
    server: Server,
    managed: &ManagedSpec,
    on_empty_dir: bool,
) -> ManagedServer {
    let default_image = match server {
        Server::RabbitMq => RABBITMQ_IMAGE,
        Server::Postgres => POSTGRES_IMAGE,
    };
    ManagedServer {
        server,
        image: managed
            .image
            .clone()
            .unwrap_or_else(|| default_image.into()),
        resources: managed
            .resources
            .clone()
            .unwrap_or_else(|| resources("100m", "256Mi", "1Gi")),
        storage: model::resolve(managed.storage.as_ref(), on_empty_dir),
        credentials_secret: names.credentials(server),
    }
}
