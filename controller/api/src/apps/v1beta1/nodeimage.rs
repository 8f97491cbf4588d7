//! NodeImage `apps.kruise.io/v1beta1`, the storage version (as in
//! OpenKruise v1.9). The same as
//! [`v1alpha1`](crate::apps::v1alpha1::nodeimage) except that a pull
//! secret reference ([`ReferenceObject`]) may carry a `mode`
//! ([`REFERENCE_OBJECT_MODE_BATCH`]), which v1alpha1 has no field for:
//! [`crate::conversion`] drops it going down, as upstream does. Tags and
//! the whole status are shared.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::apps::v1alpha1::imagepulljob::SandboxConfig;
pub use crate::apps::v1alpha1::nodeimage::{
    IMAGE_PHASE_FAILED, IMAGE_PHASE_PULLING, IMAGE_PHASE_SUCCEEDED, IMAGE_PHASE_WAITING,
    ImageStatus, ImageTagPullPolicy, ImageTagSpec, ImageTagStatus, MAX_IMAGES_PER_NODE_IMAGE,
    NodeImageStatus, SYNC_STATUS_FAILED, SYNC_STATUS_SUCCEEDED, SyncStatus,
};

/// The API version that stores NodeImages in etcd.
pub const STORAGE_VERSION: &str = "v1beta1";

/// `pullSecrets[].mode`: the secret is one synced copy shared by every job
/// naming the same source secret, cleaned up with the image entry
/// (upstream's `ReferenceObjectModeBatch`).
pub const REFERENCE_OBJECT_MODE_BATCH: &str = "batch";

/// The images a node should have.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1beta1",
    kind = "NodeImage",
    plural = "nodeimages",
    status = "NodeImageStatus",
    printcolumn = r#"{"name":"DESIRED","type":"integer","jsonPath":".status.desired","description":"Number of all images on this node"}"#,
    printcolumn = r#"{"name":"PULLING","type":"integer","jsonPath":".status.pulling","description":"Number of image pull task active"}"#,
    printcolumn = r#"{"name":"SUCCEED","type":"integer","jsonPath":".status.succeeded","description":"Number of image pull task succeeded"}"#,
    printcolumn = r#"{"name":"FAILED","type":"integer","jsonPath":".status.failed","description":"Number of image pull tasks failed"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NodeImageSpec {
    /// Images to pull, keyed by image name without tag (at most
    /// [`MAX_IMAGES_PER_NODE_IMAGE`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, ImageSpec>,
}

/// The tags of one image to pull, and the credentials to use.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Secrets with registry credentials (each named by namespace and
    /// name), handed to the runtime for the pull.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<ReferenceObject>,
    /// The tags to pull.
    pub tags: Vec<ImageTagSpec>,
    /// Pod-sandbox metadata attached to the CRI PullImage request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_config: Option<SandboxConfig>,
}

/// A namespaced object name (`<namespace>/<name>`), and how it was made.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceObject {
    /// The object's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The object's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Empty, or [`REFERENCE_OBJECT_MODE_BATCH`]. v1beta1 only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
}

impl NodeImageSpec {
    /// Every `(image, tag)` the spec asks for.
    pub fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.images
            .iter()
            .flat_map(|(name, i)| i.tags.iter().map(move |t| (name.as_str(), t.tag.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn mode_is_v1beta1_only_and_left_out_when_empty() {
        let beta = serde_json::to_value(NodeImage::crd()).unwrap();
        let alpha =
            serde_json::to_value(crate::apps::v1alpha1::nodeimage::NodeImage::crd()).unwrap();
        let secret = |crd: &serde_json::Value| {
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
                ["properties"]["images"]["additionalProperties"]["properties"]["pullSecrets"]
                ["items"]["properties"]
                .clone()
        };
        assert!(secret(&beta).get("mode").is_some(), "{}", secret(&beta));
        assert!(secret(&alpha).get("mode").is_none());
        assert!(secret(&alpha).get("namespace").is_some());
        let r = ReferenceObject {
            namespace: "n".into(),
            name: "s".into(),
            mode: String::new(),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"namespace": "n", "name": "s"})
        );
    }

    #[test]
    fn status_counts_the_v1beta1_spec_like_the_v1alpha1_one() {
        let mut spec = NodeImageSpec::default();
        spec.images.insert(
            "nginx".into(),
            ImageSpec {
                tags: vec![
                    ImageTagSpec {
                        tag: "1".into(),
                        ..Default::default()
                    },
                    ImageTagSpec {
                        tag: "2".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        );
        let mut status = NodeImageStatus::default();
        status.image_statuses.insert(
            "nginx".into(),
            ImageStatus {
                tags: vec![ImageTagStatus {
                    tag: "1".into(),
                    phase: IMAGE_PHASE_SUCCEEDED.into(),
                    ..Default::default()
                }],
            },
        );
        status.recount_tags(spec.tags());
        assert_eq!(
            (status.desired, status.succeeded, status.waiting),
            (2, 1, 1)
        );
    }
}
