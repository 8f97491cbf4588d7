//! The agent's listening socket: inherited from systemd (socket
//! activation) or bound by the agent itself, safely.
//!
//! Binding never removes a socket that a live process is serving: a
//! `<socket>.lock` file is held with `flock` for the agent's lifetime, and
//! an existing socket file is only replaced when nothing answers on it.
//! The socket is created under a temporary name, given its mode and group,
//! then renamed into place, so no caller ever sees it with a wider mode.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::{SFlag, fstat};
use nix::unistd::{Gid, Group, chown};

/// First file descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// Why the socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("LISTEN_FDS is set but invalid: {0}")]
    BadActivation(String),
    #[error("inherited fd {fd} is not a unix stream socket")]
    NotASocket { fd: i32 },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotSocketFile { path: PathBuf },
    #[error("another process is serving {path}; refusing to replace its socket")]
    InUse { path: PathBuf },
    #[error("another agent holds {lock}")]
    Locked { lock: PathBuf },
    #[error("group {0:?} does not exist")]
    NoSuchGroup(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Who may connect to a socket the agent binds itself.
#[derive(Debug, Clone, Default)]
pub struct SocketAccess {
    /// Group allowed to connect (mode 0660); `None` means root only (0600).
    pub group: Option<String>,
}

/// An open listening socket and how it came to be.
#[derive(Debug)]
pub enum Listening {
    /// Inherited from the service manager; it owns the path.
    Activated(StdUnixListener),
    /// Bound by the agent at `path`.
    Bound(BoundSocket),
}

/// A socket the agent bound; removes its file on drop if it is still ours.
#[derive(Debug)]
pub struct BoundSocket {
    listener: Option<StdUnixListener>,
    path: PathBuf,
    /// Identity of the file we created: inode plus change time, since a
    /// successor's socket may get the same inode number.
    identity: (u64, i64, i64),
    _lock: Flock<File>,
}

impl Listening {
    /// Takes the listener out (for the async runtime); for a bound socket the
    /// path guard stays behind in `self`.
    pub fn take(&mut self) -> io::Result<StdUnixListener> {
        match self {
            Listening::Activated(l) => l.try_clone(),
            Listening::Bound(b) => b
                .listener
                .take()
                .ok_or_else(|| io::Error::other("listener already taken")),
        }
    }

    /// Whether the socket came from socket activation.
    pub fn is_activated(&self) -> bool {
        matches!(self, Listening::Activated(_))
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        // Remove the file only if it is still the socket we created: a
        // successor may already have replaced it.
        if fs::symlink_metadata(&self.path).is_ok_and(|m| identity(&m) == self.identity) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Opens the listening socket: the inherited one when the process was
/// socket-activated, otherwise a freshly bound one at `path`.
pub fn open(path: &Path, access: &SocketAccess) -> Result<Listening, ListenError> {
    if let Some(listener) = from_activation()? {
        return Ok(Listening::Activated(listener));
    }
    bind(path, access).map(Listening::Bound)
}

/// The socket passed by systemd (`LISTEN_PID`/`LISTEN_FDS`), if any. The
/// variables are removed so children do not inherit them.
pub fn from_activation() -> Result<Option<StdUnixListener>, ListenError> {
    let (Ok(pid), Ok(fds)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(None);
    };
    let pid: u32 = pid
        .parse()
        .map_err(|_| ListenError::BadActivation(format!("LISTEN_PID={pid}")))?;
    if pid != std::process::id() {
        // Meant for another process (e.g. our parent shell): not ours.
        return Ok(None);
    }
    let count: i32 = fds
        .parse()
        .map_err(|_| ListenError::BadActivation(format!("LISTEN_FDS={fds}")))?;
    if count < 1 {
        return Ok(None);
    }
    if count > 1 {
        tracing::warn!(count, "several sockets passed; serving the first");
    }
    // SAFETY: removing variables while no other thread reads the environment
    // (called before the async runtime starts).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let fd = LISTEN_FDS_START;
    let is_socket = fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK)
        .unwrap_or(false);
    if !is_socket {
        return Err(ListenError::NotASocket { fd });
    }
    // SAFETY: systemd hands fd 3 to this process; nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| ListenError::Io {
        what: "setting close-on-exec on inherited fd",
        path: PathBuf::from(format!("fd:{fd}")),
        source: e.into(),
    })?;
    let listener = StdUnixListener::from(owned);
    listener
        .set_nonblocking(true)
        .map_err(|source| ListenError::Io {
            what: "setting non-blocking on inherited fd",
            path: PathBuf::from(format!("fd:{fd}")),
            source,
        })?;
    Ok(Some(listener))
}

/// Binds `path` with the requested access, replacing a stale socket file.
pub fn bind(path: &Path, access: &SocketAccess) -> Result<BoundSocket, ListenError> {
    let io_err = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| ListenError::Io {
            what,
            path: p,
            source,
        }
    };
    let gid = match &access.group {
        None => None,
        Some(name) => Some(
            Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid)
                .ok_or_else(|| ListenError::NoSuchGroup(name.clone()))?,
        ),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io_err("creating directory", dir))?;
    }

    let lock_path = sibling(path, ".lock");
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err("opening lock file", &lock_path))?;
    let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        ListenError::Locked {
            lock: lock_path.clone(),
        }
    })?;

    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ListenError::NotSocketFile { path: path.into() });
        }
        Ok(_) => match StdUnixStream::connect(path) {
            Ok(_) => return Err(ListenError::InUse { path: path.into() }),
            Err(err) => {
                tracing::info!(path = %path.display(), error = %err, "replacing stale socket");
            }
        },
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_err("inspecting", path)(err)),
    }

    let tmp = sibling(path, &format!(".tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let listener = StdUnixListener::bind(&tmp).map_err(io_err("binding", &tmp))?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    let finish = || -> Result<(u64, i64, i64), ListenError> {
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
            .map_err(io_err("setting mode of", &tmp))?;
        if let Some(gid) = gid {
            chown(&tmp, None, Some(Gid::from_raw(gid.as_raw())))
                .map_err(|e| io_err("setting group of", &tmp)(e.into()))?;
        }
        fs::rename(&tmp, path).map_err(io_err("renaming into place", path))?;
        let meta = fs::symlink_metadata(path).map_err(io_err("inspecting", path))?;
        Ok(identity(&meta))
    };
    let identity = match finish() {
        Ok(i) => i,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    listener
        .set_nonblocking(true)
        .map_err(io_err("setting non-blocking", path))?;
    Ok(BoundSocket {
        listener: Some(listener),
        path: path.into(),
        identity,
        _lock: lock,
    })
}

fn identity(meta: &fs::Metadata) -> (u64, i64, i64) {
    (meta.ino(), meta.ctime(), meta.ctime_nsec())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn binds_root_only_and_creates_parent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/cri.sock");
        let bound = bind(&path, &SocketAccess::default()).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
        drop(bound);
        assert!(!path.exists(), "socket file removed on drop");
    }

    #[test]
    fn group_gets_0660() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cri.sock");
        let root = Group::from_gid(Gid::from_raw(0)).unwrap().unwrap().name;
        let _bound = bind(&path, &SocketAccess { group: Some(root) }).unwrap();
        assert_eq!(mode(&path), 0o660);
        let err = bind(
            &dir.path().join("x.sock"),
            &SocketAccess {
                group: Some("no-such-group-keelson".into()),
            },
        )
        .unwrap_err();
        assert!(matches!(err, ListenError::NoSuchGroup(_)));
    }

    #[test]
    fn replaces_stale_socket_but_not_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cri.sock");
        // A stale socket: bound, then its listener closed.
        drop(StdUnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let bound = bind(&path, &SocketAccess::default()).unwrap();
        drop(bound);

        // A live socket served by someone else (no lock file involved).
        let other = dir.path().join("live.sock");
        let _live = StdUnixListener::bind(&other).unwrap();
        let err = bind(&other, &SocketAccess::default()).unwrap_err();
        assert!(matches!(err, ListenError::InUse { .. }), "{err}");
        assert!(other.exists());
    }

    #[test]
    fn second_agent_is_refused_by_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cri.sock");
        let _first = bind(&path, &SocketAccess::default()).unwrap();
        let err = bind(&path, &SocketAccess::default()).unwrap_err();
        assert!(matches!(err, ListenError::Locked { .. }), "{err}");
        assert!(path.exists(), "the first agent's socket is untouched");
    }

    #[test]
    fn refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cri.sock");
        fs::write(&path, b"not a socket").unwrap();
        let err = bind(&path, &SocketAccess::default()).unwrap_err();
        assert!(matches!(err, ListenError::NotSocketFile { .. }));
    }

    #[test]
    fn successor_socket_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cri.sock");
        let mut first = bind(&path, &SocketAccess::default()).unwrap();
        // Simulate a successor that replaced the file (after we lost the lock).
        drop(first.listener.take());
        fs::remove_file(&path).unwrap();
        let _succ = StdUnixListener::bind(&path).unwrap();
        drop(first);
        assert!(path.exists(), "a socket we did not create stays");
    }
}
