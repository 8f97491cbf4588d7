//! The update phase: which pods move to the update revision this round
//! (order, partition, unavailability budget) and how (in place, held by
//! the inPlaceUpdate hook, or marked for recreation).

use super::*;
use crate::workload::order::priority_key;

/// Update order (`Less` = `a` first), as OpenKruise layers it:
/// PreparingUpdate pods first, then the priority strategy (weights, or
/// label order), then pods not yet running or ready.
fn update_order(cs: &CloneSet, a: &Pod, b: &Pod) -> Ordering {
    let ps = cs.spec.update_strategy.priority_strategy.as_ref();
    let prep = |p: &Pod| pods::lifecycle_state(p) != LIFECYCLE_STATE_PREPARING_UPDATE;
    prep(a)
        .cmp(&prep(b))
        .then_with(|| priority_key(ps, a).cmp(&priority_key(ps, b)))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| pods::is_ready(a).cmp(&pods::is_ready(b)))
        .then_with(|| name(a).cmp(&name(b)))
}

/// `scatterStrategy`, PreparingUpdate pods kept in front.
fn scatter(cs: &CloneSet, candidates: &mut Vec<&Pod>) {
    crate::workload::order::scatter(&cs.spec.update_strategy.scatter_strategy, candidates, |p| {
        pods::lifecycle_state(p) == LIFECYCLE_STATE_PREPARING_UPDATE
    });
}

pub(super) fn update(input: &Input, diffs: &Diffs, plan: &mut Plan) {
    let cs = input.cs;
    if cs.spec.update_strategy.paused || diffs.update == 0 {
        return;
    }
    // Negative: pods updated beyond the partition go back
    // (`CloneSetPartitionRollback`).
    let target_revision = if diffs.update > 0 {
        input.update_revision
    } else {
        input.current_revision
    };
    let forward = diffs.update > 0;
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
            let state = pods::lifecycle_state(p);
            pods::on_revision(p, input.update_revision) != forward
                && state != LIFECYCLE_STATE_PREPARING_DELETE
                && !numbers::is_specified_delete(cs, p)
                // Still in an in-place grace period: its update is under way.
                && (state == LIFECYCLE_STATE_UPDATED
                    || keelson_api::apps::shared::get_in_place_update_grace(&p.metadata).is_none())
        })
        .collect();
    candidates.sort_by(|a, b| update_order(cs, a, b));
    scatter(cs, &mut candidates);
    let mut updated_unavailable = input
        .pods
        .iter()
        .filter(|p| {
            pods::on_revision(p, target_revision) && !pods::is_available(p, min_ready, input.now)
        })
        .count() as i32;
    let mut unavailable = input
        .pods
        .iter()
        .filter(|p| !pods::is_available(p, min_ready, input.now))
        .count() as i32;
    let budget = diffs.update_max_unavailable;
    let Some(target) = input.templates.get(target_revision) else {
        plan.failed_update = Some(format!("revision {target_revision} has no template"));
        return;
    };
    let update_count = diffs.update.abs();
    // InPlaceOnly ignores a claim-template difference (as upstream).
    let vct_matters =
        input.recreate_on_vct_change && strategy != IN_PLACE_ONLY_CLONE_SET_UPDATE_STRATEGY_TYPE;
    let in_place_hook = cs
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l.in_place_update.as_ref());
    let now = now_str(input.now);
    let mut started = 0;
    for p in candidates {
        if started >= update_count || updated_unavailable >= budget {
            break;
        }
        let available = pods::is_available(p, min_ready, input.now);
        if available && unavailable >= budget {
            break;
        }
        let from = pods::revision(p).and_then(|r| {
            input
                .templates
                .iter()
                .find(|(n, _)| n.as_str() == r || short_hash(n) == r)
        });
        let vct_changed = from.is_some_and(|(name, _)| {
            // Both must carry the hash (a revision from before it was kept
            // does not force a recreate).
            match (
                input.vct_hashes.get(name),
                input.vct_hashes.get(target_revision),
            ) {
                (Some(a), Some(b)) => a != b,
                _ => false,
            }
        });
        let from = from.map(|(_, t)| t);
        let diff = match from {
            Some(_) if in_place_allowed && vct_matters && vct_changed => {
                Diff::Recreate("volumeClaimTemplates changed".into())
            }
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
                if state == LIFECYCLE_STATE_UPDATED
                    && let Some(hook) = in_place_hook
                {
                    // Updated before and to be updated again: the hook
                    // holds it anew (its labels and finalizers back).
                    plan.steps.push(lifecycle_step(
                        p,
                        LIFECYCLE_STATE_PREPARING_UPDATE,
                        crate::workload::lifecycle::state_patch_with_hook(
                            LIFECYCLE_STATE_PREPARING_UPDATE,
                            &now,
                            hook,
                        ),
                        marks(in_place_hook),
                    ));
                } else if state != LIFECYCLE_STATE_PREPARING_UPDATE && hooked(p, in_place_hook) {
                    // Hold it until the hook lets go.
                    plan.steps.push(lifecycle_step(
                        p,
                        LIFECYCLE_STATE_PREPARING_UPDATE,
                        state_patch(LIFECYCLE_STATE_PREPARING_UPDATE, &now),
                        marks(in_place_hook),
                    ));
                } else if state == LIFECYCLE_STATE_PREPARING_UPDATE && hooked(p, in_place_hook) {
                    // Still held.
                } else {
                    let labels = BTreeMap::from([
                        (
                            POD_REVISION_LABEL.to_string(),
                            revision_label(target_revision, input.short_hash),
                        ),
                        (
                            POD_TEMPLATE_HASH_LABEL.to_string(),
                            short_hash(target_revision).to_string(),
                        ),
                    ]);
                    let extra = BTreeMap::from([(
                        keelson_api::apps::shared::LIFECYCLE_STATE_KEY.to_string(),
                        LIFECYCLE_STATE_UPDATING.to_string(),
                    )]);
                    let mut start = inplace::start(
                        p,
                        &change,
                        target_revision,
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

/// The `controller-revision-hash` value for pods of `revision`: the full
/// name, or with `short` (the `CloneSetShortHash` gate) the hash alone.
pub fn revision_label(revision: &str, short: bool) -> String {
    if short {
        short_hash(revision).to_string()
    } else {
        revision.to_string()
    }
}
