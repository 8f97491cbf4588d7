//! OpenKruise's pod lifecycle: the state label
//! (`lifecycle.apps.kruise.io/state`) and its timestamp, and whether a
//! lifecycle hook holds a pod (it carries any of the hook's labels with
//! their values, or any of its finalizers).

use k8s_openapi::api::core::v1::Pod;
use keelson_api::apps::shared::{LIFECYCLE_STATE_KEY, LIFECYCLE_TIMESTAMP_KEY, LifecycleHook};
use serde_json::{Value, json};

fn has_label(pod: &Pod, k: &str, v: &str) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(k))
        .is_some_and(|x| x == v)
}

fn has_finalizer(pod: &Pod, f: &str) -> bool {
    pod.metadata.finalizers.iter().flatten().any(|x| x == f)
}

/// The hook holds the pod: it has at least one of the hook's labels or
/// finalizers.
pub fn hooked(pod: &Pod, hook: Option<&LifecycleHook>) -> bool {
    hook.is_some_and(|h| {
        h.labels_handler.iter().any(|(k, v)| has_label(pod, k, v))
            || h.finalizers_handler.iter().any(|f| has_finalizer(pod, f))
    })
}

/// The pod has all of the hook's labels and finalizers (and the hook has
/// some).
pub fn all_hooked(pod: &Pod, hook: Option<&LifecycleHook>) -> bool {
    hook.is_some_and(|h| {
        (!h.labels_handler.is_empty() || !h.finalizers_handler.is_empty())
            && h.labels_handler.iter().all(|(k, v)| has_label(pod, k, v))
            && h.finalizers_handler.iter().all(|f| has_finalizer(pod, f))
    })
}

/// The labels and annotation moving a pod to `state` at `now` (RFC 3339),
/// as a merge-patch fragment `{"metadata": …}`.
pub fn state_patch(state: &str, now: &str) -> Value {
    json!({"metadata": {
        "labels": {LIFECYCLE_STATE_KEY: state},
        "annotations": {LIFECYCLE_TIMESTAMP_KEY: now},
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_hold_by_label_value_or_finalizer() {
        let pod: Pod = serde_saphyr::from_str(
            "metadata: {name: p, labels: {hold: 'yes'}, finalizers: [example.com/f]}",
        )
        .unwrap();
        let hook = |labels: &[(&str, &str)], fins: &[&str]| LifecycleHook {
            labels_handler: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            finalizers_handler: fins.iter().map(|f| f.to_string()).collect(),
            mark_pod_not_ready: false,
        };
        assert!(hooked(&pod, Some(&hook(&[("hold", "yes")], &[]))));
        assert!(!hooked(&pod, Some(&hook(&[("hold", "no")], &[]))));
        assert!(hooked(&pod, Some(&hook(&[], &["example.com/f"]))));
        assert!(!hooked(&pod, None));
        assert!(all_hooked(
            &pod,
            Some(&hook(&[("hold", "yes")], &["example.com/f"]))
        ));
        assert!(!all_hooked(
            &pod,
            Some(&hook(&[("hold", "yes")], &["other"]))
        ));
        assert!(!all_hooked(&pod, Some(&hook(&[], &[]))));
    }
}
