//! Advanced DaemonSet `apps.kruise.io/v1beta1`, the storage version (as in
//! OpenKruise v1.9). It differs from
//! [`v1alpha1`](crate::apps::v1alpha1::daemonset) in three places:
//! `spec.scaleStrategy.partitionedScaling` instead of the
//! `daemonset.kruise.io/progressive-create-pod: "true"` annotation,
//! `status.updateRevision` instead of `status.daemonSetHash`, and no
//! deprecated `Surging` rolling update type. The update strategy types
//! are shared. [`crate::conversion`] converts between the two.

use k8s_openapi::api::apps::v1::DaemonSetCondition;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apps::shared::Lifecycle;

pub use crate::apps::v1alpha1::daemonset::{
    DEFAULT_BURST_REPLICAS, DaemonSetUpdateStrategy, INPLACE_ROLLING_UPDATE_TYPE,
    ON_DELETE_DAEMON_SET_STRATEGY_TYPE, ROLLING_UPDATE_DAEMON_SET_STRATEGY_TYPE,
    RollingUpdateDaemonSet, STANDARD_ROLLING_UPDATE_TYPE,
};

/// The API version that stores Advanced DaemonSets in etcd.
pub const STORAGE_VERSION: &str = "v1beta1";

/// The v1alpha1 annotation that stands for
/// `scaleStrategy.partitionedScaling: true` (upstream's
/// `ProgressiveCreatePodAnnotation`).
pub const PROGRESSIVE_CREATE_POD_ANNOTATION: &str = "daemonset.kruise.io/progressive-create-pod";

/// Desired state of an Advanced DaemonSet.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1beta1",
    kind = "DaemonSet",
    plural = "daemonsets",
    shortname = "daemon",
    shortname = "ads",
    namespaced,
    status = "DaemonSetStatus",
    printcolumn = r#"{"name":"DESIRED","type":"integer","jsonPath":".status.desiredNumberScheduled","description":"The desired number of pods."}"#,
    printcolumn = r#"{"name":"CURRENT","type":"integer","jsonPath":".status.currentNumberScheduled","description":"The current number of pods."}"#,
    printcolumn = r#"{"name":"READY","type":"integer","jsonPath":".status.numberReady","description":"The ready number of pods."}"#,
    printcolumn = r#"{"name":"UP-TO-DATE","type":"integer","jsonPath":".status.updatedNumberScheduled","description":"The updated number of pods."}"#,
    printcolumn = r#"{"name":"AVAILABLE","type":"integer","jsonPath":".status.numberAvailable","description":"The updated number of pods."}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"CONTAINERS","type":"string","priority":1,"jsonPath":".spec.template.spec.containers[*].name","description":"The containers of currently  daemonset."}"#,
    printcolumn = r#"{"name":"IMAGES","type":"string","priority":1,"jsonPath":".spec.template.spec.containers[*].image","description":"The images of currently advanced daemonset."}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetSpec {
    /// Label query over the pods this DaemonSet owns; must match the
    /// template's labels.
    pub selector: LabelSelector,
    /// The pod run on each node matching its node selector and affinity.
    /// Kept schemaless in the CRD, as upstream does.
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub template: PodTemplateSpec,
    /// How pods are replaced when the template changes. Always written.
    #[serde(default)]
    pub update_strategy: DaemonSetUpdateStrategy,
    /// Seconds a new pod must be ready, with no container crashing, before
    /// it counts as available (0: as soon as it is ready).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_ready_seconds: i32,
    /// Limit on pods created at once (a number or a percentage); 250 when
    /// absent (webhook default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_replicas: Option<IntOrString>,
    /// How many old revisions to keep for rollback; 10 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    /// Lifecycle hooks; only `preDelete` is honoured for DaemonSets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// How pods are created on newly eligible nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_strategy: Option<DaemonSetScaleStrategy>,
}

/// How an Advanced DaemonSet creates pods on nodes that need one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetScaleStrategy {
    /// With a non-zero `rollingUpdate.partition`, create only
    /// `desired − updated − partition` new pods (node names ascending)
    /// rather than one on every node that needs one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partitioned_scaling: bool,
}

/// Observed state of an Advanced DaemonSet. The scheduling counters are
/// always written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetStatus {
    /// Nodes that should run the pod and run at least one.
    #[serde(default)]
    pub current_number_scheduled: i32,
    /// Nodes that run the pod but should not.
    #[serde(default)]
    pub number_misscheduled: i32,
    /// Nodes that should run the pod (whether or not they do).
    #[serde(default)]
    pub desired_number_scheduled: i32,
    /// Nodes that should run the pod and have at least one ready.
    #[serde(default)]
    pub number_ready: i32,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub observed_generation: i64,
    /// Nodes running a pod of the latest revision.
    #[serde(default)]
    pub updated_number_scheduled: i32,
    /// Nodes that should run the pod and have at least one available.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub number_available: i32,
    /// Nodes that should run the pod and have none available.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub number_unavailable: i32,
    /// Hash collision counter used when naming new ControllerRevisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
    /// Latest observations of the DaemonSet's state (the built-in
    /// DaemonSet's condition type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<DaemonSetCondition>,
    /// The latest revision's `controller-revision-hash` (v1alpha1's
    /// `daemonSetHash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
}

impl DaemonSet {
    /// Whether new pods are held back by the partition
    /// (`scaleStrategy.partitionedScaling`).
    pub fn partitioned_scaling(&self) -> bool {
        self.spec
            .scale_strategy
            .as_ref()
            .is_some_and(|s| s.partitioned_scaling)
    }
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
    use kube::CustomResourceExt;

    const EXAMPLE: &str = r#"
apiVersion: apps.kruise.io/v1beta1
kind: DaemonSet
metadata:
  name: sample-ds
  namespace: kube-system
spec:
  selector:
    matchLabels:
      app: sample-ds
  template:
    metadata:
      labels:
        app: sample-ds
    spec:
      containers:
      - name: agent
        image: nginx:alpine
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      rollingUpdateType: InPlaceIfPossible
      maxUnavailable: 10%
      partition: 2
  scaleStrategy:
    partitionedScaling: true
status:
  currentNumberScheduled: 4
  numberMisscheduled: 0
  desiredNumberScheduled: 4
  numberReady: 3
  updatedNumberScheduled: 2
  updateRevision: 7b9f6c5d8
"#;

    #[test]
    fn deserialises_the_v1beta1_only_fields() {
        let ds: DaemonSet = serde_saphyr::from_str(EXAMPLE).unwrap();
        assert!(ds.partitioned_scaling());
        let st = ds.status.as_ref().unwrap();
        assert_eq!(st.update_revision.as_deref(), Some("7b9f6c5d8"));
        assert_eq!((st.desired_number_scheduled, st.number_ready), (4, 3));
        let json = serde_json::to_value(&ds).unwrap();
        assert_eq!(json["spec"]["scaleStrategy"]["partitionedScaling"], true);
        assert_eq!(json["status"]["updateRevision"], "7b9f6c5d8");
        assert!(json["status"].get("daemonSetHash").is_none());
        let back: DaemonSet = serde_json::from_value(json).unwrap();
        assert_eq!((back.spec, back.status), (ds.spec, ds.status));
    }

    #[test]
    fn partitioned_scaling_false_is_left_out() {
        let mut ds = DaemonSet::new("d", DaemonSetSpec::default());
        ds.spec.scale_strategy = Some(DaemonSetScaleStrategy::default());
        assert!(!ds.partitioned_scaling());
        let json = serde_json::to_value(&ds).unwrap();
        assert_eq!(json["spec"]["scaleStrategy"], serde_json::json!({}));
    }

    #[test]
    fn crd_has_the_v1beta1_fields_and_the_example_is_accepted() {
        let crd = DaemonSet::crd();
        let version = serde_json::to_value(&crd.spec.versions[0]).unwrap();
        assert_eq!(version["name"], "v1beta1");
        let props = &version["schema"]["openAPIV3Schema"]["properties"];
        assert!(
            props["spec"]["properties"]["scaleStrategy"]["properties"]
                .get("partitionedScaling")
                .is_some()
        );
        assert!(
            props["status"]["properties"]
                .get("updateRevision")
                .is_some()
        );
        assert!(props["status"]["properties"].get("daemonSetHash").is_none());
        let manifest: serde_json::Value = serde_saphyr::from_str(EXAMPLE).unwrap();
        assert_eq!(
            crate::validate::validate(&crd, "v1beta1", &manifest),
            Vec::<String>::new()
        );
    }
}
