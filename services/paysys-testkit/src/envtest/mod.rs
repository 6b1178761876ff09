//! A real Kubernetes control plane for tests (the *envtest* convention).
//!
//! [`ControlPlane::get`] starts, once per test binary, etcd, `kube-apiserver` (RBAC on,
//! ServiceAccount tokens, TokenRequest) and `kube-controller-manager` (garbage collection,
//! Deployments → ReplicaSets → Pods, namespaces, ServiceAccounts) on free loopback ports, from
//! the binaries in `KUBEBUILDER_ASSETS`. Every test then takes its own namespace
//! ([`ControlPlane::namespace`]) and clients: admin ([`ControlPlane::admin`]) or any
//! ServiceAccount ([`ControlPlane::service_account_client`], through TokenRequest). The
//! processes and their folder go when the test binary exits, whether tests passed, failed or
//! the binary was killed.
//!
//! Without the binaries a test skips with one line saying how to get them, except under
//! `CI=true`, where that is a failure:
//!
//! ```no_run
//! # async fn example() {
//! let Some(cluster) = paysys_testkit::envtest::ControlPlane::get() else { return };
//! let namespace = cluster.namespace("my-test").await;
//! let client = cluster.admin();
//! # }
//! ```
//!
//! There is no scheduler or kubelet: see [`kubelet`] to make pods run.

mod certs;
pub mod kubelet;
mod process;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, Config};

use process::Process;

/// The Kubernetes version of the binaries the harness is written for.
pub const KUBERNETES_VERSION: &str = "1.36";

/// How to get the binaries, printed when they are missing.
const HOW_TO_GET: &str = "set KUBEBUILDER_ASSETS to a folder with etcd, kube-apiserver and \
     kube-controller-manager (scripts/test.sh does: ../shared/envtest/unpack.sh; elsewhere \
     `setup-envtest use 1.36 -p path` plus kube-controller-manager from the Kubernetes 1.36 \
     release archive)";

const BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];
const ADMIN_TOKEN_USER: &str = "admin";

/// One running control plane (see the module documentation).
pub struct ControlPlane {
    dir: PathBuf,
    assets: PathBuf,
    url: String,
    ca_der: Vec<u8>,
    ca_cert: PathBuf,
    admin_token: String,
    admin_kubeconfig: PathBuf,
    api_server_args: Vec<String>,
    processes: Mutex<Processes>,
}

struct Processes {
    etcd: Process,
    api_server: Option<Process>,
    controller_manager: Option<Process>,
}

impl ControlPlane {
    /// The control plane of this test binary, started on first use (5–20 s).
    ///
    /// `None` (after one line on stderr) when `KUBEBUILDER_ASSETS` lacks the binaries and
    /// `CI` is not `true`; under `CI=true` that panics, as does a control plane that fails to
    /// start (with the tail of the failing process's log).
    pub fn get() -> Option<&'static ControlPlane> {
        static PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        let assets = match assets() {
            Ok(assets) => assets,
            Err(missing) => {
                let message = format!("envtest: {missing}; {HOW_TO_GET}");
                if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                    panic!("{message} (CI=true: a skipped test is a failure)");
                }
                skip_line(&message);
                return None;
            }
        };
        let plane = PLANE.get_or_init(|| {
            process::on_supervisor(move || start(assets).map_err(|error| format!("{error:#}")))
        });
        match plane {
            Ok(plane) => Some(plane),
            Err(error) => panic!("envtest: the control plane did not start: {error}"),
        }
    }

    /// `https://127.0.0.1:<port>` of the API server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A folder private to this control plane, removed at exit (for kubeconfigs, logs...).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of the binaries (`KUBEBUILDER_ASSETS`).
    pub fn assets(&self) -> &Path {
        &self.assets
    }

    /// A kubeconfig file for `system:masters`, for programs run by a test (helm, kubectl).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// Client configuration authenticating with `token`.
    pub fn config_for_token(&self, token: &str) -> Config {
        let mut config = Config::new(self.url.parse().expect("a valid URL"));
        config.root_cert = Some(vec![self.ca_der.clone()]);
        config.auth_info.token = Some(token.to_owned().into());
        config.default_namespace = "default".into();
        config
    }

    /// A client in group `system:masters`. A new one per call: a client belongs to the tokio
    /// runtime it was made in, and every `#[tokio::test]` has its own.
    pub fn admin(&self) -> Client {
        Client::try_from(self.config_for_token(&self.admin_token)).expect("a client")
    }

    /// A new namespace `<prefix>-<random>` whose `default` ServiceAccount exists (so Pods can
    /// be created in it). Namespaces are not deleted: the whole control plane goes at exit.
    pub async fn namespace(&self, prefix: &str) -> String {
        let client = self.admin();
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("paysys.io/test".to_owned(), prefix.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
        crate::eventually(Duration::from_secs(30), || async {
            accounts.get_opt("default").await.ok().flatten()
        })
        .await
        .unwrap_or_else(|| panic!("namespace {name}: no default ServiceAccount after 30 s"));
        name
    }

    /// A token of ServiceAccount `namespace/name` (created when absent), valid for an hour.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin(), namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => panic!("create ServiceAccount {namespace}/{name}: {error}"),
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec!["https://kubernetes.default.svc".into()]),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"))
            .status
            .and_then(|status| status.token)
            .expect("a TokenRequest answer has a token")
    }

    /// A client acting as ServiceAccount `namespace/name` (created when absent).
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Client {
        let token = self.service_account_token(namespace, name).await;
        Client::try_from(self.config_for_token(&token)).expect("a client")
    }

    /// A kubeconfig file authenticating with `token`, for a process run by a test (such as
    /// the operator binary acting as its ServiceAccount).
    pub fn write_kubeconfig(&self, token: &str, namespace: &str) -> PathBuf {
        let path = self
            .dir
            .join(format!("kubeconfig-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, self.kubeconfig_text(token, namespace)).expect("write kubeconfig");
        path
    }

    fn kubeconfig_text(&self, token: &str, namespace: &str) -> String {
        let value = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "envtest", "cluster": {
                "server": self.url,
                "certificate-authority": self.ca_cert,
            }}],
            "users": [{"name": "user", "user": {"token": token}}],
            "contexts": [{"name": "envtest", "context": {
                "cluster": "envtest", "user": "user", "namespace": namespace,
            }}],
            "current-context": "envtest",
        });
        // JSON is YAML: every kubeconfig reader accepts it.
        value.to_string()
    }

    /// Stops the API server and starts it again on the same port and etcd; returns once it is
    /// ready. Clients and watches see the outage a real restart causes. Tests running at the
    /// same time in this binary see it too: keep such a test in a binary of its own.
    pub async fn restart_api_server(&self) {
        let assets = self.assets.clone();
        let args = self.api_server_args.clone();
        let log = self.dir.join("kube-apiserver.log");
        let old = self
            .processes
            .lock()
            .expect("not poisoned")
            .api_server
            .take();
        let new = tokio::task::spawn_blocking(move || {
            if let Some(old) = old {
                old.stop(Duration::from_secs(10));
            }
            Process::start("kube-apiserver", &assets.join("kube-apiserver"), args, log)
        })
        .await
        .expect("not cancelled")
        .expect("restart kube-apiserver");
        self.processes.lock().expect("not poisoned").api_server = Some(new);
        wait_ready(&self.admin(), Duration::from_secs(60), || self.exited())
            .await
            .expect("kube-apiserver ready again after a restart");
    }

    /// The name and exit status of a process of the control plane that has exited.
    fn exited(&self) -> Option<String> {
        let mut processes = self.processes.lock().expect("not poisoned");
        let Processes {
            etcd,
            api_server,
            controller_manager,
        } = &mut *processes;
        [Some(etcd), api_server.as_mut(), controller_manager.as_mut()]
            .into_iter()
            .flatten()
            .find_map(|process| {
                let status = process.exited()?;
                Some(format!("{} ({status})", process.name))
            })
    }

    /// Logs of the control plane's processes (their last lines), for failure messages.
    pub fn logs(&self) -> String {
        let processes = self.processes.lock().expect("not poisoned");
        [
            Some(&processes.etcd),
            processes.api_server.as_ref(),
            processes.controller_manager.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|process| format!("--- {} ---\n{}", process.name, process.log_tail()))
        .collect::<Vec<_>>()
        .join("\n")
    }
}

/// Says once per binary why its tests skip. Written to the stderr handle itself: the test
/// harness captures `eprintln!` of passing tests, and a silent skip would look like a pass.
pub fn skip_line(message: &str) {
    use std::io::Write as _;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(std::io::stderr(), "skipped: {message}");
    });
}

/// `KUBEBUILDER_ASSETS`, when it holds every binary; otherwise what is missing.
fn assets() -> Result<PathBuf, String> {
    let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|dir| !dir.is_empty()) else {
        return Err("KUBEBUILDER_ASSETS is not set".into());
    };
    let dir = PathBuf::from(dir);
    let missing: Vec<&str> = BINARIES
        .into_iter()
        .filter(|binary| !dir.join(binary).is_file())
        .collect();
    if missing.is_empty() {
        Ok(dir)
    } else {
        Err(format!(
            "{} missing from KUBEBUILDER_ASSETS={}",
            missing.join(", "),
            dir.display()
        ))
    }
}

fn free_port() -> String {
    crate::free_port().to_string()
}

/// Starts the three processes; runs on the supervisor thread (outside any tokio runtime).
fn start(assets: PathBuf) -> anyhow::Result<ControlPlane> {
    let dir = std::env::temp_dir().join(format!(
        "paysys-envtest-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    process::remove_at_exit(&dir);
    let certs = certs::write(&dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let etcd_port = free_port();
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let etcd = Process::start(
        "etcd",
        &assets.join("etcd"),
        vec![
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{}", free_port()),
            "--log-level=warn".into(),
        ],
        dir.join("etcd.log"),
    )?;

    let admin_token = uuid::Uuid::new_v4().simple().to_string();
    let tokens = dir.join("tokens.csv");
    std::fs::write(
        &tokens,
        format!("{admin_token},{ADMIN_TOKEN_USER},admin-uid,system:masters\n"),
    )?;
    let port = free_port();
    let sa_key = certs.service_account_key.display().to_string();
    let api_server_args = vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--tls-cert-file={}", certs.serving_cert.display()),
        format!("--tls-private-key-file={}", certs.serving_key.display()),
        format!("--client-ca-file={}", certs.ca_cert.display()),
        format!("--token-auth-file={}", tokens.display()),
        "--authorization-mode=Node,RBAC".into(),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        "--service-account-issuer=https://kubernetes.default.svc".into(),
        format!(
            "--service-account-key-file={}",
            certs.service_account_public_key.display()
        ),
        format!("--service-account-signing-key-file={sa_key}"),
        "--api-audiences=https://kubernetes.default.svc".into(),
        "--endpoint-reconciler-type=none".into(),
        "--allow-privileged=true".into(),
        format!("--cert-dir={}", dir.join("apiserver-certs").display()),
        "--profiling=false".into(),
    ];
    let api_server = Process::start(
        "kube-apiserver",
        &assets.join("kube-apiserver"),
        api_server_args.clone(),
        dir.join("kube-apiserver.log"),
    )?;

    let plane = ControlPlane {
        url: format!("https://127.0.0.1:{port}"),
        ca_der: certs.ca_der.clone(),
        ca_cert: certs.ca_cert.clone(),
        admin_kubeconfig: dir.join("admin.kubeconfig"),
        admin_token,
        api_server_args,
        assets: assets.clone(),
        processes: Mutex::new(Processes {
            etcd,
            api_server: Some(api_server),
            // Started once the API server is ready.
            controller_manager: None,
        }),
        dir: dir.clone(),
    };
    std::fs::write(
        &plane.admin_kubeconfig,
        plane.kubeconfig_text(&plane.admin_token, "default"),
    )?;

    let ready = runtime.block_on(async {
        wait_ready(&plane.admin(), Duration::from_secs(60), || plane.exited()).await
    });
    if let Err(error) = ready {
        bail!("{error}\n{}", plane.logs());
    }

    let kubeconfig = plane.admin_kubeconfig.display().to_string();
    let controller_manager = Process::start(
        "kube-controller-manager",
        &assets.join("kube-controller-manager"),
        vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()),
            format!("--cert-dir={}", dir.join("kcm-certs").display()),
            "--use-service-account-credentials=false".into(),
            format!("--service-account-private-key-file={sa_key}"),
            format!("--root-ca-file={}", certs.ca_cert.display()),
            "--leader-elect=false".into(),
            // No cloud, no node IPAM; and no node lifecycle controller: the test Nodes have
            // no kubelet heartbeat, and it would mark their pods NotReady after 40 s.
            "--controllers=*,-node-ipam-controller,-cloud-node-lifecycle-controller,\
             -service-lb-controller,-node-route-controller,-node-lifecycle-controller"
                .into(),
        ],
        dir.join("kube-controller-manager.log"),
    )?;
    plane
        .processes
        .lock()
        .expect("not poisoned")
        .controller_manager = Some(controller_manager);

    // The ServiceAccount controller creating `default/default` shows the controller
    // manager works.
    let client_ready = runtime.block_on(async {
        let accounts: Api<ServiceAccount> = Api::namespaced(plane.admin(), "default");
        crate::eventually(Duration::from_secs(60), || async {
            accounts.get_opt("default").await.ok().flatten()
        })
        .await
    });
    if client_ready.is_none() {
        bail!(
            "kube-controller-manager did not create the default ServiceAccount within 60 s\n{}",
            plane.logs()
        );
    }
    Ok(plane)
}

/// Polls `/readyz` until it answers `ok`; gives up early when `exited` names a process that
/// died.
async fn wait_ready(
    client: &Client,
    timeout: Duration,
    exited: impl Fn() -> Option<String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(process) = exited() {
            bail!("{process} exited");
        }
        let request = http::Request::get("/readyz").body(Vec::new())?;
        let last = match client.request_text(request).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            Ok(body) => body,
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            bail!(
                "kube-apiserver not ready within {} s: {last}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
