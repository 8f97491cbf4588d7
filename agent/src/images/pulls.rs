//! The pull engine. An accepted pull is journaled in sled (flushed) before
//! its id is returned, then run through CRI `PullImage` on the runtime
//! itself (not through the agent's socket): per-request timeout, retries
//! with exponential backoff (capped at 30 s) up to `backoffLimit`, a global
//! parallelism limit, `IfNotPresent`/`Always`, credentials from the
//! request's pull secrets, then credential provider plugins, then
//! anonymous. Identical concurrent pulls run once and every waiter gets
//! the result; identical means the same image, policy and credentials
//! ([`ShareKey`]): a request is never answered by a pull made with another
//! request's secrets. With `IfNotPresent` an image already on the node is
//! used without credentials, as kubelet does (its `Ensure Secret Pulled
//! Images` check, KEP-2535, is alpha and off by default in 1.33 and 1.34).
//! After a restart, unfinished pulls resume; finished ones keep their
//! status until a TTL passes. Secrets never appear in logs or status
//! messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cri_proto as cri;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore, watch};

use super::credentials::{Credentials, Source};
use super::reference::{self, BadReference};
use super::secrets::{Keyring, SecretError};
use crate::store::{Store, StoreError, Table};

/// Cap on the wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// When to pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
}

/// A pull as requested.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullSpec {
    /// The caller's identity for this pull (a NodeImage tag round, say):
    /// submitting again with the same key returns the first pull's id and
    /// pulls nothing again. Letters, digits and `-._/:`, at most 253.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub image: String,
    /// `.dockerconfigjson` documents (kept in the journal so a resumed pull
    /// still has them; the state dir is root-only).
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_backoff_limit")]
    pub backoff_limit: u32,
    #[serde(default)]
    pub policy: PullPolicy,
    #[serde(default)]
    pub sandbox_labels: HashMap<String, String>,
    #[serde(default)]
    pub sandbox_annotations: HashMap<String, String>,
}

fn default_timeout() -> u64 {
    600
}
fn default_backoff_limit() -> u32 {
    3
}

impl PullSpec {
    /// A pull of `image` with the defaults (600 s timeout, 3 retries,
    /// IfNotPresent).
    pub fn new(image: &str) -> Self {
        Self {
            key: None,
            image: image.to_string(),
            secrets: vec![],
            timeout_seconds: default_timeout(),
            backoff_limit: default_backoff_limit(),
            policy: PullPolicy::default(),
            sandbox_labels: HashMap::new(),
            sandbox_annotations: HashMap::new(),
        }
    }
}

/// Where a pull stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Waiting,
    Pulling,
    Succeeded,
    Failed,
}

/// A pull's status as reported to callers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullStatus {
    pub id: String,
    pub image: String,
    pub phase: Phase,
    pub attempts: u32,
    pub accepted_unix_ms: u64,
    pub started_unix_ms: Option<u64>,
    pub completed_unix_ms: Option<u64>,
    pub image_id: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    spec: PullSpec,
    status: PullStatus,
}

/// Why a pull was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("key: {0:?} is not 1 to 253 letters, digits and -._/:")]
    BadKey(String),
    #[error(transparent)]
    Reference(#[from] BadReference),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The features' shared runtime connection.
    pub runtime: crate::runtime_conn::RuntimeConn,
    pub parallelism: usize,
    /// First wait between attempts (doubles each time, capped at 30 s).
    pub backoff_base: Duration,
    /// How long finished pulls keep their status.
    pub ttl: Duration,
}

type Outcome = Result<String, String>;
/// One pull in progress, shared by every identical request.
type SharedPull = Arc<OnceCell<Outcome>>;

/// What makes two requests identical, so that one pull answers both: the
/// image, the policy, and the identity of the request's own credentials.
/// Credential provider plugins are the node's, the same for every request,
/// so only the pull secrets tell requests apart. Kept in memory only, and
/// holds a digest, never a secret; deliberately not `Debug`.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ShareKey {
    image: String,
    policy: PullPolicy,
    credentials: [u8; 32],
}

impl ShareKey {
    fn of(spec: &PullSpec) -> Self {
        Self {
            image: spec.image.clone(),
            policy: spec.policy,
            credentials: credential_identity(spec),
        }
    }
}

/// SHA-256 over the credentials `spec`'s pull secrets offer for its image,
/// in the order they are tried (entries for other registries do not
/// matter). Requests with no matching secret (anonymous or plugin
/// credentials only) share one identity. Should a secret not parse (it
/// was checked on submit), the documents themselves are the identity, so
/// such a request shares only with one carrying the very same documents.
fn credential_identity(spec: &PullSpec) -> [u8; 32] {
    fn field(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    h.update(b"keelson pull credentials v1\0");
    let mut keyring = Keyring::default();
    let parsed = spec
        .secrets
        .iter()
        .try_for_each(|s| keyring.add_dockerconfigjson(s.as_bytes()));
    match parsed {
        Ok(()) => {
            for c in keyring.lookup(&spec.image) {
                h.update(b"c");
                field(&mut h, c.username.as_bytes());
                field(&mut h, c.password.as_bytes());
            }
        }
        Err(_) => {
            for s in &spec.secrets {
                h.update(b"d");
                field(&mut h, s.as_bytes());
            }
        }
    }
    h.finalize().into()
}

/// Whether a status change must be on disk before it is visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    Progress,
    Done,
}

/// The node's image puller.
pub struct PullEngine {
    config: EngineConfig,
    credentials: Arc<Credentials>,
    journal: Table<Record>,
    slots: Semaphore,
    shared: Mutex<HashMap<ShareKey, SharedPull>>,
    changed: watch::Sender<u64>,
    seq: std::sync::atomic::AtomicU64,
    running: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// Makes read-modify-write of one record atomic.
    writing: Mutex<()>,
    /// Makes check-and-journal of a keyed pull atomic.
    keyed: Mutex<()>,
}

/// The id of the pull submitted under `key` ([`PullSpec::key`]).
pub fn id_for_key(key: &str) -> String {
    crate::store::keyed_id("pull", key)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl PullEngine {
    /// Opens the engine and resumes every unfinished pull in the journal.
    pub fn start(
        config: EngineConfig,
        credentials: Arc<Credentials>,
        store: &Store,
    ) -> Result<Arc<Self>, StoreError> {
        let engine = Arc::new(Self {
            slots: Semaphore::new(config.parallelism.max(1)),
            config,
            credentials,
            journal: store.table("images.pulls", 100_000)?,
            shared: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            seq: std::sync::atomic::AtomicU64::new(0),
            running: Mutex::new(HashMap::new()),
            writing: Mutex::new(()),
            keyed: Mutex::new(()),
        });
        for entry in engine.journal.entries() {
            match entry {
                Ok((id, r)) if matches!(r.status.phase, Phase::Waiting | Phase::Pulling) => {
                    tracing::info!(pull = %id, image = %r.spec.image, "resuming unfinished pull");
                    engine.spawn(id);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "skipping unreadable pull record"),
            }
        }
        Ok(engine)
    }

    /// Validates and journals a pull, starts it, and returns its id.
    pub async fn submit(self: &Arc<Self>, spec: PullSpec) -> Result<String, SubmitError> {
        if let Some(k) = &spec.key
            && !crate::store::valid_key(k)
        {
            return Err(SubmitError::BadKey(k.clone()));
        }
        reference::validate(&spec.image)?;
        let mut keyring = Keyring::default();
        for s in &spec.secrets {
            keyring.add_dockerconfigjson(s.as_bytes())?;
        }
        let now = now_ms();
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = match spec.key.as_deref() {
            Some(key) => id_for_key(key),
            None => format!("pull-{now:x}-{n:x}"),
        };
        let status = PullStatus {
            id: id.clone(),
            image: spec.image.clone(),
            phase: Phase::Waiting,
            attempts: 0,
            accepted_unix_ms: now,
            started_unix_ms: None,
            completed_unix_ms: None,
            image_id: None,
            message: "waiting for a pull slot".into(),
        };
        let keyed = spec.key.is_some();
        {
            // Two submissions of one key racing: the first to get here
            // journals it, the other returns its id.
            let _one = self.keyed.lock().unwrap_or_else(|e| e.into_inner());
            if keyed && self.journal.contains(&id) {
                tracing::debug!(pull = %id, "pull already accepted under this key");
                return Ok(id);
            }
            self.journal.put_lazy(&id, &Record { spec, status })?;
        }
        self.journal.flush().await?;
        self.spawn(id.clone());
        Ok(id)
    }

    fn spawn(self: &Arc<Self>, id: String) {
        let task = tokio::spawn(self.clone().run(id.clone()));
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, task.abort_handle());
    }

    /// Cancels an unfinished pull (it ends Failed, "cancelled"); `None`
    /// when the id is unknown, the unchanged status when it had finished.
    pub async fn cancel(&self, id: &str) -> Option<PullStatus> {
        let status = self.status(id)?;
        if matches!(status.phase, Phase::Succeeded | Phase::Failed) {
            return Some(status);
        }
        if let Some(task) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
        {
            task.abort();
        }
        self.update(id, Durability::Done, |s| {
            s.phase = Phase::Failed;
            s.completed_unix_ms = Some(now_ms());
            s.message = "cancelled".into();
        })
        .await
        .map(|r| r.status)
    }

    /// Ticks whenever a pull's status changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The status of pull `id`.
    pub fn status(&self, id: &str) -> Option<PullStatus> {
        self.journal.get(id).ok().flatten().map(|r| r.status)
    }

    /// Every known pull, oldest first.
    pub fn list(&self) -> Vec<PullStatus> {
        let mut all: Vec<PullStatus> = self
            .journal
            .entries()
            .filter_map(Result::ok)
            .map(|(_, r)| r.status)
            .collect();
        all.sort_by_key(|s| s.accepted_unix_ms);
        all
    }

    /// Waits until pull `id` is finished (or unknown); returns its status.
    pub async fn wait(&self, id: &str) -> Option<PullStatus> {
        let mut rx = self.changed.subscribe();
        loop {
            let s = self.status(id)?;
            if matches!(s.phase, Phase::Succeeded | Phase::Failed) {
                return Some(s);
            }
            if rx.changed().await.is_err() {
                return self.status(id);
            }
        }
    }

    /// Forgets finished pulls older than the TTL; returns how many.
    pub async fn collect_garbage(&self) -> Result<usize, StoreError> {
        let cutoff = now_ms().saturating_sub(self.config.ttl.as_millis() as u64);
        self.journal
            .retain(|_, r| r.status.completed_unix_ms.is_none_or(|t| t > cutoff))
            .await
    }

    /// Changes an unfinished pull's status and journals it. A finished
    /// status is final: a cancelled pull's task, stopped mid-step, cannot
    /// write over it. Progress (`Durability::Progress`) is not waited for:
    /// after a crash a Waiting and a Pulling pull resume alike, so only
    /// acceptance and the end need to be on disk before anyone is told.
    async fn update(
        &self,
        id: &str,
        durability: Durability,
        f: impl FnOnce(&mut PullStatus),
    ) -> Option<Record> {
        let r = {
            let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
            let mut r = self.journal.get(id).ok().flatten()?;
            if matches!(r.status.phase, Phase::Succeeded | Phase::Failed) {
                return Some(r);
            }
            f(&mut r.status);
            if matches!(r.status.phase, Phase::Succeeded | Phase::Failed) {
                // Finished: its credentials are not needed any more and
                // leave the journal in the same write.
                r.spec.secrets.clear();
            }
            if let Err(e) = self.journal.put_lazy(id, &r) {
                tracing::warn!(pull = %id, error = %e, "cannot journal pull status");
            }
            r
        };
        if durability == Durability::Progress {
            self.changed.send_modify(|v| *v += 1);
            return Some(r);
        }
        if let Err(e) = self.journal.flush().await {
            tracing::warn!(pull = %id, error = %e, "cannot journal pull status");
        }
        self.changed.send_modify(|v| *v += 1);
        Some(r)
    }

    async fn run(self: Arc<Self>, id: String) {
        let Some(record) = self.journal.get(&id).ok().flatten() else {
            return;
        };
        let spec = record.spec;
        let key = ShareKey::of(&spec);
        let mut attempts = record.status.attempts;
        let mut backoff = self.config.backoff_base;
        let outcome = loop {
            attempts += 1;
            let (cell, joined) = {
                let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                let joined = shared.contains_key(&key);
                (shared.entry(key.clone()).or_default().clone(), joined)
            };
            if joined {
                self.update(&id, Durability::Progress, |s| {
                    s.attempts = attempts;
                    s.message = "waiting for an identical pull in progress".into();
                })
                .await;
            }
            // Only the pull that does the work takes a parallelism slot
            // (and is Pulling from then on); identical requests stay
            // Waiting for its result.
            let outcome = cell
                .get_or_init(|| async {
                    let _slot = self.slots.acquire().await;
                    self.update(&id, Durability::Progress, |s| {
                        s.phase = Phase::Pulling;
                        s.attempts = attempts;
                        s.started_unix_ms.get_or_insert(now_ms());
                        s.message = "pulling".into();
                    })
                    .await;
                    self.attempt(&spec).await
                })
                .await
                .clone();
            {
                // Only this pull's entry: a newer pull under the same key
                // may already have replaced it.
                let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                if shared.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                    shared.remove(&key);
                }
            }
            match outcome {
                Ok(image_id) => break Ok(image_id),
                Err(msg) if attempts > spec.backoff_limit => break Err(msg),
                Err(msg) => {
                    tracing::info!(pull = %id, image = %spec.image, attempt = attempts, error = %msg, retry_in_ms = backoff.as_millis() as u64, "pull failed; retrying");
                    self.update(&id, Durability::Progress, |s| {
                        s.message = format!("attempt {attempts} failed: {msg}; retrying")
                    })
                    .await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let done = self
            .update(&id, Durability::Done, |s| {
                s.attempts = attempts;
                s.completed_unix_ms = Some(now_ms());
                match &outcome {
                    Ok(image_id) => {
                        s.phase = Phase::Succeeded;
                        s.image_id = Some(image_id.clone());
                        s.message = "pulled".into();
                    }
                    Err(msg) => {
                        s.phase = Phase::Failed;
                        s.message = format!("failed after {attempts} attempts: {msg}");
                    }
                }
            })
            .await;
        if let Some(r) = done {
            tracing::info!(pull = %id, image = %spec.image, phase = ?r.status.phase, attempts, "pull finished");
        }
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// One attempt: present already (IfNotPresent), else try each
    /// credential, then anonymous. `Ok` is the image id.
    async fn attempt(&self, spec: &PullSpec) -> Outcome {
        let channel = self.config.runtime.channel();
        let mut images = cri::image_service_client::ImageServiceClient::new(channel);
        let image_spec = cri::ImageSpec {
            image: spec.image.clone(),
            ..Default::default()
        };
        if spec.policy == PullPolicy::IfNotPresent {
            let present = images
                .image_status(cri::ImageStatusRequest {
                    image: Some(image_spec.clone()),
                    verbose: false,
                })
                .await
                .ok()
                .and_then(|r| r.into_inner().image);
            if let Some(img) = present {
                return Ok(img.id);
            }
        }
        let mut keyring = Keyring::default();
        for s in &spec.secrets {
            keyring
                .add_dockerconfigjson(s.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let lookup = self.credentials.lookup(&spec.image, &keyring).await;
        for e in &lookup.errors {
            tracing::warn!(image = %spec.image, error = %e, "credential provider failed; trying the next source");
        }
        let mut tried: Vec<String> = vec![];
        let attempts = lookup
            .candidates
            .iter()
            .map(|(s, c)| (Some(s.clone()), Some(c.clone())))
            .chain([(None, None)]);
        let mut last = String::new();
        for (source, cred) in attempts {
            let label = match &source {
                Some(Source::PullSecret) => "pull secret".to_string(),
                Some(Source::Provider(p)) => format!("provider {p}"),
                None => "anonymous".to_string(),
            };
            let auth = cred.map(|c| cri::AuthConfig {
                username: c.username,
                password: c.password,
                ..Default::default()
            });
            let request = cri::PullImageRequest {
                image: Some(image_spec.clone()),
                auth,
                sandbox_config: Some(cri::PodSandboxConfig {
                    labels: spec.sandbox_labels.clone(),
                    annotations: spec.sandbox_annotations.clone(),
                    ..Default::default()
                }),
            };
            let pulled = tokio::time::timeout(
                Duration::from_secs(spec.timeout_seconds),
                images.pull_image(request),
            )
            .await;
            match pulled {
                Ok(Ok(r)) => return Ok(r.into_inner().image_ref),
                Ok(Err(status)) => {
                    let msg = status.message().to_string();
                    let auth_failure = msg.contains("401")
                        || msg.contains("403")
                        || msg.to_lowercase().contains("unauthorized");
                    tried.push(format!(
                        "{label}: {}",
                        if auth_failure {
                            "unauthorized"
                        } else {
                            "failed"
                        }
                    ));
                    last = format!("{:?}: {msg}", status.code());
                    if !auth_failure {
                        break;
                    }
                }
                Err(_) => {
                    tried.push(format!("{label}: timed out"));
                    last = format!("timed out after {} s", spec.timeout_seconds);
                    break;
                }
            }
        }
        let mut msg = format!("{last} (tried {})", tried.join(", "));
        for e in lookup.errors {
            msg.push_str(&format!("; {e}"));
        }
        Err(msg)
    }
}

#[cfg(test)]
mod tests;
