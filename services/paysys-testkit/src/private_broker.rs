//! A RabbitMQ node of the test's own, for faults the shared broker must not suffer: a
//! SIGKILL and restart of the broker itself with messages in flight, or a resource alarm
//! that blocks every publisher.
//!
//! It runs Debian's `rabbitmq-server` with its own node name, ports and data folder (kept
//! across restarts, as a real node's disk is). Ports avoid 35672-35682, which RabbitMQ's CLI
//! tools take for themselves.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{free_port, unique_name};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

pub struct PrivateBroker {
    node: String,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
}

/// Why a private broker is not available here.
pub fn unavailable() -> Option<String> {
    (!std::path::Path::new(SERVER).exists()).then(|| {
        format!("{SERVER} is missing: install Debian's rabbitmq-server (apt-get install rabbitmq-server)")
    })
}

impl PrivateBroker {
    /// Starts a node and waits until it accepts AMQP connections.
    pub async fn start() -> PrivateBroker {
        if let Some(why) = unavailable() {
            panic!("{why}");
        }
        let name = unique_name("paysys-test-broker");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("broker folder");
        let broker = PrivateBroker {
            node: format!("{name}@localhost"),
            port: port_outside_cli_range(),
            dist_port: port_outside_cli_range(),
            dir,
        };
        std::fs::write(broker.dir.join("enabled_plugins"), "[].\n").expect("plugins file");
        std::fs::write(
            broker.dir.join("rabbitmq.conf"),
            format!("listeners.tcp.1 = 127.0.0.1:{}\n", broker.port),
        )
        .expect("config file");
        broker.boot().await;
        broker
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// SIGKILLs the node: no clean shutdown, whatever was in flight is cut.
    pub fn kill(&self) {
        let pid = self.pid().expect("the node's pid file");
        // SAFETY: kill(2) with a pid read from the node's own pid file.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "node {} survived SIGKILL",
                self.node
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Raises a memory alarm (a high watermark of 0): the node blocks every connection that
    /// publishes, exactly as a real memory or disk alarm does, until [`Self::clear_alarm`].
    pub fn raise_memory_alarm(&self) {
        self.ctl(&["set_vm_memory_high_watermark", "0"]);
    }

    /// Clears the alarm [`Self::raise_memory_alarm`] raised (RabbitMQ's default watermark).
    pub fn clear_alarm(&self) {
        self.ctl(&["set_vm_memory_high_watermark", "0.4"]);
    }

    fn ctl(&self, args: &[&str]) {
        let output = Command::new(CTL)
            .args(["-n", &self.node])
            .args(args)
            .envs(self.environment())
            .output()
            .expect("run rabbitmqctl");
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the node again on the same data folder and waits until it accepts connections.
    pub async fn restart(&self) {
        self.boot().await;
    }

    async fn boot(&self) {
        let status = Command::new(SERVER)
            .arg("-detached")
            .envs(self.environment())
            .status()
            .expect("run rabbitmq-server");
        assert!(
            status.success(),
            "rabbitmq-server -detached failed: {status}"
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if paysys_amqp::connect(&self.url(), "readiness").await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "private RabbitMQ node {} did not start in 120 s; see {}",
                self.node,
                self.dir.join("log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn environment(&self) -> Vec<(&'static str, String)> {
        let path = |name: &str| self.dir.join(name).display().to_string();
        vec![
            ("RABBITMQ_NODENAME", self.node.clone()),
            ("RABBITMQ_NODE_PORT", self.port.to_string()),
            ("RABBITMQ_DIST_PORT", self.dist_port.to_string()),
            ("RABBITMQ_MNESIA_BASE", path("mnesia")),
            ("RABBITMQ_LOG_BASE", path("log")),
            ("RABBITMQ_PID_FILE", path("pid")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins")),
            ("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf")),
            // The Erlang cookie lives in $HOME; the node and nothing else uses this one.
            ("HOME", self.dir.display().to_string()),
        ]
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn port_outside_cli_range() -> u16 {
    loop {
        let port = free_port();
        if !(35672..=35682).contains(&port) {
            return port;
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // SAFETY: as in `kill`; a node already gone makes this a no-op.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
