//! One CloneSet reconcile as a pure decision: given the CloneSet, its
//! active pods and the templates of their revisions, the steps to take.
//! As in OpenKruise, a reconcile does one phase: first refreshing pods
//! (in-place updates that finished, lifecycle moves), else scaling, else
//! updating.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use keelson_api::apps::shared::{
    IN_PLACE_UPDATE_READY, LIFECYCLE_STATE_NORMAL, LIFECYCLE_STATE_PREPARING_DELETE,
    LIFECYCLE_STATE_PREPARING_NORMAL, LIFECYCLE_STATE_PREPARING_UPDATE, LIFECYCLE_STATE_UPDATED,
    LIFECYCLE_STATE_UPDATING,
};
use keelson_api::apps::v1alpha1::cloneset::{
    CloneSet, IN_PLACE_IF_POSSIBLE_CLONE_SET_UPDATE_STRATEGY_TYPE,
    IN_PLACE_ONLY_CLONE_SET_UPDATE_STRATEGY_TYPE, SPECIFIED_DELETE_KEY,
};
use serde_json::{Value, json};

use super::numbers::{self, Diffs};
use crate::workload::inplace::{self, Diff, Progress};
use crate::workload::lifecycle::{all_hooked, hooked, state_patch};
use crate::workload::pods;
use crate::workload::revision::{POD_REVISION_LABEL, short_hash};

/// Label on CloneSet pods: the short revision hash.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// What a reconcile looks at.
pub struct Input<'a> {
    pub cs: &'a CloneSet,
    /// The CloneSet's active pods (owned, not terminal, not deleting).
    pub pods: &'a [Pod],
    pub current_revision: &'a str,
    pub update_revision: &'a str,
    /// Revision name → its pod template.
    pub templates: &'a BTreeMap<String, Value>,
    pub now: Timestamp,
    /// OpenKruise's `InPlaceUpdateEnvFromMetadata` gate.
    pub env_from_metadata: bool,
    /// `--cloneset-scaling-exclude-preparing-delete`.
    pub exclude_preparing_delete: bool,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Set the pod's `InPlaceUpdateReady` condition True.
    MarkReady {
        pod: String,
    },
    /// Merge-patch the pod's metadata.
    Patch {
        pod: String,
        patch: Value,
    },
    /// Create `count` pods of `revision`.
    Create {
        revision: String,
        count: i32,
    },
    Delete {
        pod: String,
    },
    /// Start an in-place update (status write, then the pod patch).
    InPlace {
        pod: String,
        start: Box<inplace::Start>,
    },
    Event {
        warning: bool,
        reason: &'static str,
        message: String,
    },
}

/// The decision of one reconcile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The scale phase failed (condition `FailedScale`).
    pub failed_scale: Option<String>,
    /// The update phase failed (condition `FailedUpdate`).
    pub failed_update: Option<String>,
    /// Look again after this many seconds even without events.
    pub requeue_after: Option<i64>,
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn now_str(now: Timestamp) -> String {
    now.to_string()
}

/// The reconcile's steps.
pub fn plan(input: &Input) -> Plan {
    let mut plan = Plan::default();
    refresh(input, &mut plan);
    if !plan.steps.is_empty() {
        return plan;
    }
    let pods: Vec<&Pod> = input.pods.iter().collect();
    let diffs = match numbers::diffs(
        input.cs,
        &pods,
        input.update_revision,
        input.now,
        input.exclude_preparing_delete,
    ) {
        Ok(d) => d,
        Err(e) => {
            plan.failed_scale = Some(e.to_string());
            return plan;
        }
    };
    scale(input, &diffs, &mut plan);
    if plan.steps.is_empty() && plan.failed_scale.is_none() {
        update(input, &diffs, &mut plan);
    }
    // minReadySeconds: look again when a ready pod turns available.
    let min_ready = input.cs.spec.min_ready_seconds;
    let soonest = input
        .pods
        .iter()
        .filter_map(|p| pods::seconds_until_available(p, min_ready, input.now))
        .min();
    plan.requeue_after = match (plan.requeue_after, soonest) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    plan
}

/// Finished in-place updates, lifecycle moves, and the
/// `InPlaceUpdateReady` condition on pods that never had it.
fn refresh(input: &Input, plan: &mut Plan) {
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

/// Phase rank for ordering: unscheduled, Pending, Unknown, Running.
fn phase_rank(p: &Pod) -> u8 {
    if !pods::is_scheduled(p) {
        return 0;
    }
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 1,
        Some("Running") => 3,
        _ => 2,
    }
}

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
        Step::Patch {
            pod: name(p),
            patch: state_patch(LIFECYCLE_STATE_PREPARING_DELETE, &now_str(input.now)),
        }
    } else {
        Step::Delete { pod: name(p) }
    }
}

/// OpenKruise's order: create what is missing; else delete released
/// PreparingDelete pods; else the pods asked for (not-ready ones always,
/// ready ones within the budget); else, with nothing of those pending,
/// scale in.
fn scale(input: &Input, diffs: &Diffs, plan: &mut Plan) {
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

/// Weight of `p` under `priorityStrategy.weightPriority` (higher first).
fn weight(cs: &CloneSet, p: &Pod) -> i64 {
    let Some(ps) = &cs.spec.update_strategy.priority_strategy else {
        return 0;
    };
    let labels = p.metadata.labels.clone().unwrap_or_default();
    ps.weight_priority
        .iter()
        .filter(|t| crate::selector::matches(&t.match_selector, &labels))
        .map(|t| i64::from(t.weight))
        .sum()
}

/// Rank of `p` under `priorityStrategy.orderPriority` (lower first): the
/// index of the first term whose label the pod has, then the label value's
/// trailing integer, larger first. Pods with none of the labels come last,
/// as OpenKruise documents (its code puts them first).
fn order_rank(cs: &CloneSet, p: &Pod) -> (usize, i64) {
    let Some(ps) = &cs.spec.update_strategy.priority_strategy else {
        return (0, 0);
    };
    let labels = p.metadata.labels.clone().unwrap_or_default();
    for (i, t) in ps.order_priority.iter().enumerate() {
        if let Some(v) = labels.get(&t.ordered_key) {
            let digits: String = v
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return (i, -digits.parse::<i64>().unwrap_or(0));
        }
    }
    (usize::MAX, 0)
}

/// Update order (`Less` = `a` first), as OpenKruise layers it:
/// PreparingUpdate pods first, then the priority strategy (weights, or
/// label order), then pods not yet running or ready.
fn update_order(cs: &CloneSet, a: &Pod, b: &Pod) -> Ordering {
    let prep = |p: &Pod| pods::lifecycle_state(p) != LIFECYCLE_STATE_PREPARING_UPDATE;
    prep(a)
        .cmp(&prep(b))
        .then_with(|| weight(cs, b).cmp(&weight(cs, a)))
        .then_with(|| order_rank(cs, a).cmp(&order_rank(cs, b)))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| pods::is_ready(a).cmp(&pods::is_ready(b)))
        .then_with(|| name(a).cmp(&name(b)))
}

fn update(input: &Input, diffs: &Diffs, plan: &mut Plan) {
    let cs = input.cs;
    if cs.spec.update_strategy.paused || diffs.update <= 0 {
        return;
    }
    let min_ready = cs.spec.min_ready_seconds;
    let strategy = cs
        .spec
        .update_strategy
        .type_
        .as_deref()
        .unwrap_or("ReCreate");
    let in_place_allowed = matches!(
        strategy,
        IN_PLACE_IF_POSSIBLE_CLONE_SET_UPDATE_STRATEGY_TYPE
            | IN_PLACE_ONLY_CLONE_SET_UPDATE_STRATEGY_TYPE
    );
    let mut candidates: Vec<&Pod> = input
        .pods
        .iter()
        .filter(|p| {
            !pods::on_revision(p, input.update_revision)
                && pods::lifecycle_state(p) != LIFECYCLE_STATE_PREPARING_DELETE
                && !numbers::is_specified_delete(cs, p)
        })
        .collect();
    candidates.sort_by(|a, b| update_order(cs, a, b));
    let mut updated_unavailable = input
        .pods
        .iter()
        .filter(|p| {
            pods::on_revision(p, input.update_revision)
                && !pods::is_available(p, min_ready, input.now)
        })
        .count() as i32;
    let mut unavailable = input
        .pods
        .iter()
        .filter(|p| !pods::is_available(p, min_ready, input.now))
        .count() as i32;
    let budget = diffs.update_max_unavailable;
    let Some(target) = input.templates.get(input.update_revision) else {
        plan.failed_update = Some(format!(
            "revision {} has no template",
            input.update_revision
        ));
        return;
    };
    let in_place_hook = cs
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l.in_place_update.as_ref());
    let now = now_str(input.now);
    let mut started = 0;
    for p in candidates {
        if started >= diffs.update || updated_unavailable >= budget {
            break;
        }
        let available = pods::is_available(p, min_ready, input.now);
        if available && unavailable >= budget {
            break;
        }
        let from = pods::revision(p)
            .and_then(|r| {
                input
                    .templates
                    .iter()
                    .find(|(n, _)| n.as_str() == r || short_hash(n) == r)
            })
            .map(|(_, t)| t);
        let diff = match from {
            Some(t) if in_place_allowed => {
                match inplace::diff(t, target, input.env_from_metadata) {
                    Ok(d) => d,
                    Err(e) => {
                        plan.failed_update = Some(e.to_string());
                        return;
                    }
                }
            }
            Some(_) => Diff::Recreate("strategy ReCreate".into()),
            None => Diff::Recreate("its revision is gone".into()),
        };
        match diff {
            Diff::InPlace(change) => {
                let state = pods::lifecycle_state(p);
                if !matches!(
                    state,
                    "" | LIFECYCLE_STATE_PREPARING_NORMAL
                        | LIFECYCLE_STATE_NORMAL
                        | LIFECYCLE_STATE_PREPARING_UPDATE
                        | LIFECYCLE_STATE_UPDATED
                ) {
                    plan.failed_update = Some(format!(
                        "not allowed to in-place update pod {} in state {state}",
                        name(p)
                    ));
                    continue;
                }
                if state != LIFECYCLE_STATE_PREPARING_UPDATE && hooked(p, in_place_hook) {
                    // Hold it until the hook lets go.
                    plan.steps.push(Step::Patch {
                        pod: name(p),
                        patch: state_patch(LIFECYCLE_STATE_PREPARING_UPDATE, &now),
                    });
                } else if state == LIFECYCLE_STATE_PREPARING_UPDATE && hooked(p, in_place_hook) {
                    // Still held.
                } else {
                    let labels = BTreeMap::from([
                        (
                            POD_REVISION_LABEL.to_string(),
                            revision_label(cs, input.update_revision),
                        ),
                        (
                            POD_TEMPLATE_HASH_LABEL.to_string(),
                            short_hash(input.update_revision).to_string(),
                        ),
                    ]);
                    let extra = BTreeMap::from([(
                        keelson_api::apps::shared::LIFECYCLE_STATE_KEY.to_string(),
                        LIFECYCLE_STATE_UPDATING.to_string(),
                    )]);
                    let mut start = inplace::start(
                        p,
                        &change,
                        input.update_revision,
                        &labels,
                        &extra,
                        cs.spec
                            .update_strategy
                            .in_place_update_strategy
                            .as_ref()
                            .map_or(0, |s| s.grace_period_seconds),
                        &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(input.now),
                    );
                    start.pod_patch["metadata"]["annotations"]
                        [keelson_api::apps::shared::LIFECYCLE_TIMESTAMP_KEY] = json!(now);
                    plan.steps.push(Step::InPlace {
                        pod: name(p),
                        start: Box::new(start),
                    });
                }
            }
            Diff::Recreate(why) => {
                if strategy == IN_PLACE_ONLY_CLONE_SET_UPDATE_STRATEGY_TYPE {
                    plan.failed_update = Some(format!(
                        "find Pod {} update strategy is InPlaceOnly but can not update in-place ({why})",
                        name(p)
                    ));
                    continue;
                }
                plan.steps.push(Step::Patch {
                    pod: name(p),
                    patch: json!({"metadata": {"labels": {SPECIFIED_DELETE_KEY: "true"}}}),
                });
            }
        }
        started += 1;
        if available {
            unavailable += 1;
        }
        updated_unavailable += 1;
    }
}

/// The `controller-revision-hash` value for pods of `revision` (the full
/// name; the short hash with the `CloneSetShortHash` gate, not offered).
pub fn revision_label(_cs: &CloneSet, revision: &str) -> String {
    revision.to_string()
}

#[cfg(test)]
mod tests;
