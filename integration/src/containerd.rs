//! A real containerd (Debian's package) in a temp dir with its own root,
//! state, sockets, runc root and CNI config, and a teardown that leaves no
//! process, mount or cgroup behind.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use crate::images::{self, Images, PAUSE};
use crate::proc::{pids_with_arg, signal, stop_child, wait_until};

/// Where a driver puts pods of this containerd: log dirs and the cgroup
/// parent (cgroupfs driver), both unique per harness instance.
#[derive(Debug, Clone)]
pub struct PodEnv {
    pub log_root: PathBuf,
    pub cgroup_root: String,
}

/// A running containerd and the temp dir it lives in.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: std::sync::Mutex<Option<Child>>,
    images: Images,
}

impl Containerd {
    /// Starts containerd with a fresh temp dir and the test images imported.
    /// `cache` is where built image layouts are kept between runs.
    pub fn start(cache: &Path) -> crate::Result<Self> {
        crate::require_runtime()?;
        let images = images::build(cache)?;
        let dir = tempfile::Builder::new().prefix("keelson-ctrd-").tempdir()?;
        let me = Self {
            dir,
            child: std::sync::Mutex::new(None),
            images,
        };
        me.write_config()?;
        me.spawn()?;
        me.images.import(&me.socket())?;
        Ok(me)
    }

    /// containerd's process id (0 while it is not running).
    pub fn pid(&self) -> u32 {
        self.child
            .lock()
            .map(|c| c.as_ref().map_or(0, Child::id))
            .unwrap_or(0)
    }

    /// containerd's gRPC socket (serves CRI too).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The temp dir (logs, pod log dirs, CNI config live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The test image set.
    pub fn images(&self) -> &Images {
        &self.images
    }

    /// Log and cgroup locations for pods started on this containerd.
    pub fn pod_env(&self) -> PodEnv {
        PodEnv {
            log_root: self.dir.path().join("pods"),
            cgroup_root: self.cgroup_root(),
        }
    }

    fn cgroup_root(&self) -> String {
        let name = self
            .dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        format!("keelson-it-{}", name.unwrap_or_default())
    }

    /// containerd's own log file.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    /// Makes the `unstoppable` runtime handler refuse to signal container
    /// `id` (`refuse`), or lets it again.
    pub fn refuse_kill(&self, id: &str, refuse: bool) -> crate::Result<()> {
        let flag = self.dir.path().join("refuse-kill").join(id);
        if refuse {
            fs::write(flag, b"")?;
        } else {
            let _ = fs::remove_file(flag);
        }
        Ok(())
    }

    /// Restarts containerd (running pods survive, as in production).
    pub fn restart(&self) -> crate::Result<()> {
        if let Some(mut c) = self.child().take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
        self.spawn()
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A containerd crash: the daemon alone is killed (SIGKILL) and
    /// started again at once; its shims and containers keep running, as
    /// when systemd restarts a crashed containerd.
    pub fn crash(&self) -> crate::Result<()> {
        self.kill_daemon();
        self.spawn()
    }

    /// SIGKILL of the containerd process alone (not its shims).
    fn kill_daemon(&self) {
        if let Some(mut c) = self.child().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What a power loss does to containerd: it, its shims and every
    /// container are killed (SIGKILL), and its state directory (on tmpfs
    /// on a real host, so empty after a reboot: tasks, sandbox network
    /// namespaces) is cleared. Its root (images, snapshots, container
    /// records) stays. [`Self::power_on`] starts it again.
    pub fn power_off(&self) {
        self.kill_daemon();
        let addr = self.socket().display().to_string();
        for pid in pids_with_arg(&addr) {
            signal(pid, Signal::SIGKILL);
        }
        let _ = wait_until(Duration::from_secs(5), || pids_with_arg(&addr).is_empty());
        kill_cgroup_members(&self.cgroup_root());
        let state = self.dir.path().join("state");
        unmount_below(&state);
        let _ = fs::remove_dir_all(&state);
        let _ = fs::create_dir_all(&state);
        let _ = fs::remove_file(self.socket());
    }

    /// Starts containerd after [`Self::power_off`].
    pub fn power_on(&self) -> crate::Result<()> {
        self.spawn()
    }

    fn write_config(&self) -> crate::Result<()> {
        let d = self.dir.path();
        for sub in [
            "root",
            "state",
            "opt",
            "runc",
            "cni",
            "certs.d",
            "pods",
            "refuse-kill",
        ] {
            fs::create_dir_all(d.join(sub))?;
        }
        // The `unstoppable` runtime handler: runc, except that it refuses
        // to signal the containers named in refuse-kill/ (a runtime that
        // cannot stop a container, for failure-path tests).
        let runc = crate::proc::run(Command::new("sh").args(["-c", "command -v runc"]))?;
        let wrapper = d.join("runc-unstoppable");
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nkill=0\nfor a in \"$@\"; do\n  [ \"$a\" = kill ] && kill=1\n  if [ $kill = 1 ] && [ -n \"$a\" ] && [ -e \"{dir}/$a\" ]; then\n    echo \"kill of $a refused by the test runtime\" >&2\n    exit 1\n  fi\ndone\nexec {runc} \"$@\"\n",
                dir = d.join("refuse-kill").display(),
                runc = runc.trim(),
            ),
        )?;
        fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let p = |s: &str| d.join(s).display().to_string();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  systemd_cgroup = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc}"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.unstoppable]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.unstoppable.options]
        SystemdCgroup = false
        Root = "{runc}"
        BinaryName = "{unstoppable}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
"#,
            root = p("root"),
            state = p("state"),
            sock = self.socket().display(),
            opt = p("opt"),
            pause = PAUSE,
            runc = p("runc"),
            cni = p("cni"),
            certs = p("certs.d"),
            unstoppable = p("runc-unstoppable"),
        );
        fs::write(d.join("config.toml"), config)?;
        Ok(())
    }

    fn spawn(&self) -> crate::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        let child = Command::new("containerd")
            // Own process group: a Ctrl-C in the terminal reaches only the
            // harness, which then stops this process itself.
            .process_group(0)
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        *self.child() = Some(child);
        let sock = self.socket();
        if !wait_until(Duration::from_secs(20), || sock.exists()) {
            bail!(
                "containerd did not create {} within 20 s; log:\n{}",
                sock.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// The last lines of containerd's log, for error messages.
    pub fn log_tail(&self) -> String {
        crate::proc::last_lines(&fs::read_to_string(self.log()).unwrap_or_default(), 30)
    }

    /// Stops every pod through CRI, then containerd, its shims, mounts and
    /// cgroups. Called on drop; safe to call twice.
    pub fn teardown(&mut self) {
        let sock = self.socket();
        if self.child().is_some() {
            let _ = stop_all_pods(&sock);
        }
        let child = self.child().take();
        if let Some(mut c) = child {
            stop_child(&mut c, Duration::from_secs(10));
        }
        // Shims run detached; they carry our socket address as an argument.
        let addr = sock.display().to_string();
        for pid in pids_with_arg(&addr) {
            signal(pid, Signal::SIGKILL);
        }
        let _ = wait_until(Duration::from_secs(5), || pids_with_arg(&addr).is_empty());
        // Whatever still runs in our pods' cgroups (containerd could not
        // stop it) is killed before the cgroups are removed.
        kill_cgroup_members(&self.cgroup_root());
        unmount_below(self.dir.path());
        remove_cgroups(&self.cgroup_root());
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Stops and removes every sandbox through CRI (best effort, bounded).
///
/// Runs on a thread of its own so it also works from inside a test's async
/// runtime.
fn stop_all_pods(sock: &Path) -> crate::Result<()> {
    let sock = sock.to_path_buf();
    std::thread::spawn(move || stop_all_pods_blocking(&sock))
        .join()
        .map_err(|_| anyhow::anyhow!("pod clean-up thread panicked"))?
}

fn stop_all_pods_blocking(sock: &Path) -> crate::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let fut = async {
            let (mut client, _) = crate::client::clients(sock).await?;
            let pods = client
                .list_pod_sandbox(cri_proto::ListPodSandboxRequest::default())
                .await?
                .into_inner()
                .items;
            for p in pods {
                let _ = client
                    .stop_pod_sandbox(cri_proto::StopPodSandboxRequest {
                        pod_sandbox_id: p.id.clone(),
                    })
                    .await;
                let _ = client
                    .remove_pod_sandbox(cri_proto::RemovePodSandboxRequest {
                        pod_sandbox_id: p.id,
                    })
                    .await;
            }
            Ok::<_, anyhow::Error>(())
        };
        tokio::time::timeout(Duration::from_secs(60), fut)
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("stopping pods timed out")))
    })
}

/// Unmounts every mount point under `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount)
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The cgroup trees named `name` under every mounted hierarchy.
fn cgroup_trees(name: &str) -> Vec<PathBuf> {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return vec![];
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "cgroup" || kind == "cgroup2").then(|| Path::new(point).join(name))
        })
        .filter(|p| p.is_dir())
        .collect()
}

/// SIGKILLs every process in the cgroup trees named `name`.
pub fn kill_cgroup_members(name: &str) {
    let mut pids = vec![];
    for tree in cgroup_trees(name) {
        collect_procs(&tree, &mut pids);
    }
    pids.sort_unstable();
    pids.dedup();
    for pid in &pids {
        signal(*pid, Signal::SIGKILL);
    }
    let _ = wait_until(Duration::from_secs(5), || {
        pids.iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists())
    });
}

fn collect_procs(dir: &Path, out: &mut Vec<u32>) {
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_procs(&e.path(), out);
            }
        }
    }
}

/// Removes the (empty) cgroup trees named `name` under every hierarchy.
pub fn remove_cgroups(name: &str) {
    for tree in cgroup_trees(name) {
        remove_tree(&tree);
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}
