//! What the agent knows about the node's pods and containers, from CRI
//! data alone: sandboxes with their pod annotations (seen at
//! RunPodSandbox), containers with their name, env-derived settings and
//! pod (seen at CreateContainer), and container states (from runtime
//! events). Features read it; [`PodBookHook`] and [`follow_events`] keep it
//! current. The static part is kept in sled without waiting for the flush
//! (it is on kubelet's pod start path); a container the agent lost in a
//! crash is re-read from the runtime's verbose status on the next resync.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cri_proto as cri;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::backoff::{Backoff, Retry};
use crate::cri::methods::runtime as m;
use crate::cri::{After, Call, Hook, HookError, HookFuture, Interest, Outcome};
use crate::events::{RuntimeEvent, received};
use crate::kruise;
use crate::store::{Store, StoreError, Table};

/// Most sandboxes / containers remembered (far above any node's pods).
const LIMIT: usize = 100_000;

/// A pod sandbox as seen at RunPodSandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// Pod annotations Keelson reads (the rest are not kept).
    pub annotations: HashMap<String, String>,
}

/// A container as seen at CreateContainer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    /// Creation order on this node (for spec order under `Ordered`).
    pub seq: u64,
    /// Env values Keelson reads (the rest are not kept).
    pub env: HashMap<String, String>,
    /// Pod grace period from kubelet's container annotation, if present.
    pub grace_period_seconds: Option<i64>,
    /// The image as the pod spec names it (CRI's user-specified image,
    /// else the image the runtime was asked for).
    #[serde(default)]
    pub image: String,
}

/// A container's runtime state as far as the agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Created,
    /// Its StartContainer is on its way to the runtime.
    Starting,
    Running,
    Exited(i32),
}

fn kept_annotation(key: &str) -> bool {
    key == kruise::ANNOTATION_PRIORITIES
        || key == kruise::ANNOTATION_LAUNCH_PRIORITY
        || key == kruise::ANNOTATION_RESTART_POLICY
        || key == crate::restart::envdeps::ANNOTATION_ENV_FROM_METADATA
}

fn kept_env(key: &str) -> bool {
    key == kruise::ENV_CONTAINER_PRIORITY
        || key == kruise::ENV_TERMINATE_SIDECAR
        || key == kruise::ENV_TERMINATE_SIDECAR_IGNORE_EXIT_CODE
}

#[derive(Default)]
struct Inner {
    sandboxes: HashMap<String, Sandbox>,
    containers: HashMap<String, Container>,
    states: HashMap<String, State>,
    /// (sandbox id, container name) pairs that have run at least once.
    ever_started: std::collections::HashSet<(String, String)>,
    next_seq: u64,
}

/// The node's pods, shared by the features.
pub struct PodBook {
    inner: Mutex<Inner>,
    changed: Notify,
    sandboxes: Table<Sandbox>,
    containers: Table<Container>,
}

/// A snapshot of one pod: its sandbox and containers with their states.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodView {
    pub sandbox: Sandbox,
    /// Every container instance of the pod, in creation order.
    pub containers: Vec<(Container, State)>,
    /// Names that have run at least once in this pod.
    pub ever_started: Vec<String>,
}

impl PodView {
    /// The newest instance of container `name`.
    pub fn latest(&self, name: &str) -> Option<&(Container, State)> {
        self.containers.iter().rev().find(|(c, _)| c.name == name)
    }

    /// Container names in first-creation order.
    pub fn names(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for (c, _) in &self.containers {
            if !seen.contains(&c.name) {
                seen.push(c.name.clone());
            }
        }
        seen
    }
}

impl PodBook {
    /// Opens the book, reloading what sled kept.
    pub fn open(store: &Store) -> Result<Arc<Self>, StoreError> {
        let book = Self {
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
            sandboxes: store.table("pods.sandboxes", LIMIT)?,
            containers: store.table("pods.containers", LIMIT)?,
        };
        {
            let mut inner = book.lock();
            for entry in book.sandboxes.entries() {
                match entry {
                    Ok((id, s)) => {
                        inner.sandboxes.insert(id, s);
                    }
                    Err(e) => tracing::warn!(error = %e, "skipping unreadable sandbox record"),
                }
            }
            for entry in book.containers.entries() {
                match entry {
                    Ok((id, c)) => {
                        inner.next_seq = inner.next_seq.max(c.seq + 1);
                        inner.states.insert(id.clone(), State::Created);
                        inner.containers.insert(id, c);
                    }
                    Err(e) => tracing::warn!(error = %e, "skipping unreadable container record"),
                }
            }
        }
        Ok(Arc::new(book))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves once the book changes after this call (create the future,
    /// check your condition, then await it, so no change is missed).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    fn touch(&self) {
        self.changed.notify_waiters();
    }

    /// Wakes everyone waiting on [`PodBook::changed`] though the book did
    /// not change (a readiness source changed what they wait for).
    pub fn poke(&self) {
        self.touch();
    }

    /// The container with `id`, if known.
    pub fn container(&self, id: &str) -> Option<(Container, State)> {
        let inner = self.lock();
        let c = inner.containers.get(id)?.clone();
        let s = inner.states.get(id).copied().unwrap_or(State::Created);
        Some((c, s))
    }

    /// Ids of every known sandbox.
    pub fn sandbox_ids(&self) -> Vec<String> {
        self.lock().sandboxes.keys().cloned().collect()
    }

    /// Snapshots of every sandbox of pod `uid` (an in-place restart or a
    /// recreated sandbox leaves more than one).
    pub fn views_of(&self, uid: &str) -> Vec<PodView> {
        let ids: Vec<String> = self
            .lock()
            .sandboxes
            .values()
            .filter(|s| s.uid == uid)
            .map(|s| s.id.clone())
            .collect();
        ids.iter().filter_map(|id| self.pod(id)).collect()
    }

    /// A snapshot of the pod with sandbox `sandbox_id`.
    pub fn pod(&self, sandbox_id: &str) -> Option<PodView> {
        let inner = self.lock();
        let sandbox = inner.sandboxes.get(sandbox_id)?.clone();
        let mut containers: Vec<(Container, State)> = inner
            .containers
            .values()
            .filter(|c| c.sandbox_id == sandbox_id)
            .map(|c| {
                (
                    c.clone(),
                    inner.states.get(&c.id).copied().unwrap_or(State::Created),
                )
            })
            .collect();
        containers.sort_by_key(|(c, _)| c.seq);
        let ever_started = inner
            .ever_started
            .iter()
            .filter(|(s, _)| s == sandbox_id)
            .map(|(_, n)| n.clone())
            .collect();
        Some(PodView {
            sandbox,
            containers,
            ever_started,
        })
    }

    /// Records a sandbox (after RunPodSandbox succeeded).
    pub async fn add_sandbox(&self, sandbox: Sandbox) -> Result<(), StoreError> {
        self.sandboxes.put_lazy(&sandbox.id, &sandbox)?;
        self.lock().sandboxes.insert(sandbox.id.clone(), sandbox);
        self.touch();
        Ok(())
    }

    /// Records a container (after CreateContainer succeeded); assigns its
    /// creation order.
    pub async fn add_container(&self, mut container: Container) -> Result<(), StoreError> {
        {
            let mut inner = self.lock();
            container.seq = inner.next_seq;
            inner.next_seq += 1;
        }
        self.containers.put_lazy(&container.id, &container)?;
        let mut inner = self.lock();
        inner
            .states
            .entry(container.id.clone())
            .or_insert(State::Created);
        inner.containers.insert(container.id.clone(), container);
        drop(inner);
        self.touch();
        Ok(())
    }

    /// Sets a container's state (from an event or a resync).
    pub fn set_state(&self, id: &str, state: State) {
        let mut inner = self.lock();
        let Some(c) = inner.containers.get(id) else {
            return;
        };
        let key = (c.sandbox_id.clone(), c.name.clone());
        if state == State::Running {
            inner.ever_started.insert(key);
        }
        let current = inner.states.get(id).copied();
        tracing::debug!(container = %id, ?current, new = ?state, "container state");
        // A late "started" must not undo an exit already seen, and only a
        // created container can be starting.
        if matches!(current, Some(State::Exited(_)))
            && matches!(state, State::Running | State::Starting)
        {
            return;
        }
        if state == State::Starting && current != Some(State::Created) {
            return;
        }
        inner.states.insert(id.to_string(), state);
        drop(inner);
        self.touch();
    }

    /// Forgets a removed container.
    pub async fn remove_container(&self, id: &str) -> Result<(), StoreError> {
        self.containers.remove_lazy(id)?;
        let mut inner = self.lock();
        inner.containers.remove(id);
        inner.states.remove(id);
        drop(inner);
        self.touch();
        Ok(())
    }

    /// Forgets a removed sandbox and its containers.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), StoreError> {
        let ids: Vec<String> = self
            .lock()
            .containers
            .values()
            .filter(|c| c.sandbox_id == id)
            .map(|c| c.id.clone())
            .collect();
        for c in ids {
            self.remove_container(&c).await?;
        }
        self.sandboxes.remove_lazy(id)?;
        let mut inner = self.lock();
        inner.sandboxes.remove(id);
        inner.ever_started.retain(|(s, _)| s != id);
        drop(inner);
        self.touch();
        Ok(())
    }

    /// Brings states in line with the runtime's list (after a start-up or
    /// an event gap) and forgets what the runtime no longer has.
    pub async fn resync(
        &self,
        sandboxes: &[cri::PodSandbox],
        containers: &[cri::Container],
    ) -> Result<(), StoreError> {
        let live_sandboxes: std::collections::HashSet<&str> =
            sandboxes.iter().map(|s| s.id.as_str()).collect();
        let live: HashMap<&str, &cri::Container> =
            containers.iter().map(|c| (c.id.as_str(), c)).collect();
        let (gone_sandboxes, gone_containers): (Vec<String>, Vec<String>) = {
            let inner = self.lock();
            (
                inner
                    .sandboxes
                    .keys()
                    .filter(|id| !live_sandboxes.contains(id.as_str()))
                    .cloned()
                    .collect(),
                inner
                    .containers
                    .keys()
                    .filter(|id| !live.contains_key(id.as_str()))
                    .cloned()
                    .collect(),
            )
        };
        for id in gone_containers {
            self.remove_container(&id).await?;
        }
        for id in gone_sandboxes {
            self.remove_sandbox(&id).await?;
        }
        for c in containers {
            let state = match cri::ContainerState::try_from(c.state) {
                Ok(cri::ContainerState::ContainerRunning) => Some(State::Running),
                Ok(cri::ContainerState::ContainerCreated) => Some(State::Created),
                // The exit code is not in the list; keep a known one.
                Ok(cri::ContainerState::ContainerExited) => {
                    let known = self.lock().states.get(&c.id).copied();
                    match known {
                        Some(State::Exited(_)) => None,
                        _ => Some(State::Exited(-1)),
                    }
                }
                _ => None,
            };
            if let Some(s) = state {
                if s == State::Exited(-1) {
                    // It ran before it exited.
                    self.set_state(&c.id, State::Running);
                }
                self.set_state(&c.id, s);
            }
        }
        Ok(())
    }
}

/// Keeps the book current from the CRI calls kubelet makes.
pub struct PodBookHook {
    book: Arc<PodBook>,
}

impl PodBookHook {
    pub fn new(book: Arc<PodBook>) -> Self {
        Self { book }
    }
}

impl Hook for PodBookHook {
    fn name(&self) -> &str {
        "pod-book"
    }

    fn interest(&self) -> Interest {
        Interest {
            before: vec![],
            after: vec![
                m::RunPodSandbox,
                m::CreateContainer,
                m::RemoveContainer,
                m::RemovePodSandbox,
            ],
        }
    }

    fn after<'a>(&'a self, call: &'a Call, outcome: &'a Outcome) -> HookFuture<'a, After> {
        Box::pin(async move {
            if outcome.status.code != 0 {
                return Ok(After::Keep);
            }
            let store = |e: StoreError| HookError::Internal(e.to_string());
            match call.method() {
                m::RunPodSandbox => {
                    let req: cri::RunPodSandboxRequest = call.decode()?;
                    let Some(reply) = outcome.decode::<cri::RunPodSandboxResponse>()? else {
                        return Ok(After::Keep);
                    };
                    let config = req.config.unwrap_or_default();
                    self.book
                        .add_sandbox(sandbox_from(reply.pod_sandbox_id, &config))
                        .await
                        .map_err(store)?;
                }
                m::CreateContainer => {
                    let req: cri::CreateContainerRequest = call.decode()?;
                    let Some(reply) = outcome.decode::<cri::CreateContainerResponse>()? else {
                        return Ok(After::Keep);
                    };
                    let config = req.config.unwrap_or_default();
                    let pod_annotations = req.sandbox_config.unwrap_or_default().annotations;
                    let c = container_from(
                        reply.container_id,
                        req.pod_sandbox_id,
                        &config,
                        &pod_annotations,
                    );
                    self.book.add_container(c).await.map_err(store)?;
                }
                m::RemoveContainer => {
                    let req: cri::RemoveContainerRequest = call.decode()?;
                    self.book
                        .remove_container(&req.container_id)
                        .await
                        .map_err(store)?;
                }
                m::RemovePodSandbox => {
                    let req: cri::RemovePodSandboxRequest = call.decode()?;
                    self.book
                        .remove_sandbox(&req.pod_sandbox_id)
                        .await
                        .map_err(store)?;
                }
                _ => {}
            }
            Ok(After::Keep)
        })
    }
}

/// A sandbox record from its config.
pub fn sandbox_from(id: String, config: &cri::PodSandboxConfig) -> Sandbox {
    let meta = config.metadata.clone().unwrap_or_default();
    Sandbox {
        id,
        uid: meta.uid,
        name: meta.name,
        namespace: meta.namespace,
        annotations: config
            .annotations
            .iter()
            .filter(|(k, _)| kept_annotation(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// A container record from its config; `pod_annotations` tells which env
/// vars read pod metadata (their values are kept too).
pub fn container_from(
    id: String,
    sandbox_id: String,
    config: &cri::ContainerConfig,
    pod_annotations: &HashMap<String, String>,
) -> Container {
    let meta = config.metadata.clone().unwrap_or_default();
    let from_metadata = crate::restart::envdeps::env_names(pod_annotations, &meta.name);
    Container {
        id,
        sandbox_id,
        name: meta.name,
        attempt: meta.attempt,
        seq: 0,
        env: config
            .envs
            .iter()
            .filter(|kv| kept_env(&kv.key) || from_metadata.contains(&kv.key))
            .map(|kv| {
                (
                    kv.key.clone(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .collect(),
        grace_period_seconds: config
            .annotations
            .get(kruise::kubelet::POD_GRACE_PERIOD)
            .and_then(|v| v.parse().ok()),
        image: config
            .image
            .as_ref()
            .map(|i| {
                if i.user_specified_image.is_empty() {
                    i.image.clone()
                } else {
                    i.user_specified_image.clone()
                }
            })
            .unwrap_or_default(),
    }
}

/// Applies runtime events to the book until the feed closes; re-reads the
/// runtime's lists after every gap.
pub async fn follow_events(
    book: Arc<PodBook>,
    mut rx: tokio::sync::broadcast::Receiver<RuntimeEvent>,
    runtime: std::path::PathBuf,
) {
    while let Some(event) = received(rx.recv().await) {
        match event {
            RuntimeEvent::Started { container_id } => book.set_state(&container_id, State::Running),
            RuntimeEvent::Exited {
                container_id,
                exit_code,
            } => book.set_state(&container_id, State::Exited(exit_code)),
            RuntimeEvent::OutOfMemory { .. } => {}
            RuntimeEvent::Gap => resync_until_read(&book, &runtime).await,
        }
    }
}

/// How the re-read after a gap is retried. A containerd that has just
/// come back answers "server is not initialized yet" for a moment, and an
/// exit missed in the gap is known only from the re-read (a Job's main
/// exiting while containerd restarted left its sidecar running for good).
pub const RESYNC_RETRY: Backoff = Backoff {
    base: Duration::from_millis(200),
    max: Duration::from_secs(5),
    attempts: None,
};

/// Re-reads the runtime's lists into the book, retrying until it works.
async fn resync_until_read(book: &PodBook, runtime: &std::path::Path) {
    let mut retry = Retry::new(RESYNC_RETRY);
    while let Err(e) = resync_from_runtime(book, runtime).await {
        let delay = retry.failed().unwrap_or(RESYNC_RETRY.max);
        tracing::warn!(
            error = %e,
            attempt = retry.failures(),
            retry_in_ms = delay.as_millis() as u64,
            "re-reading runtime state failed; retrying"
        );
        tokio::time::sleep(delay).await;
    }
}

/// Lists sandboxes and containers from the runtime and resyncs the book.
pub async fn resync_from_runtime(book: &PodBook, runtime: &std::path::Path) -> Result<(), String> {
    let channel = containerd_client::connect(runtime)
        .await
        .map_err(|e| e.to_string())?;
    let mut client = cri::runtime_service_client::RuntimeServiceClient::new(channel);
    let sandboxes = client
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner()
        .items;
    let containers = client
        .list_containers(cri::ListContainersRequest::default())
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner()
        .containers;
    // Objects the book does not know (created before the agent started, or
    // lost in a crash) are learned from the runtime.
    for s in &sandboxes {
        if book.pod(&s.id).is_none() {
            let config = cri::PodSandboxConfig {
                metadata: s.metadata.clone(),
                annotations: s.annotations.clone(),
                ..Default::default()
            };
            book.add_sandbox(sandbox_from(s.id.clone(), &config))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let mut unknown: Vec<&cri::Container> = containers
        .iter()
        .filter(|c| book.container(&c.id).is_none())
        .collect();
    unknown.sort_by_key(|c| c.created_at);
    for c in unknown {
        let status = client
            .container_status(cri::ContainerStatusRequest {
                container_id: c.id.clone(),
                verbose: true,
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        let config = cri::ContainerConfig {
            metadata: c.metadata.clone(),
            envs: envs_from_verbose_info(&status.info),
            annotations: c.annotations.clone(),
            ..Default::default()
        };
        let pod_annotations = book
            .pod(&c.pod_sandbox_id)
            .map(|p| p.sandbox.annotations)
            .unwrap_or_default();
        book.add_container(container_from(
            c.id.clone(),
            c.pod_sandbox_id.clone(),
            &config,
            &pod_annotations,
        ))
        .await
        .map_err(|e| e.to_string())?;
    }
    book.resync(&sandboxes, &containers)
        .await
        .map_err(|e| e.to_string())?;
    // Lists carry no exit codes: ask for the ones the book lacks.
    for c in &containers {
        if book.container(&c.id).map(|(_, s)| s) == Some(State::Exited(-1)) {
            let status = client
                .container_status(cri::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await
                .ok()
                .and_then(|r| r.into_inner().status);
            if let Some(s) = status {
                book.set_state(&c.id, State::Exited(s.exit_code));
            }
        }
    }
    Ok(())
}

/// The env a container was created with, from containerd's verbose status
/// (`info` → JSON with the CRI config). Other runtimes: none.
pub fn envs_from_verbose_info(info: &HashMap<String, String>) -> Vec<cri::KeyValue> {
    let Some(json) = info.get("info") else {
        return vec![];
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return vec![];
    };
    v["config"]["envs"]
        .as_array()
        .map(|envs| {
            envs.iter()
                .filter_map(|e| {
                    Some(cri::KeyValue {
                        key: e["key"].as_str()?.to_string(),
                        value: e["value"].as_str().unwrap_or_default().as_bytes().to_vec(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(id: &str) -> Sandbox {
        Sandbox {
            id: id.into(),
            uid: "u".into(),
            name: "p".into(),
            namespace: "default".into(),
            annotations: HashMap::new(),
        }
    }

    fn container(id: &str, sandbox: &str, name: &str) -> Container {
        Container {
            id: id.into(),
            sandbox_id: sandbox.into(),
            name: name.into(),
            attempt: 0,
            seq: 0,
            env: HashMap::new(),
            grace_period_seconds: None,
            image: String::new(),
        }
    }

    #[tokio::test]
    async fn records_states_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let book = PodBook::open(&store).unwrap();
        book.add_sandbox(sandbox("s1")).await.unwrap();
        book.add_container(container("c1", "s1", "a"))
            .await
            .unwrap();
        book.add_container(container("c2", "s1", "b"))
            .await
            .unwrap();
        book.set_state("c1", State::Running);
        book.set_state("c1", State::Exited(3));
        book.set_state("c1", State::Running);
        let view = book.pod("s1").unwrap();
        assert_eq!(view.names(), vec!["a", "b"]);
        assert_eq!(
            view.latest("a").unwrap().1,
            State::Exited(3),
            "a late start does not undo an exit"
        );
        assert_eq!(view.ever_started, vec!["a".to_string()]);
        drop(book);
        let book = PodBook::open(&store).unwrap();
        let view = book.pod("s1").unwrap();
        assert_eq!(view.names(), vec!["a", "b"], "creation order kept");
        book.add_container(container("c3", "s1", "c"))
            .await
            .unwrap();
        assert!(book.container("c3").unwrap().0.seq > book.container("c2").unwrap().0.seq);
    }

    #[tokio::test]
    async fn a_failed_re_read_after_a_gap_is_retried_until_it_works() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let book = PodBook::open(&store).unwrap();
        let socket = dir.path().join("runtime.sock");
        // containerd just restarted: the first two calls are refused
        // (gRPC UNKNOWN, "server is not initialized yet"), then it answers.
        let (calls, server) = crate::testing::fake_runtime(&socket, |n| if n <= 2 { 2 } else { 0 });
        let (tx, rx) = tokio::sync::broadcast::channel(8);
        let follower = tokio::spawn(follow_events(book.clone(), rx, socket.clone()));
        tx.send(RuntimeEvent::Gap).unwrap();
        // Two refused ListPodSandbox calls, then ListPodSandbox and
        // ListContainers answered: the book was re-read.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while calls.load(std::sync::atomic::Ordering::Relaxed) < 4 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "re-read not retried: {} runtime calls",
                calls.load(std::sync::atomic::Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        follower.abort();
        server.abort();
    }

    #[tokio::test]
    async fn resync_forgets_removed_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let book = PodBook::open(&store).unwrap();
        book.add_sandbox(sandbox("s1")).await.unwrap();
        book.add_sandbox(sandbox("s2")).await.unwrap();
        book.add_container(container("c1", "s1", "a"))
            .await
            .unwrap();
        book.add_container(container("c2", "s2", "a"))
            .await
            .unwrap();
        let live_sb = vec![cri::PodSandbox {
            id: "s1".into(),
            ..Default::default()
        }];
        let live_c = vec![cri::Container {
            id: "c1".into(),
            state: cri::ContainerState::ContainerRunning as i32,
            ..Default::default()
        }];
        book.resync(&live_sb, &live_c).await.unwrap();
        assert!(book.pod("s2").is_none());
        assert!(book.container("c2").is_none());
        assert_eq!(book.container("c1").unwrap().1, State::Running);
        assert_eq!(
            store
                .table::<Container>("pods.containers", LIMIT)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn env_from_containerd_verbose_info() {
        let info = HashMap::from([(
            "info".to_string(),
            r#"{"config":{"envs":[{"key":"KRUISE_CONTAINER_PRIORITY","value":"2"},{"key":"A"}]}}"#
                .to_string(),
        )]);
        let envs = envs_from_verbose_info(&info);
        assert_eq!(envs.len(), 2);
        assert_eq!(
            (envs[0].key.as_str(), envs[0].value.as_slice()),
            ("KRUISE_CONTAINER_PRIORITY", &b"2"[..])
        );
        assert!(
            envs_from_verbose_info(&HashMap::from([("info".to_string(), "junk".to_string())]))
                .is_empty()
        );
    }

    #[test]
    fn records_keep_only_what_keelson_reads() {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "main".into(),
                attempt: 2,
            }),
            envs: vec![
                cri::KeyValue {
                    key: "SECRET".into(),
                    value: b"x".to_vec(),
                },
                cri::KeyValue {
                    key: kruise::ENV_CONTAINER_PRIORITY.into(),
                    value: b"5".to_vec(),
                },
            ],
            annotations: HashMap::from([(
                kruise::kubelet::POD_GRACE_PERIOD.to_string(),
                "7".to_string(),
            )]),
            ..Default::default()
        };
        let c = container_from("id".into(), "sb".into(), &config, &HashMap::new());
        assert_eq!(c.env.len(), 1, "other env values (secrets) are not stored");
        assert_eq!(c.env[kruise::ENV_CONTAINER_PRIORITY], "5");
        assert_eq!(
            (c.name.as_str(), c.attempt, c.grace_period_seconds),
            ("main", 2, Some(7))
        );
    }
}
