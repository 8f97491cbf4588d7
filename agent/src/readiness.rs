//! Container readiness of this node's pods as the cluster side reports
//! it: the launch gate's "ready" for OpenKruise's launch priority. The
//! reports ([`PodReport`]) come from the cluster side's watch on this
//! node's pods, in this process or over the admin API from the DaemonSet
//! pod; this module knows nothing of the API server. Pods it has not been
//! told of answer "unknown" (running counts, as standalone).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::pods::{PodBook, PodView};
use crate::priority::{Readiness, SpecContainer};

/// Per pod uid, per container name: ready, and the instance (the
/// runtime's id) the status is about.
type Statuses = HashMap<String, HashMap<String, (bool, String)>>;

/// What the launch gate needs of one pod, as the cluster side reports it
/// (in the agent's own process, or from the DaemonSet pod over the admin
/// API): its regular containers as the spec lists them, and per container
/// its readiness with the instance the status is about.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodReport {
    pub containers: Vec<SpecContainer>,
    #[serde(default)]
    pub statuses: HashMap<String, ContainerReadiness>,
}

/// One container's readiness in a [`PodReport`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerReadiness {
    pub ready: bool,
    /// The runtime's id of the instance the status is about (no scheme).
    pub container_id: String,
}

/// Container readiness of this node's pods, and their regular containers
/// as the spec lists them (the launch gate then knows siblings kubelet has
/// not created yet).
pub struct PodReadiness {
    ready: RwLock<Statuses>,
    specs: RwLock<HashMap<String, Vec<SpecContainer>>>,
    book: Arc<PodBook>,
    /// Whether a cluster side has reported (so specs are worth waiting for).
    attached: AtomicBool,
}

impl PodReadiness {
    /// No pod known yet; specs count as known once a cluster side reports.
    pub fn new(book: Arc<PodBook>) -> Self {
        Self {
            ready: RwLock::new(HashMap::new()),
            specs: RwLock::new(HashMap::new()),
            book,
            attached: AtomicBool::new(false),
        }
    }

    /// The pod book the gate reads.
    pub fn book(&self) -> Arc<PodBook> {
        self.book.clone()
    }

    /// Marks a cluster side present before its first report (the agent's
    /// own cluster mode), so the gate waits briefly for specs from the
    /// start.
    pub fn attach(&self) {
        self.attached.store(true, Ordering::Relaxed);
    }

    /// Takes in the report of pod `uid`; wakes the gate when it changed.
    pub fn report(&self, uid: &str, report: PodReport) {
        self.attach();
        let spec_changed = {
            let mut all = self.specs.write().unwrap_or_else(|e| e.into_inner());
            all.insert(uid.to_string(), report.containers.clone()) != Some(report.containers)
        };
        let now: HashMap<String, (bool, String)> = report
            .statuses
            .into_iter()
            .map(|(name, r)| (name, (r.ready, r.container_id)))
            .collect();
        let changed = {
            let mut all = self.ready.write().unwrap_or_else(|e| e.into_inner());
            all.insert(uid.to_string(), now.clone()) != Some(now)
        };
        if changed || spec_changed {
            self.book.poke();
        }
    }

    /// Forgets pod `uid`.
    pub fn forget(&self, uid: &str) {
        self.ready
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        self.specs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }
}

impl Readiness for PodReadiness {
    fn ready(&self, pod: &PodView, name: &str) -> Option<bool> {
        let probed = self
            .specs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pod.sandbox.uid)
            .and_then(|spec| spec.iter().find(|c| c.name == name).map(|c| c.probed));
        // Without a probe kubelet reports a running container ready: the
        // status (written only after kubelet's sync) is not waited for.
        if probed == Some(false) {
            return None;
        }
        let status = self
            .ready
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pod.sandbox.uid)
            .and_then(|s| s.get(name))
            .map(|(ready, _)| *ready);
        match (probed, status) {
            (Some(true), None) => Some(false),
            (_, status) => status,
        }
    }

    fn instance_ready(&self, uid: &str, name: &str, container_id: &str) -> Option<bool> {
        let all = self.ready.read().unwrap_or_else(|e| e.into_inner());
        let (ready, id) = all.get(uid)?.get(name)?;
        // A status about an older instance: not ready as far as we know
        // (kubelet has not reported the new one yet).
        Some(id == container_id && *ready)
    }

    fn knows_specs(&self) -> bool {
        self.attached.load(Ordering::Relaxed)
    }

    fn spec_containers(&self, uid: &str) -> Option<Vec<SpecContainer>> {
        self.specs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
    }
}
