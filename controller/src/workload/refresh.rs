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
