//! ResourceDistribution (cluster-scoped): copy one namespaced object (a
//! Secret or a ConfigMap) into a set of namespaces and keep the copies in
//! sync with it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: a target namespace already holds an object of the same
/// name that this distribution does not own.
pub const CONDITION_CONFLICT_OCCURRED: &str = "ConflictOccurred";
/// Condition type: some listed target namespaces do not exist.
pub const CONDITION_NAMESPACE_NOT_EXISTS: &str = "NamespaceNotExists";
/// Condition type: reading a distributed copy failed.
pub const CONDITION_GET_RESOURCE_FAILED: &str = "GetResourceFailed";
/// Condition type: creating a copy failed.
pub const CONDITION_CREATE_RESOURCE_FAILED: &str = "CreateResourceFailed";
/// Condition type: updating a copy failed.
pub const CONDITION_UPDATE_RESOURCE_FAILED: &str = "UpdateResourceFailed";
/// Condition type: deleting a copy that is no longer wanted failed.
pub const CONDITION_DELETE_RESOURCE_FAILED: &str = "DeleteResourceFailed";

/// Condition status `True`.
pub const CONDITION_STATUS_TRUE: &str = "True";
/// Condition status `False`.
pub const CONDITION_STATUS_FALSE: &str = "False";
/// Condition status `Unknown`.
pub const CONDITION_STATUS_UNKNOWN: &str = "Unknown";

/// The object to distribute and where to.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "ResourceDistribution",
    plural = "resourcedistributions",
    shortname = "distributor",
    status = "ResourceDistributionStatus",
    printcolumn = r#"{"name":"TOTAL","type":"integer","jsonPath":".status.desired","description":"The desired number of desired distribution and syncs."}"#,
    printcolumn = r#"{"name":"SUCCEED","type":"integer","jsonPath":".status.succeeded","description":"The number of successful distribution and syncs."}"#,
    printcolumn = r#"{"name":"FAILED","type":"integer","jsonPath":".status.failed","description":"The number of failed distributions and syncs."}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDistributionSpec {
    /// The whole object to copy (`apiVersion`, `kind`, `metadata.name`,
    /// and its content); the namespace is set per copy. Kept as written.
    #[schemars(schema_with = "embedded_resource_schema")]
    pub resource: RawExtension,
    /// The namespaces to copy into.
    pub targets: ResourceDistributionTargets,
}

/// Target namespaces: the union of `allNamespaces`, `includedNamespaces`
/// and `namespaceLabelSelector`, minus `excludedNamespaces`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDistributionTargets {
    /// Every namespace (none is forbidden: OpenKruise dropped the
    /// kube-system/kube-public exclusion in v1.1); the label selector is
    /// then ignored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_namespaces: bool,
    /// Namespaces never copied into; wins over everything else.
    #[serde(default, skip_serializing_if = "is_default")]
    pub excluded_namespaces: ResourceDistributionTargetNamespaces,
    /// Namespaces copied into by name.
    #[serde(default, skip_serializing_if = "is_default")]
    pub included_namespaces: ResourceDistributionTargetNamespaces,
    /// Namespaces copied into by label; an empty selector selects none.
    #[serde(default, skip_serializing_if = "is_default")]
    pub namespace_label_selector: LabelSelector,
}

/// A list of namespaces by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDistributionTargetNamespaces {
    /// The namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub list: Vec<ResourceDistributionNamespace>,
}

/// One namespace, by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDistributionNamespace {
    /// Namespace name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Observed state, written by the controller only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDistributionStatus {
    /// Number of target namespaces.
    #[serde(default, skip_serializing_if = "is_default")]
    pub desired: i32,
    /// Namespaces holding an up-to-date copy.
    #[serde(default, skip_serializing_if = "is_default")]
    pub succeeded: i32,
    /// Namespaces where distribution failed.
    #[serde(default, skip_serializing_if = "is_default")]
    pub failed: i32,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub observed_generation: i64,
    /// What went wrong while creating, updating or deleting copies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ResourceDistributionCondition>,
}

/// A condition of the distribution.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDistributionCondition {
    /// One of the `CONDITION_*` types of this module.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Human-readable detail of the last change.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The namespaces affected (when the status is `False`). Note the
    /// singular JSON name, as upstream.
    #[serde(
        rename = "failedNamespace",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub failed_namespaces: Vec<String>,
}

/// Schema of `spec.resource`: any complete object, kept unpruned.
fn embedded_resource_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-embedded-resource": true,
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

    // OpenKruise's documented example: a ConfigMap copied into listed and
    // labelled namespaces, minus an excluded one.
    const EXAMPLE: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ResourceDistribution
metadata:
  name: sample
spec:
  resource:
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: game-demo
    data:
      game.properties: |
        enemy.types=aliens,monsters
        player.maximum-lives=5
      player_initial_lives: "3"
      ui_properties_file_name: user-interface.properties
      user-interface.properties: |
        color.good=purple
        color.bad=yellow
        allow.textmode=true
  targets:
    excludedNamespaces:
      list:
      - name: ns-3
    includedNamespaces:
      list:
      - name: ns-1
      - name: ns-4
    namespaceLabelSelector:
      matchLabels:
        group: one
status:
  desired: 3
  succeeded: 2
  failed: 1
  observedGeneration: 1
  conditions:
  - type: NamespaceNotExists
    status: "False"
    lastTransitionTime: "2024-05-01T08:00:00Z"
    reason: some namespaces do not exist
    failedNamespace:
    - ns-4
"#;

    const SECRET_EXAMPLE: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ResourceDistribution
metadata:
  name: regcred-everywhere
spec:
  resource:
    apiVersion: v1
    kind: Secret
    metadata:
      name: regcred
    type: kubernetes.io/dockerconfigjson
    data:
      .dockerconfigjson: eyJhdXRocyI6e319
  targets:
    allNamespaces: true
    excludedNamespaces:
      list:
      - name: sandbox
"#;

    #[test]
    fn deserialises_the_documented_example() {
        let rd: ResourceDistribution = serde_saphyr::from_str(EXAMPLE).unwrap();
        assert_eq!(rd.metadata.name.as_deref(), Some("sample"));
        let res = &rd.spec.resource.0;
        assert_eq!(res["kind"], "ConfigMap");
        assert_eq!(res["metadata"]["name"], "game-demo");
        assert_eq!(res["data"]["player_initial_lives"], "3");
        assert!(
            res["data"]["game.properties"]
                .as_str()
                .unwrap()
                .contains("enemy.types=aliens,monsters")
        );
        let t = &rd.spec.targets;
        assert!(!t.all_namespaces);
        assert_eq!(t.excluded_namespaces.list[0].name, "ns-3");
        let included: Vec<&str> = t
            .included_namespaces
            .list
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(included, ["ns-1", "ns-4"]);
        assert_eq!(
            t.namespace_label_selector
                .match_labels
                .as_ref()
                .unwrap()
                .get("group")
                .map(String::as_str),
            Some("one")
        );
        let st = rd.status.as_ref().unwrap();
        assert_eq!((st.desired, st.succeeded, st.failed), (3, 2, 1));
        let c = &st.conditions[0];
        assert_eq!(c.type_, CONDITION_NAMESPACE_NOT_EXISTS);
        assert_eq!(c.status, CONDITION_STATUS_FALSE);
        assert!(c.last_transition_time.is_some());
        assert_eq!(c.failed_namespaces, vec!["ns-4"]);
    }

    #[test]
    fn deserialises_a_secret_for_all_namespaces() {
        let rd: ResourceDistribution = serde_saphyr::from_str(SECRET_EXAMPLE).unwrap();
        assert_eq!(rd.spec.resource.0["kind"], "Secret");
        assert_eq!(
            rd.spec.resource.0["data"][".dockerconfigjson"],
            "eyJhdXRocyI6e319"
        );
        assert!(rd.spec.targets.all_namespaces);
        assert!(rd.spec.targets.included_namespaces.list.is_empty());
        assert_eq!(
            rd.spec.targets.namespace_label_selector,
            LabelSelector::default()
        );
        assert!(rd.status.is_none());
    }

    #[test]
    fn round_trips_through_json_with_upstream_field_names() {
        let rd: ResourceDistribution = serde_saphyr::from_str(EXAMPLE).unwrap();
        let json = serde_json::to_value(&rd).unwrap();
        assert_eq!(json["apiVersion"], "apps.kruise.io/v1alpha1");
        assert_eq!(json["kind"], "ResourceDistribution");
        let spec = &json["spec"];
        // The embedded object is kept verbatim.
        assert_eq!(spec["resource"]["apiVersion"], "v1");
        assert_eq!(spec["resource"]["data"]["player_initial_lives"], "3");
        let targets = &spec["targets"];
        assert_eq!(targets["includedNamespaces"]["list"][1]["name"], "ns-4");
        assert_eq!(targets["excludedNamespaces"]["list"][0]["name"], "ns-3");
        assert_eq!(
            targets["namespaceLabelSelector"]["matchLabels"]["group"],
            "one"
        );
        assert!(targets.get("allNamespaces").is_none());
        let cond = &json["status"]["conditions"][0];
        assert_eq!(cond["type"], "NamespaceNotExists");
        assert_eq!(cond["failedNamespace"][0], "ns-4");
        assert!(cond.get("failedNamespaces").is_none());
        assert_eq!(json["status"]["observedGeneration"], 1);

        let back: ResourceDistribution = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec, rd.spec);
        assert_eq!(back.status, rd.status);

        // Empty target parts are left out.
        let rd: ResourceDistribution = serde_saphyr::from_str(SECRET_EXAMPLE).unwrap();
        let targets = serde_json::to_value(&rd.spec.targets).unwrap();
        assert_eq!(
            targets,
            serde_json::json!({
                "allNamespaces": true,
                "excludedNamespaces": {"list": [{"name": "sandbox"}]}
            })
        );
    }

    #[test]
    fn crd_is_cluster_scoped_and_keeps_the_resource() {
        let crd = serde_json::to_value(ResourceDistribution::crd()).unwrap();
        assert_eq!(crd["spec"]["scope"], "Cluster");
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!(["distributor"])
        );
        let version = &crd["spec"]["versions"][0];
        assert!(version["subresources"].get("status").is_some());
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let resource = &spec["properties"]["resource"];
        assert_eq!(resource["type"], "object");
        assert_eq!(resource["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(resource["x-kubernetes-embedded-resource"], true);
        let required = spec["required"].as_array().unwrap();
        assert!(required.contains(&"resource".into()));
        assert!(required.contains(&"targets".into()));
    }
}
