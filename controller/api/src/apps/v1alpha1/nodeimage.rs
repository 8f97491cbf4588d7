//! NodeImage: one object per node (named after it, cluster-scoped) listing
//! the images and tags that node should hold. ImagePullJobs write into its
//! spec; the node's agent pulls and reports per-tag progress in its status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::imagepulljob::SandboxConfig;

/// Most images one NodeImage may list.
pub const MAX_IMAGES_PER_NODE_IMAGE: usize = 256;

/// Tag phase: not started yet.
pub const IMAGE_PHASE_WAITING: &str = "Waiting";
/// Tag phase: pull under way.
pub const IMAGE_PHASE_PULLING: &str = "Pulling";
/// Tag phase: pulled.
pub const IMAGE_PHASE_SUCCEEDED: &str = "Succeeded";
/// Tag phase: gave up.
pub const IMAGE_PHASE_FAILED: &str = "Failed";

/// First-sync status: every pull on the node succeeded.
pub const SYNC_STATUS_SUCCEEDED: &str = "Succeeded";
/// First-sync status: some pull on the node failed.
pub const SYNC_STATUS_FAILED: &str = "Failed";

/// The images a node should have.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
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

/// A namespaced object name (`<namespace>/<name>`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceObject {
    /// The object's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The object's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// One tag to pull.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagSpec {
    /// The tag (or digest).
    pub tag: String,
    /// When the tag was added (the webhook fills in "now").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// Timeout, retries and lifetime of this tag's pull; defaulted by the
    /// webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<ImageTagPullPolicy>,
    /// The objects (typically ImagePullJobs) that asked for this tag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<ObjectReference>,
    /// Opaque revision of this entry, bumped by writers so the agent can
    /// tell a changed request from one it already handled.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub version: i64,
    /// `Always` or `IfNotPresent` (the default); see
    /// [`super::imagepulljob::IMAGE_PULL_POLICY_ALWAYS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
}

/// Limits of one tag's pull.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagPullPolicy {
    /// Timeout of one attempt, in seconds (webhook default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Retries before the pull counts as failed (webhook default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
    /// How long a finished pull is kept before its entry may be removed;
    /// absent keeps it, 0 allows removal at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Limit on the pull's run time, in seconds from its start; absent
    /// means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
}

/// Observed state of the node's pulls. The counters are always written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeImageStatus {
    /// Number of tag pulls wanted (the tags in the spec).
    #[serde(default)]
    pub desired: i32,
    /// Tag pulls that succeeded.
    #[serde(default)]
    pub succeeded: i32,
    /// Tag pulls that failed.
    #[serde(default)]
    pub failed: i32,
    /// Tag pulls not finished yet.
    #[serde(default)]
    pub pulling: i32,
    /// Tag pulls not started yet.
    #[serde(default)]
    pub waiting: i32,
    /// Per-image pull state, keyed like `spec.images`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub image_statuses: BTreeMap<String, ImageStatus>,
    /// Outcome of the node's first complete round of pulls (useful to
    /// learn when a new node is ready image-wise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sync_status: Option<SyncStatus>,
}

/// Pull state of one image's tags.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// One entry per tag pull on this node.
    pub tags: Vec<ImageTagStatus>,
}

/// Pull state of one tag.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagStatus {
    /// The tag.
    pub tag: String,
    /// `Waiting`, `Pulling`, `Succeeded` or `Failed` (the `IMAGE_PHASE_*`
    /// constants).
    pub phase: String,
    /// Progress in percent (0–100); may go back when a pull is retried.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub progress: i32,
    /// When the agent took the pull up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the pull finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The spec `version` of the tag this state is about.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub version: i64,
    /// The pulled image's ID.
    #[serde(rename = "imageID", default, skip_serializing_if = "String::is_empty")]
    pub image_id: String,
    /// Human-readable detail (e.g. the last error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Summary of a round of pulls on the node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// When the round finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_at: Option<Time>,
    /// `Succeeded` or `Failed` (the `SYNC_STATUS_*` constants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ImageTagStatus {
    /// Whether this state is final for its version: `Succeeded` or
    /// `Failed`. A finished entry is never rewritten for the same version
    /// (whoever finished it first, the node or the controller's timeouts,
    /// wins), so the two writers of a NodeImage status cannot undo each
    /// other.
    pub fn is_finished(&self) -> bool {
        self.phase == IMAGE_PHASE_SUCCEEDED || self.phase == IMAGE_PHASE_FAILED
    }
}

impl NodeImageStatus {
    /// Sets the counters from `image_statuses` and `spec`: `desired` is the
    /// number of tags in the spec; each tag counts by the phase of its
    /// entry (no entry, or an unknown phase: waiting). Every writer of the
    /// status calls this, so the counters are one function of the entries
    /// and two writers never disagree about them.
    pub fn recount(&mut self, spec: &NodeImageSpec) {
        self.recount_tags(
            spec.images
                .iter()
                .flat_map(|(name, i)| i.tags.iter().map(move |t| (name.as_str(), t.tag.as_str()))),
        );
    }

    /// [`Self::recount`] over the spec's `(image, tag)` pairs, whichever
    /// version's spec they come from.
    pub fn recount_tags<'a>(&mut self, tags: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let (mut desired, mut succeeded, mut failed, mut pulling, mut waiting) = (0, 0, 0, 0, 0);
        for (name, tag) in tags {
            desired += 1;
            let phase = self
                .image_statuses
                .get(name)
                .and_then(|e| e.tags.iter().find(|s| s.tag == tag))
                .map(|s| s.phase.as_str());
            match phase {
                Some(IMAGE_PHASE_SUCCEEDED) => succeeded += 1,
                Some(IMAGE_PHASE_FAILED) => failed += 1,
                Some(IMAGE_PHASE_PULLING) => pulling += 1,
                _ => waiting += 1,
            }
        }
        self.desired = desired;
        self.succeeded = succeeded;
        self.failed = failed;
        self.pulling = pulling;
        self.waiting = waiting;
    }
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    const EXAMPLE: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: NodeImage
metadata:
  name: node-1
  labels:
    kubernetes.io/hostname: node-1
spec:
  images:
    nginx:
      pullSecrets:
      - namespace: default
        name: regcred
      tags:
      - tag: "1.25.3"
        createdAt: "2024-03-01T10:00:00Z"
        pullPolicy:
          timeoutSeconds: 600
          backoffLimit: 3
          ttlSecondsAfterFinished: 300
          activeDeadlineSeconds: 1200
        ownerReferences:
        - apiVersion: apps.kruise.io/v1alpha1
          kind: ImagePullJob
          name: nginx-prepull
          namespace: default
          uid: 6f1c3d2a-4b5e-4c7d-9e8f-0a1b2c3d4e5f
        version: 2
        imagePullPolicy: IfNotPresent
      sandboxConfig:
        annotations:
          owner: web
status:
  desired: 1
  succeeded: 1
  failed: 0
  pulling: 0
  waiting: 0
  imageStatuses:
    nginx:
      tags:
      - tag: "1.25.3"
        phase: Succeeded
        progress: 100
        startTime: "2024-03-01T10:00:01Z"
        completionTime: "2024-03-01T10:00:09Z"
        version: 2
        imageID: "docker.io/library/nginx@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31"
  firstSyncStatus:
    syncAt: "2024-03-01T10:00:09Z"
    status: Succeeded
"#;

    #[test]
    fn deserialises_an_upstream_style_example() {
        let ni: NodeImage = serde_saphyr::from_str(EXAMPLE).unwrap();
        assert_eq!(ni.metadata.name.as_deref(), Some("node-1"));
        assert!(ni.metadata.namespace.is_none());
        let nginx = &ni.spec.images["nginx"];
        assert_eq!(
            nginx.pull_secrets,
            vec![ReferenceObject {
                namespace: "default".into(),
                name: "regcred".into()
            }]
        );
        assert_eq!(
            nginx
                .sandbox_config
                .as_ref()
                .unwrap()
                .annotations
                .get("owner")
                .map(String::as_str),
            Some("web")
        );
        let tag = &nginx.tags[0];
        assert_eq!(tag.tag, "1.25.3");
        assert!(tag.created_at.is_some());
        assert_eq!(
            tag.pull_policy,
            Some(ImageTagPullPolicy {
                timeout_seconds: Some(600),
                backoff_limit: Some(3),
                ttl_seconds_after_finished: Some(300),
                active_deadline_seconds: Some(1200),
            })
        );
        assert_eq!(
            tag.owner_references[0].kind.as_deref(),
            Some("ImagePullJob")
        );
        assert_eq!(
            tag.owner_references[0].name.as_deref(),
            Some("nginx-prepull")
        );
        assert_eq!(tag.version, 2);
        assert_eq!(tag.image_pull_policy.as_deref(), Some("IfNotPresent"));

        let st = ni.status.as_ref().unwrap();
        assert_eq!(
            (st.desired, st.succeeded, st.failed, st.pulling, st.waiting),
            (1, 1, 0, 0, 0)
        );
        let ts = &st.image_statuses["nginx"].tags[0];
        assert_eq!(ts.phase, IMAGE_PHASE_SUCCEEDED);
        assert_eq!(ts.progress, 100);
        assert_eq!(ts.version, 2);
        assert!(ts.image_id.starts_with("docker.io/library/nginx@sha256:"));
        assert!(ts.start_time.is_some() && ts.completion_time.is_some());
        let first = st.first_sync_status.as_ref().unwrap();
        assert_eq!(first.status.as_deref(), Some(SYNC_STATUS_SUCCEEDED));
        assert!(first.sync_at.is_some());
    }

    #[test]
    fn round_trips_through_json_with_upstream_field_names() {
        let mut ni = NodeImage::new(
            "node-2",
            NodeImageSpec {
                images: [(
                    "busybox".to_string(),
                    ImageSpec {
                        tags: vec![ImageTagSpec {
                            tag: "1.36".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                )]
                .into(),
            },
        );
        ni.status = Some(NodeImageStatus {
            desired: 1,
            waiting: 1,
            image_statuses: [(
                "busybox".to_string(),
                ImageStatus {
                    tags: vec![ImageTagStatus {
                        tag: "1.36".into(),
                        phase: IMAGE_PHASE_WAITING.into(),
                        image_id: "sha256:abc".into(),
                        ..Default::default()
                    }],
                },
            )]
            .into(),
            ..Default::default()
        });

        let json = serde_json::to_value(&ni).unwrap();
        assert_eq!(json["kind"], "NodeImage");
        assert!(json["metadata"].get("namespace").is_none());
        let tag = &json["spec"]["images"]["busybox"]["tags"][0];
        assert_eq!(*tag, serde_json::json!({"tag": "1.36"}));
        assert!(
            json["spec"]["images"]["busybox"]
                .get("pullSecrets")
                .is_none()
        );
        let status = &json["status"];
        assert_eq!(status["desired"], 1);
        assert_eq!(status["waiting"], 1);
        assert_eq!(status["pulling"], 0);
        assert_eq!(status["succeeded"], 0);
        assert_eq!(status["failed"], 0);
        assert!(status.get("firstSyncStatus").is_none());
        let ts = &status["imageStatuses"]["busybox"]["tags"][0];
        assert_eq!(
            *ts,
            serde_json::json!({"tag": "1.36", "phase": "Waiting", "imageID": "sha256:abc"})
        );

        let back: NodeImage = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec, ni.spec);
        assert_eq!(back.status, ni.status);
    }

    #[test]
    fn crd_is_cluster_scoped() {
        let crd = serde_json::to_value(NodeImage::crd()).unwrap();
        assert_eq!(crd["spec"]["scope"], "Cluster");
        assert_eq!(crd["spec"]["names"]["kind"], "NodeImage");
        assert!(crd["spec"]["names"].get("shortNames").is_none());
        assert!(
            crd["spec"]["versions"][0]["subresources"]
                .get("status")
                .is_some()
        );
    }
}
