//! Advanced StatefulSet, old version (`apps.kruise.io/v1alpha1`, kind
//! `StatefulSet`). Served but not stored: the storage version is
//! [`crate::apps::v1beta1::statefulset`] (see its `STORAGE_VERSION`),
//! which adds reserved ordinals, lifecycle hooks, scale strategy, PVC
//! retention and resizing, and a custom first ordinal.
//!
//! The types here are kept separate from `v1beta1`'s so that this version's
//! schema stays as upstream has it; the shared field names convert one to
//! one.

use k8s_openapi::api::apps::v1::StatefulSetCondition;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apps::shared::{InPlaceUpdateStrategy, UpdatePriorityStrategy};

/// The values this version shares with `v1beta1`: the bound of
/// `minReadySeconds`, the `podUpdatePolicy` values, the condition types and
/// the Kubernetes `updateStrategy.type` / `podManagementPolicy` values.
pub use crate::apps::v1beta1::statefulset::{
    FAILED_CREATE_POD, FAILED_UPDATE_POD, IN_PLACE_IF_POSSIBLE_POD_UPDATE_STRATEGY_TYPE,
    IN_PLACE_ONLY_POD_UPDATE_STRATEGY_TYPE, MAX_MIN_READY_SECONDS,
    ON_DELETE_STATEFUL_SET_STRATEGY_TYPE, ORDERED_READY_POD_MANAGEMENT, PARALLEL_POD_MANAGEMENT,
    RECREATE_POD_UPDATE_STRATEGY_TYPE, ROLLING_UPDATE_STATEFUL_SET_STRATEGY_TYPE,
};

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Desired state of a `v1alpha1` Advanced StatefulSet.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "StatefulSet",
    plural = "statefulsets",
    shortname = "sts",
    shortname = "asts",
    namespaced,
    status = "StatefulSetStatus",
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas","labelSelectorPath":".status.labelSelector"}"#,
    printcolumn = r#"{"name":"DESIRED","type":"integer","jsonPath":".spec.replicas","description":"The desired number of pods."}"#,
    printcolumn = r#"{"name":"CURRENT","type":"integer","jsonPath":".status.replicas","description":"The number of currently all pods."}"#,
    printcolumn = r#"{"name":"UPDATED","type":"integer","jsonPath":".status.updatedReplicas","description":"The number of pods updated."}"#,
    printcolumn = r#"{"name":"READY","type":"integer","jsonPath":".status.readyReplicas","description":"The number of pods ready."}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"CONTAINERS","type":"string","priority":1,"jsonPath":".spec.template.spec.containers[*].name","description":"The containers of currently advanced statefulset."}"#,
    printcolumn = r#"{"name":"IMAGES","type":"string","priority":1,"jsonPath":".spec.template.spec.containers[*].image","description":"The images of currently advanced statefulset."}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetSpec {
    /// Number of pods wanted; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label query selecting the set's pods; must match the template's
    /// labels.
    pub selector: LabelSelector,
    /// The pod every replica is stamped from. Schemaless in the CRD, as
    /// upstream.
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub template: PodTemplateSpec,
    /// PVCs created per pod and mounted by volume name. Schemaless in the
    /// CRD, as upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub volume_claim_templates: Vec<PersistentVolumeClaim>,
    /// Name of the headless service that gives the pods their DNS names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// `OrderedReady` (the default) or `Parallel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_management_policy: Option<String>,
    /// How pods are moved to a new template revision.
    #[serde(default)]
    pub update_strategy: StatefulSetUpdateStrategy,
    /// How many old ControllerRevisions to keep; 10 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
}

/// How pods are moved to a new revision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetUpdateStrategy {
    /// `RollingUpdate` (the default) or `OnDelete`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Parameters of `RollingUpdate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdateStatefulSetStrategy>,
}

/// Parameters of a rolling update.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdateStatefulSetStrategy {
    /// Ordinal from which pods are updated; with `unorderedUpdate`, the
    /// number of pods left on the old revision instead. 0 when absent.
    /// Carried over unchanged to `v1beta1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// How many pods may be unavailable during the update (a number or a
    /// percentage, rounded down); 1 when absent. Only with
    /// `podManagementPolicy: Parallel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// `ReCreate` (the default), `InPlaceIfPossible` or `InPlaceOnly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_update_policy: Option<String>,
    /// Stop updating pods while set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// When present, pods are updated in priority order rather than by
    /// ordinal (only with `podManagementPolicy: Parallel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unordered_update: Option<UnorderedUpdateStrategy>,
    /// Tuning of in-place updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place_update_strategy: Option<InPlaceUpdateStrategy>,
    /// Seconds an updated pod must stay ready before it counts as
    /// available (0 to [`MAX_MIN_READY_SECONDS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
}

/// Settings of an update that does not follow ordinal order.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnorderedUpdateStrategy {
    /// Rules ranking pods for update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_strategy: Option<UpdatePriorityStrategy>,
}

/// Observed state of a `v1alpha1` Advanced StatefulSet. The replica
/// counters are always written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetStatus {
    /// The `metadata.generation` this status reflects.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub observed_generation: i64,
    /// Pods the controller has created.
    #[serde(default)]
    pub replicas: i32,
    /// Pods with a Ready condition.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods ready for at least `minReadySeconds`.
    #[serde(default)]
    pub available_replicas: i32,
    /// Pods at `currentRevision`.
    #[serde(default)]
    pub current_replicas: i32,
    /// Pods at `updateRevision`.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Revision of the pods not yet updated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_revision: String,
    /// Revision the pods are being updated to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub update_revision: String,
    /// Bumped on ControllerRevision name collisions to vary the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
    /// Latest observations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<StatefulSetCondition>,
    /// The selector in string form, for the scale subresource (HPA).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label_selector: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::json;

    const ALPHA_STS: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: StatefulSet
metadata:
  name: sample
spec:
  replicas: 3
  serviceName: sample
  podManagementPolicy: Parallel
  selector:
    matchLabels:
      app: sample
  template:
    metadata:
      labels:
        app: sample
    spec:
      containers:
      - name: main
        image: nginx:alpine
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      podUpdatePolicy: InPlaceIfPossible
      maxUnavailable: 2
      paused: true
      inPlaceUpdateStrategy:
        gracePeriodSeconds: 5
status:
  replicas: 3
  readyReplicas: 3
  availableReplicas: 3
  currentReplicas: 3
  updatedReplicas: 0
  currentRevision: sample-6f8d
  updateRevision: sample-6f8d
"#;

    #[test]
    fn deserialises_and_round_trips() {
        let sts: StatefulSet = serde_saphyr::from_str(ALPHA_STS).unwrap();
        assert_eq!(sts.spec.replicas, Some(3));
        assert_eq!(
            sts.spec.pod_management_policy.as_deref(),
            Some(PARALLEL_POD_MANAGEMENT)
        );
        let ru = sts.spec.update_strategy.rolling_update.as_ref().unwrap();
        assert_eq!(
            ru.pod_update_policy.as_deref(),
            Some(IN_PLACE_IF_POSSIBLE_POD_UPDATE_STRATEGY_TYPE)
        );
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(2)));
        assert!(ru.paused);
        assert!(ru.in_place_update_strategy.is_some());
        let st = sts.status.as_ref().unwrap();
        assert_eq!((st.replicas, st.updated_replicas), (3, 0));

        let v = serde_json::to_value(&sts).unwrap();
        assert_eq!(v["apiVersion"], "apps.kruise.io/v1alpha1");
        assert_eq!(v["spec"]["updateStrategy"]["rollingUpdate"]["paused"], true);
        // Counters are written even when zero.
        assert_eq!(v["status"]["updatedReplicas"], 0);
        let back: StatefulSet = serde_json::from_value(v).unwrap();
        assert_eq!(back.spec, sts.spec);
        assert_eq!(back.status, sts.status);
    }

    #[test]
    fn crd_has_only_the_alpha_fields() {
        let crd = serde_json::to_value(StatefulSet::crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["sts", "asts"]));
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(
            version["subresources"]["scale"]["labelSelectorPath"],
            ".status.labelSelector"
        );
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec["properties"]["template"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
        for beta_only in [
            "ordinals",
            "reserveOrdinals",
            "lifecycle",
            "scaleStrategy",
            "persistentVolumeClaimRetentionPolicy",
            "volumeClaimUpdateStrategy",
        ] {
            assert!(
                spec["properties"].get(beta_only).is_none(),
                "{beta_only} is v1beta1 only"
            );
        }
        let manifest: serde_json::Value = serde_saphyr::from_str(ALPHA_STS).unwrap();
        assert_eq!(
            crate::validate::validate(&StatefulSet::crd(), "v1alpha1", &manifest),
            Vec::<String>::new()
        );
    }
}
