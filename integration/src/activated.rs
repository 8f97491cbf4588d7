//! keelson-agent as systemd runs it on a node: the listening socket owned by
//! the service manager (`systemd-socket-activate`, as
//! `keelson-agent.socket`) and the agent started again whenever it exits (a
//! bounded loop standing in for `Restart=always` with a start limit). The
//! socket outlives every agent process, so its callers (kubelet) never see
//! it vanish.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use crate::proc::{pids_with_arg, signal, wait_until};

/// The activator (later the restart loop) and its agent.
pub struct ActivatedAgent {
    child: std::sync::Mutex<Option<Child>>,
    /// The activator's environment (the `-E` list) and its restart loop.
    env: Vec<(&'static str, PathBuf)>,
    restart_loop: PathBuf,
    dir: tempfile::TempDir,
}

impl ActivatedAgent {
    /// Starts the activator for an agent in front of `runtime` with `extra`
    /// arguments, and waits until the first agent serves.
    pub fn start(runtime: &Path, extra: &[&str]) -> crate::Result<Self> {
        Self::start_binary(&crate::agent::binary()?, runtime, extra)
    }

    /// [`Self::start`] of `binary` (read at every start, as systemd's
    /// `ExecStart`: an installer that replaces it upgrades the next start).
    pub fn start_binary(binary: &Path, runtime: &Path, extra: &[&str]) -> crate::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("keelson-agent-")
            .tempdir()?;
        let d = dir.path();
        let exec = d.join("exec.sh");
        let quoted: Vec<String> = extra
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        fs::write(
            &exec,
            format!(
                "#!/bin/sh\nexport LISTEN_PID=$$\nexec \"$AGENT\" --listen \"$SOCK\" --runtime-endpoint \"$RT\" --state-dir \"$STATE\" --admin-socket \"$STATE.admin.sock\" --shutdown-timeout-seconds 10 {}\n",
                quoted.join(" ")
            ),
        )?;
        let restart_loop = d.join("loop.sh");
        fs::write(
            &restart_loop,
            // Bounded, like systemd's StartLimitBurst, so a broken agent
            // cannot spin.
            "#!/bin/sh\nn=0\nwhile [ ! -e \"$STOP\" ] && [ $n -lt 20 ]; do n=$((n+1)); /bin/sh \"$EXEC\" >>\"$LOG\" 2>&1; echo \"agent exited: $?\" >>\"$LOG\"; done\n",
        )?;
        fs::set_permissions(&restart_loop, fs::Permissions::from_mode(0o755))?;
        let me_paths = Paths::of(d);
        // systemd-socket-activate passes only the environment given with -E.
        let env = [
            ("AGENT", binary.to_path_buf()),
            ("SOCK", me_paths.socket.clone()),
            ("RT", runtime.to_path_buf()),
            ("STATE", me_paths.state.clone()),
            ("STOP", me_paths.stop.clone()),
            ("EXEC", exec),
            ("LOG", me_paths.log.clone()),
        ];
        let me = Self {
            child: std::sync::Mutex::new(None),
            env: env.to_vec(),
            restart_loop,
            dir,
        };
        me.spawn()?;
        Ok(me)
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the activator (which binds the socket) and waits until the
    /// first agent runs.
    fn spawn(&self) -> crate::Result<()> {
        let sock = self.socket();
        let mut cmd = Command::new("systemd-socket-activate");
        cmd.arg("-l").arg(&sock);
        for (k, v) in &self.env {
            cmd.arg("-E").arg(format!("{k}={}", v.display()));
        }
        let child = {
            use std::os::unix::process::CommandExt;
            cmd.arg("--")
                .arg(&self.restart_loop)
                .process_group(0)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting systemd-socket-activate (package systemd)")?
        };
        *self.child() = Some(child);
        // The file appears at bind(), before listen(): wait until it
        // accepts; the first connection starts the agent.
        if !wait_until(Duration::from_secs(5), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        }) {
            bail!("activation socket {} does not accept", sock.display());
        }
        if !wait_until(Duration::from_secs(10), || self.pid().is_some()) {
            bail!("the agent did not start; log:\n{}", self.log_text());
        }
        Ok(())
    }

    /// What a power loss does: the service manager, its socket and the
    /// agent gone at once (SIGKILL; the socket file removed, as `/run` is
    /// empty after a reboot). The state directory stays (it is on disk).
    pub fn power_off(&self) {
        if let Some(mut c) = self.child().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        while let Some(pid) = self.pid() {
            signal(pid, Signal::SIGKILL);
            let _ = wait_until(Duration::from_secs(2), || self.pid() != Some(pid));
        }
        let _ = fs::remove_file(self.socket());
        let _ = fs::remove_file(self.admin_socket());
    }

    /// Boots the service manager's socket and the agent again, from the
    /// same binary path and state as before [`Self::power_off`].
    pub fn power_on(&self) -> crate::Result<()> {
        let _ = fs::remove_file(self.paths().stop);
        self.spawn()
    }

    fn paths(&self) -> Paths {
        Paths::of(self.dir.path())
    }

    /// The CRI socket (held by the activator).
    pub fn socket(&self) -> PathBuf {
        self.paths().socket
    }

    /// The admin API socket.
    pub fn admin_socket(&self) -> PathBuf {
        PathBuf::from(format!("{}.admin.sock", self.paths().state.display()))
    }

    /// Every agent's log, one after another.
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.paths().log).unwrap_or_default()
    }

    /// The running agent's pid.
    pub fn pid(&self) -> Option<u32> {
        let state = self.paths().state.display().to_string();
        pids_with_arg(&state).into_iter().find(|p| is_agent(*p))
    }

    /// Sends `sig` to the running agent and waits until its successor
    /// runs; returns the new pid.
    pub fn restart(&self, sig: Signal) -> crate::Result<u32> {
        let old = self.pid().context("no agent running")?;
        signal(old, sig);
        if !wait_until(Duration::from_secs(20), || {
            self.pid().is_some_and(|p| p != old)
        }) {
            bail!("the agent was not started again; log:\n{}", self.log_text());
        }
        self.pid().context("agent gone again")
    }

    /// Stops the loop, then the agent; true if the loop exited by itself.
    pub fn shut_down(&mut self) -> bool {
        let Some(mut child) = self.child().take() else {
            return true;
        };
        let _ = fs::write(self.paths().stop, b"");
        if let Some(pid) = self.pid() {
            signal(pid, Signal::SIGTERM);
        }
        let exited = wait_until(Duration::from_secs(15), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        while let Some(pid) = self.pid() {
            signal(pid, Signal::SIGKILL);
            let _ = wait_until(Duration::from_secs(2), || self.pid() != Some(pid));
        }
        exited
    }
}

impl Drop for ActivatedAgent {
    fn drop(&mut self) {
        self.shut_down();
    }
}

struct Paths {
    socket: PathBuf,
    state: PathBuf,
    stop: PathBuf,
    log: PathBuf,
}

impl Paths {
    fn of(d: &Path) -> Self {
        Self {
            socket: d.join("cri.sock"),
            state: d.join("state"),
            stop: d.join("stop"),
            log: d.join("agent.log"),
        }
    }
}

/// Whether `pid` runs the keelson-agent binary.
pub fn is_agent(pid: u32) -> bool {
    fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.file_name().is_some_and(|n| n == "keelson-agent"))
        .unwrap_or(false)
}
