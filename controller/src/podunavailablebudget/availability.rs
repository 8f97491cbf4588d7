//! What a budget counts as an available pod, and which pod updates can
//! make one unavailable (OpenKruise's `pubcontrol` rules): available is
//! running and ready, without an `unavailable-pod.kruise.io/` label, and
//! with no update in flight (digest images running their digest, no
//! SidecarSet or workload in-place update unfinished).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use keelson_api::apps::v1alpha1::sidecarset::{
    ANNOTATION_SIDECARSET_INJECTED_LIST, SIDECAR_ENV_IS_INJECTED,
};
use keelson_api::policy::v1alpha1::podunavailablebudget::LABEL_PREFIX_UNAVAILABLE_POD;

use crate::workload::{inplace, pods};

/// Whether the labels mark the pod unavailable.
pub fn has_unavailable_label(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .iter()
        .flatten()
        .any(|(k, _)| k.starts_with(LABEL_PREFIX_UNAVAILABLE_POD))
}

/// Running, Ready, not being deleted, and not labelled unavailable.
pub fn is_ready(pod: &Pod) -> bool {
    pods::is_running_ready(pod)
        && pod.metadata.deletion_timestamp.is_none()
        && !has_unavailable_label(pod)
}

fn digest_of(image: &str) -> Option<&str> {
    image.split_once('@').map(|(_, d)| d)
}

/// Whether no update is in flight: every container named by digest runs
/// that digest; if some is not named by digest, no injected sidecar is
/// mid in-place update and the workload's in-place update (if recorded)
/// has taken effect.
pub fn is_consistent(pod: &Pod) -> bool {
    let containers = pod.spec.iter().flat_map(|s| &s.containers);
    let statuses: Vec<_> = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .collect();
    let mut all_digests = true;
    for c in containers {
        let Some(want) = c.image.as_deref().and_then(digest_of) else {
            all_digests = false;
            continue;
        };
        let runs = statuses
            .iter()
            .find(|s| s.name == c.name)
            .is_some_and(|s| digest_of(&s.image_id).unwrap_or(&s.image_id) == want);
        if !runs {
            return false;
        }
    }
    if all_digests {
        return true;
    }
    let injected = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .any(|c| env_value(c, SIDECAR_ENV_IS_INJECTED) == Some("true"));
    if injected {
        let sets = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_SIDECARSET_INJECTED_LIST))
            .map_or("", String::as_str);
        for set in sets.split(',').filter(|s| !s.is_empty()) {
            if !crate::sidecarset::status::is_consistent_for(set, pod) {
                return false;
            }
        }
    }
    match inplace::state(pod) {
        Some(state) => inplace::progress(pod, &state) == inplace::Progress::Done,
        None => true,
    }
}

/// What the budget counts as available.
pub fn is_available(pod: &Pod) -> bool {
    is_ready(pod) && is_consistent(pod)
}

fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// Whether going from `old` to `new` can make the pod unavailable: its
/// spec changes, or it gains an unavailable label.
pub fn may_disrupt(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec || (!has_unavailable_label(old) && has_unavailable_label(new))
}

fn spec_without_resources(pod: &Pod) -> Option<k8s_openapi::api::core::v1::PodSpec> {
    let mut spec = pod.spec.clone()?;
    for c in &mut spec.containers {
        c.resources = None;
    }
    Some(spec)
}

/// Kubernetes' static pods (created from files on the node).
fn is_static(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/config.source"))
        .is_some_and(|s| s != "api")
}

/// The pod's QoS class, from its containers' cpu and memory requests and
/// limits (as kubelet computes it).
pub fn qos(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let (mut any, mut guaranteed) = (false, true);
    for c in all {
        let r = c.resources.clone().unwrap_or_default();
        let req = r.requests.unwrap_or_default();
        let lim = r.limits.unwrap_or_default();
        for name in ["cpu", "memory"] {
            let (q, l) = (req.get(name), lim.get(name));
            if q.is_some() || l.is_some() {
                any = true;
            }
            match (q, l) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if q != l => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn changed_resources(a: &ResourceRequirements, b: &ResourceRequirements) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (x, y) in [(&a.requests, &b.requests), (&a.limits, &b.limits)] {
        let (x, y) = (x.clone().unwrap_or_default(), y.clone().unwrap_or_default());
        for k in x.keys().chain(y.keys()) {
            if x.get(k) != y.get(k) {
                names.insert(k.clone());
            }
        }
    }
    names
}

/// Whether `old` → `new` only resizes cpu or memory in place without a
/// container restart: same spec but resources, not a static pod, same QoS
/// class, every changed resource cpu or memory with a `NotRequired` (or
/// no) resize policy, and no unavailable label added.
pub fn resizes_in_place(old: &Pod, new: &Pod) -> bool {
    if !has_unavailable_label(old) && has_unavailable_label(new) {
        return false;
    }
    if spec_without_resources(old) != spec_without_resources(new) {
        return false;
    }
    if is_static(old) || is_static(new) || qos(old) != qos(new) {
        return false;
    }
    let (Some(o), Some(n)) = (&old.spec, &new.spec) else {
        return false;
    };
    if o.containers.len() != n.containers.len() {
        return false;
    }
    for c in &n.containers {
        let Some(before) = o.containers.iter().find(|x| x.name == c.name) else {
            return false;
        };
        let changed = changed_resources(
            &before.resources.clone().unwrap_or_default(),
            &c.resources.clone().unwrap_or_default(),
        );
        for r in changed {
            if r != "cpu" && r != "memory" {
                return false;
            }
            let policy = c
                .resize_policy
                .iter()
                .flatten()
                .find(|p| p.resource_name == r)
                .map(|p| p.restart_policy.as_str());
            if !matches!(policy, None | Some("") | Some("NotRequired")) {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn running(extra_labels: serde_json::Value, image: &str, image_id: &str) -> Pod {
        pod(json!({
            "metadata": {"name": "p", "labels": extra_labels},
            "spec": {"containers": [{"name": "app", "image": image}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "image": image, "imageID": image_id,
                    "ready": true, "restartCount": 0, "containerID": "containerd://1",
                    "state": {"running": {}}}]}
        }))
    }

    #[test]
    fn available_means_ready_unlabelled_and_on_its_digest() {
        assert!(is_available(&running(json!({}), "busybox:1", "sha256:aa")));
        assert!(!is_available(&running(
            json!({"unavailable-pod.kruise.io/drain": "true"}),
            "busybox:1",
            "sha256:aa"
        )));
        let d = "busybox@sha256:bb";
        assert!(is_available(&running(
            json!({}),
            d,
            "docker.io/library/busybox@sha256:bb"
        )));
        assert!(!is_available(&running(
            json!({}),
            d,
            "docker.io/library/busybox@sha256:aa"
        )));
        let mut p = running(json!({}), "busybox:1", "sha256:aa");
        p.status.as_mut().unwrap().phase = Some("Pending".into());
        assert!(!is_available(&p));
        let mut p = running(json!({}), "busybox:1", "sha256:aa");
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        assert!(!is_available(&p), "a pod being deleted is not available");
    }

    #[test]
    fn spec_changes_and_added_unavailable_labels_may_disrupt() {
        let a = running(json!({}), "busybox:1", "x");
        let b = running(json!({"other": "1"}), "busybox:1", "x");
        assert!(!may_disrupt(&a, &b), "a plain label is harmless");
        let c = running(
            json!({"unavailable-pod.kruise.io/x": "1"}),
            "busybox:1",
            "x",
        );
        assert!(may_disrupt(&a, &c));
        let d = running(json!({}), "busybox:2", "x");
        assert!(may_disrupt(&a, &d));
    }

    fn sized(cpu: &str, policy: Option<&str>) -> Pod {
        let mut c = json!({"name": "app", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}});
        if let Some(p) = policy {
            c["resizePolicy"] = json!([{"resourceName": "cpu", "restartPolicy": p}]);
        }
        pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [c]}}))
    }

    #[test]
    fn cpu_resize_without_restart_is_a_resize() {
        assert!(resizes_in_place(&sized("100m", None), &sized("200m", None)));
        assert!(resizes_in_place(
            &sized("100m", Some("NotRequired")),
            &sized("200m", Some("NotRequired"))
        ));
        assert!(!resizes_in_place(
            &sized("100m", Some("RestartContainer")),
            &sized("200m", Some("RestartContainer"))
        ));
        let mut other = sized("200m", None);
        other.spec.as_mut().unwrap().containers[0].image = Some("busybox:2".into());
        assert!(!resizes_in_place(&sized("100m", None), &other));
        assert_eq!(qos(&sized("1", None)), "Burstable");
        let g = pod(json!({"spec": {"containers": [{"name": "a", "resources": {
            "requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]}}));
        assert_eq!(qos(&g), "Guaranteed");
        assert_eq!(
            qos(&pod(json!({"spec": {"containers": [{"name": "a"}]}}))),
            "BestEffort"
        );
    }
}
