//! SidecarSet (cluster-scoped): sidecar and init containers, volumes and
//! pod metadata that the pod webhook adds to every pod a selector matches,
//! and that the controller keeps up to date in place on pods that already
//! run them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, LocalObjectReference, ObjectFieldSelector, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cloneset::UpdateScatterStrategy;
use crate::apps::shared::UpdatePriorityStrategy;

/// Label on a SidecarSet, copied to its ControllerRevisions: a
/// user-chosen version name that `injectionStrategy.revision.customVersion`
/// can refer to.
pub const LABEL_SIDECARSET_CUSTOM_VERSION: &str = "apps.kruise.io/sidecarset-custom-version";
/// Annotation on a SidecarSet (and, per SidecarSet, on injected pods): hash
/// of its sidecar containers. Set by the webhook.
pub const ANNOTATION_SIDECARSET_HASH: &str = "kruise.io/sidecarset-hash";
/// Annotation like [`ANNOTATION_SIDECARSET_HASH`], but with the images left
/// out of the hash (a change of this one cannot be applied in place).
pub const ANNOTATION_SIDECARSET_HASH_WITHOUT_IMAGE: &str =
    "kruise.io/sidecarset-hash-without-image";
/// Annotation on a pod: names of the SidecarSets injected into it.
pub const ANNOTATION_SIDECARSET_INJECTED_LIST: &str = "kruise.io/sidecarset-injected-list";
/// Annotation on a pod: progress of in-place sidecar updates.
pub const ANNOTATION_SIDECARSET_INPLACE_UPDATE_STATE: &str =
    "kruise.io/sidecarset-inplace-update-state";
/// Environment variable set on each injected sidecar container.
pub const SIDECAR_ENV_IS_INJECTED: &str = "IS_INJECTED";
/// Pod condition type telling whether the pod's sidecars can be updated.
pub const POD_CONDITION_SIDECARSET_UPGRADABLE: &str = "SidecarSetUpgradable";

/// `podInjectPolicy`: put the sidecar before the pod's own containers
/// (the webhook's default for `containers`).
pub const POD_INJECT_POLICY_BEFORE_APP_CONTAINER: &str = "BeforeAppContainer";
/// `podInjectPolicy`: put the sidecar after the pod's own containers (the
/// webhook's default for `initContainers`, where the policy is unused).
pub const POD_INJECT_POLICY_AFTER_APP_CONTAINER: &str = "AfterAppContainer";

/// `upgradeStrategy.upgradeType`: restart the sidecar with the new image
/// (the default).
pub const SIDECAR_CONTAINER_COLD_UPGRADE: &str = "ColdUpgrade";
/// `upgradeStrategy.upgradeType`: run the new version next to the old one
/// (in a second container using `hotUpgradeEmptyImage`) and switch over.
pub const SIDECAR_CONTAINER_HOT_UPGRADE: &str = "HotUpgrade";

/// `shareVolumePolicy.type`: mount the pod's other containers' volumes too.
pub const SHARE_VOLUME_POLICY_ENABLED: &str = "enabled";
/// `shareVolumePolicy.type`: mount only the sidecar's own volumes (the
/// default).
pub const SHARE_VOLUME_POLICY_DISABLED: &str = "disabled";

/// `resourcesPolicy.targetContainersMode`: add up the matched containers'
/// resources.
pub const TARGET_CONTAINERS_MODE_SUM: &str = "sum";
/// `resourcesPolicy.targetContainersMode`: take the largest of the matched
/// containers' resources.
pub const TARGET_CONTAINERS_MODE_MAX: &str = "max";

/// `patchPodMetadata[].patchPolicy`: keep the pod's value on conflict;
/// applied at injection only (the default).
pub const PATCH_POLICY_RETAIN: &str = "Retain";
/// `patchPodMetadata[].patchPolicy`: replace the pod's value; applied at
/// injection and on in-place updates.
pub const PATCH_POLICY_OVERWRITE: &str = "Overwrite";
/// `patchPodMetadata[].patchPolicy`: JSON-merge-patch the value (a JSON
/// object) into the pod's; applied at injection and on in-place updates.
pub const PATCH_POLICY_MERGE_PATCH_JSON: &str = "MergePatchJson";

/// `updateStrategy.type`: leave already-injected pods alone; only new pods
/// get the current sidecars.
pub const UPDATE_STRATEGY_NOT_UPDATE: &str = "NotUpdate";
/// `updateStrategy.type`: update injected pods in place, in batches (the
/// default).
pub const UPDATE_STRATEGY_ROLLING_UPDATE: &str = "RollingUpdate";

/// `injectionStrategy.revision.policy`: new pods always get the pinned
/// revision, except those the update selector picks (the default).
pub const INJECT_REVISION_POLICY_ALWAYS: &str = "Always";
/// `injectionStrategy.revision.policy`: new pods get the pinned or the
/// latest revision, following the update strategy's selector and partition.
pub const INJECT_REVISION_POLICY_PARTIAL: &str = "Partial";

/// Default of `revisionHistoryLimit` (set by the webhook).
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;

/// What to inject into which pods, and how to roll out changes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "SidecarSet",
    plural = "sidecarsets",
    status = "SidecarSetStatus",
    printcolumn = r#"{"name":"MATCHED","type":"integer","jsonPath":".status.matchedPods","description":"The number of pods matched."}"#,
    printcolumn = r#"{"name":"UPDATED","type":"integer","jsonPath":".status.updatedPods","description":"The number of pods matched and updated."}"#,
    printcolumn = r#"{"name":"READY","type":"integer","jsonPath":".status.readyPods","description":"The number of pods matched and ready."}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSetSpec {
    /// Label query choosing the pods to inject into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// When set, only pods of this namespace are considered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Label query over namespaces whose pods are considered; absent means
    /// every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Init containers to add to new pods (in name order). Never applied
    /// to existing pods. Native sidecars (`restartPolicy: Always`) go here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::apps::shared::schemaless_list")]
    pub init_containers: Vec<SidecarContainer>,
    /// Sidecar containers to add to pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::apps::shared::schemaless_list")]
    pub containers: Vec<SidecarContainer>,
    /// Volumes the sidecars mount, added to the pod unless it has a volume
    /// of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::apps::shared::schemaless_list")]
    pub volumes: Vec<Volume>,
    /// How changes reach pods that already carry the sidecars.
    #[serde(default, skip_serializing_if = "is_default")]
    pub update_strategy: SidecarSetUpdateStrategy,
    /// How (and which revision) to inject into new pods.
    #[serde(default, skip_serializing_if = "is_default")]
    pub injection_strategy: SidecarSetInjectionStrategy,
    /// Pull secrets for the sidecar images, added to the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// How many ControllerRevisions of the SidecarSet are kept (webhook
    /// default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    /// Pod metadata to set at injection (and, per policy, on updates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patch_pod_metadata: Vec<SidecarSetPatchPodMetadata>,
}

/// Annotations patched into matched pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSetPatchPodMetadata {
    /// The annotations to set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `Retain` (the webhook's default), `Overwrite` or `MergePatchJson`;
    /// see [`PATCH_POLICY_RETAIN`] and its siblings.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub patch_policy: String,
}

/// A container to inject: a full pod container (its fields sit at the top
/// level, as in a pod spec) plus injection settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarContainer {
    /// The container itself.
    #[serde(flatten)]
    pub container: Container,
    /// `BeforeAppContainer` or `AfterAppContainer`: where in
    /// `spec.containers` the sidecar goes. Ignored for init containers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_inject_policy: String,
    /// How the container is replaced when its image changes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub upgrade_strategy: SidecarContainerUpgradeStrategy,
    /// Whether the sidecar also gets the volume mounts of the pod's other
    /// (non-injected) containers.
    #[serde(default, skip_serializing_if = "is_default")]
    pub share_volume_policy: ShareVolumePolicy,
    /// Whether the sidecar also gets the volume devices of the pod's other
    /// (non-injected) containers. Left absent when unset so that the
    /// SidecarSet hash of older objects does not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_volume_device_policy: Option<ShareVolumePolicy>,
    /// Environment variables copied from other containers of the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfer_env: Vec<TransferEnvVar>,
    /// Resources computed from the pod's containers at injection; not to
    /// be combined with the container's own `resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_policy: Option<ResourcesPolicy>,
}

/// Volume (or volume device) sharing with the pod's own containers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareVolumePolicy {
    /// `enabled` or `disabled` (the webhook's default).
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub type_: String,
}

/// Copy environment variables from another container of the pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferEnvVar {
    /// Name of the container to copy from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_container_name: String,
    /// The container to copy from, read from a field of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_container_name_from: Option<SourceContainerNameSource>,
    /// One variable to copy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub env_name: String,
    /// Several variables to copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_names: Vec<String>,
}

/// Where to read the source container's name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceContainerNameSource {
    /// A pod field: `metadata.name`, `metadata.labels['<key>']` or
    /// `metadata.annotations['<key>']`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<ObjectFieldSelector>,
}

/// Derive the sidecar's resources from the pod's other containers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesPolicy {
    /// `sum` or `max`: how the matched containers' resources are combined
    /// into the `cpu` / `memory` variables.
    #[schemars(extend("enum" = ["sum", "max"]))]
    pub target_containers_mode: String,
    /// Regular expression choosing the containers (plain and native
    /// sidecars, not Kruise sidecars) to take into account; CRD default
    /// `.*`. No match makes the webhook reject the pod.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(extend("default" = ".*"))]
    pub target_containers_name_regex: String,
    /// The expressions giving the sidecar's limits and requests.
    pub resources_expr: ResourcesExpr,
}

/// Expressions for the sidecar's limits and requests.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesExpr {
    /// Limits; an unlimited result leaves the limit unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceExprLimits>,
    /// Requests; a container without requests counts as 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceExprRequests>,
}

/// Limit expressions (`+ - * /`, `max()`, `min()`, and the variables `cpu`
/// and `memory`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceExprLimits {
    /// CPU limit expression over `cpu`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu: String,
    /// Memory limit expression over `memory`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub memory: String,
}

/// Request expressions (same syntax as [`ResourceExprLimits`]).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceExprRequests {
    /// CPU request expression over `cpu`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu: String,
    /// Memory request expression over `memory`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub memory: String,
}

/// How a sidecar container is upgraded.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarContainerUpgradeStrategy {
    /// `ColdUpgrade` (the webhook's default) or `HotUpgrade`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub upgrade_type: String,
    /// For `HotUpgrade`: an image that behaves like the sidecar (same
    /// command, probes, ...) but does nothing, run in the idle slot.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hot_upgrade_empty_image: String,
}

/// Injection into new pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSetInjectionStrategy {
    /// Stop injecting into new pods; pods already injected keep their
    /// sidecars and still get updates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Inject a chosen revision instead of the latest one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<SidecarSetInjectRevision>,
}

/// A pinned SidecarSet revision for injection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSetInjectRevision {
    /// Value of [`LABEL_SIDECARSET_CUSTOM_VERSION`] on the wanted
    /// ControllerRevision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_version: Option<String>,
    /// Name of the wanted ControllerRevision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    /// `Always` (the default) or `Partial`; see
    /// [`INJECT_REVISION_POLICY_ALWAYS`] and
    /// [`INJECT_REVISION_POLICY_PARTIAL`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(extend("enum" = ["Always", "Partial"], "default" = "Always"))]
    pub policy: String,
}

/// How changes are rolled out to pods that already carry the sidecars.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSetUpdateStrategy {
    /// `RollingUpdate` (the webhook's default) or `NotUpdate`.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub type_: String,
    /// Hold updates of injected pods.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Update only the pods this selects. Since Kruise 1.8 it also decides
    /// which new pods get the latest revision rather than a pinned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Number (or percentage) of matched pods to leave on old revisions
    /// (webhook default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<IntOrString>,
    /// Most pods updating (unavailable) at once: a number, or a percentage
    /// rounded up; not 0 (webhook default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Which pods are updated first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_strategy: Option<UpdatePriorityStrategy>,
    /// Label key/values whose pods are spread across update batches
    /// (applied after the priority order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scatter_strategy: UpdateScatterStrategy,
}

/// Observed state. The three pod counters are always written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSetStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub observed_generation: i64,
    /// Pods that match and were created after the SidecarSet.
    #[serde(default)]
    pub matched_pods: i32,
    /// Matched pods running the latest sidecars.
    #[serde(default)]
    pub updated_pods: i32,
    /// Matched pods that are ready.
    #[serde(default)]
    pub ready_pods: i32,
    /// Matched pods that are both updated and ready.
    #[serde(default, skip_serializing_if = "is_default")]
    pub updated_ready_pods: i32,
    /// Name of the latest ControllerRevision.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub latest_revision: String,
    /// Hash collisions met while naming ControllerRevisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
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
kind: SidecarSet
metadata:
  name: log-and-mesh
spec:
  selector:
    matchLabels:
      app: web
  namespace: shop
  initContainers:
  - name: log-shipper
    image: fluent/fluent-bit:3.0
    restartPolicy: Always
    volumeMounts:
    - name: app-logs
      mountPath: /var/log/app
  - name: init-config
    image: busybox:1.36
    command: ["sh", "-c", "echo ready > /config/state"]
  containers:
  - name: envoy
    image: envoyproxy/envoy:v1.30.1
    podInjectPolicy: BeforeAppContainer
    ports:
    - containerPort: 15001
      name: proxy
    resources:
      requests:
        cpu: 100m
        memory: 64Mi
    upgradeStrategy:
      upgradeType: HotUpgrade
      hotUpgradeEmptyImage: envoyproxy/envoy-empty:v1
    shareVolumePolicy:
      type: enabled
    transferEnv:
    - sourceContainerName: main
      envName: APP_ID
    - sourceContainerNameFrom:
        fieldRef:
          fieldPath: metadata.labels['main-container']
      envNames:
      - REGION
      - ZONE
  volumes:
  - name: app-logs
    emptyDir: {}
  updateStrategy:
    type: RollingUpdate
    maxUnavailable: 20%
    partition: 2
    selector:
      matchLabels:
        canary: "true"
    scatterStrategy:
    - key: zone
      value: zone-a
  injectionStrategy:
    revision:
      customVersion: v2
      policy: Partial
  imagePullSecrets:
  - name: regcred
  revisionHistoryLimit: 5
  patchPodMetadata:
  - annotations:
      oom-score: '{"envoy": 1}'
    patchPolicy: MergePatchJson
status:
  observedGeneration: 3
  matchedPods: 4
  updatedPods: 2
  readyPods: 4
  updatedReadyPods: 2
  latestRevision: log-and-mesh-5c7d8
"#;

    #[test]
    fn deserialises_native_and_regular_sidecars() {
        let ss: SidecarSet = serde_saphyr::from_str(EXAMPLE).unwrap();
        assert_eq!(ss.metadata.name.as_deref(), Some("log-and-mesh"));
        let spec = &ss.spec;
        assert_eq!(spec.namespace, "shop");
        assert_eq!(spec.init_containers.len(), 2);

        let native = &spec.init_containers[0];
        assert_eq!(native.container.name, "log-shipper");
        assert_eq!(native.container.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            native.container.volume_mounts.as_ref().unwrap()[0].mount_path,
            "/var/log/app"
        );
        assert!(native.pod_inject_policy.is_empty());
        assert!(spec.init_containers[1].container.restart_policy.is_none());

        let envoy = &spec.containers[0];
        assert_eq!(envoy.container.name, "envoy");
        assert_eq!(
            envoy.container.image.as_deref(),
            Some("envoyproxy/envoy:v1.30.1")
        );
        assert_eq!(
            envoy.pod_inject_policy,
            POD_INJECT_POLICY_BEFORE_APP_CONTAINER
        );
        assert_eq!(
            envoy.container.ports.as_ref().unwrap()[0].container_port,
            15001
        );
        assert_eq!(
            envoy.upgrade_strategy.upgrade_type,
            SIDECAR_CONTAINER_HOT_UPGRADE
        );
        assert_eq!(envoy.share_volume_policy.type_, SHARE_VOLUME_POLICY_ENABLED);
        assert!(envoy.share_volume_device_policy.is_none());
        assert_eq!(envoy.transfer_env.len(), 2);
        assert_eq!(envoy.transfer_env[0].source_container_name, "main");
        assert_eq!(envoy.transfer_env[0].env_name, "APP_ID");
        assert_eq!(
            envoy.transfer_env[1]
                .source_container_name_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.labels['main-container']"
        );
        assert_eq!(envoy.transfer_env[1].env_names, vec!["REGION", "ZONE"]);

        assert_eq!(spec.volumes[0].name, "app-logs");
        assert!(spec.volumes[0].empty_dir.is_some());
        let us = &spec.update_strategy;
        assert_eq!(us.type_, UPDATE_STRATEGY_ROLLING_UPDATE);
        assert_eq!(us.max_unavailable, Some(IntOrString::String("20%".into())));
        assert_eq!(us.partition, Some(IntOrString::Int(2)));
        assert_eq!(us.scatter_strategy[0].key, "zone");
        let rev = spec.injection_strategy.revision.as_ref().unwrap();
        assert_eq!(rev.custom_version.as_deref(), Some("v2"));
        assert_eq!(rev.policy, INJECT_REVISION_POLICY_PARTIAL);
        assert_eq!(spec.image_pull_secrets[0].name, "regcred");
        assert_eq!(spec.revision_history_limit, Some(5));
        assert_eq!(
            spec.patch_pod_metadata[0].patch_policy,
            PATCH_POLICY_MERGE_PATCH_JSON
        );

        let st = ss.status.as_ref().unwrap();
        assert_eq!(
            (
                st.matched_pods,
                st.updated_pods,
                st.ready_pods,
                st.updated_ready_pods
            ),
            (4, 2, 4, 2)
        );
        assert_eq!(st.latest_revision, "log-and-mesh-5c7d8");
    }

    #[test]
    fn round_trips_through_json_with_upstream_field_names() {
        let ss: SidecarSet = serde_saphyr::from_str(EXAMPLE).unwrap();
        let json = serde_json::to_value(&ss).unwrap();
        assert_eq!(json["apiVersion"], "apps.kruise.io/v1alpha1");
        assert_eq!(json["kind"], "SidecarSet");
        let spec = &json["spec"];
        // The container's own fields sit beside the injection settings.
        let init = &spec["initContainers"][0];
        assert_eq!(init["name"], "log-shipper");
        assert_eq!(init["restartPolicy"], "Always");
        assert!(init.get("container").is_none());
        assert!(init.get("podInjectPolicy").is_none());
        assert!(init.get("upgradeStrategy").is_none());
        let envoy = &spec["containers"][0];
        assert_eq!(envoy["podInjectPolicy"], "BeforeAppContainer");
        assert_eq!(envoy["image"], "envoyproxy/envoy:v1.30.1");
        assert_eq!(envoy["upgradeStrategy"]["upgradeType"], "HotUpgrade");
        assert_eq!(
            envoy["upgradeStrategy"]["hotUpgradeEmptyImage"],
            "envoyproxy/envoy-empty:v1"
        );
        assert_eq!(envoy["shareVolumePolicy"]["type"], "enabled");
        assert_eq!(envoy["transferEnv"][0]["sourceContainerName"], "main");
        assert_eq!(envoy["transferEnv"][0]["envName"], "APP_ID");
        assert_eq!(
            envoy["transferEnv"][1]["sourceContainerNameFrom"]["fieldRef"]["fieldPath"],
            "metadata.labels['main-container']"
        );
        assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
        assert_eq!(spec["updateStrategy"]["maxUnavailable"], "20%");
        assert_eq!(spec["updateStrategy"]["partition"], 2);
        assert_eq!(
            spec["updateStrategy"]["scatterStrategy"][0]["value"],
            "zone-a"
        );
        assert_eq!(spec["injectionStrategy"]["revision"]["customVersion"], "v2");
        assert_eq!(spec["imagePullSecrets"][0]["name"], "regcred");
        assert_eq!(spec["revisionHistoryLimit"], 5);
        assert_eq!(spec["patchPodMetadata"][0]["patchPolicy"], "MergePatchJson");
        let status = &json["status"];
        assert_eq!(status["matchedPods"], 4);
        assert_eq!(status["latestRevision"], "log-and-mesh-5c7d8");
        assert!(status.get("collisionCount").is_none());

        let back: SidecarSet = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec, ss.spec);
        assert_eq!(back.status, ss.status);
    }

    #[test]
    fn empty_parts_are_left_out_and_counters_kept() {
        let mut ss = SidecarSet::new("minimal", SidecarSetSpec::default());
        ss.status = Some(SidecarSetStatus::default());
        let json = serde_json::to_value(&ss).unwrap();
        assert_eq!(json["spec"], serde_json::json!({}));
        assert_eq!(
            json["status"],
            serde_json::json!({"matchedPods": 0, "updatedPods": 0, "readyPods": 0})
        );
    }

    #[test]
    fn crd_is_cluster_scoped_with_status() {
        let crd = serde_json::to_value(SidecarSet::crd()).unwrap();
        assert_eq!(crd["spec"]["scope"], "Cluster");
        assert_eq!(crd["spec"]["names"]["plural"], "sidecarsets");
        assert!(crd["spec"]["names"].get("shortNames").is_none());
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"].get("status").is_some());
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        // Embedded containers and volumes are kept as written, as in
        // OpenKruise's CRD (the full schemas would make it ~300 KiB).
        for list in ["initContainers", "containers", "volumes"] {
            let items = &spec["properties"][list]["items"];
            assert_eq!(items["type"], "object", "{list}");
            assert_eq!(
                items["x-kubernetes-preserve-unknown-fields"], true,
                "{list}"
            );
        }
        let policy = &spec["properties"]["injectionStrategy"]["properties"]["revision"]["properties"]
            ["policy"];
        assert_eq!(policy["default"], "Always");
        assert_eq!(policy["enum"], serde_json::json!(["Always", "Partial"]));
    }
}
