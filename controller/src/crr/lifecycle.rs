//! The controller's part in a request's life besides deadline and TTL
//! ([`super::cleanup`]), without I/O, as OpenKruise's CRR controller does
//! it: a request whose pod has gone (deleted, or replaced under another
//! uid) is completed; one no node answered within a minute is completed;
//! while Recreating, the pod's fresh container statuses are mirrored into
//! the `crr.apps.kruise.io/sync-container-statuses` annotation; and with
//! `unreadyGracePeriodSeconds` the pod is made not-ready before any
//! container stops — its `KruisePodReady` readiness gate turned False
//! (with this request named in the condition's message), the request
//! holding the `crr.apps.kruise.io/unready-acquired` finalizer, and the
//! time written in the annotation of the same name, which the node waits
//! for, then waits the grace period from. Once the request has completed
//! (or is deleted) the pod's gate is released and the finalizer dropped.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keelson_api::apps::v1alpha1::containerrecreaterequest::{
    ANNOTATION_SYNC_CONTAINER_STATUSES, ANNOTATION_UNREADY_ACQUIRED, ContainerRecreateRequest,
    ContainerRecreateRequestSyncContainerStatus, LABEL_POD_UID,
};

/// How long a node has to take a new request up.
pub const RESPONSE_TIMEOUT_SECONDS: i64 = 60;
/// Message of a request whose pod has gone.
pub const POD_GONE: &str = "pod has gone";
/// Message of a request no node took up.
pub const NO_RESPONSE: &str = "daemon has not responded for a long time";
/// The finalizer held while the pod is made not-ready for the request.
pub const UNREADY_FINALIZER: &str = ANNOTATION_UNREADY_ACQUIRED;
/// Who the readiness-gate message names.
pub const USER_AGENT: &str = "ContainerRecreateRequest";

/// The next thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Write `pod_patch` (a strategic merge patch of the pod's status, if
    /// any), then drop the finalizer.
    Release {
        pod_patch: Option<serde_json::Value>,
    },
    /// Complete the request with this message.
    Complete { message: String },
    /// Set the sync-container-statuses annotation to this.
    SyncStatuses { value: String },
    /// Add the finalizer (if `add_finalizer`), write `pod_patch` (if any),
    /// then set the unready-acquired annotation to `at`.
    Acquire {
        add_finalizer: bool,
        pod_patch: Option<serde_json::Value>,
        at: String,
    },
    /// Nothing here; look again after this many seconds (if any).
    Nothing { after_seconds: Option<i64> },
}

/// One entry of the readiness gate's message list.
pub use crate::podreadiness::Holder as GateMessage;

fn seconds(t: &Time) -> i64 {
    t.0.as_second()
}

fn has_finalizer(crr: &ContainerRecreateRequest) -> bool {
    crr.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == UNREADY_FINALIZER))
}

fn annotation<'a>(crr: &'a ContainerRecreateRequest, key: &str) -> Option<&'a str> {
    crr.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn me(crr: &ContainerRecreateRequest) -> GateMessage {
    GateMessage {
        user_agent: USER_AGENT.into(),
        key: format!(
            "{}/{}",
            crr.metadata.namespace.as_deref().unwrap_or_default(),
            crr.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

/// Whether the pod has the `KruisePodReady` readiness gate.
pub fn has_gate(pod: &Pod) -> bool {
    crate::podreadiness::has_gate(pod)
}

/// The pod status patch that makes the pod not-ready for `crr`; `None`
/// when there is nothing to write (no gate, or already named).
pub fn acquire_patch(
    pod: &Pod,
    crr: &ContainerRecreateRequest,
    now: &Time,
) -> Option<serde_json::Value> {
    crate::podreadiness::hold_patch(pod, &me(crr), now)
}

/// The pod status patch that takes `crr` off the pod's gate (True again
/// when nobody else holds it); `None` when there is nothing to write.
pub fn release_patch(
    pod: &Pod,
    crr: &ContainerRecreateRequest,
    now: &Time,
) -> Option<serde_json::Value> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    crate::podreadiness::release_patch(pod, &me(crr), now)
}

/// The pod's fresh container statuses for the request's containers
/// (running, started since the request was made), as the annotation
/// carries them.
pub fn synced_statuses(crr: &ContainerRecreateRequest, pod: &Pod) -> String {
    let created = crr
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(i64::MIN, seconds);
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let list: Vec<ContainerRecreateRequestSyncContainerStatus> = crr
        .spec
        .containers
        .iter()
        .filter_map(|c| statuses.iter().find(|s| s.name == c.name))
        .filter(|s| {
            s.state
                .as_ref()
                .and_then(|st| st.running.as_ref())
                .and_then(|r| r.started_at.as_ref())
                .is_some_and(|t| seconds(t) >= created)
        })
        .map(|s| ContainerRecreateRequestSyncContainerStatus {
            name: s.name.clone(),
            ready: s.ready,
            restart_count: s.restart_count,
            container_id: s.container_id.clone().unwrap_or_default(),
        })
        .collect();
    serde_json::to_string(&list).unwrap_or_default()
}

/// The next step for `crr`, whose pod is `pod` (`None`: not found).
pub fn step(crr: &ContainerRecreateRequest, pod: Option<&Pod>, now: &Time) -> Step {
    let status = crr.status.clone().unwrap_or_default();
    if crr.metadata.deletion_timestamp.is_some() || status.completion_time.is_some() {
        if has_finalizer(crr) {
            return Step::Release {
                pod_patch: pod.and_then(|p| release_patch(p, crr, now)),
            };
        }
        return Step::Nothing {
            after_seconds: None,
        };
    }
    let uid = crr
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_POD_UID))
        .map(String::as_str);
    let Some(pod) =
        pod.filter(|p| p.metadata.deletion_timestamp.is_none() && p.metadata.uid.as_deref() == uid)
    else {
        return Step::Complete {
            message: POD_GONE.into(),
        };
    };
    let mut after = None;
    if status.phase.is_empty() {
        let created = crr
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(seconds(now), seconds);
        let left = created + RESPONSE_TIMEOUT_SECONDS - seconds(now);
        if left <= 0 {
            return Step::Complete {
                message: NO_RESPONSE.into(),
            };
        }
        after = Some(left);
    }
    if status.phase != "Recreating" {
        return Step::Nothing {
            after_seconds: after,
        };
    }
    let value = synced_statuses(crr, pod);
    if annotation(crr, ANNOTATION_SYNC_CONTAINER_STATUSES) != Some(value.as_str()) {
        return Step::SyncStatuses { value };
    }
    let wants_unready = crr
        .spec
        .strategy
        .as_ref()
        .is_some_and(|s| s.unready_grace_period_seconds.is_some());
    if wants_unready && annotation(crr, ANNOTATION_UNREADY_ACQUIRED).is_none_or(str::is_empty) {
        let gate = has_gate(pod);
        return Step::Acquire {
            add_finalizer: gate && !has_finalizer(crr),
            pod_patch: acquire_patch(pod, crr, now),
            at: now.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        };
    }
    Step::Nothing {
        after_seconds: after,
    }
}

#[cfg(test)]
mod tests;
