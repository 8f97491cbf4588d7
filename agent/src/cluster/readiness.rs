//! Container readiness from the pods' status (cluster mode): the launch
//! gate's "ready" for OpenKruise's launch priority, fed by [`PodReport`]s
//! the cluster side makes from its watch on this node's pods (in this
//! process, or over the admin API from the DaemonSet pod). Pods it has
//! not seen answer "unknown" (running counts, as standalone).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Pod;

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

impl PodReport {
    /// The report of `pod` as the API server has it.
    pub fn of(pod: &Pod) -> Self {
        let status = pod.status.clone().unwrap_or_default();
        let statuses = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .map(|c| {
                let id = c.container_id.as_deref().unwrap_or_default();
                let bare = id.split_once("://").map_or(id, |(_, b)| b);
                (
                    c.name.clone(),
                    ContainerReadiness {
                        ready: c.ready,
                        container_id: bare.to_string(),
                    },
                )
            })
            .collect();
        Self {
            containers: spec_containers(pod),
            statuses,
        }
    }
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

/// The spec's regular containers with their plain-value
/// `KRUISE_CONTAINER_PRIORITY` (a `valueFrom` is not resolvable here and
/// counts as unset, as kubelet would resolve it after the gate decided).
fn spec_containers(pod: &Pod) -> Vec<SpecContainer> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| SpecContainer {
            name: c.name.clone(),
            priority: c
                .env
                .iter()
                .flatten()
                .find(|e| e.name == crate::kruise::ENV_CONTAINER_PRIORITY)
                .and_then(|e| e.value.clone()),
            probed: c.readiness_probe.is_some() || c.startup_probe.is_some(),
            pre_stop_exec: c
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|h| h.exec.as_ref())
                .and_then(|e| e.command.clone()),
        })
        .collect()
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

    /// Takes in a pod's status; wakes the gate when readiness changed.
    pub fn update(&self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            self.report(uid, PodReport::of(pod));
        }
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

    /// Forgets a pod that left the node.
    pub fn remove(&self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            self.forget(uid);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::Sandbox;
    use crate::store::Store;

    #[test]
    fn readiness_comes_from_the_pod_status() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = PodReadiness::new(PodBook::open(&store).unwrap());
        let pod: Pod = serde_saphyr::from_str(
            r#"
metadata: {name: web-0, namespace: team, uid: uid-1}
status:
  initContainerStatuses:
  - {name: proxy, ready: true, restartCount: 0, image: i, imageID: x}
  containerStatuses:
  - {name: app, ready: false, restartCount: 0, image: i, imageID: x, containerID: "containerd://abc"}
"#,
        )
        .unwrap();
        let view = |uid: &str| PodView {
            sandbox: Sandbox {
                id: "sb".into(),
                uid: uid.into(),
                name: "web-0".into(),
                namespace: "team".into(),
                annotations: HashMap::new(),
            },
            containers: vec![],
            ever_started: vec![],
        };
        assert_eq!(r.ready(&view("uid-1"), "app"), None, "not seen yet");
        assert!(!r.knows_specs(), "no cluster side has reported");
        r.update(&pod);
        assert!(r.knows_specs());
        // The same report through the admin API's JSON gives the same answers.
        let wire = serde_json::to_string(&PodReport::of(&pod)).unwrap();
        let remote = PodReadiness::new(PodBook::open(&store).unwrap());
        remote.report("uid-1", serde_json::from_str(&wire).unwrap());
        for name in ["app", "proxy", "other"] {
            assert_eq!(
                remote.ready(&view("uid-1"), name),
                r.ready(&view("uid-1"), name)
            );
        }
        assert_eq!(remote.instance_ready("uid-1", "app", "abc"), Some(false));
        assert_eq!(r.ready(&view("uid-1"), "app"), Some(false));
        assert_eq!(r.ready(&view("uid-1"), "proxy"), Some(true));
        assert_eq!(r.ready(&view("uid-2"), "app"), None);
        assert_eq!(r.instance_ready("uid-1", "app", "abc"), Some(false));
        assert_eq!(
            r.instance_ready("uid-1", "app", "newer"),
            Some(false),
            "the status is about another instance"
        );
        assert_eq!(
            r.instance_ready("uid-9", "app", "abc"),
            None,
            "pod not seen"
        );
        r.remove(&pod);
        assert_eq!(r.ready(&view("uid-1"), "app"), None);
    }

    #[test]
    fn the_spec_tells_siblings_and_which_readiness_needs_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = PodReadiness::new(PodBook::open(&store).unwrap());
        let pod: Pod = serde_saphyr::from_str(
            r#"
metadata: {name: web-0, namespace: team, uid: uid-1}
spec:
  initContainers:
  - {name: init, image: i, env: [{name: KRUISE_CONTAINER_PRIORITY, value: "99"}]}
  containers:
  - {name: low, image: i, env: [{name: KRUISE_CONTAINER_PRIORITY, value: "1"}]}
  - name: high
    image: i
    env: [{name: KRUISE_CONTAINER_PRIORITY, value: "10"}]
    readinessProbe: {exec: {command: ["true"]}}
status:
  containerStatuses:
  - {name: low, ready: false, restartCount: 0, image: i, imageID: x}
"#,
        )
        .unwrap();
        r.attach();
        assert!(r.knows_specs());
        assert_eq!(r.spec_containers("uid-1"), None);
        r.update(&pod);
        let spec = r.spec_containers("uid-1").unwrap();
        assert_eq!(
            spec,
            vec![
                SpecContainer {
                    name: "low".into(),
                    priority: Some("1".into()),
                    probed: false,
                    pre_stop_exec: None,
                },
                SpecContainer {
                    name: "high".into(),
                    priority: Some("10".into()),
                    probed: true,
                    pre_stop_exec: None,
                },
            ],
            "regular containers only, in spec order"
        );
        let view = PodView {
            sandbox: Sandbox {
                id: "sb".into(),
                uid: "uid-1".into(),
                name: "web-0".into(),
                namespace: "team".into(),
                annotations: HashMap::new(),
            },
            containers: vec![],
            ever_started: vec![],
        };
        assert_eq!(r.ready(&view, "low"), None, "no probe: running is ready");
        assert_eq!(
            r.ready(&view, "high"),
            Some(false),
            "probed and not in the status yet"
        );
    }
}
