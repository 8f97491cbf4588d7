//! The scale phase: creations, deletions (chosen, held by the preDelete
//! hook, or picked by OpenKruise's ranking) and cancelled PreparingDeletes.

use super::*;
use crate::workload::lifecycle::PRE_DELETE_HOOK_KEY;

fn deletion_cost(p: &Pod) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn ready_since(p: &Pod) -> Option<i64> {
    pods::condition(p, "Ready")
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_second())
}

fn created(p: &Pod) -> i64 {
    p.metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

/// Which pod goes first when scaling in (`Less` = `a` first).
fn deletion_order(a: &Pod, b: &Pod, min_ready: i32, now: Timestamp) -> Ordering {
    phase_rank(a)
        .cmp(&phase_rank(b))
        .then_with(|| {
            pods::is_available(a, min_ready, now).cmp(&pods::is_available(b, min_ready, now))
        })
        .then_with(|| pods::is_ready(a).cmp(&pods::is_ready(b)))
        .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
        .then_with(|| ready_since(b).cmp(&ready_since(a)))
        .then_with(|| pods::restarts(b).cmp(&pods::restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
        .then_with(|| name(a).cmp(&name(b)))
}

/// Delete the pod, or hold it in PreparingDelete while the preDelete hook
/// holds it.
fn delete_step(input: &Input, p: &Pod) -> Step {
    let hook = input
        .cs
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_delete.as_ref());
    if hooked(p, hook) {
        lifecycle_step(
            p,
            LIFECYCLE_STATE_PREPARING_DELETE,
            state_patch(LIFECYCLE_STATE_PREPARING_DELETE, &now_str(input.now)),
            marks(hook),
        )
    } else {
        Step::Delete { pod: name(p) }
    }
}

/// OpenKruise's order: create what is missing; else delete released
/// PreparingDelete pods; else the pods asked for (not-ready ones always,
/// ready ones within the budget); else, with nothing of those pending,
/// scale in.
pub(super) fn scale(input: &Input, diffs: &Diffs, plan: &mut Plan) {
    let cs = input.cs;
    let hook = cs
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_delete.as_ref());
    let min_ready = cs.spec.min_ready_seconds;
    if cancel_pre_delete(input, plan) {
        return;
    }
    if diffs.scale_up > 0 {
        let n = diffs.scale_up_limit;
        if n < diffs.scale_up {
            plan.steps.push(Step::Event {
                warning: true,
                reason: "ScaleUpLimited",
                message: format!(
                    "scaleUp is limited because of scaleStrategy.maxUnavailable, limit: {n}"
                ),
            });
        }
        let split = input.current_revision != input.update_revision;
        let old = if split {
            diffs.scale_up_old_revision.min(n)
        } else {
            0
        };
        if old > 0 {
            plan.steps.push(Step::Create {
                revision: input.current_revision.to_string(),
                count: old,
            });
        }
        if n - old > 0 {
            plan.steps.push(Step::Create {
                revision: input.update_revision.to_string(),
                count: n - old,
            });
        }
        return;
    }
    let pre_deleting: Vec<&Pod> = input
        .pods
        .iter()
        .filter(|p| pods::lifecycle_state(p) == LIFECYCLE_STATE_PREPARING_DELETE)
        .collect();
    for p in &pre_deleting {
        if !hooked(p, hook) {
            plan.steps.push(Step::Delete { pod: name(p) });
        } else if marks(hook)
            && crate::podreadiness::has_gate(p)
            && !crate::podreadiness::holds(p, &not_ready_holder(PRE_DELETE_HOOK_KEY))
        {
            // Held, and to be out of service meanwhile (OpenKruise applies
            // the policy again on every pass).
            plan.steps.push(Step::Readiness {
                pod: name(p),
                key: PRE_DELETE_HOOK_KEY,
                hold: true,
                then: None,
            });
        }
    }
    if !plan.steps.is_empty() {
        return;
    }
    let mut ready_budget = diffs.delete_ready_limit;
    let mut within_budget = |p: &Pod| {
        if !pods::is_ready(p) {
            return true;
        }
        if ready_budget > 0 {
            ready_budget -= 1;
            return true;
        }
        false
    };
    let mut specified: Vec<&Pod> = input
        .pods
        .iter()
        .filter(|p| {
            pods::lifecycle_state(p) != LIFECYCLE_STATE_PREPARING_DELETE
                && numbers::is_specified_delete(cs, p)
        })
        .collect();
    specified.sort_by(|a, b| deletion_order(a, b, min_ready, input.now));
    for p in &specified {
        if within_budget(p) {
            plan.steps.push(delete_step(input, p));
        }
    }
    if !plan.steps.is_empty() || !specified.is_empty() || !pre_deleting.is_empty() {
        return;
    }
    if diffs.scale_down > 0 {
        let (mut old, mut new): (Vec<&Pod>, Vec<&Pod>) = input
            .pods
            .iter()
            .partition(|p| !pods::on_revision(p, input.update_revision));
        let order = |a: &&Pod, b: &&Pod| deletion_order(a, b, min_ready, input.now);
        old.sort_by(order);
        let take_old =
            usize::try_from(diffs.scale_down_old_revision.min(diffs.scale_down)).unwrap_or(0);
        let mut victims: Vec<&Pod> = old.drain(..take_old.min(old.len())).collect();
        let mut rest: Vec<&Pod> = old.into_iter().chain(new.drain(..)).collect();
        rest.sort_by(order);
        let more = usize::try_from(diffs.scale_down)
            .unwrap_or(0)
            .saturating_sub(victims.len());
        victims.extend(rest.into_iter().take(more));
        for p in victims {
            if within_budget(p) {
                plan.steps.push(delete_step(input, p));
            }
        }
    }
}

/// Pods held in PreparingDelete by a plain scale-in go back to
/// PreparingNormal when replicas grew again meanwhile (never with
/// `markPodNotReady` on a hook, as upstream). Whether any did.
fn cancel_pre_delete(input: &Input, plan: &mut Plan) -> bool {
    let cs = input.cs;
    let lifecycle = cs.spec.lifecycle.as_ref();
    let marks = lifecycle.is_some_and(|l| {
        [&l.pre_delete, &l.in_place_update]
            .iter()
            .any(|h| h.as_ref().is_some_and(|h| h.mark_pod_not_ready))
    });
    if marks {
        return false;
    }
    let pre_deleting = |p: &Pod| pods::lifecycle_state(p) == LIFECYCLE_STATE_PREPARING_DELETE;
    let planned = input
        .pods
        .iter()
        .filter(|p| pre_deleting(p) || numbers::is_specified_delete(cs, p))
        .count() as i32;
    let mut diff = numbers::replicas(cs) - input.pods.len() as i32 + planned;
    let before = plan.steps.len();
    for p in input
        .pods
        .iter()
        .filter(|p| pre_deleting(p) && !numbers::is_specified_delete(cs, p))
    {
        if diff <= 0 {
            break;
        }
        plan.steps.push(Step::Patch {
            pod: name(p),
            patch: state_patch(LIFECYCLE_STATE_PREPARING_NORMAL, &now_str(input.now)),
        });
        diff -= 1;
    }
    plan.steps.len() > before
}

/// `podsToDelete` entries naming no pod of the CloneSet (`all`: every
/// owned pod), which the controller prunes from the spec.
pub fn vanished_pods_to_delete(cs: &CloneSet, all: &[Pod]) -> Vec<String> {
    cs.spec
        .scale_strategy
        .pods_to_delete
        .iter()
        .filter(|n| {
            !all.iter()
                .any(|p| p.metadata.name.as_deref() == Some(n.as_str()))
        })
        .cloned()
        .collect()
}
