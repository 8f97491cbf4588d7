//! A kubelet pod worker in the background: keeps one pod in sync while a
//! test talks to the agent — PLEG relists every `relist`, a change triggers
//! a sync (exited containers are recreated per the restart policy, with
//! the next restart count), a sync with errors is retried after kubelet's
//! 10 s backoff — and lets the test change the pod's annotations as an
//! API server update would (new containers resolve env from them).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::kubelet::{Kubelet, Snapshot, SyncedPod};

/// Kubelet's retry delay after a failed sync.
const ERROR_BACKOFF: Duration = Duration::from_secs(10);

/// Annotation changes not yet applied (key, new value or removal).
type Pending = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A running pod worker; [`PodWorker::stop`] ends it.
pub struct PodWorker {
    stop: Arc<AtomicBool>,
    annotations: Pending,
    latest: Arc<Mutex<Snapshot>>,
    task: tokio::task::JoinHandle<crate::Result<(Kubelet, SyncedPod)>>,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub sandbox_id: String,
}

impl PodWorker {
    /// Starts keeping `pod` in sync through `kubelet`.
    pub fn spawn(mut kubelet: Kubelet, mut pod: SyncedPod, relist: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let annotations: Pending = Arc::default();
        let latest: Arc<Mutex<Snapshot>> = Arc::default();
        let (name, namespace, uid, sandbox_id) = (
            pod.spec.name.clone(),
            pod.spec.namespace.clone(),
            pod.spec.uid.clone(),
            pod.sandbox_id.clone(),
        );
        let task = {
            let (stop, annotations, latest) = (stop.clone(), annotations.clone(), latest.clone());
            tokio::spawn(async move {
                let mut previous = Snapshot::new();
                let mut retry_at: Option<Instant> = None;
                while !stop.load(Ordering::Relaxed) {
                    for (k, v) in annotations.lock().unwrap().drain(..) {
                        match v {
                            Some(v) => pod.spec.annotations.insert(k, v),
                            None => pod.spec.annotations.remove(&k),
                        };
                    }
                    // Like kubelet's relist, a runtime that is away (the
                    // agent restarting) is retried, not the end of the pod.
                    let now = match kubelet.snapshot(&pod).await {
                        Ok(s) => s,
                        Err(e) => {
                            eprintln!("pod worker {}: relist failed, retrying: {e}", pod.spec.name);
                            tokio::time::sleep(relist).await;
                            continue;
                        }
                    };
                    *latest.lock().unwrap() = now.clone();
                    let changed = now != previous;
                    previous = now;
                    if changed || retry_at.is_some_and(|t| Instant::now() >= t) {
                        let before = pod.history.iter().filter(|r| r.error.is_some()).count();
                        let failed = match kubelet.sync(&mut pod).await {
                            Ok(()) => false,
                            Err(e) => {
                                eprintln!(
                                    "pod worker {}: sync failed, retrying: {e}",
                                    pod.spec.name
                                );
                                true
                            }
                        };
                        let after = pod.history.iter().filter(|r| r.error.is_some()).count();
                        retry_at =
                            (failed || after > before).then(|| Instant::now() + ERROR_BACKOFF);
                    }
                    tokio::time::sleep(relist).await;
                }
                Ok((kubelet, pod))
            })
        };
        Self {
            stop,
            annotations,
            latest,
            task,
            name,
            namespace,
            uid,
            sandbox_id,
        }
    }

    /// Sets (or with `None` removes) a pod annotation, as an API update.
    pub fn annotate(&self, key: &str, value: Option<&str>) {
        self.annotations
            .lock()
            .unwrap()
            .push((key.to_string(), value.map(str::to_string)));
    }

    /// The latest relist: newest instance per container name (id, state,
    /// attempt).
    pub fn snapshot(&self) -> Snapshot {
        self.latest.lock().unwrap().clone()
    }

    /// Waits until `done` holds for a relist, or fails after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Snapshot) -> bool,
    ) -> crate::Result<Snapshot> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.snapshot();
            if done(&s) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("pod {} not there within {timeout:?}: {s:?}", self.name);
            }
            if self.task.is_finished() {
                bail!("pod worker of {} ended", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the worker; returns the driver and the pod.
    pub async fn stop(self) -> crate::Result<(Kubelet, SyncedPod)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}
