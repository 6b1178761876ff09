//! Where a managed server keeps its data, resolved: a PersistentVolumeClaim by default, an
//! emptyDir only when asked for, and the `Durable` condition that says which.
//!
//! Releases before 0.2.0 defaulted to an emptyDir. A server created then runs on one; turning
//! it into a claim would replace its pod and lose every payment or queued message at the
//! upgrade. So a server whose spec leaves `storage` out and whose Deployment already mounts an
//! emptyDir keeps it ([`Ephemeral::Legacy`]), flagged in the status and by an Event until the
//! user chooses (docs/production.md, "Upgrading from the emptyDir default"). Any other server
//! without `storage` gets the default claim.

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client, ResourceExt};

use crate::crd::{PaymentSystem, StorageSpec};
use crate::error::Error;
use crate::names::{Names, Server};

/// Name of the data volume in a managed server's pod.
pub const DATA_VOLUME: &str = "data";

/// Size of the default claim (`storage` absent).
pub const DEFAULT_SIZE: &str = "1Gi";

/// A managed server's data, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A PersistentVolumeClaim of `size` (`class`: the cluster default when `None`).
    Claim { size: String, class: Option<String> },
    /// An emptyDir: the data is lost with the pod.
    Ephemeral(Ephemeral),
}

/// Why a server keeps its data in an emptyDir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
pub enum Ephemeral {
    /// `storage: {ephemeral: true}`.
    #[strum(serialize = "EphemeralStorage")]
    OptedIn,
    /// No `storage`, and the server already ran on the emptyDir of releases before 0.2.0.
    #[strum(serialize = "LegacyEphemeralStorage")]
    Legacy,
}

impl Ephemeral {
    /// The reason of the `Durable` condition and of the Warning Event.
    pub fn reason(self) -> &'static str {
        self.into()
    }
}

/// `spec`, resolved; `on_empty_dir`: the server's Deployment mounts an emptyDir today.
pub fn resolve(spec: Option<&StorageSpec>, on_empty_dir: bool) -> Storage {
    match spec {
        Some(spec) if spec.ephemeral => Storage::Ephemeral(Ephemeral::OptedIn),
        Some(spec) => Storage::Claim {
            size: spec.size.clone(),
            class: spec.storage_class_name.clone(),
        },
        None if on_empty_dir => Storage::Ephemeral(Ephemeral::Legacy),
        None => Storage::Claim {
            size: DEFAULT_SIZE.into(),
            class: None,
        },
    }
}

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

/// What the status says of the managed servers' data: every claim-backed server is durable;
/// the first ephemeral one names the reason, and all of them are listed.
pub fn warning(ephemeral: &[(String, Ephemeral)]) -> Option<(Ephemeral, String)> {
    let (_, first) = ephemeral.first()?;
    let servers: Vec<&str> = ephemeral.iter().map(|(name, _)| name.as_str()).collect();
    let why = match first {
        Ephemeral::OptedIn => "storage.ephemeral is true",
        Ephemeral::Legacy => {
            "no storage is set and the server was created on the emptyDir default of releases \
             before 0.2.0; set storage (after a backup) or storage.ephemeral, see \
             docs/production.md"
        }
    };
    Some((
        *first,
        format!(
            "{} keep their data in an emptyDir: every payment or queued message is lost when \
             the pod is replaced ({why})",
            servers.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ephemeral: bool) -> StorageSpec {
        StorageSpec {
            size: "5Gi".into(),
            storage_class_name: Some("fast".into()),
            ephemeral,
        }
    }

    #[test]
    fn an_explicit_choice_wins_over_what_runs_today() {
        let claim = Storage::Claim {
            size: "5Gi".into(),
            class: Some("fast".into()),
        };
        for on_empty_dir in [false, true] {
            assert_eq!(resolve(Some(&spec(false)), on_empty_dir), claim);
            assert_eq!(
                resolve(Some(&spec(true)), on_empty_dir),
                Storage::Ephemeral(Ephemeral::OptedIn)
            );
        }
        assert_eq!(
            resolve(None, false),
            Storage::Claim {
                size: DEFAULT_SIZE.into(),
                class: None
            }
        );
        assert_eq!(resolve(None, true), Storage::Ephemeral(Ephemeral::Legacy));
    }

    #[test]
    fn the_warning_names_every_ephemeral_server_and_the_first_reason() {
        assert_eq!(warning(&[]), None);
        let (why, message) = warning(&[
            ("shop-rabbitmq".into(), Ephemeral::Legacy),
            ("shop-postgresql".into(), Ephemeral::OptedIn),
        ])
        .unwrap();
        assert_eq!(why.reason(), "LegacyEphemeralStorage");
        assert!(
            message.starts_with("shop-rabbitmq, shop-postgresql keep their data in an emptyDir")
        );
        assert!(message.contains("docs/production.md"), "{message}");
        let (why, message) = warning(&[("shop-rabbitmq".into(), Ephemeral::OptedIn)]).unwrap();
        assert_eq!(why.reason(), "EphemeralStorage");
        assert!(message.contains("storage.ephemeral is true"), "{message}");
    }
}
