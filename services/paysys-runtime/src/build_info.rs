//! `paysys_build_info{version, commit} 1`: which build a process runs, on the `/metrics` of
//! every paysys binary, so a dashboard or an alert can tell the versions of a rolling upgrade
//! apart and a bug report can name the commit.

use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The workspace version (every crate takes `version.workspace`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit the binary was built from: `PAYSYS_GIT_COMMIT` when it was compiled (the
/// Dockerfile's build argument, set by the release workflow), `unknown` otherwise. Read from
/// the environment rather than from git by a build script, so that a commit does not rebuild
/// every crate of the workspace, and a build from a source archive works the same.
pub const COMMIT: &str = match option_env!("PAYSYS_GIT_COMMIT") {
    Some(commit) if !commit.is_empty() => commit,
    _ => "unknown",
};

/// Registers `build_info` in `registry`: `paysys_build_info` in a registry with the prefix
/// `paysys` (each binary's root registry).
pub fn register(registry: &mut Registry) {
    registry.register(
        "build",
        "The running build: 1, with the workspace version and the git commit (unknown when built without PAYSYS_GIT_COMMIT)",
        Info::new([("version", VERSION), ("commit", COMMIT)]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_version_and_the_commit() {
        let mut registry = Registry::with_prefix("paysys");
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let line = format!("paysys_build_info{{version=\"{VERSION}\",commit=\"{COMMIT}\"}} 1\n");
        assert!(text.contains(&line), "{text}");
        assert!(!VERSION.is_empty() && !COMMIT.is_empty());
    }
}
