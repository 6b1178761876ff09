//! The checks of the spec against itself: what the CRD's CEL rules also enforce (a resource
//! may predate the current CRD), plus what CEL cannot express.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::ResourceExt;

use super::error::{ValidationError, invalid};
use super::schedule::is_schedule;
use crate::crd::{
    CIDRS_MESSAGE, DataFeedSpec, JwtAlgorithm, PaymentSystem, PaymentSystemSpec, RiskMode,
    SCHEDULE_MESSAGE, SecurityContextSpec, SecurityMode, WebhooksSpec,
};
use crate::names::{MAX_FEED_INSTANCE_NAME, MAX_INSTANCE_NAME};

/// The checks that need nothing from the cluster.
pub fn check(ps: &PaymentSystem) -> Result<(), ValidationError> {
    check_spec(&ps.name_any(), &ps.spec)
}

/// The rules the CRD's CEL expressions also enforce, plus those CEL cannot express.
pub(super) fn check_spec(name: &str, spec: &PaymentSystemSpec) -> Result<(), ValidationError> {
    if name.len() > MAX_INSTANCE_NAME {
        return Err(invalid(format!(
            "metadata.name is longer than {MAX_INSTANCE_NAME} characters"
        )));
    }
    for (field, replicas) in [
        ("paymentsApi.replicas", spec.payments_api.replicas),
        ("riskEngine.replicas", spec.risk_engine.replicas),
    ] {
        if replicas < 0 {
            return Err(invalid(format!("{field} must be >= 0")));
        }
    }
    for (field, autoscaling) in [
        ("paymentsApi", &spec.payments_api.autoscaling),
        ("riskEngine", &spec.risk_engine.autoscaling),
    ] {
        let Some(autoscaling) = autoscaling else {
            continue;
        };
        if autoscaling.min_replicas < 1 {
            return Err(invalid(format!(
                "{field}.autoscaling.minReplicas must be >= 1"
            )));
        }
        if autoscaling.min_replicas > autoscaling.max_replicas {
            return Err(invalid(format!(
                "{field}.autoscaling.minReplicas must be <= {field}.autoscaling.maxReplicas"
            )));
        }
        if !(1..=100).contains(&autoscaling.target_cpu_utilization_percentage) {
            return Err(invalid(format!(
                "{field}.autoscaling.targetCPUUtilizationPercentage must be between 1 and 100"
            )));
        }
    }
    for (field, managed) in [
        ("rabbitmq", &spec.rabbitmq.managed),
        ("database", &spec.database.managed),
    ] {
        if let Some(storage) = managed.as_ref().and_then(|m| m.storage.as_ref())
            && storage.ephemeral
            && storage.storage_class_name.is_some()
        {
            return Err(invalid(format!(
                "{field}.managed.storage.ephemeral keeps no volume: remove storageClassName"
            )));
        }
    }
    if spec.risk_engine.mode == RiskMode::Model && spec.risk_engine.model.is_none() {
        return Err(invalid("riskEngine.mode model needs riskEngine.model"));
    }
    let probability = spec.risk_engine.approval_probability;
    if !(0.0..=1.0).contains(&probability) {
        return Err(invalid(
            "riskEngine.approvalProbability must be within [0, 1]",
        ));
    }
    if spec.rabbitmq.choices() != 1 {
        return Err(invalid(
            "rabbitmq: set exactly one of managed, external or clusterOperator",
        ));
    }
    if spec.database.choices() != 1 {
        return Err(invalid(
            "database: set exactly one of managed, external or cloudNativePG",
        ));
    }
    if spec.payments_api.auth.jwt.is_some() && spec.payments_api.auth.secret_name.is_none() {
        return Err(invalid(
            "paymentsApi.auth.jwt needs paymentsApi.auth.secretName",
        ));
    }
    if let Some(jwt) = &spec.payments_api.auth.jwt
        && jwt.jwks_url.is_some()
        && jwt.algorithm == JwtAlgorithm::HS256
    {
        return Err(invalid(
            "paymentsApi.auth.jwt.jwksUrl needs algorithm RS256 or ES256",
        ));
    }
    if let Some(amount) = &spec.payments_api.max_amount
        && !is_positive_decimal(amount)
    {
        return Err(invalid(
            "paymentsApi.maxAmount must be a positive decimal number",
        ));
    }
    // The engine's own validation. The schema refuses the numeric bounds at admission
    // (declineThreshold, velocity.windowSeconds and maxCount >= 1); currencies and their
    // decimal places need ISO 4217's table, which CEL does not have, so only this sees them.
    paysys_core::risk_rules::compile(&spec.risk_engine.rules)
        .map_err(ValidationError::InvalidRiskRules)?;
    if let Some(feed) = &spec.data_feed {
        check_data_feed(name, feed)?;
    }
    if let Some(conflict) = security_conflict(&spec.security_context) {
        return Err(invalid(conflict));
    }
    check_webhooks(&spec.webhooks)?;
    Ok(())
}

/// The webhooks' bounds, as the CEL rules word them (checked whether enabled or not: a
/// resource valid at admission stays valid here).
fn check_webhooks(webhooks: &WebhooksSpec) -> Result<(), ValidationError> {
    if !(1..=2_592_000).contains(&webhooks.retry_window_seconds) {
        return Err(invalid(
            "webhooks.retryWindowSeconds must be between 1 and 2592000 (30 days)",
        ));
    }
    if !(1..=120).contains(&webhooks.timeout_seconds) {
        return Err(invalid("webhooks.timeoutSeconds must be between 1 and 120"));
    }
    if !(1..=256).contains(&webhooks.max_in_flight_per_endpoint) {
        return Err(invalid(
            "webhooks.maxInFlightPerEndpoint must be between 1 and 256",
        ));
    }
    if webhooks.egress_ports.is_empty()
        || webhooks
            .egress_ports
            .iter()
            .any(|port| !(1..=65535).contains(port))
    {
        return Err(invalid(
            "webhooks.egressPorts must list ports between 1 and 65535",
        ));
    }
    if webhooks
        .secrets_key_secret
        .as_ref()
        .is_some_and(|key| key.secret_name.is_empty())
    {
        return Err(invalid(
            "webhooks.secretsKeySecret.secretName must not be empty",
        ));
    }
    parse_cidrs(&webhooks.allowed_cidrs)?;
    Ok(())
}

/// `cidrs` as networks with their host bits cleared (`10.1.2.3/8` is `10.0.0.0/8`), or the
/// CEL rule's message naming the first one that is not a CIDR.
pub(super) fn parse_cidrs(cidrs: &[String]) -> Result<Vec<ipnet::IpNet>, ValidationError> {
    cidrs
        .iter()
        .map(|cidr| {
            cidr.trim()
                .parse::<ipnet::IpNet>()
                .map(|net| net.trunc())
                .map_err(|_| invalid(format!("{CIDRS_MESSAGE} ({cidr:?} is not one)")))
        })
        .collect()
}

/// The first id `security` fixes although its mode leaves ids to the platform, as the CRD's
/// CEL rule words it (which field to drop).
pub fn security_conflict(security: &SecurityContextSpec) -> Option<String> {
    if security.mode != SecurityMode::OpenShiftRestricted {
        return None;
    }
    let (what, field) = [
        ("user", "runAsUser", security.run_as_user),
        ("group", "runAsGroup", security.run_as_group),
        ("fsGroup", "fsGroup", security.fs_group),
    ]
    .into_iter()
    .find_map(|(what, field, id)| id.map(|_| (what, field)))?;
    Some(format!(
        "securityContext: mode OpenShiftRestricted leaves the {what} to OpenShift: drop \
         securityContext.{field} (or set mode Fixed to keep it)"
    ))
}

fn check_data_feed(name: &str, feed: &DataFeedSpec) -> Result<(), ValidationError> {
    if name.len() > MAX_FEED_INSTANCE_NAME {
        return Err(invalid(format!(
            "metadata.name is longer than {MAX_FEED_INSTANCE_NAME} characters, too long for \
             the data feed's CronJob"
        )));
    }
    if !is_schedule(&feed.schedule) {
        return Err(invalid(SCHEDULE_MESSAGE));
    }
    if feed
        .retention_days
        .is_some_and(|days| !(1..=36500).contains(&days))
    {
        return Err(invalid(
            "dataFeed.retentionDays must be between 1 and 36500",
        ));
    }
    let destination = &feed.destination;
    if destination.claim.is_some() == destination.existing_claim.is_some() {
        return Err(invalid(
            "dataFeed.destination: set exactly one of claim or existingClaim",
        ));
    }
    if destination.existing_claim.as_deref() == Some("") {
        return Err(invalid(
            "dataFeed.destination.existingClaim must not be empty",
        ));
    }
    // Each run is a new pod: an emptyDir would lose every export with it.
    if destination
        .claim
        .as_ref()
        .is_some_and(|claim| claim.ephemeral)
    {
        return Err(invalid(
            "dataFeed.destination.claim cannot be ephemeral: the exported files must outlive \
             each run",
        ));
    }
    Ok(())
}

/// `123` or `123.45`, not zero. Checked on the text: an amount never passes through a float.
fn is_positive_decimal(amount: &str) -> bool {
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let well_formed = match amount.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(amount),
    };
    well_formed && amount.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

/// `resources` requests some CPU (what an autoscaler's utilisation is relative to); `0`,
/// `0m` or `0.0` is no request.
pub(super) fn requests_cpu(resources: &ResourceRequirements) -> bool {
    resources
        .requests
        .as_ref()
        .and_then(|requests| requests.get("cpu"))
        .is_some_and(|cpu| !cpu.0.trim_start_matches(['0', '.', 'm']).is_empty())
}
