//! OpenKruise's pod lifecycle: the state label
//! (`lifecycle.apps.kruise.io/state`) and its timestamp, and whether a
//! lifecycle hook holds a pod (it carries any of the hook's labels with
//! their values, or any of its finalizers), and the `markPodNotReady`
//! policy: which `KruisePodReady` holder a move to a state takes or drops
//! (OpenKruise's `pkg/util/lifecycle`).

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

/// Who holds `KruisePodReady` False for a `markPodNotReady` hook.
pub const NOT_READY_USER_AGENT: &str = "Lifecycle";
/// The holder key of the preDelete hook.
pub const PRE_DELETE_HOOK_KEY: &str = "preDeleteHook";
/// The holder key of the inPlaceUpdate hook.
pub const PRE_UPDATE_HOOK_KEY: &str = "preUpdateHook";

/// The `KruisePodReady` holder of a lifecycle hook `key`.
pub fn not_ready_holder(key: &str) -> crate::podreadiness::Holder {
    crate::podreadiness::Holder {
        user_agent: NOT_READY_USER_AGENT.into(),
        key: key.into(),
    }
}

/// What `markPodNotReady` does on a move to `state`: the holder key to
/// take (`true`) or drop. PreparingDelete and PreparingUpdate take theirs;
/// Updated drops the update hook's — and so does Normal here, which
/// OpenKruise leaves held (a pod going Updating → Normal, its hook labels
/// back before the update finished, stayed not-ready for good).
pub fn not_ready_policy(state: &str) -> Option<(&'static str, bool)> {
    use keelson_api::apps::shared::{
        LIFECYCLE_STATE_NORMAL, LIFECYCLE_STATE_PREPARING_DELETE, LIFECYCLE_STATE_PREPARING_UPDATE,
        LIFECYCLE_STATE_UPDATED,
    };
    match state {
        LIFECYCLE_STATE_PREPARING_DELETE => Some((PRE_DELETE_HOOK_KEY, true)),
        LIFECYCLE_STATE_PREPARING_UPDATE => Some((PRE_UPDATE_HOOK_KEY, true)),
        LIFECYCLE_STATE_UPDATED | LIFECYCLE_STATE_NORMAL => Some((PRE_UPDATE_HOOK_KEY, false)),
        _ => None,
    }
}

/// The merge-patch fragment moving a pod to `state` at `now` and putting
/// the hook's labels and finalizers back on it (OpenKruise does this when
/// an `Updated` pod is to be updated again: the hook holds it anew).
pub fn state_patch_with_hook(state: &str, now: &str, hook: &LifecycleHook) -> Value {
    let mut patch = state_patch(state, now);
    for (k, v) in &hook.labels_handler {
        patch["metadata"]["labels"][k] = json!(v);
    }
    if !hook.finalizers_handler.is_empty() {
        // Finalizers merge in a strategic merge patch.
        patch["metadata"]["finalizers"] = json!(hook.finalizers_handler);
    }
    patch
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
        let again = state_patch_with_hook(
            "PreparingUpdate",
            "2026-01-01T00:00:00Z",
            &hook(&[("hold", "yes")], &["example.com/f"]),
        );
        assert_eq!(
            again["metadata"]["labels"],
            json!({LIFECYCLE_STATE_KEY: "PreparingUpdate", "hold": "yes"})
        );
        assert_eq!(again["metadata"]["finalizers"], json!(["example.com/f"]));
    }

    #[test]
    fn mark_pod_not_ready_holds_while_preparing() {
        assert_eq!(
            not_ready_policy("PreparingDelete"),
            Some((PRE_DELETE_HOOK_KEY, true))
        );
        assert_eq!(
            not_ready_policy("PreparingUpdate"),
            Some((PRE_UPDATE_HOOK_KEY, true))
        );
        assert_eq!(
            not_ready_policy("Updated"),
            Some((PRE_UPDATE_HOOK_KEY, false))
        );
        assert_eq!(
            not_ready_policy("Normal"),
            Some((PRE_UPDATE_HOOK_KEY, false))
        );
        assert_eq!(not_ready_policy("Updating"), None);
        assert_eq!(not_ready_holder("preDeleteHook").user_agent, "Lifecycle");
    }
}
