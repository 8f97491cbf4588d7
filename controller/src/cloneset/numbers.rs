//! The numbers one CloneSet reconcile works with, computed as OpenKruise
//! does (`calculateDiffsWithExpectation`): how many pods to create or
//! delete (and of which revision), how much surge to use, how many pods
//! to update and the unavailability budgets.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use keelson_api::apps::shared::LIFECYCLE_STATE_PREPARING_DELETE;
use keelson_api::apps::v1alpha1::cloneset::{
    CLONE_SET_SCALING_EXCLUDE_PREPARING_DELETE_KEY, CloneSet, DEFAULT_CLONE_SET_MAX_UNAVAILABLE,
    SPECIFIED_DELETE_KEY,
};

use crate::workload::percent::{PercentError, scaled};
use crate::workload::pods;

/// `spec.replicas` (default 1).
pub fn replicas(cs: &CloneSet) -> i32 {
    cs.spec.replicas.unwrap_or(1).max(0)
}

/// `updateStrategy.partition` resolved: percent rounded up, then, unless
/// "100%", at least one pod updated when there is more than one; clamped
/// to `[0, replicas]`.
pub fn partition(cs: &CloneSet) -> Result<i32, PercentError> {
    let replicas = replicas(cs);
    let Some(p) = &cs.spec.update_strategy.partition else {
        return Ok(0);
    };
    let mut v = scaled(p, replicas, true)?;
    if let IntOrString::String(s) = p
        && s != "100%"
        && replicas > 1
        && v >= replicas
    {
        v = replicas - 1;
    }
    Ok(v.clamp(0, replicas))
}

/// Whether the pod is asked for deletion (label or `podsToDelete`).
pub fn is_specified_delete(cs: &CloneSet, pod: &Pod) -> bool {
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(SPECIFIED_DELETE_KEY));
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    labelled
        || cs
            .spec
            .scale_strategy
            .pods_to_delete
            .iter()
            .any(|n| n == name)
}

/// What one reconcile should do, in numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diffs {
    pub scale_up: i32,
    pub scale_up_old_revision: i32,
    /// Creations allowed now by `scaleStrategy.maxUnavailable`.
    pub scale_up_limit: i32,
    pub scale_down: i32,
    pub scale_down_old_revision: i32,
    /// How many ready pods may be deleted now.
    pub delete_ready_limit: i32,
    pub use_surge: i32,
    pub use_surge_old_revision: i32,
    /// Pods to move to the update revision (negative: back to the current
    /// one, under `CloneSetPartitionRollback`).
    pub update: i32,
    pub update_max_unavailable: i32,
    pub max_unavailable: i32,
}

/// The numbers for `cs` with its active `pods` (those on
/// `update_revision` are "new"). With `rollback` (OpenKruise's
/// `CloneSetPartitionRollback`, when the current and update revisions
/// differ) more new pods than the partition leaves room for make
/// `update` negative: that many go back to the current revision.
pub fn diffs(
    cs: &CloneSet,
    pods_: &[&Pod],
    update_revision: &str,
    now: Timestamp,
    exclude_preparing_delete: bool,
    rollback: bool,
) -> Result<Diffs, PercentError> {
    let replicas = replicas(cs);
    let partition = partition(cs)?;
    let strategy = &cs.spec.update_strategy;
    let max_surge = match &strategy.max_surge {
        Some(s) if !strategy.paused => scaled(s, replicas, true)?,
        _ => 0,
    };
    let default_unavailable = IntOrString::String(DEFAULT_CLONE_SET_MAX_UNAVAILABLE.into());
    let max_unavailable = scaled(
        strategy
            .max_unavailable
            .as_ref()
            .unwrap_or(&default_unavailable),
        replicas,
        max_surge == 0,
    )?;
    let scale_max_unavailable = match &cs.spec.scale_strategy.max_unavailable {
        Some(v) => scaled(v, replicas, true)?,
        None => i32::MAX,
    };
    #[derive(Default)]
    struct Count {
        all: i32,
        active: i32,
        unavailable: i32,
        to_delete: i32,
        pre_deleting: i32,
    }
    let (mut new, mut old) = (Count::default(), Count::default());
    for p in pods_ {
        let c = if pods::on_revision(p, update_revision) {
            &mut new
        } else {
            &mut old
        };
        c.all += 1;
        if pods::lifecycle_state(p) == LIFECYCLE_STATE_PREPARING_DELETE {
            c.pre_deleting += 1;
        } else {
            c.active += 1;
            if is_specified_delete(cs, p) {
                c.to_delete += 1;
            } else if !pods::is_available(p, cs.spec.min_ready_seconds, now) {
                c.unavailable += 1;
            }
        }
    }
    let (mut update_old_diff, mut update_new_diff) =
        (old.active - partition, new.active - (replicas - partition));
    if !rollback {
        update_old_diff = update_old_diff.max(0);
        update_new_diff = update_new_diff.min(0);
    }
    let total_unavailable = new.pre_deleting + old.pre_deleting + new.unavailable + old.unavailable;
    let mut res = Diffs {
        max_unavailable,
        ..Default::default()
    };
    if max_surge > 0 {
        let (mut scale_surge, mut scale_old_surge) = (0, 0);
        let to_delete = new.to_delete + old.to_delete;
        if to_delete > 0 {
            scale_surge = ((total_unavailable + to_delete) - max_unavailable)
                .max(0)
                .min(to_delete);
            if scale_surge > new.to_delete {
                scale_old_surge = scale_surge - new.to_delete;
            }
        }
        let (mut update_surge, mut update_old_surge) = (0, 0);
        // One positive and one negative: pods to move from one revision
        // to the other; surge on the side that is short (the old one when
        // rolling back).
        if (update_old_diff > 0 && update_new_diff < 0)
            || (update_old_diff < 0 && update_new_diff > 0)
        {
            if update_old_diff.abs() <= update_new_diff.abs() {
                update_surge = update_old_diff.abs();
                if update_old_diff < 0 {
                    update_old_surge = update_surge;
                }
            } else {
                update_surge = update_new_diff.abs();
                if update_new_diff > 0 {
                    update_old_surge = update_surge;
                }
            }
        }
        if scale_surge >= update_surge {
            res.use_surge = max_surge.min(scale_surge);
            res.use_surge_old_revision = res.use_surge.min(scale_old_surge);
        } else {
            res.use_surge = max_surge.min(update_surge);
            res.use_surge_old_revision = res.use_surge.min(update_old_surge);
        }
    }
    let exclude = exclude_preparing_delete
        || cs
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CLONE_SET_SCALING_EXCLUDE_PREPARING_DELETE_KEY))
            .is_some_and(|v| v == "true");
    let all = new.all + old.all;
    let (mut total, mut total_old) = (all, old.all);
    if exclude {
        total -= old.pre_deleting + new.pre_deleting;
        total_old -= old.pre_deleting;
    }
    let expected_total = replicas + res.use_surge;
    let expected_old = partition + res.use_surge_old_revision;
    if expected_total - total > 0 {
        res.scale_up = expected_total - total;
        res.scale_up_old_revision = (expected_old - total_old).max(0);
        res.scale_up_limit = res.scale_up.min(
            scale_max_unavailable
                .saturating_sub(total_unavailable)
                .max(0),
        );
    }
    let down = total - old.to_delete - new.to_delete - expected_total;
    if down > 0 {
        res.scale_down = down;
        res.scale_down_old_revision = (total_old - old.to_delete - expected_old).max(0);
    }
    if new.to_delete > 0 || old.to_delete > 0 || res.scale_down > 0 {
        res.delete_ready_limit = (max_unavailable + (all - replicas) - total_unavailable).max(0);
    }
    res.update = if update_old_diff.abs() <= update_new_diff.abs() {
        update_old_diff
    } else {
        -update_new_diff
    };
    if res.update != 0 {
        res.update_max_unavailable = max_unavailable + all - replicas;
    }
    Ok(res)
}
