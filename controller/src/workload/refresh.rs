//! The refresh phase every workload runs before scaling or updating:
//! grace periods that ended, in-place updates that finished (the
//! `InPlaceUpdateReady` condition back to True, lifecycle `Updating` →
//! `Updated`/`Normal`), other lifecycle moves (`PreparingNormal` →
//! `Normal`, `Updated` → `Normal`, `PreparingUpdate` → `Normal` once on
//! the update revision), and the condition on gated pods that never had
//! it. Pure: the caller carries out the steps.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use keelson_api::apps::shared::{
    IN_PLACE_UPDATE_READY, LIFECYCLE_STATE_NORMAL, LIFECYCLE_STATE_PREPARING_NORMAL,
    LIFECYCLE_STATE_PREPARING_UPDATE, LIFECYCLE_STATE_UPDATED, LIFECYCLE_STATE_UPDATING, Lifecycle,
};
use serde_json::Value;

use super::inplace::{self, Progress};
use super::lifecycle::{all_hooked, state_patch};
use super::pods;

/// One write the refresh asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Refresh {
    /// Set the pod's `InPlaceUpdateReady` condition True.
    MarkReady { pod: String },
    /// Merge-patch the pod's metadata.
    Patch { pod: String, patch: Value },
}

/// An in-place update the pod records as its current revision, with
/// `InPlaceUpdateReady` plainly True again.
fn finished_on_the_node(p: &Pod) -> bool {
    let plain_true = pods::condition(p, IN_PLACE_UPDATE_READY)
        .is_some_and(|c| c.status == "True" && c.reason.as_deref().unwrap_or("").is_empty());
    plain_true && inplace::state(p).is_some_and(|r| pods::on_revision(p, &r.revision))
}

/// The refresh of `pods` (active ones) at `now`: the writes, and when to
/// look again (seconds) if something is still under way.
pub fn refresh(
    pods: &[Pod],
    lifecycle: Option<&Lifecycle>,
    update_revision: &str,
    now: Timestamp,
) -> (Vec<Refresh>, Option<i64>) {
    let in_place_hook = lifecycle.and_then(|l| l.in_place_update.as_ref());
    let now_text = now.to_string();
    let mut steps = vec![];
    let mut requeue: Option<i64> = None;
    let mut again = |s: i64| requeue = Some(requeue.map_or(s, |r| r.min(s)));
    for p in pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        let state = pods::lifecycle_state(p);
        let in_flight = pods::condition(p, IN_PLACE_UPDATE_READY).is_some_and(|c| {
            c.status == "False" && c.reason.as_deref() == Some(inplace::REASON_START)
        });
        if in_flight {
            let Some(record) = inplace::state(p) else {
                steps.push(Refresh::MarkReady { pod: name });
                continue;
            };
            match inplace::grace_due(p, &record, &Time(now)) {
                Some(Ok(patch)) => {
                    steps.push(Refresh::Patch { pod: name, patch });
                    continue;
                }
                Some(Err(left)) => {
                    again(left);
                    continue;
                }
                None => {}
            }
            match inplace::progress(p, &record) {
                Progress::Done => {
                    steps.push(Refresh::MarkReady { pod: name.clone() });
                    if state == LIFECYCLE_STATE_UPDATING {
                        let next = if in_place_hook.is_some() && !all_hooked(p, in_place_hook) {
                            LIFECYCLE_STATE_UPDATED
                        } else {
                            LIFECYCLE_STATE_NORMAL
                        };
                        steps.push(Refresh::Patch {
                            pod: name,
                            patch: state_patch(next, &now_text),
                        });
                    }
                }
                Progress::Waiting(_) => again(5),
            }
            continue;
        }
        if inplace::needs_ready(p) {
            steps.push(Refresh::MarkReady { pod: name.clone() });
        }
        let next = match state {
            LIFECYCLE_STATE_PREPARING_NORMAL => {
                let pre_normal = lifecycle.and_then(|l| l.pre_normal.as_ref());
                let ready = match pre_normal {
                    None => pods::is_scheduled(p),
                    Some(_) => all_hooked(p, pre_normal),
                };
                ready.then_some(LIFECYCLE_STATE_NORMAL)
            }
            // The node agent marked the update done (it sees the new
            // container start before kubelet reports it): finish the
            // lifecycle move the Done branch above makes.
            LIFECYCLE_STATE_UPDATING if finished_on_the_node(p) => Some(
                if in_place_hook.is_some() && !all_hooked(p, in_place_hook) {
                    LIFECYCLE_STATE_UPDATED
                } else {
                    LIFECYCLE_STATE_NORMAL
                },
            ),
            LIFECYCLE_STATE_UPDATED if in_place_hook.is_none() || all_hooked(p, in_place_hook) => {
                Some(LIFECYCLE_STATE_NORMAL)
            }
            LIFECYCLE_STATE_PREPARING_UPDATE if pods::on_revision(p, update_revision) => Some(
                if in_place_hook.is_some() && !all_hooked(p, in_place_hook) {
                    LIFECYCLE_STATE_UPDATED
                } else {
                    LIFECYCLE_STATE_NORMAL
                },
            ),
            _ => None,
        };
        if let Some(next) = next {
            steps.push(Refresh::Patch {
                pod: name,
                patch: state_patch(next, &now_text),
            });
        }
    }
    (steps, requeue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(state: &str, ready: &str, reason: Option<&str>, revision: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1",
                "labels": {"lifecycle.apps.kruise.io/state": state, "controller-revision-hash": revision},
                "annotations": {"apps.kruise.io/inplace-update-state":
                    r#"{"revision":"web-h2","updateTimestamp":"2026-12-01T00:00:00Z","lastContainerStatuses":{"main":{"imageID":"sha256:one","containerID":"containerd://c1"}}}"#}},
            "spec": {"readinessGates": [{"conditionType": "InPlaceUpdateReady"}],
                "containers": [{"name": "main", "image": "nginx:2"}]},
            "status": {"conditions": [{"type": "InPlaceUpdateReady", "status": ready, "reason": reason}]},
        }))
        .unwrap()
    }

    #[test]
    fn an_update_the_node_marked_done_leaves_updating() {
        let now = Timestamp::from_second(1_796_083_200).unwrap();
        let done = pod(LIFECYCLE_STATE_UPDATING, "True", None, "web-h2");
        let (steps, _) = refresh(&[done], None, "web-h2", now);
        assert!(matches!(&steps[..], [Refresh::Patch { patch, .. }]
            if patch["metadata"]["labels"]["lifecycle.apps.kruise.io/state"] == LIFECYCLE_STATE_NORMAL));
        // Still in flight, or True for another revision: nothing moves.
        let in_flight = pod(
            LIFECYCLE_STATE_UPDATING,
            "False",
            Some(inplace::REASON_START),
            "web-h2",
        );
        let (steps, _) = refresh(&[in_flight], None, "web-h2", now);
        assert!(!steps.iter().any(|s| matches!(s, Refresh::Patch { .. })));
        let other = pod(LIFECYCLE_STATE_UPDATING, "True", None, "web-h1");
        let (steps, _) = refresh(&[other], None, "web-h2", now);
        assert!(steps.is_empty());
    }
}
