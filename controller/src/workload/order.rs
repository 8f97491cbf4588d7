//! Update order shared by the workloads: `priorityStrategy`
//! (`weightPriority`: the weights of the matching terms summed, higher
//! first; `orderPriority`: the first label key a pod carries, then the
//! value's trailing integer, larger first; pods with none of the keys last,
//! as OpenKruise documents) and `scatterStrategy` (the pods carrying a
//! `key=value` term spread evenly through the order instead of going
//! together, the last of them last).

use k8s_openapi::api::core::v1::Pod;
use keelson_api::apps::shared::UpdatePriorityStrategy;
use keelson_api::apps::v1alpha1::cloneset::UpdateScatterTerm;

/// Weight under `weightPriority` (higher first).
pub fn weight(ps: Option<&UpdatePriorityStrategy>, p: &Pod) -> i64 {
    let Some(ps) = ps else { return 0 };
    let labels = p.metadata.labels.clone().unwrap_or_default();
    ps.weight_priority
        .iter()
        .filter(|t| crate::selector::matches(&t.match_selector, &labels))
        .map(|t| i64::from(t.weight))
        .sum()
}

/// Rank under `orderPriority` (lower first).
pub fn order_rank(ps: Option<&UpdatePriorityStrategy>, p: &Pod) -> (usize, i64) {
    let Some(ps) = ps else { return (0, 0) };
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

/// `(weight desc, order rank)` as one sort key.
pub fn priority_key(ps: Option<&UpdatePriorityStrategy>, p: &Pod) -> (i64, (usize, i64)) {
    (-weight(ps, p), order_rank(ps, p))
}

/// Spreads the candidates carrying each term (the most common term first)
/// evenly through the order; the first `pinned` candidates stay in front.
/// A term matching at most one candidate, or all but one, changes nothing.
pub fn scatter(
    terms: &[UpdateScatterTerm],
    candidates: &mut Vec<&Pod>,
    pinned: impl Fn(&Pod) -> bool,
) {
    if terms.is_empty() || candidates.len() <= 1 {
        return;
    }
    let has = |p: &Pod, k: &str, v: &str| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(k))
            .is_some_and(|x| x == v)
    };
    let mut ordered: Vec<&UpdateScatterTerm> = terms.iter().collect();
    let count = |t: &&UpdateScatterTerm| {
        candidates
            .iter()
            .filter(|p| has(p, &t.key, &t.value))
            .count()
    };
    ordered.sort_by_key(|t| std::cmp::Reverse(count(t)));
    for t in ordered {
        let front = candidates.iter().take_while(|p| pinned(p)).count();
        let rest: Vec<&Pod> = candidates.split_off(front);
        let (matched, unmatched): (Vec<&Pod>, Vec<&Pod>) =
            rest.iter().copied().partition(|p| has(p, &t.key, &t.value));
        if matched.len() <= 1 || unmatched.len() <= 1 {
            candidates.extend(rest);
            continue;
        }
        // Slot i (0-based of k) takes a matched pod when its share of
        // matched pods so far falls behind m/k (Bresenham), which puts
        // the last matched pod in the last slot.
        let (m, k) = (matched.len(), rest.len());
        let (mut mi, mut ui) = (0, 0);
        for i in 0..k {
            let due = (i + 1) * m / k;
            if mi < due && mi < m {
                candidates.push(matched[mi]);
                mi += 1;
            } else if ui < unmatched.len() {
                candidates.push(unmatched[ui]);
                ui += 1;
            } else {
                candidates.push(matched[mi]);
                mi += 1;
            }
        }
    }
}
