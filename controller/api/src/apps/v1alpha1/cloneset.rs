//! CloneSet: a set of interchangeable pods (like a Deployment without
//! ReplicaSets), with in-place update, partitioned and prioritised
//! rollouts, chosen-pod deletion, optional per-pod PVCs and lifecycle
//! hooks. Has the scale subresource, so HPA and `kubectl scale` work.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apps::shared::{InPlaceUpdateStrategy, Lifecycle, UpdatePriorityStrategy};

/// Label on a CloneSet's pods and PVCs: the instance id a pod shares with
/// the PVCs it owns.
pub const CLONE_SET_INSTANCE_ID: &str = "apps.kruise.io/cloneset-instance-id";

/// Default of `updateStrategy.maxUnavailable`.
pub const DEFAULT_CLONE_SET_MAX_UNAVAILABLE: &str = "20%";

/// Label on a CloneSet: compute scaling without counting the pods in
/// `PreparingDelete` (for this CloneSet only).
pub const CLONE_SET_SCALING_EXCLUDE_PREPARING_DELETE_KEY: &str =
    "apps.kruise.io/cloneset-scaling-exclude-preparing-delete";

/// Label on a pod (or other owned object): delete it; the value may carry a
/// deletion option. Honoured by CloneSet and the other Kruise workloads.
pub const SPECIFIED_DELETE_KEY: &str = "apps.kruise.io/specified-delete";

/// Annotation on a workload: the image pre-download job for its current
/// revision has been created.
pub const IMAGE_PRE_DOWNLOAD_CREATED_KEY: &str = "apps.kruise.io/pre-predownload-created";
/// Annotation on a workload: image pre-download was skipped for its current
/// revision.
pub const IMAGE_PRE_DOWNLOAD_IGNORED_KEY: &str = "apps.kruise.io/image-predownload-ignored";

/// `updateStrategy.type`: pods are replaced only when deleted by hand.
pub const ON_DELETE_CLONE_SET_UPDATE_STRATEGY_TYPE: &str = "OnDelete";
/// `updateStrategy.type`: delete the old pod and create a new one (the
/// default).
pub const RECREATE_CLONE_SET_UPDATE_STRATEGY_TYPE: &str = "ReCreate";
/// `updateStrategy.type`: update in place when only in-place-updatable
/// fields changed, recreate otherwise.
pub const IN_PLACE_IF_POSSIBLE_CLONE_SET_UPDATE_STRATEGY_TYPE: &str = "InPlaceIfPossible";
/// `updateStrategy.type`: only ever update in place; other template changes
/// are refused.
pub const IN_PLACE_ONLY_CLONE_SET_UPDATE_STRATEGY_TYPE: &str = "InPlaceOnly";

/// Condition type: creating or deleting pods/PVCs failed.
pub const CLONE_SET_CONDITION_FAILED_SCALE: &str = "FailedScale";
/// Condition type: updating pods failed.
pub const CLONE_SET_CONDITION_FAILED_UPDATE: &str = "FailedUpdate";
/// Condition type: rollout progress (see `progressDeadlineSeconds`).
pub const CLONE_SET_CONDITION_TYPE_PROGRESSING: &str = "Progressing";

/// `Progressing` reason: no progress within `progressDeadlineSeconds`.
pub const CLONE_SET_PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
/// `Progressing` reason: the CloneSet is paused.
pub const CLONE_SET_PROGRESS_PAUSED: &str = "CloneSetPaused";
/// `Progressing` reason: the CloneSet is being updated.
pub const CLONE_SET_PROGRESS_UPDATED: &str = "CloneSetUpdated";
/// `Progressing` reason: the rollout stopped at the partition, with the
/// updated pods available.
pub const CLONE_SET_PROGRESS_PARTITION_AVAILABLE: &str = "ProgressPartitionAvailable";
/// `Progressing` reason: the CloneSet is available.
pub const CLONE_SET_AVAILABLE: &str = "CloneSetAvailable";

/// Desired state of a CloneSet.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "CloneSet",
    plural = "clonesets",
    shortname = "clone",
    namespaced,
    status = "CloneSetStatus",
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas","labelSelectorPath":".status.labelSelector"}"#,
    printcolumn = r#"{"name":"DESIRED","type":"integer","jsonPath":".spec.replicas","description":"The desired number of pods."}"#,
    printcolumn = r#"{"name":"UPDATED","type":"integer","jsonPath":".status.updatedReplicas","description":"The number of pods updated."}"#,
    printcolumn = r#"{"name":"UPDATED_READY","type":"integer","jsonPath":".status.updatedReadyReplicas","description":"The number of pods updated and ready."}"#,
    printcolumn = r#"{"name":"UPDATED_AVAILABLE","type":"integer","jsonPath":".status.updatedAvailableReplicas","description":"The number of pods updated and available."}"#,
    printcolumn = r#"{"name":"READY","type":"integer","jsonPath":".status.readyReplicas","description":"The number of pods ready."}"#,
    printcolumn = r#"{"name":"TOTAL","type":"integer","jsonPath":".status.replicas","description":"The number of currently all pods."}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"CONTAINERS","type":"string","priority":1,"jsonPath":".spec.template.spec.containers[*].name","description":"The containers of currently cloneset."}"#,
    printcolumn = r#"{"name":"IMAGES","type":"string","priority":1,"jsonPath":".spec.template.spec.containers[*].image","description":"The images of currently cloneset."}"#,
    printcolumn = r#"{"name":"SELECTOR","type":"string","priority":1,"jsonPath":".status.labelSelector","description":"The selector of currently cloneset."}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetSpec {
    /// Number of pods wanted; 1 when absent (webhook default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label query over the pods this CloneSet owns; must match the
    /// template's labels.
    pub selector: LabelSelector,
    /// The pods to create. Kept schemaless in the CRD, as upstream does.
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub template: PodTemplateSpec,
    /// PVCs created per pod (and deleted with it) that the pod template
    /// may mount by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub volume_claim_templates: Vec<PersistentVolumeClaim>,
    /// How pods are created and deleted.
    #[serde(default)]
    pub scale_strategy: CloneSetScaleStrategy,
    /// How pods are updated when the template changes.
    #[serde(default)]
    pub update_strategy: CloneSetUpdateStrategy,
    /// How many old revisions (ControllerRevisions) to keep; 10 when absent
    /// (webhook default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    /// Seconds a new pod must be ready, with no container crashing, before
    /// it counts as available (0: as soon as it is ready).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_ready_seconds: i32,
    /// Hooks around pod creation (preNormal), in-place update and deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// Seconds the CloneSet may take to become available (or stop at its
    /// partition) before the `Progressing` condition reports
    /// `ProgressDeadlineExceeded`; time spent paused does not count. Absent:
    /// progress is not tracked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,
}

/// How a CloneSet creates and deletes pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetScaleStrategy {
    /// Names of pods to delete (names of pods that no longer exist are
    /// dropped from the list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods_to_delete: Vec<String>,
    /// Limit on new pods not yet available while scaling up (a number or a
    /// percentage); only applies to scaling up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Do not reuse the PVCs left behind by a deleted pod for its
    /// replacement.
    #[serde(
        rename = "disablePVCReuse",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_pvc_reuse: bool,
}

/// How a CloneSet rolls out a new template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetUpdateStrategy {
    /// `ReCreate` (the webhook's default), `InPlaceIfPossible`,
    /// `InPlaceOnly` or `OnDelete`; see the `*_CLONE_SET_UPDATE_STRATEGY_TYPE`
    /// constants.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// How many pods to leave at old revisions (a number, or a percentage
    /// of `replicas` rounded up); 0 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<IntOrString>,
    /// Limit on unavailable pods during update or scaling (a number or a
    /// percentage; rounded up, or down when `maxSurge` > 0); 20% by
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// How many pods may exist above `replicas` during update or chosen-pod
    /// deletion (a number or a percentage, rounded up); 0 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Stop updating pods.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Which pods are updated first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_strategy: Option<UpdatePriorityStrategy>,
    /// Label key/values whose pods are spread across update batches rather
    /// than updated together (applied after priority ordering).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scatter_strategy: UpdateScatterStrategy,
    /// Settings for in-place update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place_update_strategy: Option<InPlaceUpdateStrategy>,
}

/// Scatter rules for an update: pods carrying any of these label key/values
/// are spread over the update batches. Shared with Advanced StatefulSet.
pub type UpdateScatterStrategy = Vec<UpdateScatterTerm>;

/// One scatter rule: a label key and value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateScatterTerm {
    /// Label key.
    pub key: String,
    /// Label value.
    pub value: String,
}

/// Observed state of a CloneSet. The counters are always written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub observed_generation: i64,
    /// Pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods that have been ready for `minReadySeconds`.
    #[serde(default)]
    pub available_replicas: i32,
    /// Pods at `updateRevision`.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Pods at `updateRevision` that are ready.
    #[serde(default)]
    pub updated_ready_replicas: i32,
    /// Pods at `updateRevision` that are available (pods being resized in
    /// place count as unavailable).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub updated_available_replicas: i32,
    /// Pods that should end up at `updateRevision`: `replicas` minus the
    /// partition.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expected_updated_replicas: i32,
    /// The latest revision (from the current template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// The revision the pods were at before the latest rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// Hash collision counter used when naming new ControllerRevisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
    /// Latest observations of the CloneSet's state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<CloneSetCondition>,
    /// The selector as a string (`a=b,c in (d)`), for the scale
    /// subresource and HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
}

/// One condition of a CloneSet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetCondition {
    /// `FailedScale`, `FailedUpdate` or `Progressing`; see the
    /// `CLONE_SET_CONDITION_*` constants.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When the condition was last updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Machine-readable reason of the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable details of the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::CustomResourceExt;

    /// The shape OpenKruise documents for in-place update with env taken
    /// from a pod annotation.
    const IN_PLACE_EXAMPLE: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata:
  labels:
    app: sample
  name: sample
  namespace: default
spec:
  replicas: 5
  selector:
    matchLabels:
      app: sample
  template:
    metadata:
      labels:
        app: sample
      annotations:
        app-version: v1
    spec:
      readinessGates:
      - conditionType: InPlaceUpdateReady
      containers:
      - name: main
        image: nginx:alpine
        env:
        - name: APP_VERSION
          valueFrom:
            fieldRef:
              fieldPath: metadata.annotations['app-version']
  volumeClaimTemplates:
  - metadata:
      name: data-vol
    spec:
      accessModes: [ "ReadWriteOnce" ]
      resources:
        requests:
          storage: 20Gi
  scaleStrategy:
    podsToDelete:
    - sample-9m4hp
    maxUnavailable: 1
  lifecycle:
    preDelete:
      finalizersHandler:
      - example.com/unregister
      markPodNotReady: true
    inPlaceUpdate:
      labelsHandler:
        example.com/in-place-hook: "true"
  updateStrategy:
    type: InPlaceIfPossible
    partition: 3
    maxUnavailable: 20%
    maxSurge: 1
    inPlaceUpdateStrategy:
      gracePeriodSeconds: 10
    priorityStrategy:
      weightPriority:
      - weight: 50
        matchSelector:
          matchLabels:
            test-key: foo
    scatterStrategy:
    - key: zone
      value: zone-a
  minReadySeconds: 5
  revisionHistoryLimit: 5
status:
  observedGeneration: 2
  replicas: 5
  readyReplicas: 5
  availableReplicas: 5
  updatedReplicas: 2
  updatedReadyReplicas: 2
  updatedAvailableReplicas: 2
  expectedUpdatedReplicas: 2
  updateRevision: sample-6d5f8c7b9d
  currentRevision: sample-5c9f8d6b4c
  collisionCount: 0
  labelSelector: app=sample
  conditions:
  - type: Progressing
    status: "True"
    lastUpdateTime: "2024-05-01T08:00:00Z"
    lastTransitionTime: "2024-05-01T08:00:00Z"
    reason: CloneSetUpdated
"#;

    #[test]
    fn deserialises_the_documented_in_place_update_shape() {
        let cs: CloneSet = serde_saphyr::from_str(IN_PLACE_EXAMPLE).unwrap();
        assert_eq!(cs.metadata.name.as_deref(), Some("sample"));
        let spec = &cs.spec;
        assert_eq!(spec.replicas, Some(5));
        assert_eq!(
            spec.selector
                .match_labels
                .as_ref()
                .unwrap()
                .get("app")
                .map(String::as_str),
            Some("sample")
        );
        let us = &spec.update_strategy;
        assert_eq!(
            us.type_.as_deref(),
            Some(IN_PLACE_IF_POSSIBLE_CLONE_SET_UPDATE_STRATEGY_TYPE)
        );
        assert_eq!(us.partition, Some(IntOrString::Int(3)));
        assert_eq!(us.max_unavailable, Some(IntOrString::String("20%".into())));
        assert_eq!(us.max_surge, Some(IntOrString::Int(1)));
        assert!(!us.paused);
        assert_eq!(
            us.in_place_update_strategy
                .as_ref()
                .unwrap()
                .grace_period_seconds,
            10
        );
        let prio = us.priority_strategy.as_ref().unwrap();
        assert_eq!(prio.weight_priority[0].weight, 50);
        assert_eq!(
            us.scatter_strategy,
            vec![UpdateScatterTerm {
                key: "zone".into(),
                value: "zone-a".into()
            }]
        );

        // The env var reads the annotation the template carries.
        let tpl = &spec.template;
        assert_eq!(
            tpl.metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()
                .get("app-version")
                .map(String::as_str),
            Some("v1")
        );
        let pod = tpl.spec.as_ref().unwrap();
        let env = &pod.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, "APP_VERSION");
        let field_ref = env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
        assert_eq!(field_ref.field_path, "metadata.annotations['app-version']");
        assert_eq!(
            pod.readiness_gates.as_ref().unwrap()[0].condition_type,
            "InPlaceUpdateReady"
        );

        assert_eq!(spec.volume_claim_templates.len(), 1);
        assert_eq!(
            spec.volume_claim_templates[0].metadata.name.as_deref(),
            Some("data-vol")
        );
        assert_eq!(
            spec.scale_strategy.pods_to_delete,
            vec!["sample-9m4hp".to_string()]
        );
        assert_eq!(
            spec.scale_strategy.max_unavailable,
            Some(IntOrString::Int(1))
        );
        assert!(!spec.scale_strategy.disable_pvc_reuse);
        let lc = spec.lifecycle.as_ref().unwrap();
        let pre_delete = lc.pre_delete.as_ref().unwrap();
        assert_eq!(
            pre_delete.finalizers_handler,
            vec!["example.com/unregister".to_string()]
        );
        assert!(pre_delete.mark_pod_not_ready);
        assert_eq!(
            lc.in_place_update
                .as_ref()
                .unwrap()
                .labels_handler
                .get("example.com/in-place-hook")
                .map(String::as_str),
            Some("true")
        );
        assert!(lc.pre_normal.is_none());
        assert_eq!(spec.min_ready_seconds, 5);
        assert_eq!(spec.revision_history_limit, Some(5));
        assert_eq!(spec.progress_deadline_seconds, None);

        let st = cs.status.as_ref().unwrap();
        assert_eq!(st.observed_generation, 2);
        assert_eq!(
            (st.replicas, st.ready_replicas, st.available_replicas),
            (5, 5, 5)
        );
        assert_eq!(
            (
                st.updated_replicas,
                st.updated_ready_replicas,
                st.updated_available_replicas
            ),
            (2, 2, 2)
        );
        assert_eq!(st.expected_updated_replicas, 2);
        assert_eq!(st.update_revision.as_deref(), Some("sample-6d5f8c7b9d"));
        assert_eq!(st.collision_count, Some(0));
        assert_eq!(st.label_selector.as_deref(), Some("app=sample"));
        let cond = &st.conditions[0];
        assert_eq!(cond.type_, CLONE_SET_CONDITION_TYPE_PROGRESSING);
        assert_eq!(cond.status, "True");
        assert_eq!(cond.reason.as_deref(), Some(CLONE_SET_PROGRESS_UPDATED));
        assert!(cond.last_update_time.is_some());
        assert!(cond.message.is_none());
    }

    #[test]
    fn round_trips_through_json_with_upstream_field_names() {
        let cs: CloneSet = serde_saphyr::from_str(IN_PLACE_EXAMPLE).unwrap();
        let json = serde_json::to_value(&cs).unwrap();
        assert_eq!(json["apiVersion"], "apps.kruise.io/v1alpha1");
        assert_eq!(json["kind"], "CloneSet");
        let spec = &json["spec"];
        assert_eq!(spec["updateStrategy"]["type"], "InPlaceIfPossible");
        assert_eq!(spec["updateStrategy"]["maxUnavailable"], "20%");
        assert_eq!(
            spec["updateStrategy"]["inPlaceUpdateStrategy"]["gracePeriodSeconds"],
            10
        );
        assert_eq!(
            spec["updateStrategy"]["priorityStrategy"]["weightPriority"][0]["matchSelector"]["matchLabels"]
                ["test-key"],
            "foo"
        );
        assert_eq!(spec["updateStrategy"]["scatterStrategy"][0]["key"], "zone");
        assert_eq!(
            spec["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.annotations['app-version']"
        );
        assert_eq!(
            spec["volumeClaimTemplates"][0]["metadata"]["name"],
            "data-vol"
        );
        assert_eq!(spec["lifecycle"]["preDelete"]["markPodNotReady"], true);
        assert_eq!(spec["scaleStrategy"]["podsToDelete"][0], "sample-9m4hp");
        assert!(spec["scaleStrategy"].get("disablePVCReuse").is_none());
        assert_eq!(spec["minReadySeconds"], 5);
        assert!(spec.get("progressDeadlineSeconds").is_none());
        let status = &json["status"];
        assert_eq!(status["updatedReadyReplicas"], 2);
        assert_eq!(status["labelSelector"], "app=sample");
        assert_eq!(
            status["conditions"][0]["lastUpdateTime"],
            "2024-05-01T08:00:00Z"
        );

        let back: CloneSet = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec, cs.spec);
        assert_eq!(back.status, cs.status);
    }

    #[test]
    fn empty_fields_are_left_out_and_counters_kept() {
        let mut cs = CloneSet::new(
            "web",
            CloneSetSpec {
                selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_string(), "web".to_string())].into()),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "main".into(),
                            image: Some("nginx:1.25".into()),
                            env: Some(vec![EnvVar {
                                name: "POD_NAME".into(),
                                value_from: Some(EnvVarSource {
                                    field_ref: Some(ObjectFieldSelector {
                                        field_path: "metadata.name".into(),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                scale_strategy: CloneSetScaleStrategy {
                    disable_pvc_reuse: true,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        cs.status = Some(CloneSetStatus {
            replicas: 1,
            ..Default::default()
        });
        let json = serde_json::to_value(&cs).unwrap();
        let spec = &json["spec"];
        for absent in [
            "replicas",
            "volumeClaimTemplates",
            "revisionHistoryLimit",
            "minReadySeconds",
            "lifecycle",
        ] {
            assert!(spec.get(absent).is_none(), "{absent} should be absent");
        }
        assert_eq!(spec["scaleStrategy"]["disablePVCReuse"], true);
        // Go writes these structs even when empty.
        assert_eq!(spec["updateStrategy"], serde_json::json!({}));
        let status = &json["status"];
        for kept in [
            "replicas",
            "readyReplicas",
            "availableReplicas",
            "updatedReplicas",
            "updatedReadyReplicas",
        ] {
            assert!(status.get(kept).is_some(), "{kept} should be written");
        }
        for absent in [
            "observedGeneration",
            "updatedAvailableReplicas",
            "expectedUpdatedReplicas",
            "updateRevision",
            "conditions",
            "labelSelector",
        ] {
            assert!(status.get(absent).is_none(), "{absent} should be absent");
        }
        let back: CloneSet = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec, cs.spec);
    }

    #[test]
    fn crd_matches_upstream_names_and_subresources() {
        let crd = serde_json::to_value(CloneSet::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "clonesets.apps.kruise.io");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!(["clone"])
        );
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(
            version["subresources"]["scale"],
            serde_json::json!({
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.labelSelector"
            })
        );
        assert!(version["subresources"]["status"].is_object());
        let columns = version["additionalPrinterColumns"].as_array().unwrap();
        assert_eq!(columns.len(), 10);
        assert_eq!(columns[9]["name"], "SELECTOR");
        assert_eq!(columns[9]["priority"], 1);
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let required: Vec<&str> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(required.contains(&"selector") && required.contains(&"template"));
        let template = &spec["properties"]["template"];
        assert_eq!(template["x-kubernetes-preserve-unknown-fields"], true);
        assert!(template.get("properties").is_none());
        assert_eq!(
            spec["properties"]["volumeClaimTemplates"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
        let us = &spec["properties"]["updateStrategy"]["properties"];
        for field in [
            "type",
            "partition",
            "maxUnavailable",
            "maxSurge",
            "paused",
            "priorityStrategy",
            "scatterStrategy",
            "inPlaceUpdateStrategy",
        ] {
            assert!(us.get(field).is_some(), "updateStrategy.{field} missing");
        }
    }
}
