//! `keelson-agent install`: puts this binary and the systemd units on a
//! host (under `--root`, the host's `/` as the DaemonSet pod mounts it)
//! and, when the running host agent is another binary, asks it to exit so
//! its service manager starts the new one. The socket stays with systemd
//! meanwhile, so kubelet's calls queue instead of failing. This is how the
//! DaemonSet upgrades the node's CRI proxy without ever sitting on the CRI
//! path itself.
//!
//! Every file is written next to its target and renamed over it, so a
//! crash or a kill leaves the old file or the new one, never half of one;
//! a file that already has the wanted content is left alone, so running
//! the installer again changes nothing.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cluster::node::NodeClient;

/// The units shipped in `systemd/`, as installed.
pub const UNITS: [(&str, &str); 2] = [
    (
        "keelson-agent.socket",
        include_str!("../../systemd/keelson-agent.socket"),
    ),
    (
        "keelson-agent.service",
        include_str!("../../systemd/keelson-agent.service"),
    ),
];

/// Where the binary goes (the units' `ExecStart`).
pub const BINARY: &str = "usr/local/bin/keelson-agent";
/// Where the units go.
pub const UNIT_DIR: &str = "etc/systemd/system";

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the host agent did not come back on the new binary within {0:?}")]
    NotBack(Duration),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |source| InstallError::Io { what, path, source }
}

/// What an install did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Installed {
    /// Files written (the others already had the content).
    pub written: Vec<PathBuf>,
    /// The running agent was asked to exit and came back.
    pub restarted_agent: bool,
    /// No agent answered on the admin socket.
    pub agent_not_running: bool,
}

/// Writes `content` to `path` unless it is there already: a temporary
/// file beside it, synced, given `mode`, renamed over it, and the
/// directory synced. Returns whether it wrote.
pub fn write_atomically(path: &Path, content: &[u8], mode: u32) -> Result<bool, InstallError> {
    if fs::read(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.keelson-new-{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(content).map_err(io("writing", &tmp))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io("setting the mode of", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        fs::rename(&tmp, path).map_err(io("renaming over", path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

/// The SHA-256 of a file, hex.
pub fn digest_of(path: &Path) -> Result<String, InstallError> {
    use sha2::Digest as _;
    let bytes = fs::read(path).map_err(io("reading", path))?;
    Ok(hex(&sha2::Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Installs `binary` (this program's own, usually) and the units under
/// `root`; then, when the agent on `admin` runs another binary than the
/// one installed, asks it to exit and waits up to `wait` for it to answer
/// again from the new one.
pub async fn install(
    root: &Path,
    binary: &Path,
    admin: &NodeClient,
    wait: Duration,
) -> Result<Installed, InstallError> {
    let mut done = Installed::default();
    let content = fs::read(binary).map_err(io("reading", binary))?;
    let target = root.join(BINARY);
    if write_atomically(&target, &content, 0o755)? {
        tracing::info!(path = %target.display(), bytes = content.len(), "binary installed");
        done.written.push(target.clone());
    }
    for (name, text) in UNITS {
        let path = root.join(UNIT_DIR).join(name);
        if write_atomically(&path, text.as_bytes(), 0o644)? {
            tracing::info!(path = %path.display(), "unit installed");
            done.written.push(path);
        }
    }
    let wanted = digest_of(&target)?;
    let running = match admin.version().await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(admin_socket = %admin.socket().display(), error = %e, "no host agent answers; the files are in place for systemd to start (systemctl enable --now keelson-agent.socket)");
            done.agent_not_running = true;
            return Ok(done);
        }
    };
    if running.binary_sha256 == wanted {
        tracing::info!(version = %running.version, "the host agent already runs this binary");
        return Ok(done);
    }
    let before = admin.changes(None, Duration::ZERO).await.ok();
    tracing::info!(from = %running.version, "asking the host agent to exit for the new binary");
    if let Err(e) = admin.exit().await {
        tracing::warn!(error = %e, "asking the host agent to exit failed");
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(v) = admin.version().await else {
            continue;
        };
        let rebooted = match (&before, admin.changes(None, Duration::ZERO).await) {
            (Some(b), Ok(now)) => b.boot != now.boot,
            _ => true,
        };
        if v.binary_sha256 == wanted && rebooted {
            tracing::info!(version = %v.version, "the host agent runs the new binary");
            done.restarted_agent = true;
            return Ok(done);
        }
    }
    Err(InstallError::NotBack(wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_atomically_with_the_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usr/local/bin/keelson-agent");
        assert!(write_atomically(&path, b"one", 0o755).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"one");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        assert!(
            !write_atomically(&path, b"one", 0o755).unwrap(),
            "same content: untouched"
        );
        // A reader holding the old file keeps it whole while the new one
        // replaces it (a rename, not a rewrite in place).
        let held = fs::File::open(&path).unwrap();
        assert!(write_atomically(&path, b"two, longer", 0o755).unwrap());
        let mut old = String::new();
        std::io::Read::read_to_string(&mut &held, &mut old).unwrap();
        assert_eq!(old, "one");
        assert_eq!(fs::read(&path).unwrap(), b"two, longer");
        let names: Vec<String> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["keelson-agent"]);
    }

    #[test]
    fn the_units_shipped_are_the_ones_installed() {
        let names: Vec<&str> = UNITS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["keelson-agent.socket", "keelson-agent.service"]);
        let service = UNITS[1].1;
        assert!(
            service.contains(&format!("ExecStart=/{BINARY} ")),
            "the service runs the installed binary"
        );
    }

    #[tokio::test]
    async fn without_a_running_agent_the_files_are_installed_and_that_is_said() {
        let root = tempfile::tempdir().unwrap();
        let binary = root.path().join("src-binary");
        fs::write(&binary, b"\x7fELF pretend").unwrap();
        let admin = NodeClient::new(&root.path().join("no-agent.sock"));
        let done = install(root.path(), &binary, &admin, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(done.agent_not_running);
        assert_eq!(done.written.len(), 3);
        let again = install(root.path(), &binary, &admin, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(again.written.is_empty(), "idempotent: {again:?}");
    }
}
