//! The state of children that decides how a system is resolved or handed over: which managed
//! servers still run on the emptyDir of releases before 0.2.0, and the live Deployments whose
//! replica count goes to an autoscaler.

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client, ResourceExt};

use super::Error;
use crate::crd::PaymentSystem;
use crate::names::{DATA_VOLUME, Names, Server, Workload};

/// The managed servers of `ps` without `storage` whose Deployment mounts its data from an
/// emptyDir (created by a release before 0.2.0). One read per such server.
pub async fn servers_on_empty_dir(
    client: &Client,
    ps: &PaymentSystem,
) -> Result<Vec<Server>, Error> {
    let namespace = ps.namespace().unwrap_or_default();
    let names = Names::new(&ps.name_any());
    let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let mut found = Vec::new();
    // Only managed servers: a broker or database run by another operator (or external) has
    // no Deployment of ours, and its storage is not ours to resolve.
    for (server, managed) in [
        (Server::RabbitMq, &ps.spec.rabbitmq.managed),
        (Server::Postgres, &ps.spec.database.managed),
    ] {
        let Some(managed) = managed else {
            continue;
        };
        if managed.storage.is_some() {
            continue;
        }
        let name = names.workload(server.component());
        let deployment = api
            .get_opt(&name)
            .await
            .map_err(|source| Error::StorageReadFailed {
                name: name.clone(),
                source,
            })?;
        if deployment.as_ref().is_some_and(mounts_empty_dir) {
            found.push(server);
        }
    }
    Ok(found)
}

/// The Deployment's data volume is an emptyDir.
fn mounts_empty_dir(deployment: &Deployment) -> bool {
    let volumes = deployment
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|pod| pod.volumes.as_ref());
    volumes
        .into_iter()
        .flatten()
        .any(|volume| volume.name == DATA_VOLUME && volume.empty_dir.is_some())
}

/// The live Deployments of the paysys services `ps` autoscales (see `apply::replicas`); one
/// read per autoscaled service, absent ones left out.
pub async fn autoscaled_deployments(
    client: &Client,
    ps: &PaymentSystem,
) -> Result<Vec<Deployment>, Error> {
    let namespace = ps.namespace().unwrap_or_default();
    let names = Names::new(&ps.name_any());
    let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let mut found = Vec::new();
    for (workload, autoscaled) in [
        (
            Workload::PaymentsApi,
            ps.spec.payments_api.autoscaling.is_some(),
        ),
        (
            Workload::RiskEngine,
            ps.spec.risk_engine.autoscaling.is_some(),
        ),
    ] {
        if !autoscaled {
            continue;
        }
        let name = names.workload(workload.component());
        let deployment =
            api.get_opt(&name)
                .await
                .map_err(|source| Error::ReplicasHandoverFailed {
                    name: name.clone(),
                    source,
                })?;
        found.extend(deployment);
    }
    Ok(found)
}
