//! The `main` every service binary shares: logging, configuration, listener, run, exit code.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::process::ExitCode;

use tokio::net::TcpListener;

use crate::config::ConfigError;

/// Runs a service: installs logging, takes its configuration (a bad one exits with code 2 and
/// the message naming the variable, also written as the container's termination message), listens on `port` on all interfaces (exit 2 if it
/// cannot), then runs it until SIGTERM or Ctrl-C (exit 1 if it fails).
///
/// Started as `<binary> healthcheck`, it instead asks the instance already running with the
/// same configuration whether it is ready (see [`crate::healthcheck`]).
pub async fn main<C, F, Fut, E>(
    name: &str,
    config: impl FnOnce() -> Result<C, ConfigError>,
    port: impl FnOnce(&C) -> u16,
    run: F,
) -> ExitCode
where
    C: Debug,
    F: FnOnce(C, TcpListener, crate::shutdown::Signal) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let healthcheck = crate::healthcheck::requested();
    if !healthcheck {
        crate::telemetry::init_logging();
    }
    let config = match config() {
        Ok(config) => config,
        Err(error) => {
            let message = format!("{name}: {error}");
            eprintln!("{message}");
            write_termination_message(&message);
            return ExitCode::from(2);
        }
    };
    let port = port(&config);
    if healthcheck {
        return crate::healthcheck::run(name, port).await;
    }
    tracing::info!(?config, "starting {name}");
    let listener = match TcpListener::bind(("0.0.0.0", port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("{name}: cannot listen on port {port} (PORT): {error}");
            return ExitCode::from(2);
        }
    };
    match run(config, listener, Box::pin(crate::shutdown::signal())).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "{name} failed");
            ExitCode::FAILURE
        }
    }
}

/// Where Kubernetes reads a container's termination message: the file the kubelet creates at
/// `terminationMessagePath` (its default here; `TERMINATION_MESSAGE_PATH` overrides it).
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// Best effort: `message` into the termination message file, if it exists (the kubelet
/// creates it; outside a pod there is none, and none is made), so the refusal shows in the
/// pod's status where a person or the operator reads it (`kubectl describe pod`).
fn write_termination_message(message: &str) {
    let path = std::env::var_os("TERMINATION_MESSAGE_PATH")
        .unwrap_or_else(|| TERMINATION_MESSAGE_PATH.into());
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
    {
        use std::io::Write as _;
        let _ = file.write_all(message.as_bytes());
    }
}
