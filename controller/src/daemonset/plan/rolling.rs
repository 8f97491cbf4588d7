//! The Advanced DaemonSet rolling update, as upstream decides it. Nodes
//! are taken in descending name order — nodes already updated first, then
//! nodes mid-update (old pod gone or `PreparingDelete`), then (when
//! `rollingUpdate.selector` is set) only nodes whose labels match it,
//! else all the rest — cut to `#nodes − partition`. Without surge, old
//! pods that are unavailable are replaced at once and available ones
//! deleted within what `maxUnavailable` leaves (tried in place first under
//! `InPlaceIfPossible`: the pod has the gate, its old revision is known
//! and the change is in-place-able); with surge, a new pod is created next
//! to the old one within `maxSurge` and the old one deleted once the new
//! one is available.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Deletion, Input, Plan, Step, available, gated, name, pre_deleting};
use crate::workload::inplace::{self, Diff};
use crate::workload::pods;
use crate::workload::revision::POD_REVISION_LABEL;

fn nil_or_pre_deleting(p: Option<&Pod>) -> bool {
    p.is_none_or(pre_deleting)
}

/// The nodes the update may touch, in the order it considers them.
pub fn nodes_to_update(input: &Input, by_node: &BTreeMap<String, Vec<&Pod>>) -> Vec<String> {
    let fits = input.fits();
    let mut all: BTreeSet<String> = by_node
        .keys()
        .filter(|n| fits.contains_key(*n))
        .cloned()
        .collect();
    all.extend(
        fits.iter()
            .filter(|(_, f)| f.should_run)
            .map(|(n, _)| n.clone()),
    );
    let selector = input.rolling_update().selector;
    let nodes: BTreeMap<&str, &k8s_openapi::api::core::v1::Node> = input
        .nodes
        .iter()
        .map(|n| (n.metadata.name.as_deref().unwrap_or(""), n))
        .collect();
    let (mut updated, mut updating, mut selected, mut rest) = (vec![], vec![], vec![], vec![]);
    let none = vec![];
    for node in all.iter().rev() {
        let on_node = by_node.get(node).unwrap_or(&none);
        match input.new_and_old(on_node) {
            None | Some((Some(_), _)) => updated.push(node.clone()),
            Some((None, old)) if nil_or_pre_deleting(old) => updating.push(node.clone()),
            Some(_) => {
                let matches = selector.as_ref().is_some_and(|s| {
                    nodes.get(node.as_str()).is_some_and(|n| {
                        crate::selector::matches(
                            s,
                            n.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
                        )
                    })
                });
                if matches {
                    selected.push(node.clone());
                } else {
                    rest.push(node.clone());
                }
            }
        }
    }
    let mut sorted = updated;
    sorted.extend(updating);
    sorted.extend(if selector.is_some() { selected } else { rest });
    let max_update = all.len() as i64 - i64::from(input.partition());
    if max_update <= 0 {
        return vec![];
    }
    sorted.truncate(usize::try_from(max_update).unwrap_or(usize::MAX));
    sorted
}

/// The update's deletions, the nodes getting a surge pod, and its
/// in-place starts.
pub fn update(input: &Input, plan: &mut Plan) -> (Vec<Deletion>, Vec<String>, Vec<Step>) {
    let mut by_node = input.by_node();
    let fits = input.fits();
    let desired = fits.values().filter(|f| f.should_run).count() as i32;
    for (n, f) in &fits {
        if f.should_run {
            by_node.entry(n.clone()).or_default();
        }
    }
    let max_surge = input.surge(desired);
    let mut max_unavailable = input.unavailable(desired);
    if desired > 0 && max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let nodes = nodes_to_update(input, &by_node);
    let (min_ready, now) = (input.min_ready(), input.now);
    let none = vec![];
    if max_surge == 0 {
        let mut unavailable = 0;
        let (mut allowed, mut candidates) = (vec![], vec![]);
        for node in &nodes {
            let on_node = by_node.get(node).unwrap_or(&none);
            let Some((new, old)) = input.new_and_old(on_node) else {
                unavailable += 1;
                continue;
            };
            let both_gone = nil_or_pre_deleting(old) && nil_or_pre_deleting(new);
            let both_live = !nil_or_pre_deleting(old) && !nil_or_pre_deleting(new);
            match (new, old) {
                _ if both_gone || both_live => unavailable += 1,
                (Some(new), _) => {
                    unavailable += i32::from(!available(new, min_ready, now));
                    unavailable += i32::from(pre_deleting(new));
                }
                (None, Some(old)) => {
                    if !available(old, min_ready, now) {
                        allowed.push(old);
                    } else if unavailable < max_unavailable {
                        candidates.push(old);
                    }
                }
                (None, None) => {}
            }
        }
        let remaining = usize::try_from((max_unavailable - unavailable).max(0))
            .unwrap_or(0)
            .min(candidates.len());
        let mut chosen = allowed;
        chosen.extend(candidates.into_iter().take(remaining));
        let (deletes, in_place) = if input.in_place() {
            in_place_or_delete(input, chosen, plan)
        } else {
            (
                chosen.iter().map(|p| Deletion::Pod(name(p))).collect(),
                vec![],
            )
        };
        return (deletes, vec![], in_place);
    }
    let mut surging = 0;
    let (mut deletes, mut allowed, mut candidates) = (vec![], vec![], vec![]);
    for node in &nodes {
        let on_node = by_node.get(node).unwrap_or(&none);
        let Some((new, old)) = input.new_and_old(on_node) else {
            surging += 1;
            continue;
        };
        let Some(old) = old.filter(|o| !pre_deleting(o)) else {
            continue;
        };
        match new {
            None if !available(old, min_ready, now) => allowed.push(node.clone()),
            None if surging >= max_surge => {}
            None => candidates.push(node.clone()),
            Some(new) if !available(new, min_ready, now) || pre_deleting(new) => surging += 1,
            Some(_) => deletes.push(Deletion::Pod(name(old))),
        }
    }
    let remaining = usize::try_from((max_surge - surging).max(0))
        .unwrap_or(0)
        .min(candidates.len());
    allowed.extend(candidates.into_iter().take(remaining));
    (deletes, allowed, vec![])
}

/// Under `InPlaceIfPossible`: which of `chosen` start in place (at most
/// `burstReplicas` a round) and which are deleted.
fn in_place_or_delete(
    input: &Input,
    chosen: Vec<&Pod>,
    plan: &mut Plan,
) -> (Vec<Deletion>, Vec<Step>) {
    let (mut deletes, mut starts) = (vec![], vec![]);
    let target = input.templates.get(input.hash);
    let labels = BTreeMap::from([(POD_REVISION_LABEL.to_string(), input.hash.to_string())]);
    for p in chosen {
        let from = pods::revision(p)
            .filter(|r| *r != input.hash)
            .and_then(|r| input.templates.get(r));
        let change = match (gated(p), from, target) {
            (true, Some(from), Some(to)) => {
                match inplace::diff(from, to, input.env_from_metadata) {
                    Ok(Diff::InPlace(c)) => Some(c),
                    Ok(Diff::Recreate(why)) => {
                        tracing::debug!(pod = %name(p), reason = %why, "not updatable in place; recreating");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(pod = %name(p), error = %e, "revision unreadable; recreating");
                        None
                    }
                }
            }
            _ => None,
        };
        match change {
            Some(change) => starts.push((p, change)),
            None => deletes.push(Deletion::Pod(name(p))),
        }
    }
    let burst = input.burst();
    if starts.len() > burst {
        plan.again(1);
    }
    let steps = starts
        .into_iter()
        .take(burst)
        .map(|(p, change)| Step::InPlace {
            pod: name(p),
            start: Box::new(inplace::start(
                p,
                &change,
                input.hash,
                &labels,
                &BTreeMap::new(),
                0,
                &Time(input.now),
            )),
        })
        .collect();
    (deletes, steps)
}
