//! The operator against a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager from `KUBEBUILDER_ASSETS`; see `paysys_testkit::envtest`).
//!
//! Every real-API-server test lives in this one test binary, so they share one control
//! plane; each test has its own namespace and its own in-process operator watching only it.

mod autoscaling;
mod contract;
mod crd;
mod data_feed;
mod events;
mod helm;
mod jwks;
mod kube_play;
mod monitoring;
mod numbers;
mod operated;
mod processes;
mod rbac;
mod reconcile;
mod registry;
mod risk_model;
mod risk_rules;
mod support;
mod upgrade;
mod webhooks;
