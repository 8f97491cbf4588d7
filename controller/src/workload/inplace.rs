//! In-place update, shared by the workloads: what a template change can
//! do without recreating the pod ([`diff`]), the writes that start it on
//! one pod ([`start`]), and when it has taken effect ([`progress`]).
//!
//! In place means: container images replaced (kubelet then restarts those
//! containers with the new image), and labels/annotations patched, which
//! restarts — through the node agent — the containers whose env reads a
//! changed key. Anything else in the pod spec needs a new pod.
//!
//! The pod carries OpenKruise's record (`apps.kruise.io/inplace-update-state`)
//! and the `InPlaceUpdateReady` condition, False from the start of an
//! update until it has taken effect. Completion is decided from facts, not
//! from the image ID alone (which a retag leaves unchanged, OpenKruise
//! #369/#635/#1493): each updated container must be a container created
//! after the update started (its ID changed), running, and — from the
//! agent's `apps.kruise.io/runtime-containers-meta` when present — created
//! with the spec's image and the env values the pod's metadata gives now.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keelson_api::apps::shared::{
    IN_PLACE_UPDATE_GRACE_KEY, IN_PLACE_UPDATE_GRACE_KEY_OLD, IN_PLACE_UPDATE_READY,
    IN_PLACE_UPDATE_STATE_KEY, InPlaceUpdateContainerBatch, InPlaceUpdateContainerStatus,
    InPlaceUpdateState, get_in_place_update_grace, get_in_place_update_state,
};
use keelson_api::envmeta;
pub use keelson_api::inplace::{Progress, normalized_image, progress};
use serde_json::{Value, json};

use super::revision::RevisionError;

/// Reason of `InPlaceUpdateReady=False` while an update is in flight.
pub const REASON_START: &str = "StartInPlaceUpdate";

/// What a template change does to a pod in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Container → its new image.
    pub images: BTreeMap<String, String>,
    /// Label → new value (`None`: removed).
    pub labels: BTreeMap<String, Option<String>>,
    /// Annotation → new value (`None`: removed).
    pub annotations: BTreeMap<String, Option<String>>,
    /// Containers whose env reads a changed label or annotation.
    pub env_containers: BTreeSet<String>,
}

impl Change {
    /// Containers that restart.
    pub fn containers(&self) -> BTreeSet<String> {
        self.images
            .keys()
            .cloned()
            .chain(self.env_containers.iter().cloned())
            .collect()
    }
}

/// Whether a template change can be applied in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diff {
    InPlace(Change),
    /// It needs new pods; the text says which part of the spec differs.
    Recreate(String),
}

fn typed(template: &Value) -> Result<PodTemplateSpec, RevisionError> {
    serde_json::from_value(template.clone()).map_err(RevisionError::Template)
}

fn map_diff(
    old: Option<&BTreeMap<String, String>>,
    new: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, Option<String>> {
    let empty = BTreeMap::new();
    let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
    let mut out = BTreeMap::new();
    for (k, v) in new {
        if old.get(k) != Some(v) {
            out.insert(k.clone(), Some(v.clone()));
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            out.insert(k.clone(), None);
        }
    }
    out
}

/// What changing a pod from template `old` to `new` takes. With
/// `env_from_metadata` (OpenKruise's `InPlaceUpdateEnvFromMetadata`),
/// containers reading a changed key restart; without, metadata is only
/// patched.
pub fn diff(old: &Value, new: &Value, env_from_metadata: bool) -> Result<Diff, RevisionError> {
    let (old, new) = (typed(old)?, typed(new)?);
    let (mut os, mut ns) = (old.spec.unwrap_or_default(), new.spec.unwrap_or_default());
    let mut change = Change::default();
    if os.containers.len() == ns.containers.len() {
        for (o, n) in os.containers.iter_mut().zip(ns.containers.iter_mut()) {
            if o.name == n.name
                && o.image != n.image
                && let Some(image) = n.image.clone()
            {
                change.images.insert(n.name.clone(), image);
                o.image = n.image.clone();
            }
        }
    }
    if os != ns {
        let (ov, nv) = (
            serde_json::to_value(&os).unwrap_or_default(),
            serde_json::to_value(&ns).unwrap_or_default(),
        );
        let first = json_patch::diff(&ov, &nv)
            .0
            .first()
            .map(|op| op.path().to_string())
            .unwrap_or_default();
        return Ok(Diff::Recreate(format!("spec{first} changed")));
    }
    let (om, nm) = (
        old.metadata.unwrap_or_default(),
        new.metadata.unwrap_or_default(),
    );
    change.labels = map_diff(om.labels.as_ref(), nm.labels.as_ref());
    change.annotations = map_diff(om.annotations.as_ref(), nm.annotations.as_ref());
    if env_from_metadata {
        for c in &ns.containers {
            let reads_changed = envmeta::references(c).values().any(|r| match r {
                envmeta::FieldRef::Label(k) => change.labels.contains_key(k),
                envmeta::FieldRef::Annotation(k) => change.annotations.contains_key(k),
            });
            if reads_changed {
                change.env_containers.insert(c.name.clone());
            }
        }
    }
    Ok(Diff::InPlace(change))
}

/// The writes that start an in-place update of one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// Strategic merge patch of the pod's status subresource:
    /// `InPlaceUpdateReady` False and `Ready` False (as kubelet would
    /// compute it), so endpoints drop the pod at once. Written first.
    pub status_patch: Value,
    /// Strategic merge patch of the pod, preconditioned on its
    /// resourceVersion: labels (incl. `revision_labels`), annotations, the
    /// in-place record, container images.
    pub pod_patch: Value,
    pub state: InPlaceUpdateState,
}

fn container_statuses(
    pod: &Pod,
) -> impl Iterator<Item = &k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
}

/// The writes starting `change` on `pod` for `revision`, at `now`.
/// `revision_labels` are the pod's new revision labels; `extra_labels`
/// are the caller's (e.g. the lifecycle state) written in the same patch.
pub fn start(
    pod: &Pod,
    change: &Change,
    revision: &str,
    revision_labels: &BTreeMap<String, String>,
    extra_labels: &BTreeMap<String, String>,
    grace_seconds: i32,
    now: &Time,
) -> Start {
    let restarting = change.containers();
    let last_container_statuses = container_statuses(pod)
        .filter(|s| restarting.contains(&s.name))
        .map(|s| {
            (
                s.name.clone(),
                InPlaceUpdateContainerStatus {
                    image_id: s.image_id.clone(),
                    container_id: s.container_id.clone().unwrap_or_default(),
                },
            )
        })
        .collect();
    let state = InPlaceUpdateState {
        revision: revision.to_string(),
        update_timestamp: Some(now.clone()),
        last_container_statuses,
        update_env_from_metadata: !change.env_containers.is_empty(),
        update_images: !change.images.is_empty(),
        container_batches_record: vec![InPlaceUpdateContainerBatch {
            timestamp: Some(now.clone()),
            containers: restarting.iter().cloned().collect(),
        }],
        ..Default::default()
    };
    // What the update changes on the pod; under a grace period it is
    // kept in the grace annotation and applied when the period is over.
    let mut changes = json!({"metadata": {
        "labels": change.labels,
        "annotations": change.annotations,
    }});
    if !change.images.is_empty() {
        let containers: Vec<Value> = change
            .images
            .iter()
            .map(|(name, image)| json!({"name": name, "image": image}))
            .collect();
        changes["spec"] = json!({ "containers": containers });
    }
    let mut labels = serde_json::Map::new();
    for (k, v) in revision_labels.iter().chain(extra_labels) {
        labels.insert(k.clone(), json!(v));
    }
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        IN_PLACE_UPDATE_STATE_KEY.into(),
        json!(serde_json::to_string(&state).unwrap_or_default()),
    );
    let mut pod_patch = json!({"metadata": {
        "labels": labels,
        "annotations": annotations,
        "resourceVersion": pod.metadata.resource_version,
    }});
    if grace_seconds > 0 {
        let pending = Grace {
            revision: revision.to_string(),
            grace_seconds,
            patch: changes,
        };
        pod_patch["metadata"]["annotations"][IN_PLACE_UPDATE_GRACE_KEY] =
            json!(serde_json::to_string(&pending).unwrap_or_default());
    } else {
        merge(&mut pod_patch, &changes);
    }
    let mut conditions = vec![json!({
        "type": IN_PLACE_UPDATE_READY, "status": "False", "reason": REASON_START,
        "message": keelson_api::inplace::start_message(revision),
        "lastTransitionTime": now,
    })];
    let containers_ready =
        super::pods::condition(pod, "ContainersReady").is_some_and(|c| c.status == "True");
    if containers_ready {
        conditions.push(json!({
            "type": "Ready", "status": "False", "reason": "ReadinessGatesNotReady",
            "message": format!("the status of pod readiness gate \"{IN_PLACE_UPDATE_READY}\" is not \"True\", but False"),
            "lastTransitionTime": now,
        }));
    }
    Start {
        status_patch: json!({"status": {"conditions": conditions}}),
        pod_patch,
        state,
    }
}

/// Whether `pod` still runs the container instances `state` recorded
/// before the update (so the update has not been applied meanwhile).
pub fn same_instances(pod: &Pod, state: &InPlaceUpdateState) -> bool {
    state.last_container_statuses.iter().all(|(name, before)| {
        container_statuses(pod)
            .find(|s| &s.name == name)
            .is_some_and(|s| s.container_id.clone().unwrap_or_default() == before.container_id)
    })
}

/// An update held for `inPlaceUpdateStrategy.gracePeriodSeconds`: the pod
/// is already not-ready (endpoints drain) and on the new revision's
/// labels; `patch` is applied when the period is over.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grace {
    pub revision: String,
    pub grace_seconds: i32,
    pub patch: Value,
}

/// Deep-merges object `b` into `a` (a strategic-merge-compatible union of
/// two patches that touch different keys).
fn merge(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

/// What a pod held in a grace period needs at `now`: `Ok(patch)` when the
/// period is over (or the pod's revision moved on: then only the
/// annotation goes), `Err(seconds left)` otherwise; `None` without one.
pub fn grace_due(pod: &Pod, state: &InPlaceUpdateState, now: &Time) -> Option<Result<Value, i64>> {
    let raw = get_in_place_update_grace(&pod.metadata)?;
    let clear = json!({"metadata": {"annotations": {
        IN_PLACE_UPDATE_GRACE_KEY: null, IN_PLACE_UPDATE_GRACE_KEY_OLD: null,
    }}});
    let Ok(g) = serde_json::from_str::<Grace>(raw) else {
        return Some(Ok(clear));
    };
    if !super::pods::on_revision(pod, &g.revision) {
        return Some(Ok(clear));
    }
    let started = state
        .update_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    let left = i64::from(g.grace_seconds) - (now.0.as_second() - started);
    if left > 0 {
        return Some(Err(left));
    }
    let mut patch = g.patch;
    merge(&mut patch, &clear);
    Some(Ok(patch))
}

/// The status patch marking the update done (or a pod never updated
/// ready): `InPlaceUpdateReady` True.
pub fn ready_patch(now: &Time) -> Value {
    json!({"status": {"conditions": [{
        "type": IN_PLACE_UPDATE_READY, "status": "True", "lastTransitionTime": now,
        // Strategic merge keeps fields not named: clear the update's.
        "reason": null, "message": null,
    }]}})
}

/// Whether the pod's `InPlaceUpdateReady` condition needs [`ready_patch`]
/// (the pod has the gate and the condition is not plainly True).
pub fn needs_ready(pod: &Pod) -> bool {
    let gated = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|g| g.iter().any(|g| g.condition_type == IN_PLACE_UPDATE_READY));
    let plain_true = super::pods::condition(pod, IN_PLACE_UPDATE_READY)
        .is_some_and(|c| c.status == "True" && c.reason.as_deref().unwrap_or("").is_empty());
    gated && !plain_true
}

/// The pod's in-place record, if it has a readable one.
pub fn state(pod: &Pod) -> Option<InPlaceUpdateState> {
    serde_json::from_str(get_in_place_update_state(&pod.metadata)?).ok()
}

#[cfg(test)]
mod tests;
