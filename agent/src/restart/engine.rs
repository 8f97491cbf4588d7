//! The restart engine: accepts requests, journals them in sled, and runs
//! them per pod, one after another in order of acceptance, with pods
//! running concurrently (bounded). Each run loops: observe the pod through
//! CRI, [`plan::step`], journal the new status (flushed) before acting,
//! act (stop a container) or wait for a runtime event or a timer.
//!
//! A request never blocks the next one on its pod once it has ended
//! (Completed, deadline passed, pod gone), which is where OpenKruise's
//! daemon lets later requests sit Pending. After an agent restart every
//! unfinished request resumes from its journal.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, broadcast, watch};

use super::plan::{self, Action, Observed, Record};
use super::runtime;
use super::spec::{
    Phase, PodRef, RestartContainer, RestartSpec, RestartStatus, SpecError, StatusContext,
};
use crate::backoff::{Backoff, Retry};
use crate::envdeps;
use crate::events::{RuntimeEvent, received};
use crate::pods::PodBook;
use crate::priority::Readiness;
use crate::runtime_conn::RuntimeConn;
use crate::store::{Store, StoreError, Table};

/// Longest wait between two looks at a pod that has a request running
/// (events usually come first).
const POLL: Duration = Duration::from_secs(2);
/// After a start event, how long CRI may still list the container as
/// created (containerd publishes the event before its CRI status says
/// running), and how often to look again meanwhile.
const START_SETTLE: Duration = Duration::from_secs(1);
const START_RECHECK: Duration = Duration::from_millis(25);
/// Retrying a failed observation of the pod (the runtime unreachable, or
/// reachable but failing its calls): 200 ms doubling to 5 s between
/// attempts, reset by a good observation; the request's own
/// `activeDeadlineSeconds` bounds it in time.
pub const OBSERVE_RETRY: Backoff = Backoff {
    base: Duration::from_millis(200),
    max: Duration::from_secs(5),
    attempts: None,
};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The features' shared runtime connection.
    pub runtime: RuntimeConn,
    /// Pods whose requests run at the same time.
    pub pods_at_once: usize,
    /// How long a finished request keeps its status when it names no
    /// `ttlSecondsAfterFinished`.
    pub default_ttl: Duration,
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("no ready pod on this node matches {0}")]
    PodNotFound(String),
    #[error("pod {pod} has no container named {name:?} on this node")]
    NoContainer { pod: String, name: String },
    #[error("runtime: {0}")]
    Runtime(String),
    #[error("{0}")]
    Metadata(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The id of the restart submitted under `key` ([`RestartSpec::key`]).
pub fn id_for_key(key: &str) -> String {
    crate::store::keyed_id("restart", key)
}

/// The node's in-place restart engine.
pub struct RestartEngine {
    /// Makes "not yet journaled under this key, so journal it" atomic.
    keyed: Mutex<()>,
    config: EngineConfig,
    journal: Table<Record>,
    book: Arc<PodBook>,
    events: broadcast::Sender<RuntimeEvent>,
    readiness: Arc<dyn Readiness>,
    slots: Semaphore,
    /// Pods (uids) with a worker.
    workers: Mutex<HashSet<String>>,
    changed: watch::Sender<u64>,
    seq: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RestartEngine {
    /// Opens the engine and resumes every unfinished request.
    /// `readiness` tells whether a recreated instance is ready (cluster
    /// mode reads the pod's status; standalone knows nothing, and running
    /// for `minStartedSeconds` is enough).
    pub fn start(
        config: EngineConfig,
        book: Arc<PodBook>,
        events: broadcast::Sender<RuntimeEvent>,
        readiness: Arc<dyn Readiness>,
        store: &Store,
    ) -> Result<Arc<Self>, StoreError> {
        let journal: Table<Record> = store.table("restarts.requests", 100_000)?;
        let seq = journal
            .entries()
            .filter_map(Result::ok)
            .map(|(_, r)| r.seq + 1)
            .max()
            .unwrap_or(0);
        let engine = Arc::new(Self {
            keyed: Mutex::new(()),
            slots: Semaphore::new(config.pods_at_once.max(1)),
            config,
            journal,
            book,
            events,
            readiness,
            workers: Mutex::new(HashSet::new()),
            changed: watch::channel(0).0,
            seq: AtomicU64::new(seq),
        });
        let mut pods = HashSet::new();
        for entry in engine.journal.entries() {
            match entry {
                Ok((id, r)) if !plan::finished(&r) => {
                    tracing::info!(restart = %id, pod = %r.status.pod.name, "resuming unfinished restart");
                    pods.insert(r.status.pod.uid.clone());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "skipping unreadable restart record"),
            }
        }
        for uid in pods {
            engine.ensure_worker(uid);
        }
        Ok(engine)
    }

    /// Validates a request, resolves its pod and the containers' current
    /// instances, journals it, and returns its id.
    pub async fn submit(self: &Arc<Self>, spec: RestartSpec) -> Result<String, SubmitError> {
        spec.validate()?;
        if let Some(id) = spec.key.as_deref().map(id_for_key)
            && self.journal.contains(&id)
        {
            tracing::debug!(restart = %id, "restart already accepted under this key");
            return Ok(id);
        }
        let mut rt = runtime::client(&self.config.runtime);
        let pod = runtime::resolve(&mut rt, &spec.pod)
            .await
            .map_err(SubmitError::Runtime)?
            .ok_or_else(|| SubmitError::PodNotFound(describe(&spec)))?;
        let names: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
        let seen = runtime::observe(&mut rt, &pod.uid, &names)
            .await
            .map_err(SubmitError::Runtime)?;
        let mut baselines = vec![];
        for c in &spec.containers {
            let baseline = match (&c.status_context, seen.containers.get(&c.name)) {
                (Some(given), _) => given.clone(),
                (None, Some(s)) => StatusContext {
                    container_id: format!("containerd://{}", s.id),
                    restart_count: s.restart_count,
                },
                (None, None) => {
                    return Err(SubmitError::NoContainer {
                        pod: format!("{}/{}", pod.namespace, pod.name),
                        name: c.name.clone(),
                    });
                }
            };
            baselines.push(Some(baseline));
        }
        let now = now_ms();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = match spec.key.as_deref() {
            Some(key) => id_for_key(key),
            None => format!("restart-{now:x}-{seq:x}"),
        };
        let uid = pod.uid.clone();
        let status = RestartStatus {
            id: id.clone(),
            pod,
            phase: Phase::Pending,
            accepted_unix_ms: now,
            started_unix_ms: None,
            completion_unix_ms: None,
            message: String::new(),
            container_recreate_states: vec![],
        };
        let record = plan::new_record(spec, status, baselines, seq);
        {
            // Two submissions of one key racing: the first to get here
            // journals it, the other returns its id.
            let _one = self.keyed.lock().unwrap_or_else(|e| e.into_inner());
            if record.spec.key.is_some() && self.journal.contains(&id) {
                return Ok(id);
            }
            self.journal.put_lazy(&id, &record)?;
        }
        self.journal.flush().await?;
        tracing::info!(restart = %id, pod = %record.status.pod.name, containers = ?names, "restart accepted");
        self.changed.send_modify(|v| *v += 1);
        self.ensure_worker(uid);
        Ok(id)
    }

    /// Applies new pod metadata for env-from-metadata containers: restarts
    /// (through one request) exactly the containers of pod
    /// `namespace/name` whose env would now differ from what they were
    /// created with. Returns the containers and the request id (`None`
    /// when nothing depends on the change).
    pub async fn update_metadata(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        update: &envdeps::MetadataUpdate,
    ) -> Result<(Vec<String>, Option<String>), SubmitError> {
        let pod_ref = PodRef {
            namespace: Some(namespace.to_string()),
            name: Some(name.to_string()),
            ..Default::default()
        };
        let mut rt = runtime::client(&self.config.runtime);
        let pod = runtime::resolve(&mut rt, &pod_ref)
            .await
            .map_err(SubmitError::Runtime)?
            .ok_or_else(|| SubmitError::PodNotFound(format!("{namespace}/{name}")))?;
        // What the pod book saw at RunPodSandbox / CreateContainer.
        let views: Vec<_> = self
            .book
            .sandbox_ids()
            .iter()
            .filter_map(|id| self.book.pod(id))
            .filter(|v| v.sandbox.uid == pod.uid)
            .collect();
        let Some(annotations) = views.first().map(|v| v.sandbox.annotations.clone()) else {
            return Err(SubmitError::PodNotFound(format!(
                "{namespace}/{name} (the agent has not seen it start)"
            )));
        };
        let deps = envdeps::dependencies(&annotations).map_err(SubmitError::Metadata)?;
        let mut created: HashMap<String, (u64, HashMap<String, String>)> = HashMap::new();
        for (c, _) in views.iter().flat_map(|v| v.containers.iter()) {
            if created.get(&c.name).is_none_or(|(seq, _)| c.seq > *seq) {
                created.insert(c.name.clone(), (c.seq, c.env.clone()));
            }
        }
        let created = created.into_iter().map(|(n, (_, env))| (n, env)).collect();
        let containers = envdeps::affected(&deps, &created, update);
        if containers.is_empty() {
            return Ok((containers, None));
        }
        tracing::info!(pod = %name, namespace = %namespace, containers = ?containers, "pod metadata changed env; restarting");
        let spec = RestartSpec {
            key: None,
            pod: PodRef {
                uid: Some(pod.uid),
                ..Default::default()
            },
            containers: containers
                .iter()
                .map(|n| RestartContainer {
                    name: n.clone(),
                    pre_stop: None,
                    status_context: None,
                })
                .collect(),
            strategy: Default::default(),
            active_deadline_seconds: None,
            ttl_seconds_after_finished: None,
        };
        let id = self.submit(spec).await?;
        Ok((containers, Some(id)))
    }

    /// Ticks whenever a request's status changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The status of request `id`.
    pub fn status(&self, id: &str) -> Option<RestartStatus> {
        self.journal.get(id).ok().flatten().map(|r| r.status)
    }

    /// Every known request, oldest first.
    pub fn list(&self) -> Vec<RestartStatus> {
        let mut all: Vec<Record> = self
            .journal
            .entries()
            .filter_map(Result::ok)
            .map(|(_, r)| r)
            .collect();
        all.sort_by_key(|r| (r.status.accepted_unix_ms, r.seq));
        all.into_iter().map(|r| r.status).collect()
    }

    /// Waits until request `id` has ended (or is unknown).
    pub async fn wait(&self, id: &str) -> Option<RestartStatus> {
        let mut rx = self.changed.subscribe();
        loop {
            let s = self.status(id)?;
            if s.phase == Phase::Completed {
                return Some(s);
            }
            if rx.changed().await.is_err() {
                return self.status(id);
            }
        }
    }

    /// Forgets ended requests whose TTL has passed; returns how many.
    pub async fn collect_garbage(&self) -> Result<usize, StoreError> {
        let now = now_ms();
        let default_ttl = self.config.default_ttl.as_millis() as u64;
        self.journal
            .retain(|_, r| {
                let ttl = r
                    .spec
                    .ttl_seconds_after_finished
                    .map_or(default_ttl, |s| s.max(0) as u64 * 1000);
                r.status
                    .completion_unix_ms
                    .is_none_or(|t| t.saturating_add(ttl) > now)
            })
            .await
    }

    fn ensure_worker(self: &Arc<Self>, uid: String) {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if workers.insert(uid.clone()) {
            tokio::spawn(self.clone().pod_worker(uid));
        }
    }

    /// The oldest unfinished request of pod `uid`.
    fn next_for(&self, uid: &str) -> Option<String> {
        self.journal
            .entries()
            .filter_map(Result::ok)
            .filter(|(_, r)| r.status.pod.uid == uid && !plan::finished(r))
            .min_by_key(|(_, r)| (r.status.accepted_unix_ms, r.seq))
            .map(|(id, _)| id)
    }

    /// Runs pod `uid`'s requests one after another until none is left.
    async fn pod_worker(self: Arc<Self>, uid: String) {
        let _slot = self.slots.acquire().await;
        loop {
            let next = {
                let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
                let next = self.next_for(&uid);
                if next.is_none() {
                    workers.remove(&uid);
                }
                next
            };
            let Some(id) = next else { return };
            self.drive(&id).await;
        }
    }

    async fn save(&self, id: &str, r: &Record) {
        if let Err(e) = self.journal.put(id, r).await {
            tracing::warn!(restart = %id, error = %e, "cannot journal restart status");
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Runs request `id` to its end.
    async fn drive(&self, id: &str) {
        let mut events = self.events.subscribe();
        let mut rt: Option<runtime::Client> = None;
        let mut settling_until: Option<tokio::time::Instant> = None;
        let mut retry = Retry::new(OBSERVE_RETRY);
        loop {
            let Some(mut rec) = self.journal.get(id).ok().flatten() else {
                return;
            };
            if plan::finished(&rec) {
                return;
            }
            let names: Vec<String> = rec.spec.containers.iter().map(|c| c.name.clone()).collect();
            if rt.is_none() {
                rt = Some(runtime::client(&self.config.runtime));
            }
            let observed = match &mut rt {
                Some(client) => runtime::observe(client, &rec.status.pod.uid, &names).await,
                None => Err("runtime unreachable".to_string()),
            };
            let now = now_ms();
            let observed = match observed {
                Ok(mut o) => {
                    retry.succeeded();
                    for (name, seen) in &mut o.containers {
                        seen.ready =
                            self.readiness
                                .instance_ready(&rec.status.pod.uid, name, &seen.id);
                    }
                    o
                }
                Err(e) => {
                    // No client until the next observation (the shared
                    // connection remakes itself; `None` only marks the
                    // runtime as not answering, so a stop planned now is
                    // not sent), and wait first in any case: a runtime
                    // that accepts the connection but fails the calls must
                    // not make this a busy loop.
                    rt = None;
                    if plan::deadline(&rec).is_none_or(|d| now < d) {
                        let delay = retry.failed().unwrap_or(OBSERVE_RETRY.max);
                        if retry.failures() == 1 {
                            tracing::warn!(restart = %id, error = %e, retry_in_ms = delay.as_millis() as u64, "observing the pod failed; retrying with backoff");
                        } else {
                            tracing::debug!(restart = %id, error = %e, failures = retry.failures(), retry_in_ms = delay.as_millis() as u64, "observing the pod failed again");
                        }
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    // The deadline is kept even without the runtime.
                    Observed {
                        pod_present: true,
                        ..Default::default()
                    }
                }
            };
            let before = rec.clone();
            let action = plan::step(&mut rec, &observed, now);
            if rec != before {
                self.save(id, &rec).await;
            }
            match action {
                Action::Finished => {
                    tracing::info!(restart = %id, pod = %rec.status.pod.name, message = %rec.status.message, "restart finished");
                    return;
                }
                Action::Stop {
                    index,
                    container_id,
                    pre_stop,
                    grace,
                } => {
                    let name = &rec.spec.containers[index].name;
                    tracing::info!(restart = %id, pod = %rec.status.pod.name, container = %name, container_id = %container_id, grace_s = grace.as_secs(), pre_stop = pre_stop.is_some(), "stopping container for restart");
                    let outcome = match &mut rt {
                        Some(client) => {
                            runtime::stop(client, &container_id, pre_stop.as_deref(), grace).await
                        }
                        None => Err(runtime::StopError::OnTheWay("runtime unreachable".into())),
                    };
                    if let Err(runtime::StopError::OnTheWay(e)) = &outcome
                        && plan::deadline(&rec).is_none_or(|d| now_ms() < d)
                    {
                        // No answer (the runtime restarting, the connection
                        // cut): the stop may or may not have happened. The
                        // record says it was sent; observing again stops
                        // the same instance only if it still runs, so the
                        // container is never restarted twice.
                        rt = None;
                        let delay = retry.failed().unwrap_or(OBSERVE_RETRY.max);
                        tracing::warn!(restart = %id, container = %name, error = %e, retry_in_ms = delay.as_millis() as u64, "stopping container got no answer from the runtime; observing again");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    if let Err(e) = &outcome {
                        tracing::warn!(restart = %id, container = %name, error = %e, "stopping container failed");
                    }
                    plan::stopped(&mut rec, index, outcome.map_err(|e| e.to_string()));
                    self.save(id, &rec).await;
                }
                Action::Wait { until_unix_ms } => {
                    let mut wait = until_unix_ms
                        .map_or(POLL, |u| Duration::from_millis(u.saturating_sub(now)))
                        .min(POLL);
                    if settling_until.is_some_and(|t| tokio::time::Instant::now() < t) {
                        wait = wait.min(START_RECHECK);
                    }
                    let uid = rec.status.pod.uid.clone();
                    let sleep = tokio::time::sleep(wait);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => {
                                tracing::debug!(restart = %id, waited_ms = wait.as_millis() as u64, "restart woken by its timer");
                                break
                            }
                            ev = events.recv() => match received(ev) {
                                None => { (&mut sleep).await; break }
                                Some(ev) if self.concerns(&ev, &uid) => {
                                    tracing::debug!(restart = %id, event = ?ev, "restart woken by an event");
                                    if matches!(ev, RuntimeEvent::Started { .. }) {
                                        settling_until = Some(tokio::time::Instant::now() + START_SETTLE);
                                    }
                                    break
                                }
                                Some(ev) => tracing::debug!(restart = %id, event = ?ev, "event for another pod"),
                            },
                        }
                    }
                }
            }
        }
    }

    /// Whether `ev` may be about pod `uid` (unknown containers may be).
    fn concerns(&self, ev: &RuntimeEvent, uid: &str) -> bool {
        let id = match ev {
            RuntimeEvent::Started { container_id }
            | RuntimeEvent::Exited { container_id, .. }
            | RuntimeEvent::OutOfMemory { container_id } => container_id,
            RuntimeEvent::Gap => return true,
        };
        match self.book.container(id) {
            Some((c, _)) => self
                .book
                .pod(&c.sandbox_id)
                .is_none_or(|p| p.sandbox.uid == uid),
            None => true,
        }
    }
}

fn describe(spec: &RestartSpec) -> String {
    let p = &spec.pod;
    let mut parts = vec![];
    if let (Some(ns), Some(n)) = (&p.namespace, &p.name) {
        parts.push(format!("{ns}/{n}"));
    }
    if let Some(u) = &p.uid {
        parts.push(format!("uid {u}"));
    }
    if let Some(s) = &p.sandbox_id {
        parts.push(format!("sandbox {s}"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::spec::{PodIdentity, PodRef, RestartContainer};
    use super::*;

    #[test]
    fn the_observe_retry_policy() {
        let delays: Vec<Duration> = (1..=7).filter_map(|n| OBSERVE_RETRY.delay(n)).collect();
        assert_eq!(
            delays,
            [200, 400, 800, 1600, 3200, 5000, 5000].map(Duration::from_millis),
            "doubling, capped, never giving up (the request's deadline bounds it)"
        );
    }

    /// Regression: with the runtime answering the connection but failing
    /// the calls, the worker retried at once, forever.
    #[tokio::test]
    async fn a_runtime_failing_its_calls_is_retried_with_backoff_not_in_a_busy_loop() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("cri.sock");
        // Every call: UNIMPLEMENTED.
        let (calls, server) = crate::testing::fake_runtime(&socket, |_| 12);
        let store = Store::open(&dir.path().join("state")).unwrap();
        // An unfinished request in the journal: the engine resumes it.
        let journal: Table<Record> = store.table("restarts.requests", 100_000).unwrap();
        let spec = RestartSpec {
            key: None,
            pod: PodRef {
                namespace: Some("team".into()),
                name: Some("web".into()),
                uid: Some("uid-1".into()),
                sandbox_id: None,
            },
            containers: vec![RestartContainer {
                name: "app".into(),
                pre_stop: None,
                status_context: None,
            }],
            strategy: Default::default(),
            active_deadline_seconds: None,
            ttl_seconds_after_finished: None,
        };
        let status = RestartStatus {
            id: "restart-1".into(),
            pod: PodIdentity {
                namespace: "team".into(),
                name: "web".into(),
                uid: "uid-1".into(),
            },
            phase: Phase::Pending,
            accepted_unix_ms: now_ms(),
            started_unix_ms: None,
            completion_unix_ms: None,
            message: String::new(),
            container_recreate_states: vec![],
        };
        journal
            .put("restart-1", &plan::new_record(spec, status, vec![None], 0))
            .await
            .unwrap();
        let book = PodBook::open(&store).unwrap();
        let (events, _) = broadcast::channel(16);
        let _engine = RestartEngine::start(
            EngineConfig {
                runtime: crate::runtime_conn::RuntimeConn::new(&socket),
                pods_at_once: 1,
                default_ttl: Duration::from_secs(60),
            },
            book,
            events,
            Arc::new(crate::priority::RunningIsReady),
            &store,
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let n = calls.load(Ordering::Relaxed);
        // 200 + 400 + 800 ms of backoff fit in 1.5 s: four observations.
        assert!((1..=6).contains(&n), "{n} calls in 1.5 s");
        server.abort();
    }
}
