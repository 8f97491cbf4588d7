//! The `keelson-controller` binary as a test process: started against a
//! kubeconfig, logs in a temp dir, killed when the guard drops.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// Where the built `keelson-controller` is: `$KEELSON_CONTROLLER_BIN`,
/// else next to the running test in cargo's target dir.
pub fn binary() -> crate::Result<PathBuf> {
    if let Some(p) = std::env::var_os("KEELSON_CONTROLLER_BIN") {
        return Ok(p.into());
    }
    built("keelson-controller")
}

/// Where the built `kubectl-keelson` plugin is (next to the controller).
pub fn plugin_binary() -> crate::Result<PathBuf> {
    built("kubectl-keelson")
}

/// A PATH directory with the plugin under both names users call it by
/// (`kubectl keelson`, `kubectl kruise`).
pub fn plugin_dir() -> crate::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let bin = plugin_binary()?;
    for name in ["kubectl-keelson", "kubectl-kruise"] {
        std::os::unix::fs::symlink(&bin, dir.path().join(name))?;
    }
    Ok(dir)
}

fn built(name: &str) -> crate::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} binary not found near {}: run `cargo build --workspace --bins` first (the README's test command does)",
        exe.display()
    )
}

/// A running controller process.
pub struct Controller {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Controller {
    /// Starts the controller with `KUBECONFIG=kubeconfig`, its metrics and
    /// webhook servers on free loopback ports (unless `extra` says where),
    /// and `extra` arguments.
    pub fn start(kubeconfig: &Path, extra: &[&str]) -> crate::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("keelson-controller-")
            .tempdir()?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("controller.log"))?;
        let mut args: Vec<&str> = vec!["--identity", "test-controller"];
        for (flag, default) in [
            ("--metrics-addr", "127.0.0.1:0"),
            ("--webhook-addr", "127.0.0.1:0"),
        ] {
            if !extra.contains(&flag) {
                args.extend([flag, default]);
            }
        }
        let child = Command::new(binary()?)
            .process_group(0)
            .args(args)
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting keelson-controller")?;
        Ok(Self {
            child: Some(child),
            dir,
        })
    }

    /// The whole log, for assertions and error messages.
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
