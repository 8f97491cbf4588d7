//! The `keelson-agent` binary under test: started against a runtime socket
//! with its own listen socket and state dir, stopped by signal.

use std::ffi::OsString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use crate::proc::{signal, wait_until};

/// A running agent process.
pub struct Agent {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// A command the binary runs under (e.g. valgrind), if any.
    wrapper: Vec<OsString>,
}

/// Where the built `keelson-agent` is: `$KEELSON_AGENT_BIN`, else next to
/// the running test or benchmark in cargo's target dir.
pub fn binary() -> crate::Result<PathBuf> {
    if let Some(p) = std::env::var_os("KEELSON_AGENT_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("keelson-agent");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "keelson-agent binary not found near {}: run `cargo build --workspace --bins` first (the README's test command does)",
        exe.display()
    )
}

impl Agent {
    /// Starts the agent in front of `runtime` and waits until it serves.
    pub fn start(runtime: &Path, extra: &[&str]) -> crate::Result<Self> {
        Self::start_under(&[], runtime, extra, Duration::from_secs(10))
    }

    /// Starts the agent under `wrapper` (a command and its arguments, e.g.
    /// valgrind; none: the binary itself) and waits up to `wait` until it
    /// serves.
    pub fn start_under(
        wrapper: &[OsString],
        runtime: &Path,
        extra: &[&str],
        wait: Duration,
    ) -> crate::Result<Self> {
        let mut me = Self::unstarted(wrapper)?;
        me.spawn(runtime, extra)?;
        me.wait_ready(wait)?;
        Ok(me)
    }

    /// Waits until the agent serves the CRI and its admin API: the CRI
    /// socket comes first (calls on hooked methods wait inside it until
    /// the features have loaded), the admin socket once they have.
    fn wait_ready(&self, wait: Duration) -> crate::Result<()> {
        for sock in [self.socket(), self.admin_socket()] {
            let served = wait_until(wait, || {
                std::os::unix::net::UnixStream::connect(&sock).is_ok()
            });
            if !served {
                bail!(
                    "agent did not serve {} within {wait:?}; log:\n{}",
                    sock.display(),
                    self.log_text()
                );
            }
        }
        Ok(())
    }

    fn unstarted(wrapper: &[OsString]) -> crate::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("keelson-agent-")
            .tempdir()?;
        Ok(Self {
            child: None,
            dir,
            wrapper: wrapper.to_vec(),
        })
    }

    /// Spawns the agent without waiting for its socket.
    pub fn start_nowait(runtime: &Path, extra: &[&str]) -> crate::Result<Self> {
        let mut me = Self::unstarted(&[])?;
        me.spawn(runtime, extra)?;
        Ok(me)
    }

    /// SIGKILLs the agent (no clean-up of any kind), then starts it again
    /// with the same socket path and state dir, and waits until it serves.
    pub fn kill_and_restart(&mut self, runtime: &Path, extra: &[&str]) -> crate::Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn(runtime, extra)?;
        self.wait_ready(Duration::from_secs(10))
    }

    fn spawn(&mut self, runtime: &Path, extra: &[&str]) -> crate::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary()?);
                c
            }
            None => Command::new(binary()?),
        };
        let child = cmd
            // Own process group: a Ctrl-C in the terminal reaches only the
            // harness, which then stops this process itself.
            .process_group(0)
            .arg("--listen")
            .arg(self.socket())
            .arg("--runtime-endpoint")
            .arg(runtime)
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--admin-socket")
            .arg(self.admin_socket())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting keelson-agent")?;
        self.child = Some(child);
        Ok(())
    }

    /// The agent's CRI socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("cri.sock")
    }

    /// The agent's state directory (its sled database: the pod book,
    /// journals).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The agent's admin API socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// The agent's log file.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// The whole log, for assertions and error messages.
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(&mut self) -> crate::Result<ExitStatus> {
        let mut child = self.child.take().context("agent not running")?;
        signal(child.id(), Signal::SIGTERM);
        for _ in 0..1000 {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        // What it was doing instead of exiting is at the end of its log.
        bail!(
            "agent ignored SIGTERM for 10 s; its log ends with:\n{}",
            crate::proc::last_lines(&self.log_text(), 20)
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
