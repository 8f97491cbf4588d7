//! Facts about one pod that every workload controller reads the same way:
//! whether it is active, running and ready, available for
//! `minReadySeconds`, its lifecycle state and its revision.

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::jiff::Timestamp;
use keelson_api::apps::shared::{
    IN_PLACE_UPDATE_READY, LIFECYCLE_STATE_KEY, LIFECYCLE_STATE_NORMAL,
};

use super::revision::{POD_REVISION_LABEL, short_hash};

/// The pod's condition of type `t`.
pub fn condition<'a>(pod: &'a Pod, t: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
}

fn condition_true(pod: &Pod, t: &str) -> bool {
    condition(pod, t).is_some_and(|c| c.status == "True")
}

/// Not terminal and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Bound to a node.
pub fn is_scheduled(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
}

/// Phase Running and condition Ready True.
pub fn is_running_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && condition_true(pod, "Ready")
}

/// Running, Ready, and no in-place update in flight (`InPlaceUpdateReady`
/// not False): what the workloads count as ready.
pub fn is_ready(pod: &Pod) -> bool {
    is_running_ready(pod)
        && condition(pod, IN_PLACE_UPDATE_READY).is_none_or(|c| c.status != "False")
}

/// The pod's lifecycle state label ("" when absent).
pub fn lifecycle_state(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LIFECYCLE_STATE_KEY))
        .map_or("", String::as_str)
}

/// Ready (as [`is_ready`]) for at least `min_ready_seconds` at `now`, in
/// lifecycle state "" or Normal.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_ready(pod) || !matches!(lifecycle_state(pod), "" | LIFECYCLE_STATE_NORMAL) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = condition(pod, "Ready").and_then(|c| c.last_transition_time.as_ref());
    since.is_some_and(|t| now.as_second() - t.0.as_second() >= i64::from(min_ready_seconds))
}

/// Seconds until a ready pod becomes available (`None` when it is, or is
/// not ready at all).
pub fn seconds_until_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<i64> {
    if min_ready_seconds <= 0 || !is_ready(pod) {
        return None;
    }
    let since = condition(pod, "Ready")?.last_transition_time.as_ref()?;
    let left = i64::from(min_ready_seconds) - (now.as_second() - since.0.as_second());
    (left > 0).then_some(left)
}

/// The revision label of the pod.
pub fn revision(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(POD_REVISION_LABEL)
        .map(String::as_str)
}

/// Whether the pod is on `revision_name`, by full name or short hash.
pub fn on_revision(pod: &Pod, revision_name: &str) -> bool {
    revision(pod).is_some_and(|r| r == revision_name || r == short_hash(revision_name))
}

/// Sum of the restart counts of the pod's containers.
pub fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn readiness_and_availability() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let ready = pod(
            "metadata: {name: p, labels: {controller-revision-hash: web-abc}}\nstatus:\n  phase: Running\n  conditions:\n  - {type: Ready, status: 'True', lastTransitionTime: '2026-01-01T00:00:30Z'}\n",
        );
        assert!(is_ready(&ready) && is_active(&ready));
        assert!(is_available(&ready, 30, now));
        assert!(!is_available(&ready, 31, now));
        assert_eq!(seconds_until_available(&ready, 40, now), Some(10));
        assert!(on_revision(&ready, "web-abc") && !on_revision(&ready, "other-abc"));
        let updating = pod(
            "metadata: {name: p, labels: {lifecycle.apps.kruise.io/state: Updating}}\nstatus:\n  phase: Running\n  conditions:\n  - {type: Ready, status: 'True'}\n  - {type: InPlaceUpdateReady, status: 'False'}\n",
        );
        assert!(!is_ready(&updating));
        let preparing = pod(
            "metadata: {name: p, labels: {lifecycle.apps.kruise.io/state: PreparingNormal}}\nstatus:\n  phase: Running\n  conditions:\n  - {type: Ready, status: 'True'}\n",
        );
        assert!(is_ready(&preparing) && !is_available(&preparing, 0, now));
        let done = pod("metadata: {name: p}\nstatus: {phase: Succeeded}\n");
        assert!(!is_active(&done));
    }
}
