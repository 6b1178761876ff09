//! Why a reconcile failed: one variant per step, whose name is the reason users see.
//!
//! The reason ([`Error::reason`]) is the `reason` of the `Degraded` condition, of the Warning
//! Event, and the `reason` label of `paysys_operator_reconcile_failures_total`, so an alert or
//! a `kubectl describe` tells a Secret that cannot be read from a Deployment that cannot be
//! applied. The message says which object.

use crate::validate::ValidationError;

/// Why a reconcile failed. The variant name is the reason (CamelCase), except for
/// [`Error::Invalid`], which carries its own.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum Error {
    /// The spec, or a Secret it references, does not allow a working system.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Reading a Secret (generated or referenced) failed.
    #[error("reading Secret {name}: {source}")]
    SecretReadFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Creating a generated Secret failed.
    #[error("creating Secret {name}: {source}")]
    SecretCreateFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Reading a managed server's Deployment, to tell whether it still runs on the emptyDir
    /// of releases before 0.2.0, failed.
    #[error("reading Deployment {name} to find its storage: {source}")]
    StorageReadFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Handing a Deployment's replica count over to its HorizontalPodAutoscaler failed.
    #[error("handing the replicas of Deployment {name} over to its autoscaler: {source}")]
    ReplicasHandoverFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Server-side applying a child failed.
    #[error("applying {kind} {name}: {source}")]
    ApplyFailed {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Listing or deleting children that are no longer wanted failed.
    #[error("pruning {kind} {name}: {source}")]
    PruneFailed {
        kind: &'static str,
        /// The object being deleted, or the label selector being listed.
        name: String,
        #[source]
        source: kube::Error,
    },
    /// A dependency is to be run by another operator whose CRD the cluster does not serve.
    /// Nothing is applied; retried with backoff, so installing the operator is enough.
    #[error("not installed: {missing}")]
    CrdMissing {
        /// Each missing CRD, the operator serving it and how to install that operator.
        missing: String,
    },
    /// Asking the API server whether a needed CRD is served failed.
    #[error("checking whether {crd} is installed: {source}")]
    CrdCheckFailed {
        crd: &'static str,
        #[source]
        source: kube::Error,
    },
    /// Writing the `PaymentSystem`'s status failed.
    #[error("writing the status: {0}")]
    StatusWriteFailed(#[source] kube::Error),
    /// The resource cannot be parsed (e.g. written before a CRD change).
    #[error("the resource cannot be read: {0}")]
    InvalidResource(String),
}

impl Error {
    /// CamelCase reason for conditions, Events and the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid(error) => error.reason(),
            other => other.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error() -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("etcd is sad", "InternalError")
                .with_code(500)
                .boxed(),
        )
    }

    #[test]
    fn the_reason_is_the_variant_name() {
        let cases = [
            (
                Error::SecretReadFailed {
                    name: "db".into(),
                    source: api_error(),
                },
                "SecretReadFailed",
            ),
            (
                Error::SecretCreateFailed {
                    name: "db".into(),
                    source: api_error(),
                },
                "SecretCreateFailed",
            ),
            (
                Error::ApplyFailed {
                    kind: "Deployment",
                    name: "shop-payments-api".into(),
                    source: api_error(),
                },
                "ApplyFailed",
            ),
            (
                Error::PruneFailed {
                    kind: "Service",
                    name: "shop-rabbitmq".into(),
                    source: api_error(),
                },
                "PruneFailed",
            ),
            (
                Error::StorageReadFailed {
                    name: "shop-postgresql".into(),
                    source: api_error(),
                },
                "StorageReadFailed",
            ),
            (
                Error::ReplicasHandoverFailed {
                    name: "shop-payments-api".into(),
                    source: api_error(),
                },
                "ReplicasHandoverFailed",
            ),
            (Error::StatusWriteFailed(api_error()), "StatusWriteFailed"),
            (
                Error::CrdMissing {
                    missing: "clusters.postgresql.cnpg.io".into(),
                },
                "CrdMissing",
            ),
            (
                Error::CrdCheckFailed {
                    crd: "clusters.postgresql.cnpg.io",
                    source: api_error(),
                },
                "CrdCheckFailed",
            ),
            (Error::InvalidResource("bad".into()), "InvalidResource"),
            (
                Error::Invalid(ValidationError::SecretNotFound("db".into())),
                "SecretNotFound",
            ),
        ];
        for (error, reason) in cases {
            assert_eq!(error.reason(), reason, "{error}");
        }
    }
}
