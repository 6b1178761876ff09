//! A PostgreSQL server of the test's own, for faults the shared one must not suffer: a crash
//! of the server itself (`pg_ctl stop -m immediate`: every backend quits at once, nothing is
//! checkpointed, the next start replays the WAL) and a start again on the same data, as a
//! restarted pod or machine sees it. The fault proxy ([`crate::FaultProxy`]) only cuts
//! connections; here the server really goes away, and what it had committed must still be
//! there when it comes back.
//!
//! It runs Debian's binaries (`/usr/lib/postgresql/<version>/bin`, the newest installed):
//! `initdb` into a temporary folder, then `pg_ctl start` on a port of its own (TCP on
//! 127.0.0.1, its socket in that folder). PostgreSQL refuses to run as root, so when the tests
//! do, the server runs as the `postgres` user. Dropping it stops the server and deletes the
//! folder, also when the test panics.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::{TestDb, free_port, unique_name};

const BINARIES: &str = "/usr/lib/postgresql";

pub struct PrivatePostgres {
    bin: PathBuf,
    /// The test's folder: the data folder, the server's log and its socket.
    dir: PathBuf,
    port: u16,
    /// The `postgres` user's uid and gid, when the tests run as root.
    user: Option<(u32, u32)>,
}

/// The folder of the newest installed PostgreSQL's binaries.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(BINARIES)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Why a private PostgreSQL is not available here.
pub fn unavailable() -> Option<String> {
    binaries().is_none().then(|| {
        format!("no {BINARIES}/<version>/bin/initdb: install Debian's postgresql (apt-get install postgresql)")
    })
}

/// The uid and gid the server must run as: the `postgres` user's when this process is root
/// (`initdb` and `postgres` refuse root), else this process's own (`None`).
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam with a NUL-terminated name; the result is read at once (tests start
    // servers one at a time per process, and nothing else here calls getpw*).
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !entry.is_null(),
        "running as root, a private PostgreSQL needs the `postgres` user (PostgreSQL refuses root)"
    );
    // SAFETY: checked non-null above.
    Some(unsafe { ((*entry).pw_uid, (*entry).pw_gid) })
}

impl PrivatePostgres {
    /// Makes a cluster (trust authentication, superuser `postgres`) and starts it.
    pub async fn start() -> PrivatePostgres {
        if let Some(why) = unavailable() {
            panic!("{why}");
        }
        let server = PrivatePostgres {
            bin: binaries().expect("checked above"),
            dir: std::env::temp_dir().join(unique_name("paysys-test-postgres")),
            port: free_port(),
            user: server_user(),
        };
        std::fs::create_dir_all(&server.dir).expect("PostgreSQL folder");
        if let Some((uid, gid)) = server.user {
            std::os::unix::fs::chown(&server.dir, Some(uid), Some(gid))
                .expect("give the folder to the postgres user");
        }
        let data = server.data().display().to_string();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                // A test's cluster needs no flush to disk at creation.
                "--no-sync",
            ],
        );
        server.boot().await;
        server
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The server's own `postgres` database, as a [`TestDb`] (the whole server is the test's).
    pub fn database(&self) -> TestDb {
        TestDb {
            name: "postgres".into(),
            url: self.url("postgres"),
        }
    }

    /// Crashes the server: `pg_ctl stop -m immediate` makes every process quit at once, with
    /// no checkpoint and every connection cut; the next start recovers from the WAL.
    pub fn crash(&self) {
        let data = self.data().display().to_string();
        self.run("pg_ctl", &["stop", "-D", &data, "-m", "immediate", "-w"]);
    }

    /// Starts the server again on the same data and waits until it accepts connections.
    pub async fn restart(&self) {
        self.boot().await;
    }

    async fn boot(&self) {
        let data = self.data().display().to_string();
        let options = format!(
            // `fsync=off`: a crash of the server process loses nothing the operating system
            // already has (only a crash of the machine would), and the tests share two cores
            // and a disk.
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "start", "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            use sqlx::Connection;
            match sqlx::PgConnection::connect(&self.url("postgres")).await {
                Ok(connection) => {
                    let _ = connection.close().await;
                    return;
                }
                Err(error) => assert!(
                    Instant::now() < deadline,
                    "private PostgreSQL on port {} not accepting connections: {error}; see {log}",
                    self.port
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.env_remove("PGDATA").env("LC_ALL", "C");
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid).current_dir(&self.dir);
        }
        command
    }

    /// Runs one of the server's programs to completion; panics with its output if it failed.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// The postmaster's pid while the server runs.
    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let stopped = self
            .command("pg_ctl")
            .args(["stop", "-D", &data, "-m", "immediate", "-w"])
            .output()
            .is_ok_and(|output| output.status.success());
        if !stopped && let Some(pid) = self.pid() {
            // SAFETY: kill(2) with the pid the server wrote; its backends quit when their
            // postmaster dies.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;

    /// What was committed before the crash is there after the restart, and the server that
    /// was crashed refused connections in between.
    #[tokio::test]
    async fn a_crash_keeps_what_was_committed() {
        let server = PrivatePostgres::start().await;
        let url = server.url("postgres");
        let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE kept (n int)")
            .execute(&mut connection)
            .await
            .unwrap();
        sqlx::query("INSERT INTO kept VALUES (1), (2)")
            .execute(&mut connection)
            .await
            .unwrap();

        server.crash();
        assert!(
            sqlx::query("SELECT 1")
                .execute(&mut connection)
                .await
                .is_err(),
            "the open connection is cut"
        );
        assert!(
            sqlx::PgConnection::connect(&url).await.is_err(),
            "nothing listens while it is down"
        );

        server.restart().await;
        let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
        let sum: i64 = sqlx::query_scalar("SELECT sum(n) FROM kept")
            .fetch_one(&mut connection)
            .await
            .unwrap();
        assert_eq!(sum, 3);
        let dir = server.dir().to_owned();
        drop(server);
        assert!(!dir.exists(), "dropping it deletes its folder");
        assert!(
            sqlx::PgConnection::connect(&url).await.is_err(),
            "and stops it"
        );
    }
}
