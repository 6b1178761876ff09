//! Who writes a paysys service's `spec.replicas`: the operator (from `replicas`), or the
//! HorizontalPodAutoscaler (with `autoscaling`), never both.
//!
//! Server-side apply tracks who owns each field. With an autoscaler the operator leaves
//! `replicas` out of its apply, so the autoscaler's writes (through the `scale` subresource)
//! are never reverted and never conflict. One trap: when the operator stops applying a field
//! it owned alone, the API server removes it, and the Deployment falls back to one replica
//! until the autoscaler notices. So before the first apply without `replicas`, the live count
//! is applied by a second field manager ([`HANDOVER_MANAGER`]), which keeps the field (and its
//! value) until the autoscaler takes it over. That manager never writes again; if
//! `autoscaling` is removed later, the operator's forced apply takes the field back.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::Error;
use crate::names::FIELD_MANAGER;

/// The field manager that holds `spec.replicas` between the operator and the autoscaler.
pub const HANDOVER_MANAGER: &str = "paysys-operator-replicas-handover";

/// For each of the live `autoscaled` Deployments whose `spec.replicas` the operator still
/// owns, applies the live count under [`HANDOVER_MANAGER`]. Run before the children are
/// applied.
pub async fn hand_over(client: &Client, autoscaled: &[Deployment]) -> Result<(), Error> {
    for deployment in autoscaled {
        if !operator_owns_replicas(deployment) {
            continue;
        }
        let Some(replicas) = deployment.spec.replicas else {
            continue;
        };
        let name = deployment.name_any();
        let api: Api<Deployment> =
            Api::namespaced(client.clone(), &deployment.namespace().unwrap_or_default());
        let body = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"replicas": replicas},
        });
        api.patch(
            &name,
            &PatchParams::apply(HANDOVER_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map_err(|source| Error::ReplicasHandoverFailed {
            name: name.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The operator's apply owns the Deployment's `spec.replicas`.
pub fn operator_owns_replicas(deployment: &Deployment) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry.manager.as_deref() == Some(FIELD_MANAGER)
                && entry.operation.as_deref() == Some("Apply")
        })
        .any(|entry| {
            entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0["f:spec"].get("f:replicas").is_some())
        })
}
