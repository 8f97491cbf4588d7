//! PodUnavailableBudget: like a PodDisruptionBudget, but the pod webhook
//! also holds back deletions and disruptive in-place updates (not just
//! evictions) that would leave too few of the selected pods available.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation on a PodUnavailableBudget: comma-separated operations it
/// guards (from [`OPERATION_UPDATE`], [`OPERATION_DELETE`],
/// [`OPERATION_EVICT`], [`OPERATION_RESIZE`]). Absent means DELETE, EVICT
/// and UPDATE.
pub const ANNOTATION_PROTECT_OPERATIONS: &str = "kruise.io/pub-protect-operations";
/// Guarded operation: a pod update that disrupts it (e.g. an in-place
/// image change that restarts a container).
pub const OPERATION_UPDATE: &str = "UPDATE";
/// Guarded operation: pod deletion.
pub const OPERATION_DELETE: &str = "DELETE";
/// Guarded operation: pod eviction.
pub const OPERATION_EVICT: &str = "EVICT";
/// Guarded operation: every in-place vertical resize of a pod, disruptive
/// or not.
pub const OPERATION_RESIZE: &str = "RESIZE";
/// Annotation on a PodUnavailableBudget: the total replica count to use,
/// for pods whose owner has no scale subresource (or no owner).
pub const ANNOTATION_PROTECT_TOTAL_REPLICAS: &str = "pub.kruise.io/protect-total-replicas";
/// Annotation on a pod: this pod is not guarded by any budget (for forced
/// deletion).
pub const ANNOTATION_POD_NO_PROTECTION: &str = "pub.kruise.io/no-protect";
/// Prefix of pod labels that mark a pod unavailable for budgets and Kruise
/// workloads, even when it is ready.
pub const LABEL_PREFIX_UNAVAILABLE_POD: &str = "unavailable-pod.kruise.io/";

/// Which pods are guarded and how many may be unavailable.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "policy.kruise.io",
    version = "v1alpha1",
    kind = "PodUnavailableBudget",
    plural = "podunavailablebudgets",
    shortname = "pub",
    namespaced,
    status = "PodUnavailableBudgetStatus",
    printcolumn = r#"{"name":"Allowed","type":"integer","jsonPath":".status.unavailableAllowed","description":"UnavailableAllowed number of pod unavailable that are currently allowed"}"#,
    printcolumn = r#"{"name":"Current","type":"integer","jsonPath":".status.currentAvailable","description":"CurrentAvailable current number of available pods"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredAvailable","description":"DesiredAvailable minimum desired number of available pods"}"#,
    printcolumn = r#"{"name":"Total","type":"integer","jsonPath":".status.totalReplicas","description":"TotalReplicas total number of pods counted by this budget"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PodUnavailableBudgetSpec {
    /// Label query over the guarded pods; ignored when `targetRef` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The workload whose pods are guarded; wins over `selector`.
    #[serde(rename = "targetRef", default, skip_serializing_if = "Option::is_none")]
    pub target_reference: Option<TargetReference>,
    /// Most guarded pods that may be unavailable after an operation (a
    /// number or a percentage); wins over `minAvailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Fewest guarded pods that must stay available after an operation (a
    /// number or a percentage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
}

/// A workload, by API version, kind and name (in the budget's namespace).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetReference {
    /// API version of the workload, e.g. `apps.kruise.io/v1alpha1`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// Kind of the workload.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Name of the workload.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Observed state. The counters and `observedGeneration` are always
/// written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodUnavailableBudgetStatus {
    /// The `metadata.generation` the rest of the status was computed for;
    /// only then is `unavailableAllowed` trustworthy.
    #[serde(default)]
    pub observed_generation: i64,
    /// Pods (name → time) whose eviction or deletion the webhook let
    /// through but the controller has not yet seen go.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub disrupted_pods: BTreeMap<String, Time>,
    /// Pods (name → time) the webhook let be updated disruptively; each is
    /// dropped once it is updated and ready again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unavailable_pods: BTreeMap<String, Time>,
    /// How many more pods may become unavailable now.
    #[serde(default)]
    pub unavailable_allowed: i32,
    /// Guarded pods that are available now.
    #[serde(default)]
    pub current_available: i32,
    /// Fewest guarded pods that must stay available.
    #[serde(default)]
    pub desired_available: i32,
    /// Guarded pods counted by the budget.
    #[serde(default)]
    pub total_replicas: i32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    const EXAMPLE: &str = r#"
apiVersion: policy.kruise.io/v1alpha1
kind: PodUnavailableBudget
metadata:
  name: web-pub
  namespace: shop
  annotations:
    kruise.io/pub-protect-operations: DELETE,EVICT
spec:
  targetRef:
    apiVersion: apps.kruise.io/v1alpha1
    kind: CloneSet
    name: web
  maxUnavailable: 25%
status:
  observedGeneration: 1
  unavailableAllowed: 1
  currentAvailable: 8
  desiredAvailable: 6
  totalReplicas: 8
  disruptedPods:
    web-abcde: "2024-05-01T08:00:00Z"
"#;

    #[test]
    fn deserialises_a_percentage_budget_for_a_workload() {
        let pub_: PodUnavailableBudget = serde_saphyr::from_str(EXAMPLE).unwrap();
        assert_eq!(pub_.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(
            pub_.metadata
                .annotations
                .as_ref()
                .unwrap()
                .get(ANNOTATION_PROTECT_OPERATIONS)
                .map(String::as_str),
            Some("DELETE,EVICT")
        );
        let spec = &pub_.spec;
        let target = spec.target_reference.as_ref().unwrap();
        assert_eq!(target.api_version, "apps.kruise.io/v1alpha1");
        assert_eq!(target.kind, "CloneSet");
        assert_eq!(target.name, "web");
        assert!(spec.selector.is_none());
        assert_eq!(
            spec.max_unavailable,
            Some(IntOrString::String("25%".into()))
        );
        assert!(spec.min_available.is_none());
        let st = pub_.status.as_ref().unwrap();
        assert_eq!(
            (
                st.unavailable_allowed,
                st.current_available,
                st.desired_available,
                st.total_replicas
            ),
            (1, 8, 6, 8)
        );
        assert!(st.disrupted_pods.contains_key("web-abcde"));
        assert!(st.unavailable_pods.is_empty());
    }

    #[test]
    fn round_trips_through_json_with_upstream_field_names() {
        let pub_: PodUnavailableBudget = serde_saphyr::from_str(EXAMPLE).unwrap();
        let json = serde_json::to_value(&pub_).unwrap();
        assert_eq!(json["apiVersion"], "policy.kruise.io/v1alpha1");
        assert_eq!(json["kind"], "PodUnavailableBudget");
        assert_eq!(
            json["spec"],
            serde_json::json!({
                "targetRef": {
                    "apiVersion": "apps.kruise.io/v1alpha1",
                    "kind": "CloneSet",
                    "name": "web"
                },
                "maxUnavailable": "25%"
            })
        );
        let status = &json["status"];
        assert_eq!(status["unavailableAllowed"], 1);
        assert_eq!(status["disruptedPods"]["web-abcde"], "2024-05-01T08:00:00Z");
        assert!(status.get("unavailablePods").is_none());

        let back: PodUnavailableBudget = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec, pub_.spec);
        assert_eq!(back.status, pub_.status);

        // A selector-based budget with an absolute minimum; counters are
        // written even when zero.
        let mut by_selector = PodUnavailableBudget::new(
            "db-pub",
            PodUnavailableBudgetSpec {
                selector: Some(LabelSelector {
                    match_labels: Some([("app".to_string(), "db".to_string())].into()),
                    ..Default::default()
                }),
                min_available: Some(IntOrString::Int(2)),
                ..Default::default()
            },
        );
        by_selector.status = Some(PodUnavailableBudgetStatus::default());
        let json = serde_json::to_value(&by_selector).unwrap();
        assert_eq!(
            json["spec"],
            serde_json::json!({"selector": {"matchLabels": {"app": "db"}}, "minAvailable": 2})
        );
        assert_eq!(
            json["status"],
            serde_json::json!({
                "observedGeneration": 0,
                "unavailableAllowed": 0,
                "currentAvailable": 0,
                "desiredAvailable": 0,
                "totalReplicas": 0
            })
        );
    }

    #[test]
    fn crd_is_namespaced_with_short_name() {
        let crd = serde_json::to_value(PodUnavailableBudget::crd()).unwrap();
        assert_eq!(
            crd["metadata"]["name"],
            "podunavailablebudgets.policy.kruise.io"
        );
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!(["pub"])
        );
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"].get("status").is_some());
        assert_eq!(version["additionalPrinterColumns"][0]["name"], "Allowed");
    }
}
