//! One service process: started from the built binary with its environment, logs to a file,
//! stopped gracefully (SIGTERM) or killed (SIGKILL), restarted with the same settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

/// Where cargo put the workspace's binaries: the directory above this test executable's
/// `deps/` (or beside a binary run directly).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let mut dir = exe.parent().expect("executable directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

pub struct Service {
    pub name: String,
    binary: PathBuf,
    env: BTreeMap<String, String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    pub fn new(name: &str, binary: PathBuf, env: BTreeMap<String, String>, log_dir: &Path) -> Self {
        Self {
            name: name.to_owned(),
            binary,
            env,
            log: log_dir.join(format!("{name}.log")),
            child: None,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.binary)
            .env_clear()
            .envs(&self.env)
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = std::process::Command::new("kill")
                .args([signal, &pid.to_string()])
                .status();
        }
    }

    /// SIGKILL: no chance to finish anything.
    pub async fn kill(&mut self) {
        self.signal("-KILL");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait().await;
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.signal("-TERM");
        let mut child = self.child.take()?;
        match tokio::time::timeout(std::time::Duration::from_secs(20), child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = child.kill().await;
                None
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid()?)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn port(&self) -> u16 {
        self.env["PORT"].parse().expect("PORT")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.signal("-KILL");
    }
}

/// Resident memory of a process in KiB, from /proc (Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}
