//! Which pods a SidecarSet manages and how they stand: managed (selected,
//! active, listed in the pod's `kruise.io/sidecarset-injected-list`, and
//! carrying every sidecar container of the set), updated (the pod's hash
//! entry for the set equals the set's hash), consistent (no in-place
//! sidecar update still in flight), ready; and the status counters
//! OpenKruise reports from them.
//!
//! Consistency is decided by the container instance, not the image name:
//! at update time the pod records each sidecar's `containerID` (and
//! `imageID`, as upstream) in `kruise.io/sidecarset-inplace-update-state`;
//! the update is done once kubelet reports a new instance running the
//! spec's image. A retag that keeps the image ID (OpenKruise #369) cannot
//! hang it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use keelson_api::apps::v1alpha1::sidecarset as a1;
use keelson_api::apps::v1beta1::sidecarset::{SidecarSet, SidecarSetStatus};
use serde::{Deserialize, Serialize};

use super::inject::{hot_upgrade_names, parse_hashes};
use super::matching;

/// One SidecarSet's entry in `kruise.io/sidecarset-inplace-update-state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceState {
    #[serde(default)]
    pub revision: String,
    #[serde(default)]
    pub update_timestamp: Option<String>,
    #[serde(default)]
    pub last_container_statuses: BTreeMap<String, LastStatus>,
}

/// A sidecar container as it ran before the update.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastStatus {
    #[serde(rename = "imageID", default)]
    pub image_id: String,
    /// Keelson's addition (readers that do not know it ignore it).
    #[serde(
        rename = "containerID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
}

/// The instance of container `name` now, as the in-place state records it.
pub fn last_status(pod: &Pod, name: &str) -> LastStatus {
    let s = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find(|s| s.name == name);
    LastStatus {
        image_id: s.map(|s| s.image_id.clone()).unwrap_or_default(),
        container_id: s.and_then(|s| s.container_id.clone()).unwrap_or_default(),
    }
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a String> {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(key))
}

/// The set's own annotation (`kruise.io/sidecarset-hash` or the one
/// without images).
pub fn set_hash(set: &SidecarSet, key: &str) -> String {
    set.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
        .unwrap_or_default()
}

/// The pod's in-place update states, by SidecarSet.
pub fn inplace_states(pod: &Pod) -> BTreeMap<String, InPlaceState> {
    annotation(pod, a1::ANNOTATION_SIDECARSET_INPLACE_UPDATE_STATE)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// The names the set's sidecar containers have in a pod.
pub fn container_names(set: &SidecarSet) -> Vec<String> {
    set.spec
        .containers
        .iter()
        .flat_map(|c| {
            if c.upgrade_strategy.upgrade_type == a1::SIDECAR_CONTAINER_HOT_UPGRADE {
                let (a, b) = hot_upgrade_names(&c.container.name);
                vec![a, b]
            } else {
                vec![c.container.name.clone()]
            }
        })
        .collect()
}

/// Whether the set manages the pod (see the module doc).
pub fn manages(
    set: &SidecarSet,
    pod: &Pod,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let name = set.metadata.name.as_deref().unwrap_or("");
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let listed = annotation(pod, a1::ANNOTATION_SIDECARSET_INJECTED_LIST)
        .is_some_and(|l| l.split(',').any(|n| n == name));
    let containers: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| c.name.as_str())
        .collect();
    matching::is_active(pod)
        && matching::selects(set, labels, namespace_labels)
        && listed
        && container_names(set)
            .iter()
            .all(|n| containers.contains(&n.as_str()))
}

/// Whether the pod runs the set's current sidecars (by hash).
pub fn is_updated(set: &SidecarSet, pod: &Pod) -> bool {
    let name = set.metadata.name.as_deref().unwrap_or("");
    parse_hashes(pod, a1::ANNOTATION_SIDECARSET_HASH)
        .ok()
        .and_then(|m| m.get(name).map(|s| s.hash.clone()))
        .is_some_and(|h| h == set_hash(set, a1::ANNOTATION_SIDECARSET_HASH))
}

/// Whether no in-place update of the set's sidecars is in flight: each
/// recorded container has been replaced by a running instance of the
/// spec's image.
pub fn is_consistent(set: &SidecarSet, pod: &Pod) -> bool {
    is_consistent_for(set.metadata.name.as_deref().unwrap_or(""), pod)
}

/// [`is_consistent`] for the SidecarSet called `name` (from the pod's own
/// annotations, without the set).
pub fn is_consistent_for(name: &str, pod: &Pod) -> bool {
    let states = inplace_states(pod);
    let Some(state) = states.get(name) else {
        return true;
    };
    let spec_image = |c: &str| {
        pod.spec
            .iter()
            .flat_map(|s| &s.containers)
            .find(|x| x.name == c)
            .and_then(|x| x.image.clone())
    };
    state.last_container_statuses.iter().all(|(c, last)| {
        let status = pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .find(|s| &s.name == c);
        let Some(s) = status else { return false };
        let new_instance = if last.container_id.is_empty() {
            s.image_id != last.image_id
        } else {
            s.container_id.as_deref() != Some(last.container_id.as_str())
        };
        let running = s.state.as_ref().is_some_and(|st| st.running.is_some());
        // Kubelet makes a new instance only from the spec as it is now, so
        // a new running instance runs the new image. Its reported `image`
        // cannot tell: for a retag kubelet may name any tag of the image ID.
        new_instance && running && spec_image(c).is_some()
    })
}

pub use crate::workload::pods::is_running_ready;

/// The status counters over the managed pods (`observedGeneration`,
/// `latestRevision` and `collisionCount` are the caller's).
pub fn counters(set: &SidecarSet, managed: &[&Pod]) -> SidecarSetStatus {
    let mut s = SidecarSetStatus {
        matched_pods: managed.len() as i32,
        ..Default::default()
    };
    for pod in managed {
        let updated = is_updated(set, pod);
        let ready = is_consistent(set, pod)
            && is_running_ready(pod)
            && super::hotupgrade::idle_on_empty(set, pod);
        s.updated_pods += i32::from(updated);
        s.ready_pods += i32::from(ready);
        s.updated_ready_pods += i32::from(updated && ready);
    }
    s
}
