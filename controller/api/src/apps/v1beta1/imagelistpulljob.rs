//! ImageListPullJob `apps.kruise.io/v1beta1`, the storage version (as in
//! OpenKruise v1.9). Field for field the same as
//! [`v1alpha1`](crate::apps::v1alpha1::imagelistpulljob); only the version
//! differs, and [`crate::conversion`] rewrites just `apiVersion`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::apps::v1alpha1::imagelistpulljob::{FailedImageStatus, ImageListPullJobStatus};
use crate::apps::v1alpha1::imagepulljob::ImagePullJobTemplate;

/// The API version that stores ImageListPullJobs in etcd.
pub const STORAGE_VERSION: &str = "v1beta1";

/// The images to pull, and where and how.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1beta1",
    kind = "ImageListPullJob",
    plural = "imagelistpulljobs",
    namespaced,
    status = "ImageListPullJobStatus",
    printcolumn = r#"{"name":"TOTAL","type":"integer","jsonPath":".status.desired","description":"Number of image pull job"}"#,
    printcolumn = r#"{"name":"SUCCEEDED","type":"integer","jsonPath":".status.succeeded","description":"Number of image pull job succeeded"}"#,
    printcolumn = r#"{"name":"COMPLETED","type":"integer","jsonPath":".status.completed","description":"Number of ImagePullJobs which are finished"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImageListPullJobSpec {
    /// The image references to pull; one ImagePullJob each.
    pub images: Vec<String>,
    /// Where and how to pull, as for ImagePullJob; its fields sit directly
    /// in `spec`.
    #[serde(flatten)]
    pub template: ImagePullJobTemplate,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn both_versions_have_the_same_schema() {
        let alpha = crate::apps::v1alpha1::imagelistpulljob::ImageListPullJob::crd();
        let beta = ImageListPullJob::crd();
        assert_eq!(beta.spec.versions[0].name, "v1beta1");
        assert_eq!(alpha.spec.versions[0].schema, beta.spec.versions[0].schema);
    }
}
