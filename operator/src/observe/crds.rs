//! Whether the cluster serves the CRDs of the foreign kinds a system builds (see
//! [`crate::foreign`]), asked before anything is applied.

use kube::Client;

use super::Error;
use crate::foreign::ForeignCrd;

/// Checks that every CRD in `needed` is served; names every one that is not.
pub async fn require_served(client: &Client, needed: &[ForeignCrd]) -> Result<(), Error> {
    let mut missing = Vec::new();
    for crd in needed {
        let group_version = format!("{}/{}", crd.group, crd.version);
        let served = match client.list_api_group_resources(&group_version).await {
            Ok(list) => list
                .resources
                .iter()
                .any(|resource| resource.name == crd.plural),
            Err(kube::Error::Api(status)) if status.code == 404 => false,
            Err(source) => {
                return Err(Error::CrdCheckFailed {
                    crd: crd.name.clone(),
                    source,
                });
            }
        };
        if !served {
            missing.push(format!(
                "CustomResourceDefinition {} ({}); install it with: {}",
                crd.name, crd.operator, crd.install
            ));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::CrdMissing {
            missing: missing.join("; "),
        })
    }
}
