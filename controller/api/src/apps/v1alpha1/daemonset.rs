//! DaemonSet (OpenKruise's Advanced DaemonSet): one pod per eligible node
//! like the built-in DaemonSet, plus in-place update, surge, partitioned
//! and node-selected rollouts, pausing, a rate limit on pod creation, and
//! a pre-delete lifecycle hook.

use k8s_openapi::api::apps::v1::DaemonSetCondition;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apps::shared::Lifecycle;

/// `updateStrategy.type`: replace pods node by node. The default.
pub const ROLLING_UPDATE_DAEMON_SET_STRATEGY_TYPE: &str = "RollingUpdate";
/// `updateStrategy.type`: replace a pod only when it is deleted.
pub const ON_DELETE_DAEMON_SET_STRATEGY_TYPE: &str = "OnDelete";

/// `rollingUpdate.rollingUpdateType`: recreate pods, as the built-in
/// DaemonSet does. The default.
pub const STANDARD_ROLLING_UPDATE_TYPE: &str = "Standard";
/// `rollingUpdate.rollingUpdateType`: update pods in place when only their
/// images (or other in-place-updatable fields) changed.
pub const INPLACE_ROLLING_UPDATE_TYPE: &str = "InPlaceIfPossible";
/// `rollingUpdate.rollingUpdateType`: deprecated alias of `Standard`; the
/// webhook turns it into `Standard` (with `maxSurge` 1 and
/// `maxUnavailable` 0 unless set).
pub const DEPRECATED_SURGING_ROLLING_UPDATE_TYPE: &str = "Surging";

/// Default of `spec.burstReplicas`.
pub const DEFAULT_BURST_REPLICAS: i32 = 250;

/// Desired state of an Advanced DaemonSet.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
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
}

/// How an Advanced DaemonSet replaces its pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetUpdateStrategy {
    /// `RollingUpdate` (the default) or `OnDelete`; see
    /// [`ROLLING_UPDATE_DAEMON_SET_STRATEGY_TYPE`] and
    /// [`ON_DELETE_DAEMON_SET_STRATEGY_TYPE`].
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Rolling update settings (`RollingUpdate` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdateDaemonSet>,
}

/// Settings of an Advanced DaemonSet rolling update.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdateDaemonSet {
    /// `Standard` (the default), `InPlaceIfPossible`, or the deprecated
    /// `Surging`; see the `*_ROLLING_UPDATE_TYPE` constants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update_type: Option<String>,
    /// Limit on pods unavailable during the update (a number, or a
    /// percentage of `desiredNumberScheduled` rounded up). Not 0 when
    /// `maxSurge` is 0. When neither is set the webhook sets 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// How many nodes may run a new pod next to the old one during the
    /// update (a number, or a percentage rounded up to at least 1); the old
    /// pod goes once the new one is available. Not 0 when `maxUnavailable`
    /// is 0. When neither is set the webhook sets 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Only update pods on nodes matching this node label query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// How many pods to leave at the old revision (at most
    /// `desiredNumberScheduled`); 0 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<IntOrString>,
    /// Stop the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
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
    /// The latest revision's `controller-revision-hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_set_hash: Option<String>,
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
apiVersion: apps.kruise.io/v1alpha1
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
      maxSurge: 0
      partition: 2
      paused: false
      selector:
        matchLabels:
          nodeType: canary
  burstReplicas: 100
  minReadySeconds: 10
  revisionHistoryLimit: 3
  lifecycle:
    preDelete:
      labelsHandler:
        example.com/drain: "true"
status:
  currentNumberScheduled: 4
  numberMisscheduled: 0
  desiredNumberScheduled: 4
  numberReady: 3
  observedGeneration: 5
  updatedNumberScheduled: 2
  numberAvailable: 3
  numberUnavailable: 1
  daemonSetHash: 7b9f6c5d8
  conditions:
  - type: Unavailable
    status: "False"
    lastTransitionTime: "2024-05-01T08:00:00Z"
"#;

    #[test]
    fn deserialises_an_advanced_daemonset() {
        let ds: DaemonSet = serde_saphyr::from_str(EXAMPLE).unwrap();
        assert_eq!(ds.metadata.namespace.as_deref(), Some("kube-system"));
        let spec = &ds.spec;
        assert_eq!(
            spec.selector
                .match_labels
                .as_ref()
                .unwrap()
                .get("app")
                .map(String::as_str),
            Some("sample-ds")
        );
        assert_eq!(
            spec.template.spec.as_ref().unwrap().containers[0].name,
            "agent"
        );
        let us = &spec.update_strategy;
        assert_eq!(
            us.type_.as_deref(),
            Some(ROLLING_UPDATE_DAEMON_SET_STRATEGY_TYPE)
        );
        let ru = us.rolling_update.as_ref().unwrap();
        assert_eq!(
            ru.rolling_update_type.as_deref(),
            Some(INPLACE_ROLLING_UPDATE_TYPE)
        );
        assert_eq!(ru.max_unavailable, Some(IntOrString::String("10%".into())));
        assert_eq!(ru.max_surge, Some(IntOrString::Int(0)));
        assert_eq!(ru.partition, Some(IntOrString::Int(2)));
        assert_eq!(ru.paused, Some(false));
        assert_eq!(
            ru.selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()
                .get("nodeType")
                .map(String::as_str),
            Some("canary")
        );
        assert_eq!(spec.burst_replicas, Some(IntOrString::Int(100)));
        assert_eq!(spec.min_ready_seconds, 10);
        assert_eq!(spec.revision_history_limit, Some(3));
        let hook = spec
            .lifecycle
            .as_ref()
            .unwrap()
            .pre_delete
            .as_ref()
            .unwrap();
        assert_eq!(
            hook.labels_handler
                .get("example.com/drain")
                .map(String::as_str),
            Some("true")
        );

        let st = ds.status.as_ref().unwrap();
        assert_eq!(
            (
                st.current_number_scheduled,
                st.desired_number_scheduled,
                st.number_ready
            ),
            (4, 4, 3)
        );
        assert_eq!(
            (
                st.updated_number_scheduled,
                st.number_available,
                st.number_unavailable
            ),
            (2, 3, 1)
        );
        assert_eq!(st.observed_generation, 5);
        assert_eq!(st.daemon_set_hash.as_deref(), Some("7b9f6c5d8"));
        assert_eq!(st.conditions[0].type_, "Unavailable");
        assert!(st.collision_count.is_none());
    }

    #[test]
    fn round_trips_through_json_with_upstream_field_names() {
        let ds: DaemonSet = serde_saphyr::from_str(EXAMPLE).unwrap();
        let json = serde_json::to_value(&ds).unwrap();
        assert_eq!(json["apiVersion"], "apps.kruise.io/v1alpha1");
        assert_eq!(json["kind"], "DaemonSet");
        let ru = &json["spec"]["updateStrategy"]["rollingUpdate"];
        assert_eq!(ru["rollingUpdateType"], "InPlaceIfPossible");
        assert_eq!(ru["maxUnavailable"], "10%");
        assert_eq!(ru["paused"], false);
        assert_eq!(ru["selector"]["matchLabels"]["nodeType"], "canary");
        assert_eq!(json["spec"]["burstReplicas"], 100);
        assert_eq!(
            json["spec"]["lifecycle"]["preDelete"]["labelsHandler"]["example.com/drain"],
            "true"
        );
        let status = &json["status"];
        assert_eq!(status["numberMisscheduled"], 0);
        assert_eq!(status["daemonSetHash"], "7b9f6c5d8");
        assert_eq!(status["conditions"][0]["type"], "Unavailable");
        let back: DaemonSet = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec, ds.spec);
        assert_eq!(back.status, ds.status);
    }

    #[test]
    fn empty_fields_are_left_out_and_counters_kept() {
        let mut ds = DaemonSet::new("empty", DaemonSetSpec::default());
        ds.status = Some(DaemonSetStatus::default());
        let json = serde_json::to_value(ds).unwrap();
        assert_eq!(json["spec"]["updateStrategy"], serde_json::json!({}));
        for absent in [
            "minReadySeconds",
            "burstReplicas",
            "revisionHistoryLimit",
            "lifecycle",
        ] {
            assert!(
                json["spec"].get(absent).is_none(),
                "{absent} should be absent"
            );
        }
        assert_eq!(
            json["status"],
            serde_json::json!({
                "currentNumberScheduled": 0,
                "numberMisscheduled": 0,
                "desiredNumberScheduled": 0,
                "numberReady": 0,
                "updatedNumberScheduled": 0
            })
        );
    }

    #[test]
    fn crd_matches_upstream_names() {
        let crd = serde_json::to_value(DaemonSet::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "daemonsets.apps.kruise.io");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!(["daemon", "ads"])
        );
        let version = &crd["spec"]["versions"][0];
        assert!(version["subresources"]["status"].is_object());
        assert!(version["subresources"].get("scale").is_none());
        assert_eq!(
            version["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .len(),
            8
        );
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let required: Vec<&str> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(required.contains(&"selector") && required.contains(&"template"));
        let ru = &spec["properties"]["updateStrategy"]["properties"]["rollingUpdate"]["properties"];
        for field in [
            "rollingUpdateType",
            "maxUnavailable",
            "maxSurge",
            "selector",
            "partition",
            "paused",
        ] {
            assert!(ru.get(field).is_some(), "rollingUpdate.{field} missing");
        }
    }
}
