//! A real single-node Kubernetes for end-to-end tests: etcd,
//! kube-apiserver, kube-controller-manager and kube-scheduler as host
//! processes, and a real kubelet whose CRI endpoint is keelson-agent in
//! front of the harness's containerd; Keelson's controller installed from
//! `deploy/` with kubectl, the agent in cluster mode with its
//! ServiceAccount's token. Binaries come from `integration/scripts/kube-build`.
//!
//! One cluster per test binary ([`shared`]); everything it started is
//! stopped when the process exits or the guard drops (processes, pods,
//! mounts, cgroups, the bridge). The kubectl and crictl helpers live in `kubectl.rs`.

pub mod bins;
pub mod control_plane;
pub mod install;
pub mod kubectl;
pub use kubectl::{container_ids, live_and_ready, name_of};
pub mod network;
pub mod node;
pub mod pki;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::activated::ActivatedAgent as Agent;
use crate::containerd::{Containerd, unmount_below};
use bins::Bins;
use control_plane::ControlPlane;
use network::{FIRST_SERVICE_IP, Network};
use node::{Kubelet, KubeletSpec};
use pki::{Credential, Pki, write_kubeconfig};

/// The node's name (kubelet's, the agent's `--node-name`).
pub const NODE: &str = "keelson-node";

/// The controller's feature gates in the test cluster unless a test says
/// otherwise: the shipped ones plus what OpenKruise ships off and the tests
/// exercise: the image pre-download of CloneSet / Advanced StatefulSet and
/// of Advanced DaemonSet, ResourceDistribution, the
/// PodUnavailableBudget's guard on in-place updates, deletion protection,
/// Advanced StatefulSet's `ordinals.start`.
pub const DEFAULT_GATES: &str = "ImagePullJobGate=true,PreDownloadImageForInPlaceUpdate=true,PreDownloadImageForDaemonSetUpdate=true,ResourceDistributionGate=true,PodUnavailableBudgetUpdateGate=true,ResourcesDeletionProtection=true,StatefulSetStartOrdinal=true";

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// The controller's `--feature-gates`.
    pub feature_gates: String,
    /// Install the controller (`kubectl apply -k` the test overlay).
    pub controller: bool,
    /// Put keelson-agent on kubelet's CRI path (else kubelet talks to
    /// containerd directly: the benchmark's baseline).
    pub agent: bool,
    /// The node as `deploy/` ships it: the host agent run as systemd runs
    /// it (its socket held by the activator, its binary installed under
    /// [`Cluster::host_root`] as node provisioning puts it there) with no
    /// cluster side of its own, and the agent DaemonSet applied (its
    /// image built here): the DaemonSet's pod brings the cluster side and
    /// upgrades the host binary. Otherwise the host agent runs the
    /// cluster side itself with a ServiceAccount token.
    pub agent_daemonset: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            feature_gates: DEFAULT_GATES.into(),
            controller: true,
            agent: true,
            agent_daemonset: false,
        }
    }
}

/// A running single-node cluster.
pub struct Cluster {
    pub bins: Bins,
    kubelet: Option<Kubelet>,
    agent: Mutex<Option<Agent>>,
    /// The host agent under its activator ([`Options::agent_daemonset`]).
    activated: Option<crate::activated::ActivatedAgent>,
    containerd: Option<Containerd>,
    control_plane: Option<ControlPlane>,
    network: Option<Network>,
    agent_kubeconfig: Option<PathBuf>,
    cri_socket: Option<PathBuf>,
    dir: tempfile::TempDir,
    /// Start-up time of each part, in order.
    pub startup: Vec<(String, Duration)>,
}

impl Cluster {
    /// Starts a cluster with the default options.
    pub fn start() -> crate::Result<Self> {
        Self::start_with(&Options::default())
    }

    /// Starts etcd, the control plane, containerd, (the agent,) kubelet,
    /// and (the controller), and waits until the node is Ready (and the
    /// controller serves its webhooks).
    pub fn start_with(opts: &Options) -> crate::Result<Self> {
        crate::require_runtime()?;
        let t_all = Instant::now();
        let bins = Bins::find()?;
        let dir = tempfile::Builder::new().prefix("keelson-kube-").tempdir()?;
        let mut me = Self {
            bins,
            kubelet: None,
            agent: Mutex::new(None),
            activated: None,
            containerd: None,
            control_plane: None,
            network: None,
            agent_kubeconfig: None,
            cri_socket: None,
            dir,
            startup: vec![],
        };
        let t = Instant::now();
        let containerd = Containerd::start(&crate::image_cache())?;
        me.startup.push(("containerd".into(), t.elapsed()));
        let tag = containerd
            .dir()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let network = Network::create(&tag, &containerd.dir().join("cni"), me.dir.path())?;
        let node_ip = network.node_ip();
        me.containerd = Some(containerd);
        me.network = Some(network);

        let t = Instant::now();
        let pki = Pki::generate(
            &me.dir.path().join("pki"),
            &[IpAddr::V4(node_ip), IpAddr::V4(FIRST_SERVICE_IP)],
            NODE,
        )?;
        me.startup.push(("certificates".into(), t.elapsed()));
        let cp = ControlPlane::start(&me.bins, me.dir.path(), &pki, node_ip)?;
        me.startup
            .extend(cp.startup.iter().map(|(n, d)| (n.to_string(), *d)));
        let server = cp.server.clone();
        let port: u16 = server
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("API server URL without port")?;
        me.control_plane = Some(cp);

        // Keelson as a user installs it: CRDs, RBAC, the controller.
        let t = Instant::now();
        // Node provisioning's part: the host agent installed and started
        // under its service manager before kubelet (the DaemonSet cannot
        // run before kubelet can start pods).
        let daemonset = if opts.agent_daemonset {
            let host_root = me.dir.path().join("host");
            let installed = host_root.join("usr/local/bin/keelson-agent");
            std::fs::create_dir_all(installed.parent().context("no parent")?)?;
            std::fs::copy(crate::agent::binary()?, &installed)?;
            let level = std::env::var("KEELSON_AGENT_LOG_LEVEL").unwrap_or_else(|_| "info".into());
            let agent = crate::activated::ActivatedAgent::start_binary(
                &installed,
                &me.containerd()?.socket(),
                &["--log-level", &level],
            )?;
            let spec = install::AgentDaemonSet {
                host_root,
                admin_socket: agent.admin_socket(),
            };
            me.activated = Some(agent);
            me.startup
                .push(("host agent (activated)".into(), t.elapsed()));
            Some(spec)
        } else {
            None
        };
        let t = Instant::now();
        let overlay = install::write_overlay(
            me.dir.path(),
            &node_ip.to_string(),
            port,
            &opts.feature_gates,
            daemonset.as_ref(),
        )?;
        if daemonset.is_some() {
            let tar = crate::images::build_program(
                &crate::image_cache(),
                &crate::agent::binary()?,
                install::AGENT_IMAGE,
            )?;
            crate::images::import(&me.containerd()?.socket(), &tar)?;
        }
        if opts.controller {
            let binary = crate::controller::binary()?;
            let tar = crate::images::build_program(
                &crate::image_cache(),
                &binary,
                install::CONTROLLER_IMAGE,
            )?;
            crate::images::import(&me.containerd()?.socket(), &tar)?;
            me.kubectl(&["apply", "-k", &overlay.display().to_string()])?;
        } else {
            // The CRDs and RBAC only (the agent needs its ServiceAccount).
            let rendered = me.kubectl(&["kustomize", &overlay.display().to_string()])?;
            let docs: Vec<&str> = rendered
                .split("\n---\n")
                .filter(|d| !d.contains("kind: Deployment"))
                .collect();
            me.apply_stdin(&docs.join("\n---\n"))?;
        }
        me.startup
            .push(("install (kubectl apply -k)".into(), t.elapsed()));

        let runtime_socket = if let Some(a) = &me.activated {
            a.socket()
        } else if opts.agent {
            let t = Instant::now();
            let token = me
                .kubectl(&[
                    "create",
                    "token",
                    "keelson-agent",
                    "-n",
                    "keelson-system",
                    "--duration=24h",
                ])?
                .trim()
                .to_string();
            let kubeconfig = me.dir.path().join("agent.kubeconfig");
            write_kubeconfig(
                &kubeconfig,
                &server,
                &pki.ca_cert,
                Credential::Token(&token),
            )?;
            let level = std::env::var("KEELSON_AGENT_LOG_LEVEL").unwrap_or_else(|_| "info".into());
            let agent = Agent::start(
                &me.containerd()?.socket(),
                &[
                    "--node-name",
                    NODE,
                    "--kubeconfig",
                    &kubeconfig.display().to_string(),
                    "--log-level",
                    &level,
                ],
            )?;
            me.agent_kubeconfig = Some(kubeconfig);
            let socket = agent.socket();
            *me.agent_guard() = Some(agent);
            me.startup.push(("keelson-agent".into(), t.elapsed()));
            socket
        } else {
            me.containerd()?.socket()
        };

        me.cri_socket = Some(runtime_socket.clone());
        let t = Instant::now();
        let env = me.containerd()?.pod_env();
        let kubelet = Kubelet::start(
            &me.bins,
            me.dir.path(),
            &pki,
            &KubeletSpec {
                node_name: NODE,
                node_ip,
                server: &server,
                runtime_socket: &runtime_socket,
                cgroup_root: &env.cgroup_root,
                pod_logs: &env.log_root,
            },
        )?;
        me.kubelet = Some(kubelet);
        me.wait_node_ready(Duration::from_secs(120))?;
        me.startup
            .push(("kubelet (node Ready)".into(), t.elapsed()));

        if daemonset.is_some() {
            let t = Instant::now();
            me.rolled_out("daemonset/keelson-agent")
                .with_context(|| me.diagnostics())?;
            me.startup
                .push(("keelson-agent DaemonSet (rolled out)".into(), t.elapsed()));
        }
        if opts.controller {
            let t = Instant::now();
            me.rolled_out("deployment/keelson-controller")
                .with_context(|| me.diagnostics())?;
            me.startup
                .push(("keelson-controller (rolled out)".into(), t.elapsed()));
        }
        me.startup.push(("cluster".into(), t_all.elapsed()));
        Ok(me)
    }

    fn containerd(&self) -> crate::Result<&Containerd> {
        self.containerd.as_ref().context("containerd stopped")
    }

    /// The harness's containerd.
    pub fn runtime(&self) -> crate::Result<&Containerd> {
        self.containerd()
    }

    /// The agent, under socket activation as systemd runs it (`None` when
    /// kubelet talks to containerd directly); held
    /// locked while the guard lives (to restart it, read its log).
    pub fn agent_guard(&self) -> MutexGuard<'_, Option<Agent>> {
        self.agent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        if let Some(a) = &self.activated {
            return a.log_text();
        }
        self.agent_guard()
            .as_ref()
            .map(Agent::log_text)
            .unwrap_or_default()
    }

    /// The agent's kubeconfig (its ServiceAccount token).
    pub fn agent_kubeconfig(&self) -> Option<&Path> {
        self.agent_kubeconfig.as_deref()
    }

    /// kubelet's log so far.
    pub fn kubelet_log(&self) -> String {
        self.kubelet
            .as_ref()
            .and_then(|k| std::fs::read_to_string(k.daemon.log()).ok())
            .unwrap_or_default()
    }

    /// The CRI socket kubelet was pointed at (the agent's, or containerd's).
    pub fn cri_socket(&self) -> Option<PathBuf> {
        self.cri_socket.clone()
    }

    /// The admin kubeconfig (system:masters).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// The node address (API server, kubelet, pods' gateway).
    pub fn node_ip(&self) -> Option<std::net::Ipv4Addr> {
        self.network.as_ref().map(Network::node_ip)
    }

    /// The directory with every component's log.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// Waits until `check` returns `Some` (polling every 200 ms), failing
    /// after `limit` with the cluster's diagnostics.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&Self) -> crate::Result<Option<T>>,
    ) -> crate::Result<T> {
        let deadline = Instant::now() + limit;
        let mut last_err = None;
        loop {
            if let Some(cp) = self.control_plane.as_ref() {
                cp.check_running()?;
            }
            if let Some(k) = self.kubelet.as_ref() {
                k.daemon.check_running()?;
            }
            match check(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last_err = Some(e),
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not within {limit:?} (last error: {last_err:?})\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_node_ready(&self, limit: Duration) -> crate::Result<()> {
        self.wait_for("node Ready", limit, |c| {
            let node = c.get_json(&["node", NODE])?;
            Ok(condition(&node, "Ready").then_some(()))
        })
    }

    /// Waits until pod `ns/name` is Ready; returns it.
    pub fn wait_pod_ready(&self, ns: &str, name: &str, limit: Duration) -> crate::Result<Value> {
        self.wait_for(&format!("pod {ns}/{name} Ready"), limit, |c| {
            let pod = c.get_json(&["-n", ns, "pod", name])?;
            Ok(condition(&pod, "Ready").then_some(pod))
        })
    }

    /// Waits until every container of pod `ns/name` runs (Ready or not);
    /// returns it.
    pub fn wait_pod_running(&self, ns: &str, name: &str, limit: Duration) -> crate::Result<Value> {
        self.wait_for(&format!("pod {ns}/{name} running"), limit, |c| {
            let pod = c.get_json(&["-n", ns, "pod", name])?;
            let running = pod["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|s| {
                    !s.is_empty() && s.iter().all(|s| s["state"].get("running").is_some())
                });
            Ok(running.then_some(pod))
        })
    }

    /// Stops kube-apiserver (SIGTERM); everything else keeps running.
    pub fn stop_apiserver(&self) -> crate::Result<()> {
        let cp = self
            .control_plane
            .as_ref()
            .context("control plane stopped")?;
        cp.apiserver.stop(Duration::from_secs(20));
        Ok(())
    }

    /// Starts kube-apiserver again at the same address and waits until it
    /// is ready.
    pub fn start_apiserver(&self) -> crate::Result<()> {
        let cp = self
            .control_plane
            .as_ref()
            .context("control plane stopped")?;
        cp.apiserver.start_again()?;
        self.wait_apiserver_ready()
    }

    /// A kube-apiserver crash: SIGKILL, started again at once (as its
    /// static pod or unit would be), back when `/readyz` says ok.
    pub fn crash_apiserver(&self) -> crate::Result<()> {
        self.crash(|cp| &cp.apiserver)
    }

    /// An etcd crash: SIGKILL, started again on the same data directory;
    /// back when the API server is ready again.
    pub fn crash_etcd(&self) -> crate::Result<()> {
        self.crash(|cp| &cp.etcd)
    }

    /// SIGKILL of one control-plane component, started again at once;
    /// back when the API server is ready.
    fn crash(&self, which: fn(&ControlPlane) -> &crate::proc::Daemon) -> crate::Result<()> {
        let cp = self
            .control_plane
            .as_ref()
            .context("control plane stopped")?;
        which(cp).kill();
        which(cp).start_again()?;
        self.wait_apiserver_ready()
    }

    fn wait_apiserver_ready(&self) -> crate::Result<()> {
        self.wait_for(
            "kube-apiserver ready again",
            Duration::from_secs(120),
            |c| {
                Ok(c.kubectl(&["get", "--raw", "/readyz"])
                    .ok()
                    .filter(|o| o.trim() == "ok")
                    .map(|_| ()))
            },
        )
    }

    /// What to print when something did not happen: pods, events and the
    /// tails of kubelet's, the agent's and the controller's logs.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        if let Ok(pods) = self.kubectl(&["get", "pods", "-A", "-o", "wide"]) {
            out += &format!("pods:\n{pods}\n");
        }
        if let Ok(ev) = self.kubectl(&["get", "events", "-A", "--sort-by=.lastTimestamp"]) {
            out += &format!("events:\n{}\n", crate::proc::last_lines(&ev, 25));
        }
        if let Some(k) = &self.kubelet {
            out += &format!("kubelet log tail:\n{}\n", k.daemon.log_tail(30));
        }
        if self.agent_guard().is_some() {
            out += &format!(
                "agent log tail:\n{}\n",
                crate::proc::last_lines(&self.agent_log(), 20)
            );
        }
        out += &format!("logs of every component: {}\n", self.log_dir().display());
        out
    }

    /// Stops everything: kubelet, the agent, the pods and containerd, the
    /// control plane, the bridge; unmounts what kubelet mounted.
    pub fn stop(&mut self) {
        self.keep_logs();
        if let Some(k) = self.kubelet.take() {
            k.daemon.stop(Duration::from_secs(10));
        }
        *self.agent_guard() = None;
        if let Some(mut a) = self.activated.take() {
            a.shut_down();
        }
        if let Some(mut c) = self.containerd.take() {
            c.teardown();
        }
        self.control_plane = None;
        self.network = None;
        unmount_below(self.dir.path());
    }

    /// With `KEELSON_KEEP_LOGS=<dir>`, copies every component's log (and
    /// the agent's) there before the cluster goes, for a look afterwards.
    fn keep_logs(&self) {
        let Some(to) = std::env::var_os("KEELSON_KEEP_LOGS").map(PathBuf::from) else {
            return;
        };
        let _ = std::fs::create_dir_all(&to);
        if let Ok(entries) = std::fs::read_dir(self.log_dir()) {
            for e in entries.flatten() {
                let _ = std::fs::copy(e.path(), to.join(e.file_name()));
            }
        }
        let _ = std::fs::write(to.join("keelson-agent.log"), self.agent_log());
        if let Some(c) = &self.containerd {
            let _ = std::fs::copy(c.log(), to.join("containerd.log"));
        }
    }

    /// A node reboot ([`Options::agent_daemonset`] clusters): kubelet, the
    /// host agent with its service manager's socket, containerd, its shims
    /// and every container killed at once, `/run`'s share cleared
    /// (containerd's state, the sockets); then containerd, the host agent
    /// under its activator (same binary path and state directory) and
    /// kubelet started again, as a booting node starts its units. Returns
    /// once kubelet reports the node Ready again (a heartbeat after the
    /// boot); its pods come back after that, through the agent.
    pub fn reboot(&self) -> crate::Result<()> {
        let agent = self
            .activated
            .as_ref()
            .context("reboot needs the host agent under its activator")?;
        let kubelet = self.kubelet.as_ref().context("no kubelet")?;
        kubelet.daemon.kill();
        agent.power_off();
        self.containerd()?.power_off();
        let booted = k8s_openapi::jiff::Timestamp::now();
        self.containerd()?.power_on()?;
        agent.power_on()?;
        kubelet.daemon.start_again()?;
        self.wait_for(
            "node Ready after the reboot",
            Duration::from_secs(120),
            |c| {
                let node = c.get_json(&["node", NODE])?;
                let fresh = node["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|cond| {
                        cond["type"] == "Ready"
                            && cond["status"] == "True"
                            && cond["lastHeartbeatTime"]
                                .as_str()
                                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                                .is_some_and(|t| t.as_second() >= booted.as_second())
                    });
                Ok(fresh.then_some(()))
            },
        )
    }

    /// The host agent under its activator ([`Options::agent_daemonset`]).
    pub fn activated(&self) -> Option<&crate::activated::ActivatedAgent> {
        self.activated.as_ref()
    }

    /// What stands for the host's `/` ([`Options::agent_daemonset`]).
    pub fn host_root(&self) -> PathBuf {
        self.dir.path().join("host")
    }

    /// Where the cluster's files are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `obj`'s status has condition `kind` with status True.
pub fn condition(obj: &Value, kind: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// The test binary's cluster: started by the first test that asks (the
/// others wait for it), shared by every test of the binary (each in its own
/// namespace), stopped when the process exits. A cluster that failed to
/// start fails every later caller at once with the same error.
pub fn shared() -> crate::Result<Arc<Cluster>> {
    static SHARED: Mutex<Option<Result<Arc<Cluster>, String>>> = Mutex::new(None);
    extern "C" fn stop_at_exit() {
        let cluster = SHARED.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(cluster);
    }
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        let started = Cluster::start().map(Arc::new).map_err(|e| format!("{e:#}"));
        if started.is_ok() {
            // SAFETY: registers a plain function with no arguments; it runs
            // once, on exit, after the test harness has returned.
            unsafe { libc::atexit(stop_at_exit) };
            if let Ok(c) = &started {
                eprintln!("test cluster up: {}", c.startup_summary());
            }
        }
        *slot = Some(started);
    }
    match slot.as_ref() {
        Some(Ok(c)) => Ok(c.clone()),
        Some(Err(e)) => bail!("the test cluster did not start: {e}"),
        None => bail!("the test cluster did not start"),
    }
}

/// A test's hold on the binary's shared cluster ([`shared`]) for its
/// group: tests of one group run together (as the harness schedules
/// them), tests of different groups never at the same time. One binary can
/// so hold tests that were written for a cluster of their own (cluster-wide
/// objects such as SidecarSets, ResourceDistributions, NodeImages) and pay
/// the cluster's start-up once. Derefs to the cluster.
pub struct Turn {
    cluster: Arc<Cluster>,
    group: &'static str,
}

/// Which group holds the cluster, and how many of its tests.
static TURN: (Mutex<(Option<&'static str>, usize)>, std::sync::Condvar) =
    (Mutex::new((None, 0)), std::sync::Condvar::new());

/// The shared cluster for a test of `group` (use `module_path!()`),
/// waiting while another group's tests hold it.
pub fn shared_in(group: &'static str) -> crate::Result<Turn> {
    let cluster = shared()?;
    let (lock, freed) = &TURN;
    let mut held = lock.lock().unwrap_or_else(|e| e.into_inner());
    while held.0.is_some_and(|g| g != group) {
        held = freed.wait(held).unwrap_or_else(|e| e.into_inner());
    }
    *held = (Some(group), held.1 + 1);
    Ok(Turn { cluster, group })
}

impl std::ops::Deref for Turn {
    type Target = Arc<Cluster>;
    fn deref(&self) -> &Arc<Cluster> {
        &self.cluster
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let (lock, freed) = &TURN;
        let mut held = lock.lock().unwrap_or_else(|e| e.into_inner());
        if held.0 == Some(self.group) {
            held.1 = held.1.saturating_sub(1);
            if held.1 == 0 {
                held.0 = None;
                freed.notify_all();
            }
        }
    }
}

impl Cluster {
    /// `part 1.2s, part 0.3s, …`.
    pub fn startup_summary(&self) -> String {
        self.startup
            .iter()
            .map(|(n, d)| format!("{n} {:.1}s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Creates namespace `name` (deleted again when the guard drops).
    pub fn namespace(self: &Arc<Self>, name: &str) -> crate::Result<Namespace> {
        self.kubectl(&["create", "namespace", name])?;
        Ok(Namespace {
            cluster: self.clone(),
            name: name.to_string(),
        })
    }
}

impl Cluster {
    /// A guard that deletes the cluster-scoped `kind/name` (e.g. a
    /// SidecarSet a test applied) when dropped.
    pub fn deleting(self: &Arc<Self>, kind: &str, name: &str) -> Deleting {
        Deleting {
            cluster: self.clone(),
            what: format!("{kind}/{name}"),
        }
    }
}

/// Deletes a cluster-scoped object (without waiting) when dropped.
pub struct Deleting {
    cluster: Arc<Cluster>,
    what: String,
}

impl Drop for Deleting {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl(&["delete", &self.what, "--ignore-not-found", "--wait=false"]);
    }
}

/// A test's namespace; deleted (without waiting) when dropped.
pub struct Namespace {
    cluster: Arc<Cluster>,
    pub name: String,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}
