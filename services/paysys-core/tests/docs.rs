//! The README and docs say what the code does: every relative link resolves, every
//! exchange or queue name the README quotes is one `topology.rs` declares, and every
//! `rust-version` in the workspace is the Rust `rust-toolchain.toml` pins.

use std::path::{Path, PathBuf};

use paysys_core::topology::{DEFAULT_PREFIX, Topology};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// README.md and every docs/*.md.
fn documents() -> Vec<PathBuf> {
    let mut documents = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/") {
        let path = entry.expect("docs entry").path();
        if path.extension().is_some_and(|ext| ext == "md") {
            documents.push(path);
        }
    }
    documents
}

/// Targets of the Markdown links `[text](target)` in `text`, outside code blocks.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].trim().to_owned());
            rest = &after[end..];
        }
    }
    targets
}

/// The relative links of `document` whose file or folder does not exist.
fn broken_links(document: &Path) -> Vec<String> {
    let dir = document.parent().expect("a folder");
    link_targets(&read(document))
        .into_iter()
        .filter(|target| {
            !(target.is_empty()
                || target.starts_with('#')
                || target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:"))
        })
        .filter(|target| {
            let path = target.split('#').next().unwrap_or_default();
            !dir.join(path).exists()
        })
        .collect()
}

#[test]
fn relative_links_in_the_readme_and_docs_resolve() {
    let mut broken = Vec::new();
    for document in documents() {
        for target in broken_links(&document) {
            broken.push(format!("{}: {target}", document.display()));
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn a_broken_link_is_found() {
    let dir = std::env::temp_dir().join(format!("paysys-docs-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("docs")).expect("folder");
    let document = dir.join("docs/page.md");
    std::fs::write(
        &document,
        "[ok](page.md) [gone](../examples) [anchor](#x) [web](https://example.com)\n\
         ```\n[in code](nowhere)\n```\n",
    )
    .expect("write");
    let broken = broken_links(&document);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(broken, vec!["../examples".to_string()]);
}

/// Every `paysys.<...>` name in `text` (not part of a longer name such as
/// `paymentsystems.paysys.io`).
fn quoted_names(text: &str) -> Vec<String> {
    let prefix = format!("{DEFAULT_PREFIX}.");
    let is_name = |c: char| c.is_ascii_alphanumeric() || "._-*".contains(c);
    let mut names = Vec::new();
    for (at, _) in text.match_indices(&prefix) {
        if text[..at].chars().next_back().is_some_and(is_name) {
            continue;
        }
        let name: String = text[at..].chars().take_while(|&c| is_name(c)).collect();
        names.push(name.trim_end_matches('.').to_owned());
    }
    names
}

/// The exchanges and queues the services declare under the default prefix.
fn declared() -> Vec<String> {
    let t = Topology::new(DEFAULT_PREFIX);
    vec![
        t.payments_exchange,
        t.payments_queue,
        t.decisions_exchange,
        t.decisions_queue,
        t.dead_letter_exchange,
        t.payments_dead_queue,
        t.decisions_dead_queue,
    ]
}

/// `name` is a declared name, or a pattern (`*` for one dot-separated part) matching one.
fn is_declared(name: &str, declared: &[String]) -> bool {
    let matches = |candidate: &str| {
        let (a, b): (Vec<&str>, Vec<&str>) =
            (name.split('.').collect(), candidate.split('.').collect());
        a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| *x == "*" || x == y)
    };
    declared.iter().any(|candidate| matches(candidate))
}

/// Names the README may quote that are not exchanges or queues.
const NOT_TOPOLOGY: &[&str] = &["paysys.io"];

#[test]
fn exchange_and_queue_names_in_the_readme_are_the_declared_ones() {
    let declared = declared();
    let readme = read(&root().join("README.md"));
    let names = quoted_names(&readme);
    assert!(
        names.iter().any(|name| name == "paysys.payments.v2"),
        "the README names the payments queue: {names:?}"
    );
    let unknown: Vec<&String> = names
        .iter()
        .filter(|name| !NOT_TOPOLOGY.contains(&name.as_str()))
        .filter(|name| !is_declared(name, &declared))
        .collect();
    assert!(
        unknown.is_empty(),
        "README quotes names topology.rs does not declare: {unknown:?} (declared: {declared:?})"
    );
}

#[test]
fn an_old_queue_name_is_not_a_declared_one() {
    let declared = declared();
    assert!(!is_declared("paysys.payments.dead", &declared));
    assert!(is_declared("paysys.*.dead.v2", &declared));
    assert_eq!(
        quoted_names("`paysys.payments.dead` and paymentsystems.paysys.io."),
        vec!["paysys.payments.dead".to_string()]
    );
}

/// `rust-version = "..."` values of a Cargo.toml (literal ones; `.workspace = true` inherits).
fn rust_versions(manifest: &str) -> Vec<String> {
    manifest
        .lines()
        .filter_map(|line| line.trim().strip_prefix("rust-version"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .collect()
}

#[test]
fn every_rust_version_is_the_pinned_toolchain() {
    let toolchain = read(&root().join("rust-toolchain.toml"));
    let channel = toolchain
        .lines()
        .find_map(|line| line.trim().strip_prefix("channel"))
        .and_then(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .expect("rust-toolchain.toml names a channel");
    // rust-version is major.minor(.patch); the toolchain a full version.
    let mut manifests = vec![
        root().join("Cargo.toml"),
        root().join("operator/Cargo.toml"),
    ];
    for entry in std::fs::read_dir(root().join("services")).expect("services/") {
        let manifest = entry.expect("entry").path().join("Cargo.toml");
        if manifest.exists() {
            manifests.push(manifest);
        }
    }
    let mut seen = 0;
    for manifest in &manifests {
        for version in rust_versions(&read(manifest)) {
            seen += 1;
            assert!(
                channel == version || channel.starts_with(&format!("{version}.")),
                "{} says rust-version {version}, rust-toolchain.toml pins {channel}",
                manifest.display()
            );
        }
    }
    assert!(seen > 0, "no rust-version found");
    let dockerfile = read(&root().join("Dockerfile"));
    assert!(
        dockerfile.contains(&format!("ARG RUST_VERSION={channel}\n")),
        "the Dockerfile's RUST_VERSION is not {channel}"
    );
}
