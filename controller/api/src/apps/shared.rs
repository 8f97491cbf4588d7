//! Types shared by several `apps.kruise.io` workloads (OpenKruise keeps
//! them in its `apis/apps/pub` package): lifecycle hooks, in-place update
//! settings and the in-place update record kept on pods, update priority
//! rules, and the pod annotation/label/condition names that go with them.
//!
//! Type names are OpenKruise's, so `crate::apps::shared::Lifecycle` is
//! what a CloneSet, an Advanced DaemonSet or an Advanced StatefulSet
//! refers to.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

// ---------------------------------------------------------------------------
// In-place update
// ---------------------------------------------------------------------------

/// Pod condition type (and readiness gate) a workload adds to pods it may
/// update in place: set to False before an in-place update starts and back
/// to True once it is done, so the pod stays not-ready meanwhile.
pub const IN_PLACE_UPDATE_READY: &str = "InPlaceUpdateReady";

/// Pod annotation holding the latest in-place update record, a JSON
/// [`InPlaceUpdateState`].
pub const IN_PLACE_UPDATE_STATE_KEY: &str = "apps.kruise.io/inplace-update-state";
/// Legacy spelling of [`IN_PLACE_UPDATE_STATE_KEY`], still read by
/// OpenKruise.
pub const IN_PLACE_UPDATE_STATE_KEY_OLD: &str = "inplace-update-state";

/// Pod annotation holding the update still to be applied once the in-place
/// update grace period (`gracePeriodSeconds`) has passed.
pub const IN_PLACE_UPDATE_GRACE_KEY: &str = "apps.kruise.io/inplace-update-grace";
/// Legacy spelling of [`IN_PLACE_UPDATE_GRACE_KEY`], still read by
/// OpenKruise.
pub const IN_PLACE_UPDATE_GRACE_KEY_OLD: &str = "inplace-update-grace";

/// Pod annotation in which the node agent reports the pod's runtime
/// containers, a JSON [`RuntimeContainerMetaSet`].
pub const RUNTIME_CONTAINER_META_KEY: &str = "apps.kruise.io/runtime-containers-meta";

/// How a workload updates pods in place.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceUpdateStrategy {
    /// Seconds between marking the pod not-ready and changing its spec
    /// (0: no wait).
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub grace_period_seconds: i32,
    /// How many nodes pre-download a new revision's images at once (a
    /// number or a percentage); absent means 1, 0 pauses the pre-download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pre_download_parallelism: Option<IntOrString>,
    /// Per-node timeout of the image pre-download, in seconds (600 when
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pre_download_timeout_seconds: Option<i32>,
    /// How many pods of the new revision must be updated and ready before
    /// the images are pre-downloaded for the remaining pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pre_download_min_updated_ready_pods: Option<i32>,
}

/// The record of a pod's latest in-place update, stored as JSON in the
/// [`IN_PLACE_UPDATE_STATE_KEY`] annotation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceUpdateState {
    /// Revision hash the pod is being updated to.
    #[serde(default)]
    pub revision: String,
    /// When the in-place update started. Always written (as `null` when
    /// unset, the way OpenKruise writes a zero time).
    #[serde(default)]
    pub update_timestamp: Option<Time>,
    /// Container statuses from before the update, by container name; used
    /// to tell when the update has taken effect. Always written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub last_container_statuses: BTreeMap<String, InPlaceUpdateContainerStatus>,
    /// Some containers take env values from labels/annotations that
    /// changed, so they are restarted to pick them up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_env_from_metadata: bool,
    /// Container resources are changed in place.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_resources: bool,
    /// Container images are changed in place.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_images: bool,
    /// Images still to be set, by container name, for containers of lower
    /// launch priority that are updated in a later batch.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub next_container_images: BTreeMap<String, String>,
    /// Label/annotation changes still to be applied, by container name, for
    /// containers updated in a later batch.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub next_container_ref_metadata: BTreeMap<String, ObjectMeta>,
    /// Resource changes still to be applied, by container name, for
    /// containers updated in a later batch.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub next_container_resources: BTreeMap<String, ResourceRequirements>,
    /// What must hold before the next batch of containers is updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_check_before_next: Option<InPlaceUpdatePreCheckBeforeNext>,
    /// The batches of containers already patched for this revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_batches_record: Vec<InPlaceUpdateContainerBatch>,
}

/// Conditions checked before the next batch of containers is updated in
/// place.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceUpdatePreCheckBeforeNext {
    /// Containers that must be ready first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers_required_ready: Vec<String>,
}

/// One batch of an in-place update: when it was patched and which
/// containers it covered.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceUpdateContainerBatch {
    /// When the batch was patched. Always written (`null` when unset).
    #[serde(default)]
    pub timestamp: Option<Time>,
    /// Names of the containers in the batch. Always written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub containers: Vec<String>,
}

/// A container's status from before an in-place update.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceUpdateContainerStatus {
    /// The image ID the container ran before the update.
    #[serde(rename = "imageID", default, skip_serializing_if = "String::is_empty")]
    pub image_id: String,
    /// Keelson's addition (ignored by OpenKruise): the container's id
    /// before the update, so a container recreated since is recognised
    /// even when its image ID did not change (a retag).
    #[serde(
        rename = "containerID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
}

/// All runtime containers of a pod, as reported by the node agent in the
/// [`RUNTIME_CONTAINER_META_KEY`] annotation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeContainerMetaSet {
    /// One entry per container. Always written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub containers: Vec<RuntimeContainerMeta>,
}

/// What the runtime knows about one container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeContainerMeta {
    /// Container name.
    pub name: String,
    /// `<runtime>://<id>`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The runtime's restart count of the container.
    pub restart_count: i32,
    /// Hashes of the container's spec.
    pub hashes: RuntimeContainerHashes,
    /// Keelson's addition (ignored by OpenKruise): the image as the pod
    /// spec names it (CRI's user-specified image) the container was
    /// created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// Hashes of a container's spec, used to tell whether the running container
/// matches the pod spec.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeContainerHashes {
    /// Hash of the container spec as written (the kubelet's own hash).
    pub plain_hash: u64,
    /// Hash of the container spec with env values taken from labels and
    /// annotations resolved.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub extracted_env_from_metadata_hash: u64,
}

/// The in-place update record annotation of an object, under the current
/// key or else the legacy one.
pub fn get_in_place_update_state(meta: &ObjectMeta) -> Option<&str> {
    annotation(meta, IN_PLACE_UPDATE_STATE_KEY)
        .or_else(|| annotation(meta, IN_PLACE_UPDATE_STATE_KEY_OLD))
}

/// The in-place update grace annotation of an object, under the current key
/// or else the legacy one.
pub fn get_in_place_update_grace(meta: &ObjectMeta) -> Option<&str> {
    annotation(meta, IN_PLACE_UPDATE_GRACE_KEY)
        .or_else(|| annotation(meta, IN_PLACE_UPDATE_GRACE_KEY_OLD))
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

// ---------------------------------------------------------------------------
// Lifecycle hooks
// ---------------------------------------------------------------------------

/// Pod label holding the pod's lifecycle state (one of the
/// `LIFECYCLE_STATE_*` values).
pub const LIFECYCLE_STATE_KEY: &str = "lifecycle.apps.kruise.io/state";
/// Pod annotation holding when the lifecycle state last changed.
pub const LIFECYCLE_TIMESTAMP_KEY: &str = "lifecycle.apps.kruise.io/timestamp";

/// Lifecycle state: created but not yet available; becomes `Normal` once
/// the `preNormal` hook (if any) is satisfied.
pub const LIFECYCLE_STATE_PREPARING_NORMAL: &str = "PreparingNormal";
/// Lifecycle state: the steady state, required for the pod to count as
/// available.
pub const LIFECYCLE_STATE_NORMAL: &str = "Normal";
/// Lifecycle state: about to be updated in place; moves on to `Updating`
/// once the `inPlaceUpdate` hook (if any) lets go.
pub const LIFECYCLE_STATE_PREPARING_UPDATE: &str = "PreparingUpdate";
/// Lifecycle state: the in-place update is under way.
pub const LIFECYCLE_STATE_UPDATING: &str = "Updating";
/// Lifecycle state: updated in place but not yet available again; back to
/// `Normal` once the `inPlaceUpdate` hook (if any) is satisfied.
pub const LIFECYCLE_STATE_UPDATED: &str = "Updated";
/// Lifecycle state: about to be deleted; deleted once the `preDelete` hook
/// (if any) lets go.
pub const LIFECYCLE_STATE_PREPARING_DELETE: &str = "PreparingDelete";

/// Hooks that hold a pod at points of its life until users (or other
/// controllers) release it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// Held before the pod is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_delete: Option<LifecycleHook>,
    /// Held before the pod is updated in place, and again after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place_update: Option<LifecycleHook>,
    /// Held after the pod is created, before it becomes `Normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_normal: Option<LifecycleHook>,
}

/// One lifecycle hook: the pod is held while it carries any of these labels
/// (with these values) or finalizers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleHook {
    /// Labels (key and value) whose presence holds the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels_handler: BTreeMap<String, String>,
    /// Finalizers whose presence holds the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers_handler: Vec<String>,
    /// Make the pod not-ready while it is held in `PreparingDelete` or
    /// `PreparingUpdate` (and ready again once `Updated`). Only honoured for
    /// the `inPlaceUpdate` and `preDelete` hooks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mark_pod_not_ready: bool,
}

// ---------------------------------------------------------------------------
// Update priority
// ---------------------------------------------------------------------------

/// The order in which pods are updated. Set either `orderPriority` or
/// `weightPriority`, not both.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePriorityStrategy {
    /// Label keys tried in turn: pods carrying the first key come first,
    /// sorted by the last integer in the label's value; then pods carrying
    /// the second key; and so on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order_priority: Vec<UpdatePriorityOrderTerm>,
    /// Weighted label selectors: a pod's priority is the sum of the weights
    /// of the terms it matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weight_priority: Vec<UpdatePriorityWeightTerm>,
}

/// An ordering term: sort by the value of one label.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePriorityOrderTerm {
    /// The label key whose value (its last integer) orders the pods.
    pub ordered_key: String,
}

/// A weighted term: pods matching the selector gain the weight.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePriorityWeightTerm {
    /// Weight, 1 to 100.
    pub weight: i32,
    /// Selects pods by label.
    pub match_selector: LabelSelector,
}

// ---------------------------------------------------------------------------
// Other pod-level names
// ---------------------------------------------------------------------------

/// Container env var giving the container's launch priority.
pub const CONTAINER_LAUNCH_PRIORITY_ENV_NAME: &str = "KRUISE_CONTAINER_PRIORITY";
/// Container env var injected by the webhook to make a container wait for
/// its turn to start (when launch priority is used).
pub const CONTAINER_LAUNCH_BARRIER_ENV_NAME: &str = "KRUISE_CONTAINER_BARRIER";
/// Pod annotation asking for the containers to be started in order.
pub const CONTAINER_LAUNCH_PRIORITY_KEY: &str = "apps.kruise.io/container-launch-priority";
/// Value of [`CONTAINER_LAUNCH_PRIORITY_KEY`]: start containers in the
/// order they are listed.
pub const CONTAINER_LAUNCH_ORDERED: &str = "Ordered";
/// Pod annotation set once every launch priority of the pod has been
/// released in its barrier ConfigMap.
pub const CONTAINER_LAUNCH_PRIORITY_COMPLETED_KEY: &str =
    "apps.kruise.io/container-launch-priority-completed";

/// Pod condition type (and readiness gate) that several writers
/// (ContainerRecreateRequest, CloneSet, Advanced StatefulSet, Advanced
/// DaemonSet) may set to False; it is True only when none of them holds it
/// False.
pub const KRUISE_POD_READY_CONDITION_TYPE: &str = "KruisePodReady";

/// Label key prefix: a pod carrying any label with this prefix counts as
/// unavailable to Kruise workloads and PodUnavailableBudget, even when
/// ready.
pub const PUB_UNAVAILABLE_POD_LABEL_PREFIX: &str = "unavailable-pod.kruise.io/";

/// Whether any of the labels marks the pod unavailable (see
/// [`PUB_UNAVAILABLE_POD_LABEL_PREFIX`]).
pub fn has_unavailable_label(labels: &BTreeMap<String, String>) -> bool {
    labels
        .keys()
        .any(|k| k.starts_with(PUB_UNAVAILABLE_POD_LABEL_PREFIX))
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Schema for a field OpenKruise declares schemaless: any value is kept as
/// is (`x-kubernetes-preserve-unknown-fields`), with no type. OpenKruise
/// does this for workload pod templates and volume claim templates. Use as
/// `#[schemars(schema_with = "crate::apps::shared::schemaless")]`.
pub fn schemaless(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// Schema of a list whose items are kept as written (objects of any
/// shape), as OpenKruise's CRDs have for embedded containers and volumes:
/// keeps a CRD small enough for `kubectl apply` (whose last-applied
/// annotation is capped at 256 KiB).
pub fn schemaless_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// Reads `null` as the type's default (Go writes nil maps and slices as
/// `null`).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_place_update_state_reads_an_openkruise_annotation() {
        let raw = r#"{"revision":"demo-7c8d9f","updateTimestamp":"2024-05-01T08:00:00Z","lastContainerStatuses":{"main":{"imageID":"docker.io/library/nginx@sha256:0123"}},"updateImages":true,"containerBatchesRecord":[{"timestamp":"2024-05-01T08:00:00Z","containers":["main"]}]}"#;
        let state: InPlaceUpdateState = serde_json::from_str(raw).unwrap();
        assert_eq!(state.revision, "demo-7c8d9f");
        assert!(state.update_timestamp.is_some());
        assert_eq!(
            state.last_container_statuses["main"].image_id,
            "docker.io/library/nginx@sha256:0123"
        );
        assert!(state.update_images);
        assert!(!state.update_resources);
        assert_eq!(
            state.container_batches_record[0].containers,
            vec!["main".to_string()]
        );

        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(
            json["lastContainerStatuses"]["main"]["imageID"],
            "docker.io/library/nginx@sha256:0123"
        );
        assert_eq!(json["updateImages"], true);
        assert!(json.get("updateResources").is_none());
        assert!(json.get("nextContainerImages").is_none());
        let back: InPlaceUpdateState = serde_json::from_value(json).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn null_maps_and_times_read_as_empty() {
        let state: InPlaceUpdateState = serde_json::from_str(
            r#"{"revision":"r","updateTimestamp":null,"lastContainerStatuses":null}"#,
        )
        .unwrap();
        assert!(state.update_timestamp.is_none());
        assert!(state.last_container_statuses.is_empty());
        let json = serde_json::to_value(state).unwrap();
        assert!(json["updateTimestamp"].is_null());
        assert_eq!(json["lastContainerStatuses"], serde_json::json!({}));
    }

    #[test]
    fn runtime_container_meta_uses_upstream_names() {
        let raw = r#"{"containers":[{"name":"main","containerID":"containerd://abc","restartCount":2,"hashes":{"plainHash":1234567890123,"extractedEnvFromMetadataHash":42}}]}"#;
        let set: RuntimeContainerMetaSet = serde_json::from_str(raw).unwrap();
        let c = &set.containers[0];
        assert_eq!(c.container_id, "containerd://abc");
        assert_eq!(c.restart_count, 2);
        assert_eq!(c.hashes.plain_hash, 1234567890123);
        assert_eq!(c.hashes.extracted_env_from_metadata_hash, 42);
        assert_eq!(serde_json::to_string(&set).unwrap(), raw);
    }

    #[test]
    fn annotation_getters_fall_back_to_the_legacy_keys() {
        let mut meta = ObjectMeta::default();
        assert_eq!(get_in_place_update_grace(&meta), None);
        meta.annotations = Some(
            [
                (IN_PLACE_UPDATE_GRACE_KEY_OLD.to_string(), "old".to_string()),
                (IN_PLACE_UPDATE_STATE_KEY_OLD.to_string(), "old".to_string()),
                (IN_PLACE_UPDATE_STATE_KEY.to_string(), "new".to_string()),
            ]
            .into(),
        );
        assert_eq!(get_in_place_update_grace(&meta), Some("old"));
        assert_eq!(get_in_place_update_state(&meta), Some("new"));
    }

    #[test]
    fn unavailable_label_is_matched_by_prefix() {
        let mut labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        assert!(!has_unavailable_label(&labels));
        labels.insert("unavailable-pod.kruise.io/drain".into(), "true".into());
        assert!(has_unavailable_label(&labels));
    }

    #[test]
    fn lifecycle_and_priority_use_upstream_names() {
        let lc = Lifecycle {
            pre_delete: Some(LifecycleHook {
                finalizers_handler: vec!["example.com/unregister".into()],
                mark_pod_not_ready: true,
                ..Default::default()
            }),
            in_place_update: Some(LifecycleHook {
                labels_handler: [("example.com/unready".to_string(), "true".to_string())].into(),
                ..Default::default()
            }),
            pre_normal: None,
        };
        assert_eq!(
            serde_json::to_value(lc).unwrap(),
            serde_json::json!({
                "preDelete": {"finalizersHandler": ["example.com/unregister"], "markPodNotReady": true},
                "inPlaceUpdate": {"labelsHandler": {"example.com/unready": "true"}}
            })
        );
        let prio: UpdatePriorityStrategy = serde_json::from_value(serde_json::json!({
            "weightPriority": [{"weight": 50, "matchSelector": {"matchLabels": {"tier": "canary"}}}]
        }))
        .unwrap();
        assert_eq!(prio.weight_priority[0].weight, 50);
        assert!(prio.order_priority.is_empty());
    }
}
