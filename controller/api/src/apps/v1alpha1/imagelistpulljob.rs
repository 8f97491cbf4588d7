//! ImageListPullJob: pre-pull a list of images onto a set of nodes. The
//! controller creates one ImagePullJob per image (sharing the list job's
//! pull settings) and sums up their progress.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::imagepulljob::ImagePullJobTemplate;

/// The images to pull, and where and how.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
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

/// Observed progress, counted in ImagePullJobs. The counters are always
/// written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageListPullJobStatus {
    /// When the controller first picked the job up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When every ImagePullJob had finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Number of ImagePullJobs wanted (usually the number of images).
    #[serde(default)]
    pub desired: i32,
    /// ImagePullJobs seen running by their controller.
    #[serde(default)]
    pub active: i32,
    /// ImagePullJobs that finished, successfully or not.
    #[serde(default)]
    pub completed: i32,
    /// ImagePullJobs that finished with every node pulled.
    #[serde(default)]
    pub succeeded: i32,
    /// The ImagePullJobs that have at least one failed node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_image_statuses: Vec<FailedImageStatus>,
}

/// An ImagePullJob of the list with failed nodes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedImageStatus {
    /// Name of the ImagePullJob.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_pull_job: String,
    /// The image it pulls.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// That ImagePullJob's status message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::v1alpha1::imagepulljob::{
        COMPLETION_POLICY_ALWAYS, CompletionPolicy, ImagePullJobNodeSelector, PullPolicy,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use kube::CustomResourceExt;

    const EXAMPLE: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ImageListPullJob
metadata:
  name: base-images
  namespace: default
spec:
  images:
  - nginx:1.25.3
  - busybox:1.36
  parallelism: 10
  selector:
    matchLabels:
      node-type: worker
  completionPolicy:
    type: Always
    activeDeadlineSeconds: 1200
    ttlSecondsAfterFinished: 300
  pullPolicy:
    backoffLimit: 3
    timeoutSeconds: 300
status:
  desired: 2
  active: 1
  completed: 1
  succeeded: 0
  startTime: "2024-03-01T10:00:00Z"
  failedImageStatuses:
  - imagePullJob: base-images-x7k2p
    name: busybox:1.36
    message: "1 node failed"
"#;

    #[test]
    fn deserialises_an_upstream_style_example() {
        let job: ImageListPullJob = serde_saphyr::from_str(EXAMPLE).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("base-images"));
        assert_eq!(
            job.spec.images,
            vec!["nginx:1.25.3".to_string(), "busybox:1.36".to_string()]
        );
        let t = &job.spec.template;
        assert_eq!(t.parallelism, Some(IntOrString::Int(10)));
        let sel = t.selector.as_ref().unwrap();
        assert!(sel.names.is_empty());
        assert_eq!(
            sel.label_selector
                .match_labels
                .as_ref()
                .unwrap()
                .get("node-type")
                .map(String::as_str),
            Some("worker")
        );
        assert_eq!(
            t.completion_policy.type_.as_deref(),
            Some(COMPLETION_POLICY_ALWAYS)
        );
        assert_eq!(t.completion_policy.ttl_seconds_after_finished, Some(300));
        assert_eq!(t.pull_policy.as_ref().unwrap().timeout_seconds, Some(300));
        let st = job.status.as_ref().unwrap();
        assert_eq!(
            (st.desired, st.active, st.completed, st.succeeded),
            (2, 1, 1, 0)
        );
        assert!(st.start_time.is_some());
        assert_eq!(st.failed_image_statuses.len(), 1);
        let failed = &st.failed_image_statuses[0];
        assert_eq!(failed.image_pull_job, "base-images-x7k2p");
        assert_eq!(failed.name, "busybox:1.36");
        assert_eq!(failed.message.as_deref(), Some("1 node failed"));
    }

    #[test]
    fn round_trips_through_json_with_upstream_field_names() {
        let mut job = ImageListPullJob::new(
            "base-images",
            ImageListPullJobSpec {
                images: vec!["nginx:1.25.3".into()],
                template: ImagePullJobTemplate {
                    selector: Some(ImagePullJobNodeSelector {
                        names: vec!["node-1".into()],
                        ..Default::default()
                    }),
                    pull_policy: Some(PullPolicy {
                        timeout_seconds: Some(600),
                        backoff_limit: Some(3),
                    }),
                    completion_policy: CompletionPolicy {
                        type_: Some(COMPLETION_POLICY_ALWAYS.into()),
                        active_deadline_seconds: Some(600),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
        );
        job.status = Some(ImageListPullJobStatus {
            desired: 1,
            failed_image_statuses: vec![FailedImageStatus {
                image_pull_job: "base-images-abcde".into(),
                name: "nginx:1.25.3".into(),
                message: None,
            }],
            ..Default::default()
        });

        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["kind"], "ImageListPullJob");
        let spec = &json["spec"];
        assert_eq!(spec["images"][0], "nginx:1.25.3");
        assert_eq!(spec["selector"]["names"][0], "node-1");
        assert!(spec["selector"].get("matchLabels").is_none());
        assert_eq!(spec["pullPolicy"]["timeoutSeconds"], 600);
        assert_eq!(spec["pullPolicy"]["backoffLimit"], 3);
        assert_eq!(spec["completionPolicy"]["type"], "Always");
        assert_eq!(spec["completionPolicy"]["activeDeadlineSeconds"], 600);
        assert!(spec.get("template").is_none());
        assert!(spec.get("image").is_none());
        let status = &json["status"];
        assert_eq!(status["desired"], 1);
        assert_eq!(status["completed"], 0);
        assert_eq!(
            status["failedImageStatuses"][0]["imagePullJob"],
            "base-images-abcde"
        );
        assert!(status["failedImageStatuses"][0].get("message").is_none());

        let back: ImageListPullJob = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec, job.spec);
        assert_eq!(back.status, job.status);
    }

    #[test]
    fn crd_is_namespaced_with_the_template_inlined() {
        let crd = serde_json::to_value(ImageListPullJob::crd()).unwrap();
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["plural"], "imagelistpulljobs");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        for field in ["images", "completionPolicy", "pullPolicy", "podSelector"] {
            assert!(
                spec["properties"].get(field).is_some(),
                "spec.{field} missing"
            );
        }
    }
}
