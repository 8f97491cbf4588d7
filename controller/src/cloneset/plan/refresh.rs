//! The refresh phase: grace periods that ended, in-place updates that
//! finished, lifecycle moves, and the `InPlaceUpdateReady` condition on
//! pods that never had it.

use super::*;

/// Finished in-place updates, lifecycle moves, and the
/// `InPlaceUpdateReady` condition on pods that never had it.
pub(super) fn refresh(input: &Input, plan: &mut Plan) {
    let lifecycle = input.cs.spec.lifecycle.as_ref();
    let in_place_hook = lifecycle.and_then(|l| l.in_place_update.as_ref());
    let now = now_str(input.now);
    for p in input.pods {
        let state = pods::lifecycle_state(p);
        let in_flight = pods::condition(p, IN_PLACE_UPDATE_READY).is_some_and(|c| {
            c.status == "False" && c.reason.as_deref() == Some(inplace::REASON_START)
        });
        if in_flight {
            let Some(record) = inplace::state(p) else {
                plan.steps.push(Step::MarkReady { pod: name(p) });
                continue;
            };
            let at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(input.now);
            match inplace::grace_due(p, &record, &at) {
                Some(Ok(patch)) => {
                    plan.steps.push(Step::Patch {
                        pod: name(p),
                        patch,
                    });
                    continue;
                }
                Some(Err(left)) => {
                    plan.requeue_after = Some(plan.requeue_after.map_or(left, |r| r.min(left)));
                    continue;
                }
                None => {}
            }
            match inplace::progress(p, &record) {
                Progress::Done => {
                    plan.steps.push(Step::MarkReady { pod: name(p) });
                    if state == LIFECYCLE_STATE_UPDATING {
                        let next = if in_place_hook.is_some() && !all_hooked(p, in_place_hook) {
                            LIFECYCLE_STATE_UPDATED
                        } else {
                            LIFECYCLE_STATE_NORMAL
                        };
                        plan.steps.push(Step::Patch {
                            pod: name(p),
                            patch: state_patch(next, &now),
                        });
                    }
                }
                Progress::Waiting(_) => plan.requeue_after = Some(5),
            }
            continue;
        }
        if inplace::needs_ready(p) {
            plan.steps.push(Step::MarkReady { pod: name(p) });
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
            LIFECYCLE_STATE_PREPARING_UPDATE if pods::on_revision(p, input.update_revision) => {
                Some(
                    if in_place_hook.is_some() && !all_hooked(p, in_place_hook) {
                        LIFECYCLE_STATE_UPDATED
                    } else {
                        LIFECYCLE_STATE_NORMAL
                    },
                )
            }
            _ => None,
        };
        if let Some(next) = next {
            plan.steps.push(Step::Patch {
                pod: name(p),
                patch: state_patch(next, &now),
            });
        }
    }
}
