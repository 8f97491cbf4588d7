//! A CRI driver that calls the runtime the way kubelet does: a sandbox with
//! kubelet's labels and annotations, then CreateContainer + StartContainer
//! for each container in spec order, recording an error and going on to the
//! next container when one fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cri_proto as cri;
use tonic::Status;

use crate::client::{Images, Runtime, clients};
use crate::containerd::PodEnv;

/// Kubelet's label and annotation keys (pkg/kubelet/types/labels.go and
/// kuberuntime/labels.go upstream).
pub mod keys {
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
    pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
    pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
    pub const TERMINATION_MESSAGE_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";
    pub const GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
    pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
    pub const CONFIG_SEEN: &str = "kubernetes.io/config.seen";
}

/// One container of a pod spec.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Env vars from pod metadata: (name, fieldPath such as
    /// `metadata.annotations['k']`), resolved at creation as kubelet does.
    pub env_from_metadata: Vec<(String, String)>,
}

impl ContainerSpec {
    /// A busybox container running `sh -c script`.
    pub fn shell(name: &str, script: &str) -> Self {
        Self {
            name: name.into(),
            image: crate::images::BUSYBOX.into(),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec![],
            env_from_metadata: vec![],
        }
    }

    /// Adds an env var whose value kubelet takes from pod metadata.
    pub fn env_from(mut self, key: &str, field_path: &str) -> Self {
        self.env_from_metadata.push((key.into(), field_path.into()));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A pod as kubelet would receive it from the API server.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub host_network: bool,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    pub containers: Vec<ContainerSpec>,
    pub grace_period_seconds: i64,
    /// CRI runtime handler (RuntimeClass); empty for the default.
    pub runtime_handler: String,
}

impl PodSpec {
    /// A host-network pod in namespace `default` with a fresh uid.
    pub fn new(name: &str, containers: Vec<ContainerSpec>) -> Self {
        Self {
            name: name.into(),
            namespace: "default".into(),
            uid: fresh_uid(),
            host_network: true,
            labels: HashMap::new(),
            annotations: HashMap::new(),
            containers,
            grace_period_seconds: 30,
            runtime_handler: String::new(),
        }
    }

    /// Adds a pod annotation.
    pub fn annotate(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }
}

/// A started pod: the sandbox and what happened to each container.
#[derive(Debug)]
pub struct Pod {
    pub spec: PodSpec,
    pub sandbox_id: String,
    pub containers: Vec<ContainerRun>,
}

/// The outcome of creating and starting one container.
#[derive(Debug)]
pub struct ContainerRun {
    pub name: String,
    /// Set when CreateContainer succeeded.
    pub id: Option<String>,
    /// The first error from CreateContainer or StartContainer.
    pub error: Option<Status>,
}

impl Pod {
    /// The container id of `name`, if it was created.
    pub fn id(&self, name: &str) -> Option<&str> {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.id.as_deref())
    }
}

/// The driver: runtime and image clients plus where pod logs go.
pub struct Kubelet {
    pub runtime: Runtime,
    pub images: Images,
    env: PodEnv,
}

impl Kubelet {
    /// Connects to the CRI server at `socket`; pods get logs and cgroups
    /// where `env` says.
    pub async fn connect(socket: &Path, env: PodEnv) -> crate::Result<Self> {
        let (runtime, images) = clients(socket).await?;
        Ok(Self {
            runtime,
            images,
            env,
        })
    }

    /// The sandbox config kubelet would send for `spec`.
    pub fn sandbox_config(&self, spec: &PodSpec) -> cri::PodSandboxConfig {
        let mut labels = spec.labels.clone();
        labels.insert(keys::POD_NAME.into(), spec.name.clone());
        labels.insert(keys::POD_NAMESPACE.into(), spec.namespace.clone());
        labels.insert(keys::POD_UID.into(), spec.uid.clone());
        let mut annotations = spec.annotations.clone();
        // What the controller's pod webhook stamps: which env vars read pod
        // metadata (CRI carries only their values).
        let deps: HashMap<&str, HashMap<&str, &str>> = spec
            .containers
            .iter()
            .filter(|c| !c.env_from_metadata.is_empty())
            .map(|c| {
                (
                    c.name.as_str(),
                    c.env_from_metadata
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                )
            })
            .collect();
        if !deps.is_empty() {
            annotations.insert(
                "keelson.io/env-from-metadata".into(),
                serde_json::to_string(&deps).unwrap_or_default(),
            );
        }
        annotations.insert(keys::CONFIG_SOURCE.into(), "api".into());
        annotations.insert(keys::CONFIG_SEEN.into(), "2026-01-01T00:00:00Z".into());
        let network = if spec.host_network {
            cri::NamespaceMode::Node
        } else {
            cri::NamespaceMode::Pod
        };
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: spec.name.clone(),
                uid: spec.uid.clone(),
                namespace: spec.namespace.clone(),
                attempt: 0,
            }),
            // Kubelet leaves the hostname empty for host-network pods.
            hostname: if spec.host_network {
                String::new()
            } else {
                spec.name.clone()
            },
            log_directory: self.pod_log_dir(spec).display().to_string(),
            labels,
            annotations,
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}/pod{}", self.env.cgroup_root, spec.uid),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: network as i32,
                        pid: cri::NamespaceMode::Pod as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The container config kubelet would send for `c` (restart `attempt`).
    pub fn container_config(
        &self,
        spec: &PodSpec,
        c: &ContainerSpec,
        attempt: u32,
    ) -> cri::ContainerConfig {
        let labels = HashMap::from([
            (keys::POD_NAME.to_string(), spec.name.clone()),
            (keys::POD_NAMESPACE.to_string(), spec.namespace.clone()),
            (keys::POD_UID.to_string(), spec.uid.clone()),
            (keys::CONTAINER_NAME.to_string(), c.name.clone()),
        ]);
        let annotations = HashMap::from([
            (
                keys::CONTAINER_HASH.to_string(),
                format!("{:x}", simple_hash(&c.name)),
            ),
            (keys::RESTART_COUNT.to_string(), attempt.to_string()),
            (
                keys::TERMINATION_MESSAGE_PATH.to_string(),
                "/dev/termination-log".into(),
            ),
            (keys::TERMINATION_MESSAGE_POLICY.to_string(), "File".into()),
            (
                keys::GRACE_PERIOD.to_string(),
                spec.grace_period_seconds.to_string(),
            ),
        ]);
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: c.name.clone(),
                attempt,
            }),
            image: Some(cri::ImageSpec {
                image: c.image.clone(),
                user_specified_image: c.image.clone(),
                ..Default::default()
            }),
            command: c.command.clone(),
            envs: c
                .env
                .iter()
                .cloned()
                .chain(
                    c.env_from_metadata
                        .iter()
                        .map(|(k, path)| (k.clone(), resolve_field(spec, path))),
                )
                .map(|(k, v)| cri::KeyValue {
                    key: k,
                    value: v.into_bytes(),
                })
                .collect(),
            labels,
            annotations,
            log_path: format!("{}/{attempt}.log", c.name),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: if spec.host_network {
                            cri::NamespaceMode::Node as i32
                        } else {
                            cri::NamespaceMode::Pod as i32
                        },
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Runs the sandbox, then creates and starts each container in order,
    /// continuing after a failed one (as kubelet's SyncPod does).
    pub async fn run_pod(&mut self, spec: PodSpec) -> crate::Result<Pod> {
        let (sandbox_id, config) = self.run_sandbox(&spec).await?;
        let mut runs = Vec::new();
        for c in &spec.containers {
            runs.push(
                self.start_container(&spec, &sandbox_id, &config, c, 0)
                    .await,
            );
        }
        Ok(Pod {
            spec,
            sandbox_id,
            containers: runs,
        })
    }

    /// Creates the pod's log dir and runs its sandbox; returns the sandbox
    /// id and the config it was run with.
    async fn run_sandbox(
        &mut self,
        spec: &PodSpec,
    ) -> crate::Result<(String, cri::PodSandboxConfig)> {
        std::fs::create_dir_all(self.pod_log_dir(spec))?;
        let config = self.sandbox_config(spec);
        let sandbox_id = self
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: spec.runtime_handler.clone(),
            })
            .await
            .context("RunPodSandbox")?
            .into_inner()
            .pod_sandbox_id;
        Ok((sandbox_id, config))
    }

    /// CreateContainer for container `c` (restart `attempt`) of the pod.
    async fn create(
        &mut self,
        spec: &PodSpec,
        sandbox_id: &str,
        sandbox_config: &cri::PodSandboxConfig,
        c: &ContainerSpec,
        attempt: u32,
    ) -> Result<String, Status> {
        let config = self.container_config(spec, c, attempt);
        self.runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    /// CreateContainer + StartContainer for one container.
    pub async fn start_container(
        &mut self,
        spec: &PodSpec,
        sandbox_id: &str,
        sandbox_config: &cri::PodSandboxConfig,
        c: &ContainerSpec,
        attempt: u32,
    ) -> ContainerRun {
        let id = match self
            .create(spec, sandbox_id, sandbox_config, c, attempt)
            .await
        {
            Ok(id) => id,
            Err(error) => {
                return ContainerRun {
                    name: c.name.clone(),
                    id: None,
                    error: Some(error),
                };
            }
        };
        let error = self
            .runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .err();
        ContainerRun {
            name: c.name.clone(),
            id: Some(id),
            error,
        }
    }

    /// Stops and removes the pod's sandbox (and so its containers).
    pub async fn remove_pod(&mut self, pod: &Pod) -> crate::Result<()> {
        self.remove_sandbox(&pod.sandbox_id).await
    }

    /// StopPodSandbox then RemovePodSandbox, as kubelet tears a pod down.
    /// A failed stop is tried again, as kubelet's next sync does (just after
    /// a containerd restart, a shim's ttrpc connection can still read
    /// "closed" once).
    pub async fn remove_sandbox(&mut self, sandbox_id: &str) -> crate::Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let stopped = self
                .runtime
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: sandbox_id.into(),
                })
                .await;
            match stopped {
                Ok(_) => break,
                Err(e) if attempt < 5 && e.code() == tonic::Code::Unknown => {
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(e).context("StopPodSandbox"),
            }
        }
        self.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: sandbox_id.into(),
            })
            .await
            .context("RemovePodSandbox")?;
        Ok(())
    }

    /// Runs the sandbox and creates every container without starting any
    /// (for tests that start containers themselves); returns the sandbox id
    /// and the container ids by name.
    pub async fn create_unstarted(
        &mut self,
        spec: &PodSpec,
    ) -> crate::Result<(String, HashMap<String, String>)> {
        let (sandbox_id, sandbox_config) = self.run_sandbox(spec).await?;
        let mut ids = HashMap::new();
        for c in &spec.containers {
            let id = self
                .create(spec, &sandbox_id, &sandbox_config, c, 0)
                .await
                .context("CreateContainer")?;
            ids.insert(c.name.clone(), id);
        }
        Ok((sandbox_id, ids))
    }

    /// The container's status.
    pub async fn status(&mut self, id: &str) -> crate::Result<cri::ContainerStatus> {
        self.runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .context("ContainerStatus")?
            .into_inner()
            .status
            .context("ContainerStatus without status")
    }

    /// Polls until the container has exited; returns its final status.
    pub async fn wait_exited(
        &mut self,
        id: &str,
        timeout: Duration,
    ) -> crate::Result<cri::ContainerStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.status(id).await?;
            if st.state == cri::ContainerState::ContainerExited as i32 {
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!("container {id} still {:?} after {timeout:?}", st.state);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The text of the container's log file (CRI log format lines).
    pub fn log_of(&self, pod: &Pod, container: &str, attempt: u32) -> crate::Result<String> {
        let p = self
            .pod_log_dir(&pod.spec)
            .join(format!("{container}/{attempt}.log"));
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// Where kubelet keeps the pod's container logs.
    pub fn pod_log_dir(&self, spec: &PodSpec) -> PathBuf {
        self.env
            .log_root
            .join(format!("{}_{}_{}", spec.namespace, spec.name, spec.uid))
    }
}

/// The message part of CRI log lines (`<time> <stream> <tag> <message>`).
pub fn log_messages(cri_log: &str) -> Vec<String> {
    cri_log
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
        .collect()
}

fn simple_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// A pod uid unique within this machine's test runs.
pub fn fresh_uid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        std::process::id(),
        n & 0xffff,
        t & 0xffff_ffff_ffff
    )
}

/// A downward-API fieldPath resolved against the pod's current metadata
/// (a missing key gives "", as in kubelet).
fn resolve_field(spec: &PodSpec, path: &str) -> String {
    let lookup = |prefix: &str, map: &HashMap<String, String>| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(|k| map.get(k).cloned().unwrap_or_default())
    };
    lookup("metadata.annotations['", &spec.annotations)
        .or_else(|| lookup("metadata.labels['", &spec.labels))
        .unwrap_or_else(|| match path {
            "metadata.name" => spec.name.clone(),
            "metadata.namespace" => spec.namespace.clone(),
            "metadata.uid" => spec.uid.clone(),
            _ => String::new(),
        })
}

/// A pod's restartPolicy, as kubelet applies it to exited containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// A pod kubelet keeps in sync: its sandbox and every container instance
/// created for it.
#[derive(Debug)]
pub struct SyncedPod {
    pub spec: PodSpec,
    pub policy: RestartPolicy,
    pub sandbox_id: String,
    sandbox_config: cri::PodSandboxConfig,
    /// Every CreateContainer/StartContainer outcome, in order.
    pub history: Vec<ContainerRun>,
}

impl SyncedPod {
    /// Errors returned for container `name`, oldest first.
    pub fn errors(&self, name: &str) -> Vec<&Status> {
        self.history
            .iter()
            .filter(|r| r.name == name)
            .filter_map(|r| r.error.as_ref())
            .collect()
    }
}

/// The latest instance of each container of a sandbox, as the runtime
/// lists them (what kubelet's PLEG relist sees).
pub type Snapshot = HashMap<String, (String, i32, u32)>;

impl Kubelet {
    /// RunPodSandbox, then a first sync (containers created and started in
    /// spec order).
    pub async fn start_pod(
        &mut self,
        spec: PodSpec,
        policy: RestartPolicy,
    ) -> crate::Result<SyncedPod> {
        let (sandbox_id, sandbox_config) = self.run_sandbox(&spec).await?;
        let mut pod = SyncedPod {
            spec,
            policy,
            sandbox_id,
            sandbox_config,
            history: vec![],
        };
        self.sync(&mut pod).await?;
        Ok(pod)
    }

    /// The latest container instance per name in the pod: (id, state,
    /// attempt).
    pub async fn snapshot(&mut self, pod: &SyncedPod) -> crate::Result<Snapshot> {
        let list = self
            .runtime
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: pod.sandbox_id.clone(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers;
        let mut latest: HashMap<String, (String, i32, u32, i64)> = HashMap::new();
        for c in list {
            let name = c
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            let attempt = c.metadata.as_ref().map_or(0, |m| m.attempt);
            let newer = latest
                .get(&name)
                .is_none_or(|(_, _, a, t)| (attempt, c.created_at) > (*a, *t));
            if newer {
                latest.insert(name, (c.id, c.state, attempt, c.created_at));
            }
        }
        Ok(latest
            .into_iter()
            .map(|(n, (id, s, a, _))| (n, (id, s, a)))
            .collect())
    }

    /// One pod sync, as kubelet's SyncPod does it: every container that
    /// should run and does not is created and started, in spec order, going
    /// on after errors. Containers in "created" state are replaced (kubelet
    /// always restarts those); exited ones per the restart policy.
    pub async fn sync(&mut self, pod: &mut SyncedPod) -> crate::Result<()> {
        let snapshot = self.snapshot(pod).await?;
        let spec = pod.spec.clone();
        for c in &spec.containers {
            let start = match snapshot.get(&c.name) {
                None => Some(0),
                Some((_, state, attempt)) => {
                    let running = *state == cri::ContainerState::ContainerRunning as i32;
                    let exited = *state == cri::ContainerState::ContainerExited as i32;
                    if running {
                        None
                    } else if exited {
                        let id = &snapshot[&c.name].0;
                        let code = self.status(id).await.map(|s| s.exit_code).unwrap_or(0);
                        let again = match pod.policy {
                            RestartPolicy::Always => true,
                            RestartPolicy::OnFailure => code != 0,
                            RestartPolicy::Never => false,
                        };
                        again.then_some(attempt + 1)
                    } else {
                        Some(attempt + 1)
                    }
                }
            };
            if let Some(attempt) = start {
                let run = self
                    .start_container(&spec, &pod.sandbox_id, &pod.sandbox_config, c, attempt)
                    .await;
                pod.history.push(run);
            }
        }
        Ok(())
    }

    /// Keeps the pod in sync like kubelet's pod worker: PLEG relists every
    /// `relist` and a change since the previous relist triggers a sync; a
    /// sync that hit errors is retried after kubelet's 10 s backoff if no
    /// change comes first. Ends when `done` holds or `timeout` passes.
    pub async fn keep_synced(
        &mut self,
        pod: &mut SyncedPod,
        relist: Duration,
        timeout: Duration,
        mut done: impl FnMut(&Snapshot) -> bool,
    ) -> crate::Result<Snapshot> {
        const ERROR_BACKOFF: Duration = Duration::from_secs(10);
        let deadline = Instant::now() + timeout;
        // The relist before the pod existed saw nothing.
        let mut previous = Snapshot::new();
        let mut retry_at = pod
            .history
            .iter()
            .any(|r| r.error.is_some())
            .then(|| Instant::now() + ERROR_BACKOFF);
        loop {
            let now = self.snapshot(pod).await?;
            if done(&now) {
                return Ok(now);
            }
            if Instant::now() > deadline {
                bail!(
                    "pod {} not done within {timeout:?}; last snapshot {now:?}; history {:?}",
                    pod.spec.name,
                    pod.history
                );
            }
            let changed = now != previous;
            previous = now;
            if changed || retry_at.is_some_and(|t| Instant::now() >= t) {
                let errors_before = pod.history.iter().filter(|r| r.error.is_some()).count();
                self.sync(pod).await?;
                let failed =
                    pod.history.iter().filter(|r| r.error.is_some()).count() > errors_before;
                retry_at = failed.then(|| Instant::now() + ERROR_BACKOFF);
            }
            tokio::time::sleep(relist).await;
        }
    }

    /// Stops and removes a synced pod.
    pub async fn remove_synced(&mut self, pod: &SyncedPod) -> crate::Result<()> {
        self.remove_sandbox(&pod.sandbox_id).await
    }
}

/// Whether every container in `names` runs in the snapshot.
pub fn all_running(snapshot: &Snapshot, names: &[&str]) -> bool {
    names.iter().all(|n| {
        snapshot
            .get(*n)
            .is_some_and(|(_, s, _)| *s == cri::ContainerState::ContainerRunning as i32)
    })
}
