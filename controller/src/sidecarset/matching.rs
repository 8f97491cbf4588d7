//! Which SidecarSets concern a pod: not paused for injection, the pod's
//! namespace selected by `namespaceSelector` (when set), and the pod's
//! labels by a non-empty `selector` (an empty or absent one matches
//! nothing, as upstream). Only active pods (not terminal, not deleting,
//! [`is_active`] of the workload machinery) get sidecars.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use keelson_api::apps::v1beta1::sidecarset::SidecarSet;

use crate::selector;

/// Whether a selector selects nothing at all (no labels, no expressions).
pub fn is_empty(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

pub use crate::workload::pods::is_active;

/// Whether `set` selects the pod with `labels` in a namespace with
/// `namespace_labels` (`None`: the namespace is unknown, which matches
/// only a SidecarSet without a namespace selector).
pub fn selects(
    set: &SidecarSet,
    labels: &BTreeMap<String, String>,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> bool {
    if let Some(ns) = &set.spec.namespace_selector {
        match namespace_labels {
            Some(nl) if selector::matches(ns, nl) => {}
            _ => return false,
        }
    }
    set.spec
        .selector
        .as_ref()
        .is_some_and(|s| !is_empty(s) && selector::matches(s, labels))
}

/// The SidecarSets to inject into `pod`, in name order: selected and not
/// paused for injection.
pub fn for_pod<'a>(
    sets: impl IntoIterator<Item = &'a SidecarSet>,
    pod: &Pod,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Vec<&'a SidecarSet> {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let mut out: Vec<&SidecarSet> = sets
        .into_iter()
        .filter(|s| !s.spec.injection_strategy.paused && selects(s, labels, namespace_labels))
        .collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(name: &str, spec: serde_json::Value) -> SidecarSet {
        serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1beta1", "kind": "SidecarSet",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_and_namespace_selector() {
        let s = set(
            "a",
            json!({"selector": {"matchLabels": {"app": "web"}},
                   "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}}),
        );
        let shop = labels(&[("kubernetes.io/metadata.name", "shop")]);
        let other = labels(&[("kubernetes.io/metadata.name", "other")]);
        assert!(selects(&s, &labels(&[("app", "web")]), Some(&shop)));
        assert!(!selects(&s, &labels(&[("app", "web")]), Some(&other)));
        assert!(!selects(&s, &labels(&[("app", "web")]), None));
        assert!(!selects(&s, &labels(&[("app", "db")]), Some(&shop)));
    }

    #[test]
    fn an_empty_selector_matches_nothing() {
        let empty = set("a", json!({"selector": {}}));
        let absent = set("b", json!({}));
        assert!(!selects(&empty, &labels(&[("app", "web")]), None));
        assert!(!selects(&absent, &labels(&[]), None));
    }

    #[test]
    fn paused_injection_is_skipped_and_order_is_by_name() {
        let sel = json!({"matchLabels": {"app": "web"}});
        let sets = [
            set("z", json!({"selector": sel})),
            set("a", json!({"selector": sel})),
            set(
                "p",
                json!({"selector": sel, "injectionStrategy": {"paused": true}}),
            ),
        ];
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}}})).unwrap();
        let names: Vec<_> = for_pod(&sets, &pod, None)
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a", "z"]);
    }

    #[test]
    fn terminal_and_deleting_pods_are_inactive() {
        let p = |v| serde_json::from_value::<Pod>(v).unwrap();
        assert!(is_active(&p(json!({}))));
        assert!(!is_active(&p(json!({"status": {"phase": "Succeeded"}}))));
        assert!(!is_active(&p(
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
        )));
    }
}
