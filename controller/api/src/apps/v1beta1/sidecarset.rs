//! SidecarSet `apps.kruise.io/v1beta1`, the storage version (as in
//! OpenKruise v1.9). It differs from [`v1alpha1`](crate::apps::v1alpha1::sidecarset)
//! in two places only: no `spec.namespace` (a `namespaceSelector` on
//! `kubernetes.io/metadata.name` says the same), and `spec.customVersion`
//! instead of the `apps.kruise.io/sidecarset-custom-version` label. The
//! parts inside (sidecar containers, strategies, status) are shared.
//! [`crate::conversion`] converts between the two.

use k8s_openapi::api::core::v1::{LocalObjectReference, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::apps::v1alpha1::sidecarset::{
    SidecarContainer, SidecarSetInjectionStrategy, SidecarSetPatchPodMetadata, SidecarSetStatus,
    SidecarSetUpdateStrategy,
};

/// The API version that stores SidecarSets in etcd.
pub const STORAGE_VERSION: &str = "v1beta1";

/// What to inject into which pods, and how to roll out changes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1beta1",
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
    /// Label query choosing the pods to inject into (required; an empty
    /// one matches nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Label query over namespaces whose pods are considered; absent means
    /// every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Init containers added to new pods (in name order), after the pod's
    /// own. Native sidecars (`restartPolicy: Always`) go here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::apps::shared::schemaless_list")]
    pub init_containers: Vec<SidecarContainer>,
    /// Sidecar containers added to pods.
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
    /// A user-chosen name for the current version, recorded on its
    /// ControllerRevision; `injectionStrategy.revision.customVersion`
    /// refers to it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub custom_version: String,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v1_7_native_sidecar_example_parses() {
        let s: SidecarSet = serde_saphyr::from_str(
            r#"
apiVersion: apps.kruise.io/v1beta1
kind: SidecarSet
metadata:
  name: test-sidecarset
spec:
  selector:
    matchLabels:
      app: sample
  updateStrategy:
    type: NotUpdate
  initContainers:
  - name: sidecar
    image: busybox:1.36
    restartPolicy: Always
    command: ["sleep", "999d"]
  customVersion: v2
"#,
        )
        .unwrap();
        assert_eq!(s.spec.custom_version, "v2");
        assert_eq!(s.spec.update_strategy.type_, "NotUpdate");
        assert_eq!(
            s.spec.init_containers[0]
                .container
                .restart_policy
                .as_deref(),
            Some("Always")
        );
    }
}
