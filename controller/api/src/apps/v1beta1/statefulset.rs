//! Advanced StatefulSet (`apps.kruise.io/v1beta1`, kind `StatefulSet`): a
//! StatefulSet with in-place updates, parallel and unordered rolling
//! updates with `maxUnavailable`, paused updates, reserved ordinals, a
//! custom first ordinal, lifecycle hooks, PVC retention and PVC resizing.
//!
//! This is the storage version of the kind ([`STORAGE_VERSION`]); the older
//! `v1alpha1` lives in [`crate::apps::v1alpha1::statefulset`] and converts
//! into this one field by field.

use k8s_openapi::api::apps::v1::StatefulSetCondition;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apps::shared::{InPlaceUpdateStrategy, Lifecycle, UpdatePriorityStrategy};

/// The API version that stores Advanced StatefulSets in etcd (upstream
/// marks it `+kubebuilder:storageversion`); pass it to
/// `kube::core::crd::merge_crds` when combining the two versions' CRDs.
pub const STORAGE_VERSION: &str = "v1beta1";

/// Upper bound of `rollingUpdate.minReadySeconds`.
pub const MAX_MIN_READY_SECONDS: i32 = 300;

/// `rollingUpdate.podUpdatePolicy`: delete and recreate every pod being
/// updated (the default).
pub const RECREATE_POD_UPDATE_STRATEGY_TYPE: &str = "ReCreate";
/// `rollingUpdate.podUpdatePolicy`: update a pod in place when only
/// in-place-updatable fields changed, otherwise recreate it.
pub const IN_PLACE_IF_POSSIBLE_POD_UPDATE_STRATEGY_TYPE: &str = "InPlaceIfPossible";
/// `rollingUpdate.podUpdatePolicy`: only ever update pods in place; other
/// template changes are refused.
pub const IN_PLACE_ONLY_POD_UPDATE_STRATEGY_TYPE: &str = "InPlaceOnly";

/// `volumeClaimUpdateStrategy.type`: PVCs are brought in line with changed
/// volume claim templates while their pods are rolled.
pub const ON_POD_ROLLING_UPDATE_VOLUME_CLAIM_UPDATE_STRATEGY_TYPE: &str = "OnPodRollingUpdate";
/// `volumeClaimUpdateStrategy.type`: a changed volume claim template only
/// takes effect for a PVC once the user deletes it (the default when the
/// PVC auto-resize feature gate is on).
pub const ON_PVC_DELETE_VOLUME_CLAIM_UPDATE_STRATEGY_TYPE: &str = "OnDelete";

/// `persistentVolumeClaimRetentionPolicy.when*`: keep the PVCs (the default).
pub const RETAIN_PERSISTENT_VOLUME_CLAIM_RETENTION_POLICY_TYPE: &str = "Retain";
/// `persistentVolumeClaimRetentionPolicy.when*`: delete the PVCs.
pub const DELETE_PERSISTENT_VOLUME_CLAIM_RETENTION_POLICY_TYPE: &str = "Delete";

/// Status condition type: creating a pod failed.
pub const FAILED_CREATE_POD: &str = "FailedCreatePod";
/// Status condition type: updating a pod failed.
pub const FAILED_UPDATE_POD: &str = "FailedUpdatePod";

/// `updateStrategy.type` (Kubernetes `apps/v1` value): roll pods to the new
/// revision automatically (the default).
pub const ROLLING_UPDATE_STATEFUL_SET_STRATEGY_TYPE: &str = "RollingUpdate";
/// `updateStrategy.type` (Kubernetes `apps/v1` value): replace a pod only
/// when the user deletes it.
pub const ON_DELETE_STATEFUL_SET_STRATEGY_TYPE: &str = "OnDelete";
/// `podManagementPolicy` (Kubernetes `apps/v1` value): one pod at a time,
/// each waiting for its predecessor to be ready (the default).
pub const ORDERED_READY_POD_MANAGEMENT: &str = "OrderedReady";
/// `podManagementPolicy` (Kubernetes `apps/v1` value): create and delete
/// pods without waiting for each other.
pub const PARALLEL_POD_MANAGEMENT: &str = "Parallel";

/// Webhook default of `spec.replicas`.
pub const DEFAULT_REPLICAS: i32 = 1;
/// Webhook default of `spec.revisionHistoryLimit`.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
/// Webhook default of `rollingUpdate.maxUnavailable`.
pub const DEFAULT_MAX_UNAVAILABLE: i32 = 1;

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Desired state of an Advanced StatefulSet.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1beta1",
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
    /// Number of pods wanted; 1 when absent (webhook default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label query selecting the set's pods; must match the template's
    /// labels.
    pub selector: LabelSelector,
    /// The pod every replica is stamped from (each with its own ordinal
    /// identity). Schemaless in the CRD, as upstream.
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub template: PodTemplateSpec,
    /// PVCs created per pod (named `<claim>-<pod>`) and mounted by volume
    /// name; they win over template volumes of the same name. Schemaless in
    /// the CRD, as upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub volume_claim_templates: Vec<PersistentVolumeClaim>,
    /// How changes to `volumeClaimTemplates` reach existing PVCs (only
    /// honoured with the PVC auto-resize feature gate).
    #[serde(default)]
    pub volume_claim_update_strategy: VolumeClaimUpdateStrategy,
    /// Name of the headless service that gives the pods their DNS names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// `OrderedReady` (the default) or `Parallel`; see
    /// [`ORDERED_READY_POD_MANAGEMENT`] and [`PARALLEL_POD_MANAGEMENT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_management_policy: Option<String>,
    /// How pods are moved to a new template revision.
    #[serde(default)]
    pub update_strategy: StatefulSetUpdateStrategy,
    /// How many old ControllerRevisions to keep; 10 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    /// Ordinals to skip: integers, or `"a-b"` strings for inclusive
    /// ranges. `replicas` still counts running pods, so reserving an
    /// ordinal moves that pod to the next free ordinal unless `replicas`
    /// is lowered too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserve_ordinals: Vec<IntOrString>,
    /// Hooks holding pods before deletion and around in-place updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// Limits on scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_strategy: Option<StatefulSetScaleStrategy>,
    /// Whether PVCs from `volumeClaimTemplates` are deleted with the set or
    /// on scale-down (feature gate `StatefulSetAutoDeletePVC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_retention_policy:
        Option<StatefulSetPersistentVolumeClaimRetentionPolicy>,
    /// Numbering of the replicas (first ordinal); 0-based when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordinals: Option<StatefulSetOrdinals>,
}

impl StatefulSetSpec {
    /// The first replica's ordinal: `ordinals.start`, or 0.
    pub fn start_ordinal(&self) -> i32 {
        self.ordinals.as_ref().map_or(0, |o| o.start)
    }
}

/// How a change of `volumeClaimTemplates` is applied to existing PVCs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeClaimUpdateStrategy {
    /// `OnPodRollingUpdate` or `OnDelete`; see
    /// [`ON_POD_ROLLING_UPDATE_VOLUME_CLAIM_UPDATE_STRATEGY_TYPE`] and
    /// [`ON_PVC_DELETE_VOLUME_CLAIM_UPDATE_STRATEGY_TYPE`].
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// How pods are moved to a new revision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetUpdateStrategy {
    /// `RollingUpdate` (the default) or `OnDelete`; see
    /// [`ROLLING_UPDATE_STATEFUL_SET_STRATEGY_TYPE`] and
    /// [`ON_DELETE_STATEFUL_SET_STRATEGY_TYPE`].
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
    /// How many pods stay on the old revision: the controller updates
    /// `replicas - partition` pods. 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// How many pods may be unavailable during the update (a number or a
    /// percentage of `replicas`, rounded down); 1 when absent. Only
    /// honoured with `podManagementPolicy: Parallel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// `ReCreate` (the default), `InPlaceIfPossible` or `InPlaceOnly`; see
    /// [`RECREATE_POD_UPDATE_STRATEGY_TYPE`] and its siblings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_update_policy: Option<String>,
    /// Stop updating pods while set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// When present, pods are updated in priority order rather than by
    /// descending ordinal (only with `podManagementPolicy: Parallel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unordered_update: Option<UnorderedUpdateStrategy>,
    /// Tuning of in-place updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place_update_strategy: Option<InPlaceUpdateStrategy>,
    /// Seconds an updated pod must stay ready before it counts as
    /// available (0 to [`MAX_MIN_READY_SECONDS`]); slows scale-up under
    /// `OrderedReady` and, with `maxUnavailable`, the update pace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
}

/// Settings of an update that does not follow ordinal order.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnorderedUpdateStrategy {
    /// Rules (weights or an ordered label key) ranking pods for update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_strategy: Option<UpdatePriorityStrategy>,
}

/// What happens to the PVCs of `volumeClaimTemplates` on deletion and
/// scale-down.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetPersistentVolumeClaimRetentionPolicy {
    /// When the set is deleted: `Retain` (the default) or `Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_deleted: Option<String>,
    /// When the set scales down, for the pods removed: `Retain` (the
    /// default) or `Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_scaled: Option<String>,
}

/// Replica numbering.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetOrdinals {
    /// Ordinal of the first replica; replicas are numbered
    /// `start .. start + replicas` (skipping reserved ordinals). 0 when
    /// absent. Always written, as upstream.
    #[serde(default)]
    pub start: i32,
}

/// Limits on scaling.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetScaleStrategy {
    /// How many pods may be unavailable while scaling (a number or a
    /// percentage, rounded down); only with `podManagementPolicy:
    /// Parallel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// Observed state of an Advanced StatefulSet. The replica counters are
/// always written.
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
    /// Pods at `updateRevision` that are ready.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub updated_ready_replicas: i32,
    /// Pods at `updateRevision` ready for at least `minReadySeconds`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub updated_available_replicas: i32,
    /// Revision of the pods not yet updated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_revision: String,
    /// Revision the pods are being updated to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub update_revision: String,
    /// Bumped on ControllerRevision name collisions to vary the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
    /// Latest observations; types include [`FAILED_CREATE_POD`] and
    /// [`FAILED_UPDATE_POD`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<StatefulSetCondition>,
    /// The selector in string form, for the scale subresource (HPA).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label_selector: String,
    /// Per volume claim template: how many replicas' PVCs match it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_claims: Vec<VolumeClaimStatus>,
}

/// How far the PVCs of one volume claim template have caught up with it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeClaimStatus {
    /// Name of the volume claim template.
    pub volume_claim_name: String,
    /// Replicas whose PVC requests at least the template's storage.
    pub compatible_replicas: i32,
    /// Of those, replicas whose PVC capacity has also reached the request.
    pub compatible_ready_replicas: i32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::json;

    const ADVANCED_STS: &str = r#"
apiVersion: apps.kruise.io/v1beta1
kind: StatefulSet
metadata:
  name: web
  namespace: default
spec:
  replicas: 4
  serviceName: web-headless
  ordinals:
    start: 5
  reserveOrdinals:
  - 6
  - "8-9"
  podManagementPolicy: Parallel
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      readinessGates:
      - conditionType: InPlaceUpdateReady
      containers:
      - name: nginx
        image: nginx:1.25.3
        ports:
        - name: http
          containerPort: 80
        volumeMounts:
        - name: data
          mountPath: /usr/share/nginx/html
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes:
      - ReadWriteOnce
      resources:
        requests:
          storage: 1Gi
  volumeClaimUpdateStrategy:
    type: OnDelete
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      partition: 1
      maxUnavailable: 50%
      podUpdatePolicy: InPlaceIfPossible
      minReadySeconds: 10
      inPlaceUpdateStrategy:
        gracePeriodSeconds: 10
      unorderedUpdate:
        priorityStrategy:
          weightPriority:
          - weight: 50
            matchSelector:
              matchLabels:
                tier: canary
  revisionHistoryLimit: 5
  lifecycle:
    preDelete:
      labelsHandler:
        example.io/block-deleting: "true"
    inPlaceUpdate:
      markPodNotReady: true
      finalizersHandler:
      - example.io/unready-blocker
  scaleStrategy:
    maxUnavailable: 2
  persistentVolumeClaimRetentionPolicy:
    whenDeleted: Delete
    whenScaled: Retain
status:
  observedGeneration: 3
  replicas: 4
  readyReplicas: 3
  availableReplicas: 3
  currentReplicas: 2
  updatedReplicas: 2
  updatedReadyReplicas: 1
  currentRevision: web-7d9f8c6b5
  updateRevision: web-5b6c4d8f7
  collisionCount: 0
  labelSelector: app=web
  conditions:
  - type: FailedUpdatePod
    status: "True"
    reason: InPlaceUpdateFailed
    message: patching the pod was refused
    lastTransitionTime: "2024-05-01T10:00:00Z"
  volumeClaims:
  - volumeClaimName: data
    compatibleReplicas: 4
    compatibleReadyReplicas: 3
"#;

    #[test]
    fn deserialises_an_advanced_statefulset() {
        let sts: StatefulSet = serde_saphyr::from_str(ADVANCED_STS).unwrap();
        assert_eq!(sts.metadata.name.as_deref(), Some("web"));
        let spec = &sts.spec;
        assert_eq!(spec.replicas, Some(4));
        assert_eq!(spec.service_name.as_deref(), Some("web-headless"));
        assert_eq!(spec.ordinals, Some(StatefulSetOrdinals { start: 5 }));
        assert_eq!(spec.start_ordinal(), 5);
        assert_eq!(
            spec.reserve_ordinals,
            vec![IntOrString::Int(6), IntOrString::String("8-9".into())]
        );
        assert_eq!(
            spec.pod_management_policy.as_deref(),
            Some(PARALLEL_POD_MANAGEMENT)
        );
        assert_eq!(
            spec.selector
                .match_labels
                .as_ref()
                .unwrap()
                .get("app")
                .map(String::as_str),
            Some("web")
        );
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("nginx:1.25.3"));
        assert_eq!(spec.volume_claim_templates.len(), 1);
        assert_eq!(
            spec.volume_claim_templates[0].metadata.name.as_deref(),
            Some("data")
        );
        assert_eq!(
            spec.volume_claim_update_strategy.type_.as_deref(),
            Some(ON_PVC_DELETE_VOLUME_CLAIM_UPDATE_STRATEGY_TYPE)
        );

        let us = &spec.update_strategy;
        assert_eq!(
            us.type_.as_deref(),
            Some(ROLLING_UPDATE_STATEFUL_SET_STRATEGY_TYPE)
        );
        let ru = us.rolling_update.as_ref().unwrap();
        assert_eq!(ru.partition, Some(1));
        assert_eq!(ru.max_unavailable, Some(IntOrString::String("50%".into())));
        assert_eq!(
            ru.pod_update_policy.as_deref(),
            Some(IN_PLACE_IF_POSSIBLE_POD_UPDATE_STRATEGY_TYPE)
        );
        assert!(!ru.paused);
        assert_eq!(ru.min_ready_seconds, Some(10));
        assert!(ru.in_place_update_strategy.is_some());
        assert!(
            ru.unordered_update
                .as_ref()
                .unwrap()
                .priority_strategy
                .is_some()
        );
        assert_eq!(spec.revision_history_limit, Some(5));
        let lc = spec.lifecycle.as_ref().unwrap();
        assert!(lc.pre_delete.is_some());
        assert!(lc.in_place_update.is_some());
        assert_eq!(
            spec.scale_strategy.as_ref().unwrap().max_unavailable,
            Some(IntOrString::Int(2))
        );
        let retention = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(
            retention.when_deleted.as_deref(),
            Some(DELETE_PERSISTENT_VOLUME_CLAIM_RETENTION_POLICY_TYPE)
        );
        assert_eq!(
            retention.when_scaled.as_deref(),
            Some(RETAIN_PERSISTENT_VOLUME_CLAIM_RETENTION_POLICY_TYPE)
        );

        let st = sts.status.as_ref().unwrap();
        assert_eq!(st.observed_generation, 3);
        assert_eq!(
            (
                st.replicas,
                st.ready_replicas,
                st.available_replicas,
                st.current_replicas,
                st.updated_replicas,
                st.updated_ready_replicas,
                st.updated_available_replicas
            ),
            (4, 3, 3, 2, 2, 1, 0)
        );
        assert_eq!(st.update_revision, "web-5b6c4d8f7");
        assert_eq!(st.collision_count, Some(0));
        assert_eq!(st.label_selector, "app=web");
        assert_eq!(st.conditions[0].type_, FAILED_UPDATE_POD);
        assert_eq!(
            st.volume_claims,
            vec![VolumeClaimStatus {
                volume_claim_name: "data".into(),
                compatible_replicas: 4,
                compatible_ready_replicas: 3,
            }]
        );
    }

    #[test]
    fn round_trips_through_json_with_upstream_field_names() {
        let sts: StatefulSet = serde_saphyr::from_str(ADVANCED_STS).unwrap();
        let v = serde_json::to_value(&sts).unwrap();
        assert_eq!(v["apiVersion"], "apps.kruise.io/v1beta1");
        assert_eq!(v["kind"], "StatefulSet");
        let spec = &v["spec"];
        assert_eq!(spec["ordinals"], json!({"start": 5}));
        assert_eq!(spec["reserveOrdinals"], json!([6, "8-9"]));
        assert_eq!(spec["podManagementPolicy"], "Parallel");
        assert_eq!(spec["serviceName"], "web-headless");
        assert_eq!(spec["volumeClaimUpdateStrategy"]["type"], "OnDelete");
        let ru = &spec["updateStrategy"]["rollingUpdate"];
        assert_eq!(ru["podUpdatePolicy"], "InPlaceIfPossible");
        assert_eq!(ru["maxUnavailable"], "50%");
        assert_eq!(ru["minReadySeconds"], 10);
        assert!(ru.get("paused").is_none(), "false is left out");
        assert_eq!(spec["scaleStrategy"]["maxUnavailable"], 2);
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Delete", "whenScaled": "Retain"})
        );
        let status = &v["status"];
        assert_eq!(status["updatedReadyReplicas"], 1);
        assert!(status.get("updatedAvailableReplicas").is_none());
        assert_eq!(status["volumeClaims"][0]["volumeClaimName"], "data");

        let back: StatefulSet = serde_json::from_value(v).unwrap();
        assert_eq!(back.metadata, sts.metadata);
        assert_eq!(back.spec, sts.spec);
        assert_eq!(back.status, sts.status);
    }

    #[test]
    fn a_minimal_spec_writes_the_upstream_defaults_shape() {
        let sts = StatefulSet::new(
            "db",
            StatefulSetSpec {
                selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "db".to_string())].into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        let spec = serde_json::to_value(&sts.spec).unwrap();
        // Non-pointer structs are always written (as Go does); absent
        // options and empty lists are not.
        assert_eq!(spec["updateStrategy"], json!({}));
        assert_eq!(spec["volumeClaimUpdateStrategy"], json!({}));
        for absent in [
            "replicas",
            "ordinals",
            "reserveOrdinals",
            "volumeClaimTemplates",
            "lifecycle",
            "scaleStrategy",
            "persistentVolumeClaimRetentionPolicy",
            "serviceName",
        ] {
            assert!(spec.get(absent).is_none(), "{absent} should be absent");
        }
        assert_eq!(sts.spec.start_ordinal(), 0);
    }

    #[test]
    fn crd_matches_upstream_names_subresources_and_schemaless_fields() {
        let crd = serde_json::to_value(StatefulSet::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "statefulsets.apps.kruise.io");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["kind"], "StatefulSet");
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["sts", "asts"]));
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1beta1");
        assert_eq!(
            version["subresources"]["scale"],
            json!({
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.labelSelector"
            })
        );
        assert!(version["subresources"]["status"].is_object());
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            [
                "DESIRED",
                "CURRENT",
                "UPDATED",
                "READY",
                "AGE",
                "CONTAINERS",
                "IMAGES"
            ]
        );
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let required = spec["required"].as_array().unwrap();
        assert!(required.contains(&json!("selector")));
        assert!(required.contains(&json!("template")));
        for schemaless in ["template", "volumeClaimTemplates"] {
            let field = &spec["properties"][schemaless];
            assert_eq!(
                field["x-kubernetes-preserve-unknown-fields"], true,
                "{schemaless}"
            );
            assert!(field.get("properties").is_none(), "{schemaless}");
        }
        for field in [
            "ordinals",
            "reserveOrdinals",
            "lifecycle",
            "scaleStrategy",
            "persistentVolumeClaimRetentionPolicy",
            "volumeClaimUpdateStrategy",
        ] {
            assert!(
                spec["properties"].get(field).is_some(),
                "spec.{field} missing"
            );
        }
    }

    #[test]
    fn the_example_is_accepted_by_the_crd() {
        let manifest: serde_json::Value = serde_saphyr::from_str(ADVANCED_STS).unwrap();
        let problems = crate::validate::validate(&StatefulSet::crd(), "v1beta1", &manifest);
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn both_versions_merge_with_v1beta1_stored() {
        let merged = kube::core::crd::merge_crds(
            vec![
                crate::apps::v1alpha1::statefulset::StatefulSet::crd(),
                StatefulSet::crd(),
            ],
            STORAGE_VERSION,
        )
        .unwrap();
        let stored: Vec<(&str, bool)> = merged
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.storage))
            .collect();
        assert!(stored.contains(&("v1beta1", true)));
        assert!(stored.contains(&("v1alpha1", false)));
    }
}
