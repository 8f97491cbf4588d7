//! BroadcastJob: run a pod to completion on every eligible node (like a
//! Job crossed with a DaemonSet). With `completionPolicy.type: Never` the
//! job stays active and also runs on nodes that join later.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `completionPolicy.type`: the job ends once the pods on all eligible
/// nodes have finished (succeeded or failed), or on its deadline or restart
/// limit. The default.
pub const COMPLETION_POLICY_ALWAYS: &str = "Always";
/// `completionPolicy.type`: the job never ends; nodes added later get a pod
/// too.
pub const COMPLETION_POLICY_NEVER: &str = "Never";

/// `failurePolicy.type`: keep running when a pod fails.
pub const FAILURE_POLICY_TYPE_CONTINUE: &str = "Continue";
/// `failurePolicy.type`: fail the job as soon as a pod fails. The default.
pub const FAILURE_POLICY_TYPE_FAIL_FAST: &str = "FailFast";
/// `failurePolicy.type`: pause the job when a pod fails.
pub const FAILURE_POLICY_TYPE_PAUSE: &str = "Pause";

/// `status.phase`: the job has finished.
pub const PHASE_COMPLETED: &str = "completed";
/// `status.phase`: the job is running.
pub const PHASE_RUNNING: &str = "running";
/// `status.phase`: the job is paused.
pub const PHASE_PAUSED: &str = "paused";
/// `status.phase`: the job has failed.
pub const PHASE_FAILED: &str = "failed";

/// Condition type: pods ran on all eligible nodes and all finished.
pub const JOB_COMPLETE: &str = "Complete";
/// Condition type: the job hit its deadline or its restart limit.
pub const JOB_FAILED: &str = "Failed";

/// What to run, and when the job is over.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "BroadcastJob",
    plural = "broadcastjobs",
    shortname = "bcj",
    namespaced,
    status = "BroadcastJobStatus",
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desired","description":"The desired number of pods. This is typically equal to the number of nodes satisfied to run pods."}"#,
    printcolumn = r#"{"name":"Active","type":"integer","jsonPath":".status.active","description":"The number of actively running pods."}"#,
    printcolumn = r#"{"name":"Succeeded","type":"integer","jsonPath":".status.succeeded","description":"The number of pods which reached phase Succeeded."}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failed","description":"The number of pods which reached phase Failed."}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastJobSpec {
    /// Most pods running at once (a number or a percentage); absent means
    /// no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<IntOrString>,
    /// The pod run on each node. Kept schemaless in the CRD, as upstream
    /// does.
    #[schemars(schema_with = "crate::apps::shared::schemaless")]
    pub template: PodTemplateSpec,
    /// When the job counts as finished, and how long it is kept. Always
    /// written.
    #[serde(default)]
    pub completion_policy: CompletionPolicy,
    /// Stop creating pods.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// What to do when a pod fails.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
}

/// When a BroadcastJob finishes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionPolicy {
    /// `Always` (the default) or `Never`; see [`COMPLETION_POLICY_ALWAYS`]
    /// and [`COMPLETION_POLICY_NEVER`].
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Limit on the job's run time, in seconds from its start; a positive
    /// number (`Always` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// How long a finished job (complete or failed) is kept before it is
    /// deleted; 0 deletes it at once, absent keeps it (`Always` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// What a BroadcastJob does about failed pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// `FailFast` (the default), `Continue` or `Pause`; see the
    /// `FAILURE_POLICY_TYPE_*` constants.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Container restarts (summed over the job's pods) allowed before the
    /// job fails.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_limit: i32,
}

/// Observed state of a BroadcastJob. The counters and phase are always
/// written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastJobStatus {
    /// Latest observations of the job's state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<JobCondition>,
    /// When the controller first picked the job up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Pods running.
    #[serde(default)]
    pub active: i32,
    /// Pods that succeeded.
    #[serde(default)]
    pub succeeded: i32,
    /// Pods that failed.
    #[serde(default)]
    pub failed: i32,
    /// Pods wanted: usually the number of eligible nodes.
    #[serde(default)]
    pub desired: i32,
    /// `running`, `paused`, `completed` or `failed` (lower case); see the
    /// `PHASE_*` constants.
    #[serde(default)]
    pub phase: String,
}

/// One condition of a BroadcastJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobCondition {
    /// `Complete` or `Failed`; see [`JOB_COMPLETE`] and [`JOB_FAILED`].
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When the condition was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Machine-readable reason of the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable details of the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    /// OpenKruise's TTL sample, with a status as the controller writes it.
    const EXAMPLE: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: BroadcastJob
metadata:
  name: broadcastjob-ttl
  namespace: default
spec:
  parallelism: 50%
  template:
    spec:
      containers:
        - name: pi
          image: perl
          command: ["perl",  "-Mbignum=bpi", "-wle", "print bpi(2000)"]
      restartPolicy: Never
  completionPolicy:
    type: Always
    ttlSecondsAfterFinished: 200
    activeDeadlineSeconds: 3600
  failurePolicy:
    type: Continue
    restartLimit: 3
status:
  active: 0
  succeeded: 3
  failed: 0
  desired: 3
  phase: completed
  startTime: "2024-03-01T10:00:00Z"
  completionTime: "2024-03-01T10:02:00Z"
  conditions:
  - type: Complete
    status: "True"
    lastProbeTime: "2024-03-01T10:02:00Z"
    lastTransitionTime: "2024-03-01T10:02:00Z"
    reason: Complete
    message: Job completed, 3 pods succeeded, 0 pods failed
"#;

    #[test]
    fn deserialises_an_upstream_sample() {
        let job: BroadcastJob = serde_saphyr::from_str(EXAMPLE).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("broadcastjob-ttl"));
        let spec = &job.spec;
        assert_eq!(spec.parallelism, Some(IntOrString::String("50%".into())));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.containers[0].name, "pi");
        assert_eq!(pod.containers[0].command.as_ref().unwrap().len(), 4);
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(
            spec.completion_policy.type_.as_deref(),
            Some(COMPLETION_POLICY_ALWAYS)
        );
        assert_eq!(spec.completion_policy.ttl_seconds_after_finished, Some(200));
        assert_eq!(spec.completion_policy.active_deadline_seconds, Some(3600));
        assert!(!spec.paused);
        assert_eq!(
            spec.failure_policy.type_.as_deref(),
            Some(FAILURE_POLICY_TYPE_CONTINUE)
        );
        assert_eq!(spec.failure_policy.restart_limit, 3);

        let st = job.status.as_ref().unwrap();
        assert_eq!(
            (st.desired, st.active, st.succeeded, st.failed),
            (3, 0, 3, 0)
        );
        assert_eq!(st.phase, PHASE_COMPLETED);
        assert!(st.start_time.is_some() && st.completion_time.is_some());
        let cond = &st.conditions[0];
        assert_eq!(cond.type_, JOB_COMPLETE);
        assert_eq!(cond.status, "True");
        assert!(cond.last_probe_time.is_some());
        assert_eq!(
            cond.message.as_deref(),
            Some("Job completed, 3 pods succeeded, 0 pods failed")
        );
    }

    #[test]
    fn round_trips_through_json_with_upstream_field_names() {
        let job: BroadcastJob = serde_saphyr::from_str(EXAMPLE).unwrap();
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["apiVersion"], "apps.kruise.io/v1alpha1");
        assert_eq!(json["kind"], "BroadcastJob");
        let spec = &json["spec"];
        assert_eq!(spec["parallelism"], "50%");
        assert_eq!(spec["completionPolicy"]["type"], "Always");
        assert_eq!(spec["completionPolicy"]["ttlSecondsAfterFinished"], 200);
        assert_eq!(spec["failurePolicy"]["restartLimit"], 3);
        assert!(spec.get("paused").is_none());
        let status = &json["status"];
        assert_eq!(status["phase"], "completed");
        assert_eq!(status["active"], 0);
        assert_eq!(
            status["conditions"][0]["lastProbeTime"],
            "2024-03-01T10:02:00Z"
        );
        let back: BroadcastJob = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec, job.spec);
        assert_eq!(back.status, job.status);
    }

    #[test]
    fn minimal_job_keeps_go_always_written_fields() {
        let mut job: BroadcastJob = serde_saphyr::from_str(
            r#"
apiVersion: apps.kruise.io/v1alpha1
kind: BroadcastJob
metadata:
  name: never
spec:
  template:
    spec:
      containers:
        - name: sleep
          image: busybox
      restartPolicy: Never
  completionPolicy:
    type: Never
"#,
        )
        .unwrap();
        assert_eq!(
            job.spec.completion_policy.type_.as_deref(),
            Some(COMPLETION_POLICY_NEVER)
        );
        assert_eq!(job.spec.failure_policy, FailurePolicy::default());
        job.status = Some(BroadcastJobStatus {
            phase: PHASE_RUNNING.into(),
            ..Default::default()
        });
        let json = serde_json::to_value(job).unwrap();
        assert_eq!(json["spec"]["failurePolicy"], serde_json::json!({}));
        assert!(json["spec"].get("parallelism").is_none());
        assert_eq!(
            json["status"],
            serde_json::json!({"active": 0, "succeeded": 0, "failed": 0, "desired": 0, "phase": "running"})
        );
    }

    #[test]
    fn crd_matches_upstream_names() {
        let crd = serde_json::to_value(BroadcastJob::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "broadcastjobs.apps.kruise.io");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!(["bcj"])
        );
        let version = &crd["spec"]["versions"][0];
        assert!(version["subresources"]["status"].is_object());
        assert!(version["subresources"].get("scale").is_none());
        assert_eq!(
            version["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], serde_json::json!(["template"]));
        assert_eq!(
            spec["properties"]["template"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
    }
}
