//! ImagePullJob: pre-pull one image onto a set of nodes (chosen by name,
//! node labels, or the nodes some pods run on). The controller spreads
//! the work over the nodes' NodeImage objects; each node's agent pulls.
//!
//! The spec fields other than `image` live in [`ImagePullJobTemplate`],
//! which ImageListPullJob shares.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation on a workload (CloneSet, Advanced StatefulSet, Advanced
/// DaemonSet): parallelism of the ImagePullJob made to pre-download a new
/// revision's images.
pub const ANNOTATION_IMAGE_PREDOWNLOAD_PARALLELISM: &str =
    "apps.kruise.io/image-predownload-parallelism";
/// Annotation on a workload: per-node pull timeout, in seconds, of the
/// pre-download ImagePullJob.
pub const ANNOTATION_IMAGE_PREDOWNLOAD_TIMEOUT_SECONDS: &str =
    "apps.kruise.io/image-predownload-timeout-seconds";
/// Annotation on a workload: how many pods of the new revision must be
/// updated and ready before the pre-download ImagePullJob is created.
pub const ANNOTATION_IMAGE_PREDOWNLOAD_MIN_UPDATED_READY_PODS: &str =
    "apps.kruise.io/image-predownload-min-updated-ready-pods";

/// `imagePullPolicy`: always pull, even when the image is on the node.
pub const IMAGE_PULL_POLICY_ALWAYS: &str = "Always";
/// `imagePullPolicy`: pull only when the node lacks the image (the default).
pub const IMAGE_PULL_POLICY_IF_NOT_PRESENT: &str = "IfNotPresent";

/// `completionPolicy.type`: the job ends once every selected node finished
/// (or the deadline passed). The default.
pub const COMPLETION_POLICY_ALWAYS: &str = "Always";
/// `completionPolicy.type`: the job never ends; nodes that start matching
/// later are served too.
pub const COMPLETION_POLICY_NEVER: &str = "Never";

/// Default of `pullPolicy.timeoutSeconds` (set by the webhook).
pub const DEFAULT_PULL_TIMEOUT_SECONDS: i32 = 600;
/// Default of `pullPolicy.backoffLimit` (set by the webhook).
pub const DEFAULT_PULL_BACKOFF_LIMIT: i32 = 3;

/// The image to pull, and where and how.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
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

/// The pull settings shared by ImagePullJob and ImageListPullJob. Inlined
/// into their specs (no `template` key on the wire).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobTemplate {
    /// Names of secrets in the job's namespace holding registry
    /// credentials, handed to the runtime for the pull.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<String>,
    /// Which nodes pull; absent means every node. Not to be combined with
    /// `podSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<ImagePullJobNodeSelector>,
    /// Pull on the nodes that run the pods matching this selector. Not to
    /// be combined with `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<ImagePullJobPodSelector>,
    /// How many nodes pull at once (a number, or a percentage of the
    /// nodes). Absent means 1; 0 pauses the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<IntOrString>,
    /// Per-node timeout and retries; defaulted by the webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// When the job counts as finished, and how long it is kept.
    pub completion_policy: CompletionPolicy,
    /// Labels and annotations passed to the runtime's PullImage call as
    /// pod sandbox metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_config: Option<SandboxConfig>,
    /// `Always` or `IfNotPresent` (the webhook's default); see
    /// [`IMAGE_PULL_POLICY_ALWAYS`] and [`IMAGE_PULL_POLICY_IF_NOT_PRESENT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
}

/// Node selection: node names and/or a node label selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobNodeSelector {
    /// Nodes chosen by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// A label query over nodes; its `matchLabels` / `matchExpressions`
    /// sit next to `names`.
    #[serde(flatten)]
    pub label_selector: LabelSelector,
}

/// Pod selection: a plain label selector over pods (OpenKruise wraps it in
/// a struct that inlines a `LabelSelector`, which is the same on the wire).
pub type ImagePullJobPodSelector = LabelSelector;

/// Per-node pull limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullPolicy {
    /// Timeout of one pull, in seconds (webhook default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Retries before a node's pull counts as failed (webhook default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
}

/// When a job finishes. Shared with BroadcastJob upstream.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionPolicy {
    /// `Always` (the webhook's default) or `Never`; see
    /// [`COMPLETION_POLICY_ALWAYS`] and [`COMPLETION_POLICY_NEVER`].
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Limit on the job's run time, in seconds from its start (`Always`
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// How long a finished job is kept before deletion; absent keeps it
    /// (`Always` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// Pod-sandbox metadata attached to the CRI PullImage request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxConfig {
    /// Sandbox labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Sandbox annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Observed progress of an ImagePullJob. The counters are always written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobStatus {
    /// When the controller first picked the job up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Number of node pulls wanted (usually the number of selected nodes).
    #[serde(default)]
    pub desired: i32,
    /// Node pulls in progress.
    #[serde(default)]
    pub active: i32,
    /// Node pulls that succeeded.
    #[serde(default)]
    pub succeeded: i32,
    /// Node pulls that failed.
    #[serde(default)]
    pub failed: i32,
    /// Human-readable summary of the job's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Nodes whose pull failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_nodes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use kube::CustomResourceExt;

    const EXAMPLE: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ImagePullJob
metadata:
  name: nginx-prepull
  namespace: default
spec:
  image: nginx:1.25.3
  parallelism: 10
  selector:
    names:
    - node-1
    - node-2
    matchLabels:
      node-type: worker
  completionPolicy:
    type: Always
    activeDeadlineSeconds: 1200
    ttlSecondsAfterFinished: 300
  pullPolicy:
    backoffLimit: 3
    timeoutSeconds: 300
  pullSecrets:
  - regcred
  imagePullPolicy: Always
  sandboxConfig:
    labels:
      team: web
status:
  desired: 2
  active: 1
  succeeded: 1
  failed: 0
  startTime: "2024-03-01T10:00:00Z"
  message: "pulling on 1 node"
  failedNodes:
  - node-3
"#;

    #[test]
    fn deserialises_an_upstream_style_example() {
        let job: ImagePullJob = serde_saphyr::from_str(EXAMPLE).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("nginx-prepull"));
        assert_eq!(job.spec.image, "nginx:1.25.3");
        let t = &job.spec.template;
        assert_eq!(t.parallelism, Some(IntOrString::Int(10)));
        assert_eq!(t.pull_secrets, vec!["regcred".to_string()]);
        let sel = t.selector.as_ref().unwrap();
        assert_eq!(sel.names, vec!["node-1".to_string(), "node-2".to_string()]);
        assert_eq!(
            sel.label_selector
                .match_labels
                .as_ref()
                .unwrap()
                .get("node-type")
                .map(String::as_str),
            Some("worker")
        );
        assert!(t.pod_selector.is_none());
        assert_eq!(
            t.completion_policy.type_.as_deref(),
            Some(COMPLETION_POLICY_ALWAYS)
        );
        assert_eq!(t.completion_policy.active_deadline_seconds, Some(1200));
        assert_eq!(t.completion_policy.ttl_seconds_after_finished, Some(300));
        let pp = t.pull_policy.as_ref().unwrap();
        assert_eq!(pp.timeout_seconds, Some(300));
        assert_eq!(pp.backoff_limit, Some(3));
        assert_eq!(
            t.image_pull_policy.as_deref(),
            Some(IMAGE_PULL_POLICY_ALWAYS)
        );
        assert_eq!(
            t.sandbox_config
                .as_ref()
                .unwrap()
                .labels
                .get("team")
                .map(String::as_str),
            Some("web")
        );
        let st = job.status.as_ref().unwrap();
        assert_eq!(
            (st.desired, st.active, st.succeeded, st.failed),
            (2, 1, 1, 0)
        );
        assert!(st.start_time.is_some());
        assert!(st.completion_time.is_none());
        assert_eq!(st.failed_nodes, vec!["node-3".to_string()]);
    }

    #[test]
    fn round_trips_through_json_with_upstream_field_names() {
        let mut job = ImagePullJob::new(
            "busybox-prepull",
            ImagePullJobSpec {
                image: "busybox:1.36".into(),
                template: ImagePullJobTemplate {
                    pod_selector: Some(LabelSelector {
                        match_expressions: Some(vec![LabelSelectorRequirement {
                            key: "app".into(),
                            operator: "In".into(),
                            values: Some(vec!["web".into()]),
                        }]),
                        ..Default::default()
                    }),
                    parallelism: Some(IntOrString::String("50%".into())),
                    completion_policy: CompletionPolicy {
                        type_: Some(COMPLETION_POLICY_NEVER.into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
        );
        job.status = Some(ImagePullJobStatus {
            desired: 3,
            ..Default::default()
        });

        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["apiVersion"], "apps.kruise.io/v1alpha1");
        assert_eq!(json["kind"], "ImagePullJob");
        let spec = &json["spec"];
        assert_eq!(spec["image"], "busybox:1.36");
        assert_eq!(spec["parallelism"], "50%");
        assert_eq!(spec["completionPolicy"]["type"], "Never");
        assert_eq!(spec["podSelector"]["matchExpressions"][0]["key"], "app");
        // The template is inlined; empty optional fields are left out.
        for absent in [
            "template",
            "selector",
            "pullSecrets",
            "pullPolicy",
            "sandboxConfig",
            "imagePullPolicy",
        ] {
            assert!(spec.get(absent).is_none(), "{absent} should be absent");
        }
        assert!(
            spec["completionPolicy"]
                .get("activeDeadlineSeconds")
                .is_none()
        );
        // Counters are always written.
        let status = &json["status"];
        assert_eq!(status["desired"], 3);
        assert_eq!(status["active"], 0);
        assert_eq!(status["succeeded"], 0);
        assert_eq!(status["failed"], 0);
        assert!(status.get("failedNodes").is_none());
        assert!(status.get("message").is_none());

        let back: ImagePullJob = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec, job.spec);
        assert_eq!(back.status, job.status);
    }

    #[test]
    fn node_selector_names_and_labels_share_one_object() {
        let sel = ImagePullJobNodeSelector {
            names: vec!["node-a".into()],
            label_selector: LabelSelector {
                match_labels: Some([("zone".to_string(), "a".to_string())].into()),
                ..Default::default()
            },
        };
        let json = serde_json::to_value(&sel).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"names": ["node-a"], "matchLabels": {"zone": "a"}})
        );
        let back: ImagePullJobNodeSelector = serde_json::from_value(json).unwrap();
        assert_eq!(back, sel);
    }

    #[test]
    fn crd_is_namespaced_with_the_template_inlined() {
        let crd = serde_json::to_value(ImagePullJob::crd()).unwrap();
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["kind"], "ImagePullJob");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        for field in [
            "image",
            "completionPolicy",
            "parallelism",
            "selector",
            "podSelector",
        ] {
            assert!(
                spec["properties"].get(field).is_some(),
                "spec.{field} missing"
            );
        }
        let selector = &spec["properties"]["selector"]["properties"];
        assert!(selector.get("names").is_some());
        assert!(selector.get("matchLabels").is_some());
    }
}
