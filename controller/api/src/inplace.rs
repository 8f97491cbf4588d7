//! The completion rule of an in-place update, shared by the workload
//! controllers and the node agent: has the change recorded in a pod's
//! `apps.kruise.io/inplace-update-state` taken effect? Evidence is
//! kubelet's container statuses, or the node agent's
//! `apps.kruise.io/runtime-containers-meta` report, which lists only
//! instances the runtime has started and arrives before kubelet's next
//! status (a PLEG relist later), so the agent can judge an update done the
//! moment the new container starts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::apps::shared::{
    InPlaceUpdateState, RUNTIME_CONTAINER_META_KEY, RuntimeContainerMeta, RuntimeContainerMetaSet,
    get_in_place_update_grace,
};
use crate::envmeta;

/// The message of `InPlaceUpdateReady=False` while the update to
/// `revision` is in flight: it ties the condition to the record the update
/// writes next, so whoever judges completion judges this update, not the
/// record a previous one left (the condition and the record are two
/// writes; in between the pod carries the new condition and the old
/// record).
pub fn start_message(revision: &str) -> String {
    format!("in-place update to revision {revision}")
}

/// Whether the pod's `InPlaceUpdateReady` condition was set for the update
/// `state` records (see [`start_message`]).
pub fn record_is_current(pod: &Pod, state: &InPlaceUpdateState) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == crate::apps::shared::IN_PLACE_UPDATE_READY)
        .is_some_and(|c| c.message.as_deref() == Some(start_message(&state.revision).as_str()))
}

fn container_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
}

/// How far an in-place update has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Done,
    /// Not yet; the text says what is awaited (for events and logs).
    Waiting(String),
}

/// `image` with Docker Hub's implied registry and `:latest` spelled out.
pub fn normalized_image(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let tagged = last.contains(':') || digest.is_some();
    let first = name.split('/').next().unwrap_or(name);
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_registry {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    if !tagged {
        full.push_str(":latest");
    }
    if let Some(d) = digest {
        full = format!("{full}@{d}");
    }
    full
}

/// Whether the in-place update recorded in `state` has taken effect on
/// `pod`.
pub fn progress(pod: &Pod, state: &InPlaceUpdateState) -> Progress {
    if get_in_place_update_grace(&pod.metadata).is_some() {
        return Progress::Waiting("in the grace period before the update".into());
    }
    let meta: RuntimeContainerMetaSet = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RUNTIME_CONTAINER_META_KEY))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    for (name, before) in &state.last_container_statuses {
        let Some(container) = spec.containers.iter().find(|c| &c.name == name) else {
            continue;
        };
        let want = container.image.clone().unwrap_or_default();
        // The node agent lists only instances the runtime has started, as
        // soon as it has: a new instance created with the wanted image is
        // the update taking effect, before kubelet's status says so.
        let started_by_agent = meta.containers.iter().find(|m| {
            &m.name == name
                && !before.container_id.is_empty()
                && m.container_id != before.container_id
                && m.image.as_deref() == Some(want.as_str())
        });
        if let Some(m) = started_by_agent {
            if let Some(waiting) = env_waiting(state, container, m, labels, annotations) {
                return waiting;
            }
            continue;
        }
        let Some(status) = container_statuses(pod).find(|s| &s.name == name) else {
            return Progress::Waiting(format!("container {name} has no status yet"));
        };
        let id = status.container_id.clone().unwrap_or_default();
        let recreated = if before.container_id.is_empty() {
            status.image_id != before.image_id
        } else {
            id != before.container_id
        };
        if !recreated {
            return Progress::Waiting(format!("container {name} has not been restarted yet"));
        }
        if status
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_none()
        {
            return Progress::Waiting(format!("container {name} is not running yet"));
        }
        let reported = meta
            .containers
            .iter()
            .find(|m| &m.name == name && m.container_id == id);
        let image_ok = match reported.and_then(|m| m.image.as_ref()) {
            Some(created_with) => *created_with == want,
            None => {
                status.image_id != before.image_id
                    || normalized_image(&status.image) == normalized_image(&want)
            }
        };
        if !image_ok {
            return Progress::Waiting(format!("container {name} does not run image {want} yet"));
        }
        if state.update_env_from_metadata && !envmeta::references(container).is_empty() {
            let Some(m) = reported else {
                return Progress::Waiting(format!(
                    "container {name}: waiting for the node agent to report its env"
                ));
            };
            if let Some(waiting) = env_waiting(state, container, m, labels, annotations) {
                return waiting;
            }
        }
    }
    Progress::Done
}

/// `Some` while the instance `m` reported by the node agent does not run
/// with the env the pod's metadata gives now (only when the update is one
/// of env from metadata).
fn env_waiting(
    state: &InPlaceUpdateState,
    container: &k8s_openapi::api::core::v1::Container,
    m: &RuntimeContainerMeta,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Option<Progress> {
    let refs = envmeta::references(container);
    if !state.update_env_from_metadata || refs.is_empty() {
        return None;
    }
    let expected = envmeta::expected_hash(&refs, labels, annotations);
    (m.hashes.extracted_env_from_metadata_hash != expected).then(|| {
        Progress::Waiting(format!(
            "container {} does not run with the pod's current metadata env yet",
            container.name
        ))
    })
}
