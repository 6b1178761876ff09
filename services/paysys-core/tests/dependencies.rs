//! The crate boundaries hold: the domain crate pulls in no runtime, and the operator, which
//! uses the domain only for `RiskRules`, compiles no broker client.
//!
//! Read from `cargo tree` on this machine's platform, following normal dependencies only:
//! what a binary links, not what its tests or build scripts use.

use std::collections::BTreeSet;
use std::process::Command;

/// Names of every package `package` links, itself included.
fn linked_by(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "--locked", "--edges", "normal", "--prefix", "none"])
        .args(["--format", "{p}", "--package", package, "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Lines are `name vX.Y.Z [(path)] [(*)]`.
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn assert_links_none(package: &str, forbidden: &[&str]) {
    let linked = linked_by(package);
    // A positive control: the listing is not empty or cut short.
    assert!(
        linked.contains(package) && linked.contains("serde"),
        "{linked:?}"
    );
    let found: Vec<_> = forbidden
        .iter()
        .filter(|name| linked.contains(**name))
        .collect();
    assert!(found.is_empty(), "{package} links {found:?}");
}

#[test]
fn the_listing_sees_transitive_dependencies() {
    // Without this, an absence below could mean a listing that stops at direct dependencies.
    assert!(linked_by("risk-engine").contains("lapin"));
    assert!(linked_by("paysys-operator").contains("rust_decimal"));
}

#[test]
fn the_domain_crate_has_no_runtime() {
    assert_links_none(
        "paysys-core",
        &[
            "tokio",
            "lapin",
            "tracing-subscriber",
            "hyper",
            "paysys-runtime",
            "paysys-amqp",
        ],
    );
}

#[test]
fn only_the_two_services_link_the_broker_client() {
    for package in ["paysys-runtime", "paysys-operator", "paysys-feed"] {
        assert_links_none(package, &["lapin", "paysys-amqp"]);
    }
}
