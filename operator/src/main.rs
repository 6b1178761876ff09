//! The paysys operator binary.
//!
//! Environment: `HTTP_PORT` (8080: `/healthz`, `/readyz`, `/metrics`), `WATCH_NAMESPACE`
//! (unset: every namespace), `LEADER_ELECTION` (`true`; `false` for a single replica),
//! `POD_NAMESPACE` (namespace of the Lease, `default`), `POD_NAME` (identity in the Lease and
//! in Events), `LEASE_NAME` (`paysys-operator`), `LOG_FORMAT` (`json` by default; `text`),
//! `RUST_LOG` (`info`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use paysys_operator::controller::{self, Context, Scope};
use paysys_operator::http::{self, Health};
use paysys_operator::metrics::Metrics;
use tokio::sync::watch;
use tracing::{error, info};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let port: u16 = env_or("HTTP_PORT", "8080")
        .parse()
        .context("HTTP_PORT must be a port number")?;
    let leader_election = match env_or("LEADER_ELECTION", "true").as_str() {
        "true" => true,
        "false" => false,
        _ => anyhow::bail!("LEADER_ELECTION must be true or false"),
    };
    let scope = match std::env::var("WATCH_NAMESPACE") {
        Ok(namespace) if !namespace.is_empty() => Scope::Namespace(namespace),
        _ => Scope::All,
    };
    let identity = std::env::var("POD_NAME").ok();

    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("cannot listen on HTTP_PORT {port}"))?;
    let app = http::router(health.clone(), metrics.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            error!(%error, "HTTP server stopped");
        }
    });

    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or kubeconfig)")?;
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        identity.clone(),
    ));
    health.ready.store(true, Ordering::Release);

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        paysys_runtime::shutdown::signal().await;
        let _ = stop_tx.send(true);
    });

    if !leader_election {
        info!(?scope, "starting without leader election");
        controller::run(ctx, scope, wait_true(stop_rx)).await;
        return Ok(());
    }

    let lease_namespace = env_or("POD_NAMESPACE", "default");
    let lease_name = env_or("LEASE_NAME", "paysys-operator");
    let mut builder = LeaseManagerBuilder::new(client, &lease_name)
        .with_namespace(&lease_namespace)
        .with_duration(15)
        .with_grace(5)
        .with_field_manager(format!("{}-lease", paysys_operator::names::FIELD_MANAGER));
    if let Some(identity) = &identity {
        builder = builder.with_identity(identity);
    }
    let manager = builder
        .build()
        .await
        .context("cannot set up the leader lease")?;
    let (mut leader, lease_task) = manager.watch().await;
    info!(lease = %lease_name, namespace = %lease_namespace, "waiting for leadership");
    let mut stop = stop_rx.clone();
    loop {
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leader.changed() => changed.context("the lease manager stopped")?,
            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
        }
    }
    metrics.leader.set(1);
    info!(?scope, "leading: starting the controller");
    // Stop reconciling as soon as leadership is lost or a signal arrives; a lost lease then
    // exits the process so the pod restarts as a candidate (never two leaders at once).
    let mut lost = leader.clone();
    let lost_leadership = async move {
        let _ = lost.wait_for(|leading| !*leading).await;
    };
    let stop = wait_true(stop_rx);
    let stop_or_lost = async move {
        tokio::select! {
            _ = stop => {},
            _ = lost_leadership => {},
        }
    };
    controller::run(ctx, scope, stop_or_lost).await;
    metrics.leader.set(0);
    let still_leading = *leader.borrow();
    drop(leader); // releases the lease
    let _ = lease_task.await;
    if !still_leading {
        anyhow::bail!("lost the leader lease");
    }
    info!("stopped");
    Ok(())
}

async fn wait_true(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|value| *value).await;
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// JSON logs unless `LOG_FORMAT=text`: the operator runs in a cluster, read by a log pipeline.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let text = std::env::var("LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("text"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if text {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}
