//! ImagePullJob `apps.kruise.io/v1beta1`, the storage version (as in
//! OpenKruise v1.9). Field for field the same as
//! [`v1alpha1`](crate::apps::v1alpha1::imagepulljob): the spec's parts and
//! the status are shared; only the version differs, and
//! [`crate::conversion`] rewrites just `apiVersion`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::apps::v1alpha1::imagepulljob::{
    ANNOTATION_IMAGE_PREDOWNLOAD_MIN_UPDATED_READY_PODS, ANNOTATION_IMAGE_PREDOWNLOAD_PARALLELISM,
    ANNOTATION_IMAGE_PREDOWNLOAD_TIMEOUT_SECONDS, COMPLETION_POLICY_ALWAYS,
    COMPLETION_POLICY_NEVER, CompletionPolicy, DEFAULT_PULL_BACKOFF_LIMIT,
    DEFAULT_PULL_TIMEOUT_SECONDS, IMAGE_PULL_POLICY_ALWAYS, IMAGE_PULL_POLICY_IF_NOT_PRESENT,
    ImagePullJobNodeSelector, ImagePullJobPodSelector, ImagePullJobStatus, ImagePullJobTemplate,
    PullPolicy, SandboxConfig,
};

/// The API version that stores ImagePullJobs in etcd.
pub const STORAGE_VERSION: &str = "v1beta1";

/// The image to pull, and where and how.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1beta1",
    kind = "ImagePullJob",
    plural = "imagepulljobs",
    namespaced,
    status = "ImagePullJobStatus",
    printcolumn = r#"{"name":"TOTAL","type":"integer","jsonPath":".status.desired","description":"Number of all nodes matched by this job"}"#,
    printcolumn = r#"{"name":"ACTIVE","type":"integer","jsonPath":".status.active","description":"Number of image pull task active"}"#,
    printcolumn = r#"{"name":"SUCCEED","type":"integer","jsonPath":".status.succeeded","description":"Number of image pull task succeeded"}"#,
    printcolumn = r#"{"name":"FAILED","type":"integer","jsonPath":".status.failed","description":"Number of image pull tasks failed"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"MESSAGE","type":"string","jsonPath":".status.message","description":"Summary of status when job is failed"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobSpec {
    /// The image reference to pull (`name[:tag][@digest]`).
    pub image: String,
    /// Where and how to pull; its fields sit directly in `spec`.
    #[serde(flatten)]
    pub template: ImagePullJobTemplate,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn both_versions_have_the_same_schema() {
        let alpha = crate::apps::v1alpha1::imagepulljob::ImagePullJob::crd();
        let beta = ImagePullJob::crd();
        assert_eq!(beta.spec.versions[0].name, "v1beta1");
        assert_eq!(
            alpha.spec.versions[0].schema, beta.spec.versions[0].schema,
            "ImagePullJob's versions differ only in name"
        );
    }
}
