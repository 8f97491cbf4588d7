//! UnitedDeployment (`apps.kruise.io/v1alpha1`): one workload template
//! (StatefulSet, Advanced StatefulSet, CloneSet or Deployment) stamped out
//! as several "subsets", each pinned to a group of nodes, with the total
//! replica count spread over the subsets and per-subset partitions for
//! manual rollouts.
//!
//! Field list as of OpenKruise v1.9.0, where this is the only (and stored)
//! version and the CloneSet template is a `v1alpha1` CloneSet spec.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DeploymentSpec, StatefulSetSpec as K8sStatefulSetSpec};
use k8s_openapi::api::core::v1::{NodeSelectorTerm, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apps::v1alpha1::cloneset::CloneSetSpec;
use crate::apps::v1beta1::statefulset::StatefulSetSpec as AdvancedStatefulSetSpec;

/// Label put on each subset workload (and its selector and pods): the
/// subset's name.
pub const SUB_SET_NAME_LABEL_KEY: &str = "apps.kruise.io/subset-name";
/// Label marking a pod kept pending by the adaptive strategy's reservation
/// mode while a substitute runs in another subset.
pub const RESERVED_POD_LABEL_KEY: &str = "apps.kruise.io/united-deployment-reserved-pod";
/// Annotation on a subset workload recording the subset's `patch`.
pub const ANNOTATION_SUBSET_PATCH_KEY: &str = "apps.kruise.io/subset-patch";

/// `updateStrategy.type`: rollout driven by per-subset partitions (the
/// only strategy, and the default).
pub const MANUAL_UPDATE_STRATEGY_TYPE: &str = "Manual";

/// Condition type: every wanted subset exists and no stray one is left.
pub const SUBSET_PROVISIONED: &str = "SubsetProvisioned";
/// Condition type: every subset is updated.
pub const SUBSET_UPDATED: &str = "SubsetUpdated";
/// Condition type: reconciling some subset failed.
pub const SUBSET_FAILURE: &str = "SubsetFailure";
/// Condition type: the current revision equals the updated revision.
pub const UNITED_DEPLOYMENT_UPDATED: &str = "UnitedDeploymentUpdated";

/// Subset condition type: whether new pods of the subset can be scheduled
/// (`False` once pods stay pending).
pub const UNITED_DEPLOYMENT_SUBSET_SCHEDULABLE: &str = "Schedulable";

/// `topology.scheduleStrategy.type`: pods that cannot be scheduled in
/// their subset are moved to subsets with room.
pub const ADAPTIVE_UNITED_DEPLOYMENT_SCHEDULE_STRATEGY_TYPE: &str = "Adaptive";
/// `topology.scheduleStrategy.type`: pods stay in their subset even if
/// unschedulable (the default).
pub const FIXED_UNITED_DEPLOYMENT_SCHEDULE_STRATEGY_TYPE: &str = "Fixed";

/// How long a pod may stay unschedulable before the adaptive strategy
/// moves it, when `rescheduleCriticalSeconds` is absent.
pub const DEFAULT_RESCHEDULE_CRITICAL_DURATION: Duration = Duration::from_secs(30);
/// How long a subset counts as unschedulable, when `unschedulableDuration`
/// is absent.
pub const DEFAULT_UNSCHEDULABLE_STATUS_LAST_DURATION: Duration = Duration::from_secs(300);

/// Webhook default of `spec.revisionHistoryLimit`.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn seconds(s: i32) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// Desired state of a UnitedDeployment.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "UnitedDeployment",
    plural = "uniteddeployments",
    shortname = "ud",
    namespaced,
    status = "UnitedDeploymentStatus",
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas","labelSelectorPath":".status.labelSelector"}"#,
    printcolumn = r#"{"name":"DESIRED","type":"integer","jsonPath":".spec.replicas","description":"The desired number of pods."}"#,
    printcolumn = r#"{"name":"CURRENT","type":"integer","jsonPath":".status.replicas","description":"The number of currently all pods."}"#,
    printcolumn = r#"{"name":"UPDATED","type":"integer","jsonPath":".status.updatedReplicas","description":"The number of pods updated."}"#,
    printcolumn = r#"{"name":"READY","type":"integer","jsonPath":".status.readyReplicas","description":"The number of pods ready."}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct UnitedDeploymentSpec {
    /// Total pods over all subsets; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label query over the pods; must match the template's pod labels.
    pub selector: LabelSelector,
    /// The workload each subset is made from.
    #[serde(default)]
    pub template: SubsetTemplate,
    /// The subsets and how pods are placed among them.
    #[serde(default)]
    pub topology: Topology,
    /// How a template change is rolled out.
    #[serde(default)]
    pub update_strategy: UnitedDeploymentUpdateStrategy,
    /// How many old ControllerRevisions to keep; 10 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
}

/// The subset workload template; exactly one of the four is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubsetTemplate {
    /// Subsets are Kubernetes StatefulSets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful_set_template: Option<StatefulSetTemplateSpec>,
    /// Subsets are Advanced StatefulSets (`apps.kruise.io/v1beta1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced_stateful_set_template: Option<AdvancedStatefulSetTemplateSpec>,
    /// Subsets are CloneSets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_set_template: Option<CloneSetTemplateSpec>,
    /// Subsets are Kubernetes Deployments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_template: Option<DeploymentTemplateSpec>,
}

/// Template of a Kubernetes StatefulSet subset. Schemaless in the CRD, as
/// upstream.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetTemplateSpec {
    /// Labels and annotations for the subset workloads.
    #[serde(default)]
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub metadata: ObjectMeta,
    /// The StatefulSet spec (replicas and placement are set per subset).
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub spec: K8sStatefulSetSpec,
}

/// Template of an Advanced StatefulSet subset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvancedStatefulSetTemplateSpec {
    /// Labels and annotations for the subset workloads (schemaless).
    #[serde(default)]
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub metadata: ObjectMeta,
    /// The Advanced StatefulSet spec (replicas and placement are set per
    /// subset).
    pub spec: AdvancedStatefulSetSpec,
}

/// Template of a CloneSet subset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetTemplateSpec {
    /// Labels and annotations for the subset workloads (schemaless).
    #[serde(default)]
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub metadata: ObjectMeta,
    /// The CloneSet spec (replicas and placement are set per subset).
    pub spec: CloneSetSpec,
}

/// Template of a Kubernetes Deployment subset. Schemaless in the CRD, as
/// upstream.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentTemplateSpec {
    /// Labels and annotations for the subset workloads.
    #[serde(default)]
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub metadata: ObjectMeta,
    /// The Deployment spec (replicas and placement are set per subset).
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub spec: DeploymentSpec,
}

/// How a template change is rolled out.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnitedDeploymentUpdateStrategy {
    /// `Manual` (the default); see [`MANUAL_UPDATE_STRATEGY_TYPE`].
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Parameters of `Manual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_update: Option<ManualUpdate>,
}

/// Manual rollout: the user sets each subset's partition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualUpdate {
    /// Partition of each subset, by subset name (passed on to the subset
    /// workload's own partition).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partitions: BTreeMap<String, i32>,
}

/// The subsets and how pods are placed among them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    /// The subsets, in priority order (used when filling `minReplicas`).
    /// Names are unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// What happens to pods that cannot be scheduled in their subset.
    #[serde(default)]
    pub schedule_strategy: UnitedDeploymentScheduleStrategy,
}

/// One subset: a workload restricted to some nodes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// DNS label naming the subset; subset workloads are named
    /// `<uniteddeployment>-<subset>-<suffix>`.
    pub name: String,
    /// Node selector term added to the pods (immutable).
    #[serde(default)]
    pub node_selector_term: NodeSelectorTerm,
    /// Tolerations added to the pods (immutable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Fixed share of the pods: a number, or a percentage of
    /// `spec.replicas`. Absent leaves it to the controller, which evens out
    /// the subsets without one. Not to be combined with `minReplicas` /
    /// `maxReplicas` in the same UnitedDeployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<IntOrString>,
    /// Lower bound of the subset's pods (0 when absent), filled in subset
    /// order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<IntOrString>,
    /// Upper bound of the subset's pods, at least `minReplicas`; absent
    /// means no bound (keep at least one subset unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<IntOrString>,
    /// Strategic-merge patch applied to the subset workload's pod
    /// template; it wins over `nodeSelectorTerm` and `tolerations`.
    /// Schemaless in the CRD, as upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub patch: Option<serde_json::Value>,
}

/// How pods are kept in, or moved between, subsets when they cannot be
/// scheduled.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnitedDeploymentScheduleStrategy {
    /// `Adaptive`, `Fixed` (the default) or empty; see
    /// [`ADAPTIVE_UNITED_DEPLOYMENT_SCHEDULE_STRATEGY_TYPE`] and
    /// [`FIXED_UNITED_DEPLOYMENT_SCHEDULE_STRATEGY_TYPE`].
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Adaptive", "Fixed", ""]))]
    pub type_: Option<String>,
    /// Parameters of `Adaptive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveUnitedDeploymentStrategy>,
}

impl UnitedDeploymentScheduleStrategy {
    /// Whether the `Adaptive` strategy is chosen.
    pub fn is_adaptive(&self) -> bool {
        self.type_.as_deref() == Some(ADAPTIVE_UNITED_DEPLOYMENT_SCHEDULE_STRATEGY_TYPE)
    }

    /// Whether unschedulable pods are kept (and stood in for) rather than
    /// moved: `Adaptive` with `reserveUnschedulablePods`.
    pub fn should_reserve_unschedulable_pods(&self) -> bool {
        self.is_adaptive()
            && self
                .adaptive
                .as_ref()
                .is_some_and(|a| a.reserve_unschedulable_pods)
    }

    /// `rescheduleCriticalSeconds`, or
    /// [`DEFAULT_RESCHEDULE_CRITICAL_DURATION`] (negative counts as 0).
    pub fn reschedule_critical_duration(&self) -> Duration {
        self.adaptive
            .as_ref()
            .and_then(|a| a.reschedule_critical_seconds)
            .map_or(DEFAULT_RESCHEDULE_CRITICAL_DURATION, seconds)
    }

    /// `unschedulableDuration`, or
    /// [`DEFAULT_UNSCHEDULABLE_STATUS_LAST_DURATION`] (negative counts as
    /// 0).
    pub fn unschedulable_duration(&self) -> Duration {
        self.adaptive
            .as_ref()
            .and_then(|a| a.unschedulable_duration)
            .map_or(DEFAULT_UNSCHEDULABLE_STATUS_LAST_DURATION, seconds)
    }
}

/// Parameters of the `Adaptive` schedule strategy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdaptiveUnitedDeploymentStrategy {
    /// Seconds a pod may stay unschedulable before it is moved to a later
    /// subset with room; 30 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reschedule_critical_seconds: Option<i32>,
    /// Seconds a subset is treated as unschedulable after pods failed to
    /// schedule there; 300 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable_duration: Option<i32>,
    /// Keep unschedulable pods where they are and run temporary
    /// substitutes in other subsets until they are scheduled and ready.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reserve_unschedulable_pods: bool,
}

/// Observed state of a UnitedDeployment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnitedDeploymentStatus {
    /// The `metadata.generation` this status reflects.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub observed_generation: i64,
    /// Ready pods.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ready_replicas: i32,
    /// Pods over all subsets (always written).
    #[serde(default)]
    pub replicas: i32,
    /// Pods at the updated revision (always written).
    #[serde(default)]
    pub updated_replicas: i32,
    /// Pods held back by the adaptive strategy's reservation mode.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reserved_pods: i32,
    /// Ready pods at the updated revision.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub updated_ready_replicas: i32,
    /// Bumped on ControllerRevision name collisions to vary the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
    /// The current revision (always written).
    #[serde(default)]
    pub current_revision: String,
    /// Pods allotted to each subset, by subset name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subset_replicas: BTreeMap<String, i32>,
    /// Per-subset state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subset_statuses: Vec<UnitedDeploymentSubsetStatus>,
    /// Latest observations; types are [`SUBSET_PROVISIONED`] and its
    /// siblings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<UnitedDeploymentCondition>,
    /// Progress of the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<UpdateStatus>,
    /// The selector in string form, for the scale subresource (HPA).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label_selector: String,
}

impl UnitedDeploymentStatus {
    /// The status entry of the named subset.
    pub fn subset_status(&self, subset: &str) -> Option<&UnitedDeploymentSubsetStatus> {
        self.subset_statuses.iter().find(|s| s.name == subset)
    }

    /// The status entry of the named subset, for updating.
    pub fn subset_status_mut(&mut self, subset: &str) -> Option<&mut UnitedDeploymentSubsetStatus> {
        self.subset_statuses.iter_mut().find(|s| s.name == subset)
    }
}

/// One observation about a UnitedDeployment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnitedDeploymentCondition {
    /// [`SUBSET_PROVISIONED`], [`SUBSET_UPDATED`], [`SUBSET_FAILURE`] or
    /// [`UNITED_DEPLOYMENT_UPDATED`].
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Machine-readable cause of the last change.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Progress of the rollout.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStatus {
    /// The revision being rolled out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub updated_revision: String,
    /// Partition currently applied to each subset, by subset name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub current_partitions: BTreeMap<String, i32>,
}

/// State of one subset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnitedDeploymentSubsetStatus {
    /// The subset's name in `topology.subsets`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Pods of the subset (not filled in upstream yet).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replicas: i32,
    /// Ready pods of the subset (not filled in upstream yet).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ready_replicas: i32,
    /// The subset's partition (not filled in upstream yet).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub partition: i32,
    /// Pods of the subset held back by the reservation mode.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reserved_pods: i32,
    /// Observations about the subset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<UnitedDeploymentSubsetCondition>,
}

impl UnitedDeploymentSubsetStatus {
    /// The condition of the given type, if any.
    pub fn condition(&self, type_: &str) -> Option<&UnitedDeploymentSubsetCondition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Records a condition. Nothing changes when one of that type already
    /// has the same status and reason; otherwise it is added or updated,
    /// with `now` as its transition time. Returns whether anything changed.
    pub fn set_condition(
        &mut self,
        type_: &str,
        status: &str,
        reason: &str,
        message: &str,
        now: Time,
    ) -> bool {
        let idx = match self.conditions.iter().position(|c| c.type_ == type_) {
            Some(i) => {
                let c = &self.conditions[i];
                if c.status == status && c.reason == reason {
                    return false;
                }
                i
            }
            None => {
                self.conditions.push(UnitedDeploymentSubsetCondition {
                    type_: type_.to_string(),
                    ..Default::default()
                });
                self.conditions.len() - 1
            }
        };
        let c = &mut self.conditions[idx];
        c.status = status.to_string();
        c.reason = reason.to_string();
        c.message = message.to_string();
        c.last_transition_time = Some(now);
        true
    }
}

/// One observation about a subset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnitedDeploymentSubsetCondition {
    /// The condition type, e.g. [`UNITED_DEPLOYMENT_SUBSET_SCHEDULABLE`].
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Machine-readable cause of the last change.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[cfg(test)]
mod tests;
