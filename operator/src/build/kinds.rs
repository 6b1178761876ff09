//! What the list of child kinds generates, and what a kind must be.
//!
//! The list itself, `child_kinds!`, is in `build/mod.rs`, next to the builder modules its
//! rows register: a row is `field: Type [foreign] => builder,`. `Type` is a
//! namespaced Rust type (a k8s-openapi type, or a `#[derive(CustomResource)]` struct for
//! another operator's CRD, marked `[foreign]` and implementing [`ForeignKind`]); the builder
//! is a `fn(&Validated) -> Vec<Type>` whose objects are appended to the field. Rows
//! without a builder (and the first objects of `services`) are the parts of the workloads,
//! built together in `build::workloads` (a server's Deployment, Service and claim share their
//! resolution). See `docs/architecture.md`, "How to add a child kind".
//!
//! `child_kinds!(then)` hands the rows to the caller's macro `then`, so each step generates
//! what it needs from the same rows without the list knowing the steps (the list is part of
//! `build`; a later step may import it, never the reverse):
//! - [`declare_children!`] (expanded in `build/mod.rs`): `Children`, the builders' output, one
//!   `Vec` per kind; the call of each row's builders (`Children::build_listed`);
//!   `Children::kinds` (from which the RBAC rules and the chart's role are generated, see
//!   `rbac` and `generate`); `each_kind` (the controller's watches, through [`EachKind`]); the
//!   CRDs of the foreign kinds a system builds (`Children::foreign_crds`, checked before
//!   anything is applied) and their readiness (`Children::readiness`, waited for by the
//!   status);
//! - in `apply`: the server-side apply of every kind **in list order** (so the list is also the
//!   dependency order: what a pod mounts before the pod, the pod before its budget) and the
//!   prune of what is no longer built **in reverse list order** (workloads go before what they
//!   use).
//!
//! Secrets are in the list for the operator's copies of risk models read from Secrets. The
//! generated Secrets (API key, credentials, Fernet key) are children too, but they are created
//! once and never applied (see `observe::secrets`): no builder makes them, and the prune of
//! the Secrets' row keeps them by name while they are wanted.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::foreign::ForeignKind;

/// What a type must be to serve as a child kind: a namespaced object with static type
/// information that serialises for server-side apply, can be watched, and compares (the
/// builders' tests compare children).
pub trait ChildKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + PartialEq
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> ChildKind for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + PartialEq
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// A step that does something per child kind, by type: [`each_kind`] calls it once per row.
pub trait EachKind {
    /// A kind of Kubernetes itself.
    fn built_in<K: ChildKind>(&mut self);
    /// A kind of another operator's CRD, which may not be installed.
    fn foreign<K: ChildKind + ForeignKind>(&mut self);
}

/// One row's kind, built in or foreign.
macro_rules! each_row {
    ($visitor:ident, $kind:ty) => {
        $visitor.built_in::<$kind>()
    };
    ($visitor:ident, $kind:ty, foreign) => {
        $visitor.foreign::<$kind>()
    };
}

/// The CRD of a row's kind if it is foreign and built (a built-in kind has none).
macro_rules! foreign_crd {
    ($objects:expr, $kind:ty) => {
        None::<$crate::foreign::ForeignCrd>
    };
    ($objects:expr, $kind:ty, foreign) => {
        (!$objects.is_empty()).then($crate::foreign::ForeignCrd::of::<$kind>)
    };
}

/// What a row's objects report of their readiness (a built-in kind: nothing here; the status
/// reads Deployments itself).
macro_rules! readiness {
    ($objects:expr) => {
        Vec::<$crate::foreign::Readiness>::new()
    };
    ($objects:expr, foreign) => {
        $objects
            .iter()
            .filter_map($crate::foreign::ForeignKind::readiness)
            .collect::<Vec<$crate::foreign::Readiness>>()
    };
}

/// Declares `Children` and what goes with it from the rows of `child_kinds!`, where it is
/// expanded (so the rows' types are those in scope there).
macro_rules! declare_children {
    ($( $(#[$doc:meta])* $field:ident: $kind:ty $([$foreign:ident])? $(=> $builder:path)?, )+) => {
        /// Every object the operator applies for one `PaymentSystem`, one field per child
        /// kind (generated Secrets are created separately, once, see `observe::secrets`;
        /// `secrets` holds only the risk models' copies).
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct Children {
            $( $(#[$doc])* pub $field: Vec<$kind>, )+
        }

        impl Children {
            /// Appends what each row's builders build from `system`, row by row.
            pub fn build_listed(&mut self, system: &$crate::validate::Validated) {
                $( $( self.$field.extend($builder(system)); )? )+
            }

            /// Every child kind, in list order.
            pub fn kinds() -> Vec<::kube::api::ApiResource> {
                vec![ $( ::kube::api::ApiResource::erase::<$kind>(&()), )+ ]
            }

            /// The CRDs of the foreign kinds of which `self` holds objects, in list order.
            pub fn foreign_crds(&self) -> Vec<$crate::foreign::ForeignCrd> {
                [ $( $crate::build::kinds::foreign_crd!(self.$field, $kind $(, $foreign)?), )+ ]
                    .into_iter()
                    .flatten()
                    .collect()
            }

            /// How ready each object of a foreign kind says it is, in list order.
            pub fn readiness(&self) -> Vec<$crate::foreign::Readiness> {
                let mut all = Vec::new();
                $( all.extend($crate::build::kinds::readiness!(self.$field $(, $foreign)?)); )+
                all
            }

            /// The kind and metadata of every child, in list order.
            pub fn metas(
                &self,
            ) -> Vec<(
                ::std::borrow::Cow<'static, str>,
                &::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
            )> {
                let mut metas = Vec::new();
                $(
                    metas.extend(
                        self.$field
                            .iter()
                            .map(|object| {
                                (
                                    <$kind as ::kube::Resource>::kind(&()),
                                    ::kube::Resource::meta(object),
                                )
                            }),
                    );
                )+
                metas
            }
        }

        /// Calls `visitor` once per child kind, in list order.
        pub fn each_kind(visitor: &mut impl $crate::build::kinds::EachKind) {
            $( $crate::build::kinds::each_row!(visitor, $kind $(, $foreign)?); )+
        }
    };
}

pub(crate) use {declare_children, each_row, foreign_crd, readiness};
