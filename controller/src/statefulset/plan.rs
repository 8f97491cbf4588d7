//! One Advanced StatefulSet reconcile as a pure decision. As upstream, a
//! reconcile does one phase: the refresh of updates under way
//! ([`crate::workload::refresh`]), else scaling — `OrderedReady` creates
//! the lowest missing ordinal only once every lower pod is available and
//! removes condemned pods highest ordinal first, one at a time;
//! `Parallel` does all at once within `scaleStrategy.maxUnavailable` —
//! else the rolling update: pods at positions ≥ `partition` in descending
//! ordinal (or by priority with `unorderedUpdate`), within
//! `maxUnavailable`, in place where the policy and the change allow,
//! otherwise recreated.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use keelson_api::apps::shared::{
    LIFECYCLE_STATE_KEY, LIFECYCLE_STATE_NORMAL, LIFECYCLE_STATE_PREPARING_DELETE,
    LIFECYCLE_STATE_PREPARING_NORMAL, LIFECYCLE_STATE_PREPARING_UPDATE, LIFECYCLE_STATE_UPDATED,
    LIFECYCLE_STATE_UPDATING, LIFECYCLE_TIMESTAMP_KEY,
};
use keelson_api::apps::v1alpha1::cloneset::SPECIFIED_DELETE_KEY;
use keelson_api::apps::v1beta1::statefulset::{
    IN_PLACE_IF_POSSIBLE_POD_UPDATE_STRATEGY_TYPE, IN_PLACE_ONLY_POD_UPDATE_STRATEGY_TYPE,
    ON_DELETE_STATEFUL_SET_STRATEGY_TYPE, PARALLEL_POD_MANAGEMENT, StatefulSet,
};
use serde_json::{Value, json};

use super::newpod::{POD_INDEX_LABEL, POD_NAME_LABEL};
use super::ordinals::{self, ordinal_of};
use crate::workload::inplace::{self, Diff};
use crate::workload::lifecycle::{hooked, state_patch};
use crate::workload::order::priority_key;
use crate::workload::percent::scaled;
use crate::workload::pods;
use crate::workload::refresh::{self, Refresh};
use crate::workload::revision::POD_REVISION_LABEL;

/// What a reconcile looks at.
pub struct Input<'a> {
    pub sts: &'a StatefulSet,
    /// Every pod the set controls (terminating and finished ones too).
    pub pods: &'a [Pod],
    pub current_revision: &'a str,
    pub update_revision: &'a str,
    /// Revision name → its pod template.
    pub templates: &'a BTreeMap<String, Value>,
    pub now: Timestamp,
    /// `StatefulSetStartOrdinal`: `ordinals.start` is honoured.
    pub start_ordinal: bool,
    /// `InPlaceUpdateEnvFromMetadata`.
    pub env_from_metadata: bool,
    /// `PodIndexLabel`: identity repairs also write the index label.
    pub pod_index_label: bool,
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
    /// Repair a replica's identity labels (upstream's pod update when
    /// `statefulset.kubernetes.io/pod-name` is not the pod's name).
    Repair {
        pod: String,
        patch: Value,
    },
    /// Create the pod (and its claims) of `ordinal` from `revision`.
    Create {
        ordinal: i32,
        revision: String,
    },
    Delete {
        pod: String,
    },
    /// Start an in-place update.
    InPlace {
        pod: String,
        start: Box<inplace::Start>,
    },
}

/// The decision of one reconcile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The update phase failed (a `FailedUpdate` event; the
    /// `FailedUpdatePod` condition is for failed pod updates).
    pub failed_update: Option<String>,
    /// Look again after this many seconds even without events.
    pub requeue_after: Option<i64>,
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Input<'_> {
    fn min_ready(&self) -> i32 {
        self.sts
            .spec
            .update_strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.min_ready_seconds)
            .unwrap_or(0)
    }

    fn available(&self, p: &Pod) -> bool {
        !terminating(p) && pods::is_available(p, self.min_ready(), self.now)
    }

    fn parallel(&self) -> bool {
        self.sts.spec.pod_management_policy.as_deref() == Some(PARALLEL_POD_MANAGEMENT)
    }

    fn replicas(&self) -> i32 {
        self.sts.spec.replicas.unwrap_or(1).max(0)
    }

    fn partition(&self) -> i32 {
        self.sts
            .spec
            .update_strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.partition)
            .unwrap_or(0)
            .max(0)
    }

    fn rolling(&self) -> bool {
        self.sts.spec.update_strategy.type_.as_deref() != Some(ON_DELETE_STATEFUL_SET_STRATEGY_TYPE)
    }

    /// The ordinals the replicas have, ascending.
    pub fn wanted(&self) -> Vec<i32> {
        let start = if self.start_ordinal {
            self.sts.spec.start_ordinal()
        } else {
            0
        };
        ordinals::wanted(
            start,
            self.replicas(),
            &ordinals::reserved(&self.sts.spec.reserve_ordinals),
        )
    }

    fn set_name(&self) -> &str {
        self.sts.metadata.name.as_deref().unwrap_or("")
    }

    /// The revision a new pod at position `index` of the wanted ordinals
    /// gets: the current one below the partition during a rolling update.
    fn revision_for(&self, index: usize) -> String {
        if self.rolling()
            && self.current_revision != self.update_revision
            && (index as i32) < self.partition()
        {
            self.current_revision.to_string()
        } else {
            self.update_revision.to_string()
        }
    }

    /// Deleting `p`, through `PreparingDelete` when a preDelete hook holds
    /// it; `None` while the hook still holds a pod already preparing.
    fn delete(&self, p: &Pod) -> Option<Step> {
        let hook = self
            .sts
            .spec
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_delete.as_ref());
        let state = pods::lifecycle_state(p);
        if hooked(p, hook) {
            if state == LIFECYCLE_STATE_PREPARING_DELETE {
                return None;
            }
            return Some(Step::Patch {
                pod: name(p),
                patch: state_patch(LIFECYCLE_STATE_PREPARING_DELETE, &self.now.to_string()),
            });
        }
        Some(Step::Delete { pod: name(p) })
    }
}

/// The reconcile's steps.
pub fn plan(input: &Input) -> Plan {
    let mut plan = Plan::default();
    let active: Vec<Pod> = input
        .pods
        .iter()
        .filter(|p| pods::is_active(p))
        .cloned()
        .collect();
    let (refreshed, again) = refresh::refresh(
        &active,
        input.sts.spec.lifecycle.as_ref(),
        input.update_revision,
        input.now,
    );
    plan.requeue_after = again;
    if !refreshed.is_empty() {
        plan.steps = refreshed
            .into_iter()
            .map(|r| match r {
                Refresh::MarkReady { pod } => Step::MarkReady { pod },
                Refresh::Patch { pod, patch } => Step::Patch { pod, patch },
            })
            .collect();
        return plan;
    }
    scale(input, &mut plan);
    if plan.steps.is_empty() {
        update(input, &mut plan);
    }
    let soonest = input
        .pods
        .iter()
        .filter_map(|p| pods::seconds_until_available(p, input.min_ready(), input.now))
        .min();
    plan.requeue_after = match (plan.requeue_after, soonest) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    plan
}

fn scale(input: &Input, plan: &mut Plan) {
    let wanted = input.wanted();
    let set = input.set_name();
    let mut by_ordinal: BTreeMap<i32, &Pod> = BTreeMap::new();
    let mut condemned: Vec<(i32, &Pod)> = vec![];
    for p in input.pods {
        match ordinal_of(set, &name(p)) {
            Some(n) if wanted.contains(&n) => {
                by_ordinal.insert(n, p);
            }
            Some(n) => condemned.push((n, p)),
            None => condemned.push((i32::MAX, p)),
        }
    }
    condemned.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let monotonic = !input.parallel();
    // Finished pods are replaced.
    for p in by_ordinal.values() {
        if finished(p) && !terminating(p) {
            plan.steps.push(Step::Delete { pod: name(p) });
        }
    }
    if !plan.steps.is_empty() {
        return;
    }
    let budget = input
        .sts
        .spec
        .scale_strategy
        .as_ref()
        .and_then(|s| s.max_unavailable.as_ref())
        .and_then(|m| scaled(m, input.replicas(), false).ok())
        .map(|m| m.max(1));
    let mut unavailable = by_ordinal.values().filter(|p| !input.available(p)).count() as i32;
    for (index, n) in wanted.iter().enumerate() {
        match by_ordinal.get(n) {
            None => {
                if budget.is_some_and(|b| unavailable >= b) {
                    break;
                }
                plan.steps.push(Step::Create {
                    ordinal: *n,
                    revision: input.revision_for(index),
                });
                unavailable += 1;
                if monotonic {
                    return;
                }
            }
            Some(p) if monotonic && !input.available(p) => {
                // Wait for it before going on.
                return;
            }
            Some(p) => plan.steps.extend(repair(input, *n, p)),
        }
    }
    if !plan.steps.is_empty() {
        return;
    }
    if monotonic {
        if condemned.iter().any(|(_, p)| terminating(p)) {
            return;
        }
        if let Some((_, p)) = condemned.first() {
            plan.steps.extend(input.delete(p));
        }
        return;
    }
    for (_, p) in &condemned {
        if !terminating(p) {
            plan.steps.extend(input.delete(p));
        }
    }
}

/// The identity repair of replica `n` when its pod-name label is off.
fn repair(input: &Input, n: i32, p: &Pod) -> Option<Step> {
    let pod = name(p);
    let label = p
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POD_NAME_LABEL));
    if terminating(p) || label == Some(&pod) {
        return None;
    }
    let mut labels = serde_json::Map::new();
    labels.insert(POD_NAME_LABEL.into(), json!(pod));
    if input.pod_index_label {
        labels.insert(POD_INDEX_LABEL.into(), json!(n.to_string()));
    }
    Some(Step::Repair {
        pod,
        patch: json!({"metadata": {"labels": labels}}),
    })
}

fn max_unavailable(input: &Input) -> i32 {
    let v = input
        .sts
        .spec
        .update_strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    scaled(&v, input.replicas(), false).unwrap_or(1).max(1)
}

fn update(input: &Input, plan: &mut Plan) {
    if !input.rolling() {
        return;
    }
    let ru = input
        .sts
        .spec
        .update_strategy
        .rolling_update
        .clone()
        .unwrap_or_default();
    if ru.paused {
        return;
    }
    let wanted = input.wanted();
    let set = input.set_name();
    let mut members: Vec<(i32, &Pod)> = input
        .pods
        .iter()
        .filter_map(|p| {
            ordinal_of(set, &name(p))
                .filter(|n| wanted.contains(n))
                .map(|n| (n, p))
        })
        .collect();
    members.sort_by_key(|(n, _)| *n);
    let monotonic = !input.parallel();
    if monotonic && members.iter().any(|(_, p)| !input.available(p)) {
        return;
    }
    let budget = max_unavailable(input);
    let mut unavailable = members.iter().filter(|(_, p)| !input.available(p)).count() as i32;
    // Pods asked for by the specified-delete label, highest ordinal first,
    // whatever the partition.
    for (_, p) in members.iter().rev() {
        let asked = p
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(SPECIFIED_DELETE_KEY));
        if !asked || terminating(p) {
            continue;
        }
        let available = input.available(p);
        if available && unavailable >= budget {
            continue;
        }
        plan.steps.extend(input.delete(p));
        if available {
            unavailable += 1;
        }
    }
    if !plan.steps.is_empty() {
        return;
    }
    let keep = input.partition().min(members.len() as i32) as usize;
    let take = members.len() - keep;
    let targets: Vec<&Pod> = match &ru.unordered_update {
        Some(u) => {
            let ps = u.priority_strategy.as_ref();
            let mut all: Vec<&Pod> = members.iter().map(|(_, p)| *p).collect();
            all.sort_by(|a, b| {
                let pending =
                    |p: &Pod| !(pods::on_revision(p, input.update_revision) || terminating(p));
                pending(a)
                    .cmp(&pending(b))
                    .then_with(|| priority_key(ps, a).cmp(&priority_key(ps, b)))
                    .then_with(|| name(a).cmp(&name(b)))
            });
            all.into_iter().take(take).collect()
        }
        None => members.iter().rev().take(take).map(|(_, p)| *p).collect(),
    };
    let policy = ru.pod_update_policy.as_deref().unwrap_or("ReCreate");
    let in_place_allowed = matches!(
        policy,
        IN_PLACE_IF_POSSIBLE_POD_UPDATE_STRATEGY_TYPE | IN_PLACE_ONLY_POD_UPDATE_STRATEGY_TYPE
    );
    let Some(target_template) = input.templates.get(input.update_revision) else {
        plan.failed_update = Some(format!(
            "revision {} has no template",
            input.update_revision
        ));
        return;
    };
    let in_place_hook = input
        .sts
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l.in_place_update.as_ref());
    let now = input.now.to_string();
    for p in targets {
        if pods::on_revision(p, input.update_revision) || terminating(p) {
            continue;
        }
        let available = input.available(p);
        if available && unavailable >= budget {
            break;
        }
        let from = pods::revision(p).and_then(|r| input.templates.get(r));
        let diff = match from {
            Some(t) if in_place_allowed => {
                match inplace::diff(t, target_template, input.env_from_metadata) {
                    Ok(d) => d,
                    Err(e) => {
                        plan.failed_update = Some(e.to_string());
                        return;
                    }
                }
            }
            Some(_) => Diff::Recreate("policy ReCreate".into()),
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
                    continue;
                }
                if hooked(p, in_place_hook) {
                    if state != LIFECYCLE_STATE_PREPARING_UPDATE {
                        plan.steps.push(Step::Patch {
                            pod: name(p),
                            patch: state_patch(LIFECYCLE_STATE_PREPARING_UPDATE, &now),
                        });
                    }
                } else {
                    let labels = BTreeMap::from([(
                        POD_REVISION_LABEL.to_string(),
                        input.update_revision.to_string(),
                    )]);
                    let extra = BTreeMap::from([(
                        LIFECYCLE_STATE_KEY.to_string(),
                        LIFECYCLE_STATE_UPDATING.to_string(),
                    )]);
                    let grace = ru
                        .in_place_update_strategy
                        .as_ref()
                        .map_or(0, |s| s.grace_period_seconds);
                    let mut start = inplace::start(
                        p,
                        &change,
                        input.update_revision,
                        &labels,
                        &extra,
                        grace,
                        &Time(input.now),
                    );
                    start.pod_patch["metadata"]["annotations"][LIFECYCLE_TIMESTAMP_KEY] =
                        json!(now);
                    plan.steps.push(Step::InPlace {
                        pod: name(p),
                        start: Box::new(start),
                    });
                }
            }
            Diff::Recreate(why) => {
                if policy == IN_PLACE_ONLY_POD_UPDATE_STRATEGY_TYPE {
                    plan.failed_update = Some(format!(
                        "find strategy is InPlaceOnly but Pod {} can not update in-place ({why})",
                        name(p)
                    ));
                    return;
                }
                plan.steps.extend(input.delete(p));
            }
        }
        if available {
            unavailable += 1;
        }
        if monotonic {
            break;
        }
    }
}

#[cfg(test)]
mod tests;
