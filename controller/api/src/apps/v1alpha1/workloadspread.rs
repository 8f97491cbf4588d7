//! WorkloadSpread: spread one workload's pods over subsets of nodes
//! (zones, node pools, ...), each with its own node affinity,
//! tolerations, replica cap and pod patch. The pod webhook assigns each
//! new pod to a subset; the controller keeps per-subset counts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, PreferredSchedulingTerm, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation on a pod: the WorkloadSpread and subset it was assigned to
/// (JSON `{"name": ..., "subset": ...}`).
pub const ANNOTATION_MATCHED_WORKLOADSPREAD: &str = "apps.kruise.io/matched-workloadspread";
/// Annotation on a pod: the patch of its subset that was applied.
pub const ANNOTATION_SUBSET_PATCH: &str = "apps.kruise.io/subset-patch";
/// Kubernetes' pod deletion cost annotation, set so that pods of
/// over-full or lower subsets are removed first on scale-in.
pub const ANNOTATION_POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// `scheduleStrategy.type`: subsets are fixed; pods are never moved to
/// another subset (the default).
pub const SCHEDULE_STRATEGY_FIXED: &str = "Fixed";
/// `scheduleStrategy.type`: pods that cannot be scheduled in their subset
/// may be recreated in a later one with room.
pub const SCHEDULE_STRATEGY_ADAPTIVE: &str = "Adaptive";

/// Subset condition type: whether the subset's nodes can take more pods.
pub const SUBSET_CONDITION_SCHEDULABLE: &str = "Schedulable";

/// The workload, its subsets, and how pods move between them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "WorkloadSpread",
    plural = "workloadspreads",
    shortname = "ws",
    namespaced,
    status = "WorkloadSpreadStatus",
    printcolumn = r#"{"name":"WorkloadName","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"WorkloadKind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"Adaptive","type":"boolean","jsonPath":".spec.scheduleStrategy.type[?(@ == \"Adaptive\")]","description":"Whether use the adaptive reschedule strategy"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpreadSpec {
    /// The workload whose pods are spread.
    #[serde(rename = "targetRef")]
    pub target_reference: TargetReference,
    /// Restrict the spread to part of the workload's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_filter: Option<TargetFilter>,
    /// The subsets, in order of preference; names are unique.
    pub subsets: Vec<WorkloadSpreadSubset>,
    /// Whether pods may move between subsets.
    #[serde(default, skip_serializing_if = "is_default")]
    pub schedule_strategy: WorkloadSpreadScheduleStrategy,
}

/// A workload, by API version, kind and name (in the WorkloadSpread's
/// namespace). OpenKruise's PersistentPodState uses the same type.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetReference {
    /// API version of the workload, e.g. `apps/v1`.
    pub api_version: String,
    /// Kind of the workload.
    pub kind: String,
    /// Name of the workload.
    pub name: String,
}

/// Which of the workload's pods are managed, and how to count them (for
/// workloads such as a TFJob that make several kinds of pods).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetFilter {
    /// Only pods matching this are managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Dot-separated paths (array indexes as numbers, e.g.
    /// `spec.tfReplicaSpecs.Worker.replicas`) of integers in the workload;
    /// their sum is the managed replica count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas_path_list: Vec<String>,
}

/// How pods are (re)placed among subsets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpreadScheduleStrategy {
    /// `Fixed` (the default when empty) or `Adaptive`.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    #[schemars(extend("enum" = ["Adaptive", "Fixed", ""]))]
    pub type_: String,
    /// Settings of the `Adaptive` strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveWorkloadSpreadStrategy>,
}

/// Settings of the `Adaptive` strategy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdaptiveWorkloadSpreadStrategy {
    /// Skip the webhook's rough check (node resources only) that a pod
    /// would fit in a subset before assigning it there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_simulation_schedule: bool,
    /// How long a pod may stay unschedulable in its subset before the
    /// controller moves it to a later subset with room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reschedule_critical_seconds: Option<i32>,
}

/// One subset: where its pods run and how many it takes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpreadSubset {
    /// Subset name, unique within the WorkloadSpread.
    pub name: String,
    /// Node selector term the subset's pods must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_node_selector_term: Option<NodeSelectorTerm>,
    /// Weighted node preferences of the subset's pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_node_selector_terms: Vec<PreferredSchedulingTerm>,
    /// Tolerations added to the subset's pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Most pods in the subset (a number or a percentage of the workload's
    /// replicas); absent means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<IntOrString>,
    /// A strategic-merge patch applied to the subset's pods (labels,
    /// annotations, container resources, ...). Kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_schema")]
    pub patch: Option<RawExtension>,
}

/// Observed state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpreadStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub observed_generation: i64,
    /// One entry per subset, in spec order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subset_statuses: Vec<WorkloadSpreadSubsetStatus>,
    /// Per workload revision, the subset statuses of that revision's pods
    /// (during a rolling update, new pods may appear before old ones go).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versioned_subset_statuses: BTreeMap<String, Vec<WorkloadSpreadSubsetStatus>>,
}

/// A condition of a subset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpreadSubsetCondition {
    /// Condition type, e.g. `Schedulable`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Machine-readable cause of the last change.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable detail of the last change.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Observed state of one subset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpreadSubsetStatus {
    /// Subset name.
    pub name: String,
    /// Active pods in the subset.
    pub replicas: i32,
    /// Current conditions of the subset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<WorkloadSpreadSubsetCondition>,
    /// Pods the subset still lacks to reach `maxReplicas`; 0 when full,
    /// -1 when the subset has no limit.
    pub missing_replicas: i32,
    /// Pods the webhook assigned here (name → time) that the controller
    /// has not seen yet; stale entries expire.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub creating_pods: BTreeMap<String, Time>,
    /// Like `creatingPods`, for deletions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deleting_pods: BTreeMap<String, Time>,
}

/// Schema of a subset's `patch`: anything, kept unpruned.
fn preserved_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    const EXAMPLE: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: WorkloadSpread
metadata:
  name: web-spread
  namespace: shop
spec:
  targetRef:
    apiVersion: apps.kruise.io/v1alpha1
    kind: CloneSet
    name: web
  subsets:
  - name: subset-a
    requiredNodeSelectorTerm:
      matchExpressions:
      - key: topology.kubernetes.io/zone
        operator: In
        values:
        - zone-a
    preferredNodeSelectorTerms:
    - weight: 50
      preference:
        matchExpressions:
        - key: node-pool
          operator: In
          values:
          - fast
    maxReplicas: 3
    patch:
      metadata:
        labels:
          subset: subset-a
  - name: subset-b
    requiredNodeSelectorTerm:
      matchExpressions:
      - key: node-type
        operator: In
        values:
        - spot
    tolerations:
    - key: spot
      operator: Exists
      effect: NoSchedule
    maxReplicas: 50%
    patch:
      metadata:
        annotations:
          cost: low
      spec:
        containers:
        - name: main
          resources:
            limits:
              cpu: "1"
  scheduleStrategy:
    type: Adaptive
    adaptive:
      rescheduleCriticalSeconds: 30
status:
  observedGeneration: 2
  subsetStatuses:
  - name: subset-a
    replicas: 3
    missingReplicas: 0
  - name: subset-b
    replicas: 1
    missingReplicas: -1
    conditions:
    - type: Schedulable
      status: "False"
      lastTransitionTime: "2024-05-01T08:00:00Z"
      reason: unschedulable
    creatingPods:
      web-x7k2p: "2024-05-01T08:01:00Z"
"#;

    #[test]
    fn deserialises_two_subsets() {
        let ws: WorkloadSpread = serde_saphyr::from_str(EXAMPLE).unwrap();
        assert_eq!(ws.metadata.namespace.as_deref(), Some("shop"));
        let spec = &ws.spec;
        assert_eq!(spec.target_reference.kind, "CloneSet");
        assert_eq!(spec.target_reference.name, "web");
        assert_eq!(spec.subsets.len(), 2);

        let a = &spec.subsets[0];
        assert_eq!(a.name, "subset-a");
        let req = a.required_node_selector_term.as_ref().unwrap();
        assert_eq!(
            req.match_expressions.as_ref().unwrap()[0].key,
            "topology.kubernetes.io/zone"
        );
        assert_eq!(a.preferred_node_selector_terms[0].weight, 50);
        assert_eq!(a.max_replicas, Some(IntOrString::Int(3)));
        assert_eq!(
            a.patch.as_ref().unwrap().0["metadata"]["labels"]["subset"],
            "subset-a"
        );

        let b = &spec.subsets[1];
        assert_eq!(b.tolerations[0].key.as_deref(), Some("spot"));
        assert_eq!(b.tolerations[0].effect.as_deref(), Some("NoSchedule"));
        assert_eq!(b.max_replicas, Some(IntOrString::String("50%".into())));
        assert_eq!(
            b.patch.as_ref().unwrap().0["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1"
        );

        assert_eq!(spec.schedule_strategy.type_, SCHEDULE_STRATEGY_ADAPTIVE);
        let adaptive = spec.schedule_strategy.adaptive.as_ref().unwrap();
        assert!(!adaptive.disable_simulation_schedule);
        assert_eq!(adaptive.reschedule_critical_seconds, Some(30));

        let st = ws.status.as_ref().unwrap();
        assert_eq!(st.observed_generation, 2);
        assert_eq!(st.subset_statuses[0].missing_replicas, 0);
        let sb = &st.subset_statuses[1];
        assert_eq!((sb.replicas, sb.missing_replicas), (1, -1));
        assert_eq!(sb.conditions[0].type_, SUBSET_CONDITION_SCHEDULABLE);
        assert_eq!(sb.conditions[0].status, "False");
        assert!(sb.creating_pods.contains_key("web-x7k2p"));
        assert!(sb.deleting_pods.is_empty());
    }

    #[test]
    fn round_trips_through_json_with_upstream_field_names() {
        let ws: WorkloadSpread = serde_saphyr::from_str(EXAMPLE).unwrap();
        let json = serde_json::to_value(&ws).unwrap();
        assert_eq!(json["apiVersion"], "apps.kruise.io/v1alpha1");
        assert_eq!(json["kind"], "WorkloadSpread");
        let spec = &json["spec"];
        assert_eq!(spec["targetRef"]["apiVersion"], "apps.kruise.io/v1alpha1");
        assert!(spec.get("targetReference").is_none());
        assert!(spec.get("targetFilter").is_none());
        let a = &spec["subsets"][0];
        assert_eq!(
            a["requiredNodeSelectorTerm"]["matchExpressions"][0]["operator"],
            "In"
        );
        assert_eq!(a["preferredNodeSelectorTerms"][0]["weight"], 50);
        assert_eq!(a["maxReplicas"], 3);
        assert_eq!(a["patch"]["metadata"]["labels"]["subset"], "subset-a");
        assert!(a.get("tolerations").is_none());
        let b = &spec["subsets"][1];
        assert_eq!(b["maxReplicas"], "50%");
        assert_eq!(b["tolerations"][0]["operator"], "Exists");
        assert_eq!(spec["scheduleStrategy"]["type"], "Adaptive");
        assert_eq!(
            spec["scheduleStrategy"]["adaptive"]["rescheduleCriticalSeconds"],
            30
        );
        let st = &json["status"]["subsetStatuses"];
        assert_eq!(st[0]["missingReplicas"], 0);
        assert_eq!(
            st[1]["conditions"][0]["lastTransitionTime"],
            "2024-05-01T08:00:00Z"
        );
        assert_eq!(st[1]["creatingPods"]["web-x7k2p"], "2024-05-01T08:01:00Z");
        assert!(json["status"].get("versionedSubsetStatuses").is_none());

        let back: WorkloadSpread = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec, ws.spec);
        assert_eq!(back.status, ws.status);
    }

    #[test]
    fn target_filter_and_versioned_statuses() {
        let spec = WorkloadSpreadSpec {
            target_reference: TargetReference {
                api_version: "kubeflow.org/v1".into(),
                kind: "TFJob".into(),
                name: "train".into(),
            },
            target_filter: Some(TargetFilter {
                selector: Some(LabelSelector {
                    match_labels: Some([("role".to_string(), "worker".to_string())].into()),
                    ..Default::default()
                }),
                replicas_path_list: vec!["spec.tfReplicaSpecs.Worker.replicas".into()],
            }),
            subsets: vec![WorkloadSpreadSubset {
                name: "only".into(),
                ..Default::default()
            }],
            schedule_strategy: WorkloadSpreadScheduleStrategy::default(),
        };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "targetRef": {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "name": "train"},
                "targetFilter": {
                    "selector": {"matchLabels": {"role": "worker"}},
                    "replicasPathList": ["spec.tfReplicaSpecs.Worker.replicas"]
                },
                "subsets": [{"name": "only"}]
            })
        );

        let status = WorkloadSpreadStatus {
            versioned_subset_statuses: [(
                "rev-1".to_string(),
                vec![WorkloadSpreadSubsetStatus {
                    name: "only".into(),
                    replicas: 2,
                    missing_replicas: -1,
                    ..Default::default()
                }],
            )]
            .into(),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "versionedSubsetStatuses": {
                    "rev-1": [{"name": "only", "replicas": 2, "missingReplicas": -1}]
                }
            })
        );
    }

    #[test]
    fn crd_is_namespaced_and_keeps_patches() {
        let crd = serde_json::to_value(WorkloadSpread::crd()).unwrap();
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!(["ws"])
        );
        let version = &crd["spec"]["versions"][0];
        assert!(version["subresources"].get("status").is_some());
        assert_eq!(
            version["additionalPrinterColumns"][2]["jsonPath"],
            ".spec.scheduleStrategy.type[?(@ == \"Adaptive\")]"
        );
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let required = spec["required"].as_array().unwrap();
        assert!(required.contains(&"targetRef".into()));
        assert!(required.contains(&"subsets".into()));
        let patch = &spec["properties"]["subsets"]["items"]["properties"]["patch"];
        assert_eq!(patch["x-kubernetes-preserve-unknown-fields"], true);
    }
}
