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

use cri_proto as cri;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::kruise;
use crate::store::{Store, StoreError, Table};

mod follow;
mod hook;

pub use follow::{RESYNC_RETRY, envs_from_verbose_info, follow_events, resync_from_runtime};
pub use hook::{PodBookHook, container_from, sandbox_from};

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
        || key == crate::envdeps::ANNOTATION_ENV_FROM_METADATA
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
    /// Records added so far (sandboxes and containers), and when each id
    /// was added (by that count; records loaded from disk count as 0):
    /// a resync forgets only what was in the book before it listed.
    adds: u64,
    added_at: HashMap<String, u64>,
}

impl Inner {
    fn note_added(&mut self, id: &str) {
        self.adds += 1;
        self.added_at.insert(id.to_string(), self.adds);
    }

    /// Whether `id` was in the book at mark `mark`.
    fn added_before(&self, id: &str, mark: u64) -> bool {
        self.added_at.get(id).copied().unwrap_or(0) <= mark
    }
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
    /// How many containers the book holds.
    pub fn container_count(&self) -> usize {
        self.lock().containers.len()
    }

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
        let mut inner = self.lock();
        inner.note_added(&sandbox.id);
        inner.sandboxes.insert(sandbox.id.clone(), sandbox);
        drop(inner);
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
        inner.note_added(&container.id);
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
        inner.added_at.remove(id);
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
        inner.added_at.remove(id);
        inner.ever_started.retain(|(s, _)| s != id);
        drop(inner);
        self.touch();
        Ok(())
    }

    /// Where the book stands, to pass to [`PodBook::resync`] with lists
    /// read from the runtime after it.
    pub fn mark(&self) -> u64 {
        self.lock().adds
    }

    /// Brings states in line with the runtime's lists (after a start-up or
    /// an event gap; read after `listed_after` = [`PodBook::mark`]) and
    /// forgets what the runtime no longer has. What was added since the
    /// mark is kept: kubelet may have created it after the lists were read
    /// (forgetting it let a container start past the launch gate).
    pub async fn resync(
        &self,
        sandboxes: &[cri::PodSandbox],
        containers: &[cri::Container],
        listed_after: u64,
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
                    .filter(|id| inner.added_before(id, listed_after))
                    .cloned()
                    .collect(),
                inner
                    .containers
                    .keys()
                    .filter(|id| !live.contains_key(id.as_str()))
                    .filter(|id| inner.added_before(id, listed_after))
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
                // Only news to a container the book has no state for: an
                // event after the list may have moved it on already.
                Ok(cri::ContainerState::ContainerCreated) => {
                    (!self.lock().states.contains_key(&c.id)).then_some(State::Created)
                }
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
        let mark = book.mark();
        book.resync(&live_sb, &live_c, mark).await.unwrap();
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

    #[tokio::test]
    async fn a_resync_keeps_what_kubelet_created_after_the_lists_were_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let book = PodBook::open(&store).unwrap();
        book.add_sandbox(sandbox("s1")).await.unwrap();
        book.add_container(container("first", "s1", "first"))
            .await
            .unwrap();
        // The resync reads the runtime's lists here ...
        let mark = book.mark();
        let listed_sb = vec![cri::PodSandbox {
            id: "s1".into(),
            ..Default::default()
        }];
        let listed_c = vec![cri::Container {
            id: "first".into(),
            state: cri::ContainerState::ContainerCreated as i32,
            ..Default::default()
        }];
        // ... meanwhile kubelet creates a sandbox and a container, and
        // `first` starts ...
        book.add_sandbox(sandbox("s2")).await.unwrap();
        book.add_container(container("second", "s1", "second"))
            .await
            .unwrap();
        book.set_state("first", State::Running);
        // ... then the resync applies the lists.
        book.resync(&listed_sb, &listed_c, mark).await.unwrap();
        assert!(book.pod("s2").is_some(), "a sandbox created since is kept");
        assert!(
            book.container("second").is_some(),
            "a container created since is kept (the launch gate reads it)"
        );
        assert_eq!(
            book.container("first").unwrap().1,
            State::Running,
            "the list's older 'created' does not undo a start seen since"
        );
        // A later resync whose lists lack them does forget them.
        let mark = book.mark();
        book.resync(&listed_sb, &listed_c, mark).await.unwrap();
        assert!(book.pod("s2").is_none());
        assert!(book.container("second").is_none());
    }
}
