//! Checks of the container build and the local demo, without a container engine: the
//! Dockerfile (one minimal non-root image per binary of the workspace), `.dockerignore`, and
//! `docker-compose.yml` (the original demo on the same images). The Helm chart is checked in
//! `helm_chart.rs`; images actually running under podman in `real_apiserver/kube_play.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::de::Deserialize;
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ sits in the workspace")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|error| panic!("cannot read {relative}: {error}"))
}

fn yaml(relative: &str) -> Value {
    let mut documents: Vec<Value> = serde_norway::Deserializer::from_str(&read(relative))
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .filter(|document| !document.is_null())
        .collect();
    assert_eq!(documents.len(), 1, "{relative} holds one YAML document");
    documents.remove(0)
}

/// Each image's binary and the port it exposes (the data feed is a batch job: none).
const BINARIES: [(&str, Option<u16>); 4] = [
    ("payments-api", Some(5000)),
    ("risk-engine", Some(8080)),
    ("paysys-operator", Some(8080)),
    (paysys_operator::validate::FEED_IMAGE, None),
];

/// Dockerfile stages: name -> (base, instructions).
fn stages() -> BTreeMap<String, (String, Vec<String>)> {
    // Join continuation lines so each instruction is one line.
    let text = read("Dockerfile").replace("\\\n", " ");
    let mut stages = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words[0] == "FROM" {
            assert_eq!(
                words.get(2).map(|as_| as_.to_uppercase()),
                Some("AS".into()),
                "{line}"
            );
            let name = words[3].to_string();
            stages.insert(name.clone(), (words[1].to_string(), Vec::new()));
            current = Some(name);
        } else if let Some(stage) = &current {
            stages.get_mut(stage).unwrap().1.push(line.to_string());
        }
    }
    stages
}

fn workspace_binaries() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|package| package["targets"].as_array().unwrap().iter())
        .filter(|target| {
            target["kind"]
                .as_array()
                .unwrap()
                .iter()
                .any(|kind| kind == "bin")
        })
        .map(|target| target["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn dockerfile_builds_one_minimal_non_root_image_per_binary() {
    let stages = stages();
    let binaries = workspace_binaries();
    let (runtime_base, runtime) = &stages["runtime-base"];
    assert_eq!(runtime_base, "${RUNTIME_IMAGE}");
    assert!(read("Dockerfile").contains("ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot"));
    let user = runtime
        .iter()
        .find(|line| line.starts_with("USER "))
        .expect("USER");
    assert!(
        user.split_whitespace()
            .nth(1)
            .is_some_and(|id| !id.starts_with("0") && !id.starts_with("root"))
    );
    // Compiled in the builder stage unless BINARIES=prebuilt (scripts/images.sh).
    assert_eq!(stages["binaries"].0, "${BINARIES}");
    assert!(read("Dockerfile").contains("ARG BINARIES=builder"));
    let (_, builder) = &stages["builder"];
    assert!(
        builder
            .iter()
            .any(|line| line.contains("cargo chef cook --release")),
        "dependency layer"
    );
    let build = builder
        .iter()
        .find(|line| line.contains("cargo build"))
        .expect("cargo build");
    assert!(build.contains("--release") && build.contains("--locked"));
    for (binary, port) in BINARIES {
        assert!(
            binaries.contains(binary),
            "{binary} is not a binary of the workspace"
        );
        assert!(
            build.contains(&format!("--bin {binary}")),
            "builder builds {binary}"
        );
        let (base, lines) = stages
            .get(binary)
            .unwrap_or_else(|| panic!("target {binary}"));
        assert_eq!(base, "runtime-base");
        let has = |line: String| lines.contains(&line);
        assert!(has(format!(
            "COPY --from=binaries /out/{binary} /usr/local/bin/{binary}"
        )));
        // Exec form: no shell needed (there is none in distroless).
        assert!(
            has(format!("ENTRYPOINT [\"/usr/local/bin/{binary}\"]")),
            "{binary} entrypoint"
        );
        match port {
            Some(port) => assert!(has(format!("EXPOSE {port}")), "{binary} exposes {port}"),
            None => assert!(
                !lines.iter().any(|line| line.starts_with("EXPOSE")),
                "{binary} exposes nothing"
            ),
        }
    }
}

#[test]
fn dockerignore_keeps_the_context_small_but_complete() {
    let ignored: BTreeSet<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            line.trim_end_matches('/')
                .trim_start_matches('/')
                .to_string()
        })
        .collect();
    for needed in ["target", ".git", ".cache"] {
        assert!(ignored.contains(needed), "{needed} must be ignored");
    }
    for kept in [
        "services",
        "operator",
        "crds",
        "Cargo.toml",
        "Cargo.lock",
        "*.rs",
        "*.toml",
    ] {
        assert!(!ignored.contains(kept), "{kept} is needed by the build");
    }
}

#[test]
fn compose_runs_the_original_demo_with_healthy_dependencies() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["postgres", "rabbitmq", "payments-api", "risk-engine"])
    );
    assert_eq!(services["postgres"]["image"], "postgres:16");
    assert_eq!(services["rabbitmq"]["image"], "rabbitmq:3.13-management");
    for dependency in ["postgres", "rabbitmq"] {
        assert!(
            services[dependency]["healthcheck"]["test"].is_array(),
            "{dependency} healthcheck"
        );
    }
    let stages = stages();
    for (service, port) in [("payments-api", 5000), ("risk-engine", 8080)] {
        let definition = &services[service];
        let target = definition["build"]["target"]
            .as_str()
            .expect("build target");
        assert_eq!(target, service);
        assert!(stages.contains_key(target));
        assert_eq!(
            definition["image"],
            format!("ghcr.io/paysys/{service}:${{PAYSYS_VERSION:-{VERSION}}}")
        );
        assert_eq!(definition["environment"]["PORT"], port.to_string());
        assert!(
            definition["environment"]["AMQP_URL"]
                .as_str()
                .unwrap()
                .contains("@rabbitmq:5672")
        );
        assert_eq!(
            definition["depends_on"]["rabbitmq"]["condition"],
            "service_healthy"
        );
        // Distroless has no curl: the binary probes its own /readyz.
        assert_eq!(
            definition["healthcheck"]["test"],
            serde_json::json!(["CMD", format!("/usr/local/bin/{service}"), "healthcheck"])
        );
        assert_eq!(definition["env_file"][0]["path"], ".env");
        assert_eq!(definition["env_file"][0]["required"], false);
    }
    let api = &services["payments-api"];
    assert!(
        api["environment"]["DATABASE_URL"]
            .as_str()
            .unwrap()
            .contains("@postgres:5432/")
    );
    assert_eq!(
        api["depends_on"]["postgres"]["condition"],
        "service_healthy"
    );
    assert_eq!(api["ports"][0], "${API_PORT:-5000}:5000");
    assert!(
        api["environment"]["API_KEYS"]
            .as_str()
            .unwrap()
            .contains('=')
    );
}
