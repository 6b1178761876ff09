//! The contract between the operator and the services: the real `payments-api` and
//! `risk-engine` binaries, run as local processes with exactly the environment, files and
//! arguments of the pod templates the operator produced (resolved by
//! `paysys_testkit::pod_template`), serve the original demo end to end against the local
//! PostgreSQL and RabbitMQ given as `database.external` / `rabbitmq.external` Secrets.
//!
//! Two substitutions only, both forced by running outside a pod: `PORT` is a free local port
//! (both containers listen on fixed ports in their own network namespace), and paths into
//! mounted volumes point at the local copies.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use paysys_testkit::pod_template::{self, LocalContainer};
use paysys_testkit::{TestDb, free_port, unique_name};
use tokio::process::{Child, Command};

use crate::reconcile::create_secret;
use crate::support::{Env, Operator, apply_system, env, eventually, http, wait_condition};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A built binary of the workspace (beside this test's `deps/`), or why it is missing.
pub(crate) fn binary(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().expect("current executable");
    let mut dir = exe.parent().expect("a folder").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build it first (`cargo build -p {name}`; scripts/test.sh builds the workspace)",
            path.display()
        ))
    }
}

/// A RabbitMQ virtual host of its own (nothing left over from other runs), removed on drop.
pub(crate) struct VirtualHost {
    pub(crate) name: String,
}

impl VirtualHost {
    pub(crate) fn create() -> Result<VirtualHost, String> {
        let name = unique_name("paysys-test");
        rabbitmqctl(&["add_vhost", &name])?;
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"])?;
        Ok(VirtualHost { name })
    }
}

impl Drop for VirtualHost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.name]);
    }
}

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rabbitmqctl (apt-get install rabbitmq-server): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Skips (one line) or, under `CI=true`, fails.
pub(crate) fn skip(why: &str) {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{why} (CI=true: a skipped test is a failure)");
    }
    paysys_testkit::envtest::skip_line(why);
}

/// The first container of Deployment `name`, resolved into `dir`.
pub(crate) async fn container(env: &Env, name: &str, dir: &std::path::Path) -> LocalContainer {
    let deployment = Api::<Deployment>::namespaced(env.client.clone(), &env.namespace)
        .get(name)
        .await
        .unwrap();
    let pod = deployment.spec.template.spec.expect("a pod spec");
    let first = pod.containers[0].name.clone();
    pod_template::resolve(&env.client, &env.namespace, &pod, &first, &dir.join(name))
        .await
        .unwrap_or_else(|e| panic!("resolve {name}: {e:#}"))
}

/// Starts `container` as a local process: the template's environment only (nothing
/// inherited), `PORT` replaced by `port`, output into `log`.
pub(crate) fn start(container: &LocalContainer, port: u16, log: &std::path::Path) -> Child {
    let program = binary(container.image_program()).expect("checked before");
    let mut env = container.local_env();
    assert!(env.contains_key("PORT"), "the template sets PORT");
    env.insert("PORT".into(), port.to_string());
    let out = std::fs::File::create(log).unwrap();
    let mut command = Command::new(program);
    command
        // A template command would name an in-image path; paysys images use the entrypoint.
        .args(container.command.iter().skip(1).chain(&container.args))
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true);
    command.spawn().expect("start the service")
}

#[tokio::test]
async fn the_services_run_unchanged_with_what_the_operator_wires() {
    let Some(env) = env("contract").await else {
        return;
    };
    let binaries = ["payments-api", "risk-engine"].map(binary);
    if let Some(Err(why)) = binaries.iter().find(|b| b.is_err()) {
        return skip(why);
    }
    let vhost = match VirtualHost::create() {
        Ok(vhost) => vhost,
        Err(why) => return skip(&why),
    };
    let db = TestDb::create().await;
    let amqp = format!("amqp://guest:guest@127.0.0.1:5672/{}", vhost.name);
    create_secret(&env, "shop-db", &[("url", &db.url)]).await;
    create_secret(&env, "shop-broker", &[("url", &amqp)]).await;
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    apply_system(
        &env,
        "apiVersion: paysys.io/v1alpha1\nkind: PaymentSystem\nmetadata: {name: shop}\nspec:\n  \
         database:\n    external: {secretName: shop-db}\n  rabbitmq:\n    external: {secretName: shop-broker}",
    )
    .await;
    let ps = wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;

    let dir = std::env::temp_dir().join(unique_name("paysys-contract"));
    std::fs::create_dir_all(&dir).unwrap();
    let api = container(&env, "shop-payments-api", &dir).await;
    let risk = container(&env, "shop-risk-engine", &dir).await;
    assert_eq!(api.env.get("DATABASE_URL"), Some(&db.url));
    assert_eq!(risk.env.get("AMQP_URL"), Some(&amqp));
    let (api_port, risk_port) = (free_port(), free_port());
    let risk_log = dir.join("risk-engine.log");
    let api_log = dir.join("payments-api.log");
    let _risk = start(&risk, risk_port, &risk_log);
    let _api = start(&api, api_port, &api_log);
    let logs = || {
        format!(
            "payments-api log:\n{}\nrisk-engine log:\n{}",
            std::fs::read_to_string(&api_log).unwrap_or_default(),
            std::fs::read_to_string(&risk_log).unwrap_or_default()
        )
    };

    let ready = paysys_testkit::eventually(TIMEOUT, || async {
        let (api_status, _) = http(api_port, "GET", "/readyz", &[], "").await?;
        let (risk_status, _) = http(risk_port, "GET", "/readyz", &[], "").await?;
        (api_status == 200 && risk_status == 200).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "the services never became ready\n{}",
        logs()
    );

    // The API key the operator generated, read the way the README says.
    let key_secret = ps.status.unwrap().api_key_secret.expect("a generated key");
    let secret = Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .get(&key_secret)
        .await
        .unwrap();
    let key = String::from_utf8(secret.data.unwrap()["api-key"].0.clone()).unwrap();

    // The original demo's request.
    let body = r#"{"amount": 70.5, "currency": "USD",
        "userId": "6f1c0c8e-5b0e-4d8e-9f3a-2b7d1c9e4a10",
        "payeeId": "1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d",
        "paymentMethodId": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"}"#;
    let (status, answer) = http(
        api_port,
        "POST",
        "/payments",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &key),
        ],
        body,
    )
    .await
    .expect("an answer");
    assert_eq!(status, 201, "{answer}\n{}", logs());
    let created: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let id = created["PaymentId"].as_str().expect("PaymentId").to_owned();

    let decided = paysys_testkit::eventually(TIMEOUT, || async {
        let (status, body) = http(
            api_port,
            "GET",
            &format!("/payments/{id}"),
            &[("Authorization", &key)],
            "",
        )
        .await?;
        let payment: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && payment["decision"].is_object()).then_some(payment)
    })
    .await;
    let decided = decided.unwrap_or_else(|| panic!("payment {id} never decided\n{}", logs()));
    let outcome = decided["decision"]["outcome"].as_str().unwrap_or_default();
    assert!(
        ["approved", "declined"].contains(&outcome.to_ascii_lowercase().as_str()),
        "{decided}"
    );
    let line = format!("Payment {id} {}", outcome.to_ascii_lowercase());
    eventually("the risk engine's demo log line", TIMEOUT, || async {
        std::fs::read_to_string(&risk_log)
            .ok()?
            .contains(&line)
            .then_some(())
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
