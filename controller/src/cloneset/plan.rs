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
    LIFECYCLE_STATE_NORMAL, LIFECYCLE_STATE_PREPARING_DELETE, LIFECYCLE_STATE_PREPARING_NORMAL,
    LIFECYCLE_STATE_PREPARING_UPDATE, LIFECYCLE_STATE_UPDATED, LIFECYCLE_STATE_UPDATING,
};
use keelson_api::apps::v1alpha1::cloneset::{
    CloneSet, IN_PLACE_IF_POSSIBLE_CLONE_SET_UPDATE_STRATEGY_TYPE,
    IN_PLACE_ONLY_CLONE_SET_UPDATE_STRATEGY_TYPE, SPECIFIED_DELETE_KEY,
};
use serde_json::{Value, json};

use super::numbers::{self, Diffs};
use crate::workload::inplace::{self, Diff};
use crate::workload::lifecycle::{hooked, not_ready_holder, not_ready_policy, state_patch};
use crate::workload::pods;
use crate::workload::revision::{POD_REVISION_LABEL, short_hash};

mod refresh;
mod scale;
mod update;

pub use scale::vanished_pods_to_delete;
pub use update::revision_label;

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
    /// Revision name → its claim-template hash annotation (where it has one).
    pub vct_hashes: &'a BTreeMap<String, String>,
    /// `RecreatePodWhenChangeVCTInCloneSetGate`: a claim-template change
    /// between revisions rules out an in-place update.
    pub recreate_on_vct_change: bool,
    /// `CloneSetShortHash`: pods' `controller-revision-hash` is the hash only.
    pub short_hash: bool,
    /// `CloneSetPartitionRollback`: pods updated beyond the partition go
    /// back to the current revision.
    pub partition_rollback: bool,
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
    /// `markPodNotReady`: take (`hold`) or drop the lifecycle holder `key`
    /// of the pod's `KruisePodReady` condition, then merge-patch the pod's
    /// metadata (`then`, when given) — in that order, as OpenKruise does.
    Readiness {
        pod: String,
        key: &'static str,
        hold: bool,
        then: Option<Value>,
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
    refresh::refresh(input, &mut plan);
    if !plan.steps.is_empty() {
        return plan;
    }
    let pods: Vec<&Pod> = input.pods.iter().collect();
    let rollback = input.partition_rollback && input.current_revision != input.update_revision;
    let diffs = match numbers::diffs(
        input.cs,
        &pods,
        input.update_revision,
        input.now,
        input.exclude_preparing_delete,
        rollback,
    ) {
        Ok(d) => d,
        Err(e) => {
            plan.failed_scale = Some(e.to_string());
            return plan;
        }
    };
    scale::scale(input, &diffs, &mut plan);
    if plan.steps.is_empty() && plan.failed_scale.is_none() {
        update::update(input, &diffs, &mut plan);
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

/// The step moving `p` to lifecycle `state` by `patch`, with the
/// `markPodNotReady` policy (when `mark`) taking or dropping its
/// `KruisePodReady` holder first; only what is not so already.
fn lifecycle_step(p: &Pod, state: &str, patch: Value, mark: bool) -> Step {
    if mark && let Some((key, hold)) = not_ready_policy(state) {
        let held = crate::podreadiness::holds(p, &not_ready_holder(key));
        if hold != held && crate::podreadiness::has_gate(p) {
            return Step::Readiness {
                pod: name(p),
                key,
                hold,
                then: Some(patch),
            };
        }
    }
    Step::Patch {
        pod: name(p),
        patch,
    }
}

/// Whether `hook` asks for `markPodNotReady`.
fn marks(hook: Option<&keelson_api::apps::shared::LifecycleHook>) -> bool {
    hook.is_some_and(|h| h.mark_pod_not_ready)
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

#[cfg(test)]
mod tests;
