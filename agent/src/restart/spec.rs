//! A restart request and its status, with OpenKruise's
//! ContainerRecreateRequest field names (`spec` and `status` of the CRR),
//! so cluster mode can hand a CRR over as it is and write its status back.

use serde::{Deserialize, Serialize};

/// Grace period when neither the request nor kubelet's container
/// annotation gives one (the pod default).
pub const DEFAULT_GRACE_SECONDS: i64 = 30;
/// Kubelet's floor for the stop after a preStop hook has used the grace.
pub const MIN_GRACE_AFTER_PRESTOP_SECONDS: i64 = 2;

/// Which pod: by namespace/name (optionally pinned to a uid), by uid, or
/// by sandbox id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
}

/// The request (a CRR's `spec`, with `pod` in place of `podName`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartSpec {
    /// The caller's identity for this request (a ContainerRecreateRequest's
    /// uid, say): submitting again with the same key — after a crash, or
    /// from a restarted client — returns the first request's id and
    /// restarts nothing again. Letters, digits and `-._/:`, at most 253.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub pod: PodRef,
    pub containers: Vec<RestartContainer>,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// One container to recreate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartContainer {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<PreStop>,
    /// The instance the request is about; captured at acceptance when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_context: Option<StatusContext>,
}

/// A preStop handler (OpenKruise's `ProbeHandler`). Only `exec` can be
/// run from the node without the pod's network; the others are kept and
/// reported as skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreStop {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<serde_json::Value>,
}

/// `exec` preStop: a command run in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecAction {
    #[serde(default)]
    pub command: Vec<String>,
}

/// Container instance identity: `containerd://<id>` (or a bare id) and
/// kubelet's restart count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusContext {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub restart_count: i32,
}

impl StatusContext {
    /// The runtime's id, without the `runtime://` prefix.
    pub fn bare_id(&self) -> &str {
        self.container_id
            .split_once("://")
            .map_or(self.container_id.as_str(), |(_, id)| id)
    }
}

/// What to do when a container fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum FailurePolicy {
    /// Stop the request at the first failed container.
    #[default]
    Fail,
    /// Go on with the other containers.
    Ignore,
}

/// How to recreate (a CRR's `spec.strategy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategy {
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    #[serde(default)]
    pub ordered_recreate: bool,
    #[serde(default)]
    pub force_recreate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unready_grace_period_seconds: Option<i64>,
    #[serde(default)]
    pub min_started_seconds: i32,
}

/// Phase of a request or of one of its containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Phase {
    #[default]
    Pending,
    Recreating,
    Succeeded,
    Failed,
    /// The request's end (OpenKruise's final phase); its containers'
    /// phases tell how each went.
    Completed,
}

impl Phase {
    /// Succeeded or Failed (a container's end).
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Completed)
    }
}

/// One container's progress (a CRR's `status.containerRecreateStates[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateState {
    pub name: String,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Whether this request stopped the container (rather than finding it
    /// already recreated or exited).
    #[serde(default)]
    pub is_killed: bool,
}

/// The pod a request was resolved to at acceptance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// A request's status (a CRR's `status`, plus the id and timing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartStatus {
    pub id: String,
    pub pod: PodIdentity,
    pub phase: Phase,
    pub accepted_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub container_recreate_states: Vec<ContainerRecreateState>,
}

/// Why a request is refused before anything is journaled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("key: {0:?} is not 1 to 253 letters, digits and -._/:")]
    BadKey(String),
    #[error("pod: give namespace and name, a uid, or a sandboxId")]
    NoPod,
    #[error("containers: name at least one container")]
    NoContainers,
    #[error("containers: {0:?} is named twice")]
    Duplicate(String),
    #[error("containers: a container needs a name")]
    EmptyName,
    #[error("{field} must not be negative")]
    Negative { field: &'static str },
    #[error("activeDeadlineSeconds must be at least 1")]
    ZeroDeadline,
    #[error("containers[{0}].preStop.exec: the command is empty")]
    EmptyPreStop(String),
}

impl RestartSpec {
    /// Checks what can be checked without the runtime.
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(k) = &self.key
            && !crate::store::valid_key(k)
        {
            return Err(SpecError::BadKey(k.clone()));
        }
        let p = &self.pod;
        let named = p.namespace.is_some() && p.name.is_some();
        if !named && p.uid.is_none() && p.sandbox_id.is_none() {
            return Err(SpecError::NoPod);
        }
        if self.containers.is_empty() {
            return Err(SpecError::NoContainers);
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.containers {
            if c.name.is_empty() {
                return Err(SpecError::EmptyName);
            }
            if !seen.insert(c.name.as_str()) {
                return Err(SpecError::Duplicate(c.name.clone()));
            }
            if let Some(PreStop {
                exec: Some(exec), ..
            }) = &c.pre_stop
                && exec.command.is_empty()
            {
                return Err(SpecError::EmptyPreStop(c.name.clone()));
            }
        }
        let s = &self.strategy;
        for (field, v) in [
            (
                "strategy.terminationGracePeriodSeconds",
                s.termination_grace_period_seconds.unwrap_or(0),
            ),
            (
                "strategy.unreadyGracePeriodSeconds",
                s.unready_grace_period_seconds.unwrap_or(0),
            ),
            (
                "strategy.minStartedSeconds",
                i64::from(s.min_started_seconds),
            ),
            (
                "ttlSecondsAfterFinished",
                i64::from(self.ttl_seconds_after_finished.unwrap_or(0)),
            ),
            (
                "activeDeadlineSeconds",
                self.active_deadline_seconds.unwrap_or(1),
            ),
        ] {
            if v < 0 {
                return Err(SpecError::Negative { field });
            }
        }
        if self.active_deadline_seconds == Some(0) {
            return Err(SpecError::ZeroDeadline);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<RestartSpec, String> {
        let s: RestartSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        s.validate().map_err(|e| e.to_string())?;
        Ok(s)
    }

    #[test]
    fn reads_crr_field_names() {
        let s = spec(
            r#"{"pod":{"namespace":"default","name":"web-0"},
                "containers":[{"name":"app","preStop":{"exec":{"command":["/bin/sh","-c","sleep 1"]}},
                               "statusContext":{"containerID":"containerd://abc","restartCount":2}},
                              {"name":"sidecar"}],
                "strategy":{"failurePolicy":"Ignore","orderedRecreate":true,"forceRecreate":true,
                            "terminationGracePeriodSeconds":5,"unreadyGracePeriodSeconds":1,"minStartedSeconds":3},
                "activeDeadlineSeconds":60,"ttlSecondsAfterFinished":300}"#,
        )
        .unwrap();
        assert_eq!(s.strategy.failure_policy, FailurePolicy::Ignore);
        assert!(s.strategy.ordered_recreate && s.strategy.force_recreate);
        assert_eq!(s.strategy.min_started_seconds, 3);
        let ctx = s.containers[0].status_context.as_ref().unwrap();
        assert_eq!(ctx.bare_id(), "abc");
        assert_eq!(ctx.restart_count, 2);
        // Serialised back with the same names.
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["strategy"]["orderedRecreate"], true);
        assert_eq!(
            back["containers"][0]["statusContext"]["containerID"],
            "containerd://abc"
        );
    }

    #[test]
    fn refuses_bad_requests_clearly() {
        for (json, want) in [
            (
                r#"{"pod":{"name":"x"},"containers":[{"name":"a"}]}"#,
                "pod:",
            ),
            (r#"{"pod":{"uid":"u"},"containers":[]}"#, "at least one"),
            (
                r#"{"pod":{"uid":"u"},"containers":[{"name":"a"},{"name":"a"}]}"#,
                "named twice",
            ),
            (
                r#"{"pod":{"uid":"u"},"containers":[{"name":"a"}],"strategy":{"minStartedSeconds":-1}}"#,
                "minStartedSeconds must not be negative",
            ),
            (
                r#"{"pod":{"uid":"u"},"containers":[{"name":"a"}],"activeDeadlineSeconds":0}"#,
                "at least 1",
            ),
            (
                r#"{"pod":{"uid":"u"},"containers":[{"name":"a","preStop":{"exec":{"command":[]}}}]}"#,
                "command is empty",
            ),
            (
                r#"{"pod":{"uid":"u"},"containers":[{"name":"a"}],"strategy":{"orderdRecreate":true}}"#,
                "unknown field",
            ),
        ] {
            let err = spec(json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
        }
    }
}
