//! Which namespaces a ResourceDistribution targets, as OpenKruise v1.9
//! computes them: (`allNamespaces` ? every namespace : the
//! `includedNamespaces` names) ∪ (namespaces matching a non-empty
//! `namespaceLabelSelector`, only when `allNamespaces` is false) −
//! `excludedNamespaces`; every other existing namespace is unmatched.
//! There are no forbidden namespaces (OpenKruise dropped the
//! kube-system/kube-public exclusion in v1.1). Also which distributions a
//! namespace event concerns: a new namespace by the full targets, a
//! deleted one by the included list, a label change by the selector.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use keelson_api::apps::v1alpha1::resourcedistribution::{
    ResourceDistributionTargetNamespaces, ResourceDistributionTargets,
};

use crate::selector;

/// The target namespace selector cannot be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid namespaceLabelSelector: {0}")]
pub struct SelectorError(pub String);

/// What matching needs to know of an existing namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// It has a deletion timestamp.
    pub terminating: bool,
}

impl NamespaceInfo {
    /// From a listed or watched Namespace.
    pub fn of(ns: &Namespace) -> Self {
        NamespaceInfo {
            name: ns.metadata.name.clone().unwrap_or_default(),
            labels: ns.metadata.labels.clone().unwrap_or_default(),
            terminating: ns.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// Matched and unmatched namespace names, each sorted. Matched names may
/// include listed namespaces that do not exist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Partition {
    pub matched: Vec<String>,
    pub unmatched: Vec<String>,
}

/// Whether the selector has any term (an empty one selects nothing).
pub fn selector_is_set(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
        || s.match_expressions.as_ref().is_some_and(|m| !m.is_empty())
}

fn in_list(name: &str, list: &ResourceDistributionTargetNamespaces) -> bool {
    list.list.iter().any(|n| n.name == name)
}

/// Whether `labels` match the targets' selector (set, valid, matching).
pub fn matches_selector(
    labels: &BTreeMap<String, String>,
    targets: &ResourceDistributionTargets,
) -> Result<bool, SelectorError> {
    let s = &targets.namespace_label_selector;
    if let Some(e) = super::validate::selector_error(s) {
        return Err(SelectorError(e));
    }
    Ok(selector_is_set(s) && selector::matches(s, labels))
}

/// Splits the existing `namespaces` into matched and unmatched ones.
pub fn partition(
    targets: &ResourceDistributionTargets,
    namespaces: &[NamespaceInfo],
) -> Result<Partition, SelectorError> {
    let mut matched: BTreeSet<String> = BTreeSet::new();
    if targets.all_namespaces {
        matched.extend(namespaces.iter().map(|n| n.name.clone()));
    } else {
        matched.extend(
            targets
                .included_namespaces
                .list
                .iter()
                .map(|n| n.name.clone()),
        );
        if selector_is_set(&targets.namespace_label_selector) {
            for ns in namespaces {
                if matches_selector(&ns.labels, targets)? {
                    matched.insert(ns.name.clone());
                }
            }
        }
    }
    for n in &targets.excluded_namespaces.list {
        matched.remove(&n.name);
    }
    let unmatched: BTreeSet<String> = namespaces
        .iter()
        .map(|n| n.name.clone())
        .filter(|n| !matched.contains(n))
        .collect();
    Ok(Partition {
        matched: matched.into_iter().collect(),
        unmatched: unmatched.into_iter().collect(),
    })
}

/// A new namespace concerns a distribution when its targets pick it.
pub fn concerns_new(
    ns: &NamespaceInfo,
    targets: &ResourceDistributionTargets,
) -> Result<bool, SelectorError> {
    if in_list(&ns.name, &targets.excluded_namespaces) {
        return Ok(false);
    }
    if targets.all_namespaces || in_list(&ns.name, &targets.included_namespaces) {
        return Ok(true);
    }
    matches_selector(&ns.labels, targets)
}

/// A deleted namespace concerns the distributions that list it.
pub fn concerns_deleted(ns: &NamespaceInfo, targets: &ResourceDistributionTargets) -> bool {
    in_list(&ns.name, &targets.included_namespaces)
}

/// What changed about a namespace since it was last seen.
#[derive(Debug, Clone, PartialEq)]
pub enum NamespaceChange {
    Created(NamespaceInfo),
    /// Terminating or gone.
    Deleted(NamespaceInfo),
    /// Labels changed: the old and the new namespace.
    Relabelled(NamespaceInfo, NamespaceInfo),
    Unchanged,
}

/// The namespaces seen so far on the watch (uid, labels, terminating), to
/// tell creations, deletions and label changes apart.
#[derive(Debug, Default)]
pub struct NamespaceTracker {
    seen: HashMap<String, (String, NamespaceInfo)>,
}

impl NamespaceTracker {
    /// Records `ns` (as the watch delivered it); what changed.
    pub fn observe(&mut self, ns: &Namespace) -> NamespaceChange {
        let info = NamespaceInfo::of(ns);
        let uid = ns.metadata.uid.clone().unwrap_or_default();
        let before = self
            .seen
            .insert(info.name.clone(), (uid.clone(), info.clone()));
        match before {
            Some((old_uid, old)) if old_uid == uid => {
                if info.terminating {
                    if old.terminating {
                        NamespaceChange::Unchanged
                    } else {
                        NamespaceChange::Deleted(info)
                    }
                } else if old.labels != info.labels {
                    NamespaceChange::Relabelled(old, info)
                } else {
                    NamespaceChange::Unchanged
                }
            }
            _ if info.terminating => NamespaceChange::Deleted(info),
            _ => NamespaceChange::Created(info),
        }
    }
}

/// Whether `change` concerns a distribution with `targets`.
pub fn concerns(change: &NamespaceChange, targets: &ResourceDistributionTargets) -> bool {
    let by_selector = |ns: &NamespaceInfo| matches_selector(&ns.labels, targets).unwrap_or(false);
    match change {
        NamespaceChange::Created(ns) => concerns_new(ns, targets).unwrap_or(false),
        NamespaceChange::Deleted(ns) => concerns_deleted(ns, targets),
        NamespaceChange::Relabelled(old, new) => by_selector(old) || by_selector(new),
        NamespaceChange::Unchanged => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn targets(v: serde_json::Value) -> ResourceDistributionTargets {
        serde_json::from_value(v).unwrap()
    }

    fn ns(name: &str, labels: &[(&str, &str)]) -> NamespaceInfo {
        NamespaceInfo {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            terminating: false,
        }
    }

    fn all() -> Vec<NamespaceInfo> {
        vec![
            ns("default", &[]),
            ns("kube-system", &[]),
            ns("ns-1", &[]),
            ns("ns-2", &[("group", "one")]),
            ns("ns-3", &[("group", "one")]),
            ns("ns-5", &[("group", "two")]),
        ]
    }

    #[test]
    fn the_documented_example_picks_listed_and_labelled_minus_excluded() {
        let t = targets(json!({
            "excludedNamespaces": {"list": [{"name": "ns-3"}]},
            "includedNamespaces": {"list": [{"name": "ns-1"}, {"name": "ns-4"}]},
            "namespaceLabelSelector": {"matchLabels": {"group": "one"}}
        }));
        let p = partition(&t, &all()).unwrap();
        // ns-4 does not exist but is still matched (reported later).
        assert_eq!(p.matched, ["ns-1", "ns-2", "ns-4"]);
        assert_eq!(p.unmatched, ["default", "kube-system", "ns-3", "ns-5"]);
    }

    #[test]
    fn all_namespaces_has_no_forbidden_ones_and_ignores_the_selector() {
        let t = targets(json!({
            "allNamespaces": true,
            "excludedNamespaces": {"list": [{"name": "ns-1"}]},
            "includedNamespaces": {"list": [{"name": "ghost"}]},
            "namespaceLabelSelector": {"matchLabels": {"group": "none"}}
        }));
        let p = partition(&t, &all()).unwrap();
        assert_eq!(
            p.matched,
            ["default", "kube-system", "ns-2", "ns-3", "ns-5"]
        );
        assert_eq!(p.unmatched, ["ns-1"]);
    }

    #[test]
    fn an_empty_selector_selects_nothing_and_a_bad_one_is_an_error() {
        let t = targets(json!({"namespaceLabelSelector": {"matchLabels": {}}}));
        let p = partition(&t, &all()).unwrap();
        assert!(p.matched.is_empty());
        assert_eq!(p.unmatched.len(), 6);
        let t = targets(json!({"namespaceLabelSelector": {"matchExpressions": [
            {"key": "group", "operator": "Bad"}]}}));
        assert!(partition(&t, &all()).is_err());
        let t = targets(json!({"namespaceLabelSelector": {"matchExpressions": [
            {"key": "group", "operator": "NotIn", "values": ["one"]}]}}));
        assert_eq!(
            partition(&t, &all()).unwrap().matched,
            ["default", "kube-system", "ns-1", "ns-5"]
        );
    }

    #[test]
    fn namespace_events_concern_the_right_distributions() {
        let t = targets(json!({
            "excludedNamespaces": {"list": [{"name": "x"}]},
            "includedNamespaces": {"list": [{"name": "listed"}]},
            "namespaceLabelSelector": {"matchLabels": {"group": "one"}}
        }));
        let mk = |name: &str, uid: &str, labels: serde_json::Value, deleting: bool| -> Namespace {
            let mut v = json!({"metadata": {"name": name, "uid": uid, "labels": labels}});
            if deleting {
                v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(v).unwrap()
        };
        let mut seen = NamespaceTracker::default();
        let c = seen.observe(&mk("a", "1", json!({"group": "one"}), false));
        assert!(matches!(c, NamespaceChange::Created(_)) && concerns(&c, &t));
        assert_eq!(
            seen.observe(&mk("a", "1", json!({"group": "one"}), false)),
            NamespaceChange::Unchanged
        );
        // Losing the label concerns it (its copy must go).
        let c = seen.observe(&mk("a", "1", json!({}), false));
        assert!(matches!(c, NamespaceChange::Relabelled(..)) && concerns(&c, &t));
        let c = seen.observe(&mk("a", "1", json!({"other": "x"}), false));
        assert!(!concerns(&c, &t));
        // Excluded wins on creation; unrelated creations do not concern.
        let c = seen.observe(&mk("x", "2", json!({"group": "one"}), false));
        assert!(!concerns(&c, &t));
        let c = seen.observe(&mk("b", "3", json!({}), false));
        assert!(!concerns(&c, &t));
        // Deletion concerns only the distributions listing it by name.
        let c = seen.observe(&mk("listed", "4", json!({}), false));
        assert!(concerns(&c, &t));
        let c = seen.observe(&mk("listed", "4", json!({}), true));
        assert!(matches!(c, NamespaceChange::Deleted(_)) && concerns(&c, &t));
        assert_eq!(
            seen.observe(&mk("listed", "4", json!({}), true)),
            NamespaceChange::Unchanged
        );
        let c = seen.observe(&mk("b", "3", json!({}), true));
        assert!(!concerns(&c, &t));
        // Recreated under the same name: a creation again.
        let c = seen.observe(&mk("listed", "5", json!({}), false));
        assert!(matches!(c, NamespaceChange::Created(_)));
    }
}
