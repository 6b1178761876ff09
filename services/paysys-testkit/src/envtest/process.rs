//! Child processes of the control plane that cannot outlive the test binary.
//!
//! Two guards, because a test binary ends in two ways:
//! - normally or with failed tests, through `exit()`: an `atexit` hook kills every child still
//!   registered and removes the control plane's folder;
//! - killed (SIGKILL, Ctrl-C): each child was started with `PR_SET_PDEATHSIG`, so the kernel
//!   kills it when its parent goes. The kernel means the parent *thread*, and test threads
//!   come and go, so every child is spawned from one supervisor thread that lives as long as
//!   the process.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    static IS_SUPERVISOR: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `job` on the supervisor thread (directly when already there) and returns its result.
pub fn on_supervisor<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> T {
    if IS_SUPERVISOR.get() {
        return job();
    }
    static SUPERVISOR: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let sender = SUPERVISOR.get_or_init(|| {
        let (sender, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("envtest-supervisor".into())
            .spawn(move || {
                IS_SUPERVISOR.set(true);
                jobs.into_iter().for_each(|job| job());
            })
            .expect("spawn the envtest supervisor thread");
        Mutex::new(sender)
    });
    let (done, result) = mpsc::sync_channel(1);
    sender
        .lock()
        .expect("not poisoned")
        .send(Box::new(move || {
            let _ = done.send(job());
        }))
        .expect("the supervisor thread runs for the whole process");
    result.recv().expect("the supervisor job finished")
}

/// What the exit hook cleans up: the pids still running and the folders to remove.
#[derive(Default)]
struct Leftovers {
    pids: Vec<u32>,
    dirs: Vec<PathBuf>,
}

fn leftovers() -> &'static Mutex<Leftovers> {
    static LEFTOVERS: OnceLock<Mutex<Leftovers>> = OnceLock::new();
    LEFTOVERS.get_or_init(|| {
        // SAFETY: registering a plain `extern "C" fn` with no captured state.
        unsafe { libc::atexit(clean_up_at_exit) };
        Mutex::default()
    })
}

extern "C" fn clean_up_at_exit() {
    let Ok(mut leftovers) = leftovers().lock() else {
        return;
    };
    for pid in leftovers.pids.drain(..) {
        // SAFETY: signalling a pid this process started and has not reaped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    for dir in leftovers.dirs.drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes `dir` when the process exits.
pub fn remove_at_exit(dir: &Path) {
    leftovers()
        .lock()
        .expect("not poisoned")
        .dirs
        .push(dir.to_owned());
}

/// A running child with its output going to `log`.
pub struct Process {
    pub name: &'static str,
    pub log: PathBuf,
    child: Child,
}

impl Process {
    /// Starts `program args` from the supervisor thread, stdout and stderr into `log`.
    pub fn start(
        name: &'static str,
        program: &Path,
        args: Vec<String>,
        log: PathBuf,
    ) -> anyhow::Result<Process> {
        let program = program.to_owned();
        let log_for_child = log.clone();
        let child = on_supervisor(move || -> anyhow::Result<Child> {
            let out = File::create(&log_for_child)?;
            let mut command = Command::new(&program);
            command
                .args(&args)
                .env_remove("ETCD_UNSUPPORTED_ARCH")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            command
                .spawn()
                .with_context(|| format!("cannot run {}", program.display()))
        })?;
        leftovers()
            .lock()
            .expect("not poisoned")
            .pids
            .push(child.id());
        Ok(Process { name, log, child })
    }

    /// Whether the process has exited (then it cannot become ready).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the exit.
    pub fn stop(mut self, grace: Duration) {
        let pid = self.child.id();
        // SAFETY: signalling our own, not yet reaped child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        leftovers()
            .lock()
            .expect("not poisoned")
            .pids
            .retain(|p| *p != pid);
    }
}
