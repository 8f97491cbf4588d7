//! The rolling in-place update of injected pods' sidecars
//! (`updateStrategy: RollingUpdate`), as OpenKruise plans it: nothing
//! under `NotUpdate` or `paused`; candidates are managed pods not yet
//! updated that the update `selector` picks and whose sidecars differ only
//! in image (the set's and the pod's hash without images agree; others are
//! "not upgradable" and only new pods get the change); `partition` of the
//! matched pods stay back; at most `maxUnavailable` of them are
//! unavailable at once, counting updated pods not ready or still updating,
//! while candidates that are not ready anyway take no budget. Not-ready
//! candidates go first, then `priorityStrategy`, then by name, and
//! `scatterStrategy` spreads its terms through that order
//! ([`crate::workload::order`], shared with CloneSet). Only the images of the sidecar
//! containers in `spec.containers` change (kubelet restarts just those);
//! native sidecars are not updated in place; hot-upgrade pairs go through
//! [`super::hotupgrade`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use keelson_api::apps::v1alpha1::sidecarset as a1;
use keelson_api::apps::v1beta1::sidecarset::SidecarSet;
use serde_json::{Value, json};

use super::hotupgrade;
use super::inject::{UpgradeSpec, parse_hashes, patch_pod_metadata};
use super::status::{self, InPlaceState};
use crate::selector;
use crate::workload::percent;

/// This round's decision.
#[derive(Debug, Default)]
pub struct Round {
    /// Pods to update now: (namespace, name, strategic merge patch).
    pub update: Vec<(String, String, Value)>,
    /// Candidates whose sidecars changed more than their image.
    pub not_upgradable: Vec<(String, String)>,
    /// Candidates left for later rounds (budget, partition).
    pub waiting: usize,
}

fn key(p: &Pod) -> (String, String) {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

/// The patch that moves `pod`'s sidecars to `set`'s images and records
/// the update.
pub fn pod_patch(set: &SidecarSet, pod: &Pod, revision: &str, now: &str) -> Value {
    let name = set.metadata.name.clone().unwrap_or_default();
    let mut containers = vec![];
    let mut last = BTreeMap::new();
    let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
    for sc in &set.spec.containers {
        if sc.upgrade_strategy.upgrade_type == a1::SIDECAR_CONTAINER_HOT_UPGRADE {
            if let Some(target) = hotupgrade::upgrade(sc, pod, set, &mut annotations) {
                containers.push(json!({"name": target, "image": sc.container.image}));
                last.insert(target.clone(), status::last_status(pod, &target));
            }
            continue;
        }
        let c = &sc.container;
        let current = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .find(|x| x.name == c.name);
        if current.is_some_and(|x| x.image != c.image) {
            containers.push(json!({"name": c.name, "image": c.image}));
            last.insert(c.name.clone(), status::last_status(pod, &c.name));
        }
    }
    // Overwrite and MergePatchJson patches apply on updates too.
    let mut reapplied = set.clone();
    reapplied
        .spec
        .patch_pod_metadata
        .retain(|p| p.patch_policy != a1::PATCH_POLICY_RETAIN && !p.patch_policy.is_empty());
    let _ = patch_pod_metadata(&mut annotations, &reapplied);
    let list: Vec<String> = {
        let mut l: Vec<String> = set
            .spec
            .containers
            .iter()
            .map(|c| c.container.name.clone())
            .chain(
                set.spec
                    .init_containers
                    .iter()
                    .filter(|c| c.container.restart_policy.as_deref() == Some("Always"))
                    .map(|c| c.container.name.clone()),
            )
            .collect();
        l.sort();
        l
    };
    let entry = |key: &str, hash: String, revision: &str| {
        let mut m = parse_hashes(pod, key).unwrap_or_default();
        m.insert(
            name.clone(),
            UpgradeSpec {
                update_timestamp: Some(now.into()),
                hash,
                sidecar_set_name: name.clone(),
                sidecar_list: Some(list.clone()),
                controller_revision: revision.into(),
            },
        );
        serde_json::to_string(&m).unwrap_or_default()
    };
    annotations.insert(
        a1::ANNOTATION_SIDECARSET_HASH.into(),
        entry(
            a1::ANNOTATION_SIDECARSET_HASH,
            status::set_hash(set, a1::ANNOTATION_SIDECARSET_HASH),
            revision,
        ),
    );
    annotations.insert(
        a1::ANNOTATION_SIDECARSET_HASH_WITHOUT_IMAGE.into(),
        entry(
            a1::ANNOTATION_SIDECARSET_HASH_WITHOUT_IMAGE,
            status::set_hash(set, a1::ANNOTATION_SIDECARSET_HASH_WITHOUT_IMAGE),
            "",
        ),
    );
    let mut states = status::inplace_states(pod);
    states.insert(
        name.clone(),
        InPlaceState {
            revision: revision.into(),
            update_timestamp: Some(now.into()),
            last_container_statuses: last,
        },
    );
    annotations.insert(
        a1::ANNOTATION_SIDECARSET_INPLACE_UPDATE_STATE.into(),
        serde_json::to_string(&states).unwrap_or_default(),
    );
    let before = pod.metadata.annotations.clone().unwrap_or_default();
    let changed: BTreeMap<&String, &String> = annotations
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .collect();
    let mut patch = json!({"metadata": {"annotations": changed}});
    if !containers.is_empty() {
        patch["spec"] = json!({"containers": containers});
    }
    patch
}

/// Plans this round over the managed pods.
pub fn plan(set: &SidecarSet, managed: &[&Pod], revision: &str, now: &str) -> Round {
    let u = &set.spec.update_strategy;
    let mut round = Round::default();
    if u.type_ == a1::UPDATE_STRATEGY_NOT_UPDATE || u.paused {
        return round;
    }
    let total = managed.len() as i32;
    let without_image = status::set_hash(set, a1::ANNOTATION_SIDECARSET_HASH_WITHOUT_IMAGE);
    let name = set.metadata.name.as_deref().unwrap_or("");
    let mut unavailable = 0;
    let mut candidates = vec![];
    for pod in managed {
        let updated = status::is_updated(set, pod);
        let consistent = status::is_consistent(set, pod);
        let ready = status::is_running_ready(pod);
        if updated {
            if !(consistent && ready) {
                unavailable += 1;
            }
            continue;
        }
        if let Some(sel) = &u.selector {
            let empty = BTreeMap::new();
            if !selector::matches(sel, pod.metadata.labels.as_ref().unwrap_or(&empty)) {
                continue;
            }
        }
        let pod_without_image = parse_hashes(pod, a1::ANNOTATION_SIDECARSET_HASH_WITHOUT_IMAGE)
            .ok()
            .and_then(|m| m.get(name).map(|s| s.hash.clone()));
        if pod_without_image.is_some_and(|h| h != without_image) {
            round.not_upgradable.push(key(pod));
            continue;
        }
        if !consistent {
            // A previous update of another revision is still in flight.
            unavailable += 1;
            continue;
        }
        candidates.push((*pod, ready));
    }
    // Not-ready first, then the priority strategy, then by name; then the
    // scatter strategy spreads its terms.
    let ps = u.priority_strategy.as_ref();
    candidates
        .sort_by_key(|(p, ready)| (*ready, crate::workload::order::priority_key(ps, p), key(p)));
    let readiness: BTreeMap<(String, String), bool> =
        candidates.iter().map(|(p, r)| (key(p), *r)).collect();
    let mut ordered: Vec<&Pod> = candidates.iter().map(|(p, _)| *p).collect();
    crate::workload::order::scatter(&u.scatter_strategy, &mut ordered, |_| false);
    let candidates: Vec<(&Pod, bool)> = ordered
        .into_iter()
        .map(|p| (p, readiness.get(&key(p)).copied().unwrap_or(true)))
        .collect();
    let partition = u
        .partition
        .as_ref()
        .map(|p| percent::scaled(p, total, true).unwrap_or(0))
        .unwrap_or(0)
        .max(0) as usize;
    let take = candidates.len().saturating_sub(partition);
    let max_unavailable = u
        .max_unavailable
        .as_ref()
        .map(|m| percent::scaled(m, total, true).unwrap_or(1))
        .unwrap_or(1)
        .max(1);
    let mut budget = max_unavailable - unavailable;
    for (pod, ready) in candidates.iter().take(take) {
        let (pod, ready) = (*pod, *ready);
        if ready {
            if budget <= 0 {
                break;
            }
            budget -= 1;
        }
        let (ns, n) = key(pod);
        round
            .update
            .push((ns, n, pod_patch(set, pod, revision, now)));
    }
    round.waiting = candidates.len() - round.update.len();
    round
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(image: &str, strategy: Value) -> SidecarSet {
        let mut obj = json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "SidecarSet",
            "metadata": {"name": "s"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "containers": [{"name": "log", "image": image}],
                     "updateStrategy": strategy}});
        super::super::defaults::default_and_hash(&mut obj);
        serde_json::from_value(obj).unwrap()
    }

    /// A pod injected with `injected`, running `running` (ready or not).
    fn pod(name: &str, injected: &SidecarSet, ready: bool) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        }))
        .unwrap();
        super::super::inject::inject(&mut p, &[injected], "t", false).unwrap();
        let image = p.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap();
        p.status = Some(
            serde_json::from_value(json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
                "containerStatuses": [
                    {"name": "log", "image": image, "imageID": "id1", "ready": ready, "restartCount": 0,
                     "containerID": format!("containerd://{name}-log"), "state": {"running": {}}},
                    {"name": "app", "image": "app:1", "imageID": "a", "ready": ready, "restartCount": 0,
                     "state": {"running": {}}},
                ],
            }))
            .unwrap(),
        );
        p
    }

    #[test]
    fn max_unavailable_and_partition_bound_a_round() {
        let old = set("log:1", json!({}));
        let new = set("log:2", json!({"maxUnavailable": 2, "partition": 1}));
        let pods: Vec<Pod> = (0..5).map(|i| pod(&format!("p{i}"), &old, true)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let r = plan(&new, &refs, "s-rev", "t");
        let names: Vec<&str> = r.update.iter().map(|u| u.1.as_str()).collect();
        assert_eq!(names, ["p0", "p1"]);
        assert_eq!(r.waiting, 3);
        let patch = &r.update[0].2;
        assert_eq!(
            patch["spec"]["containers"],
            json!([{"name": "log", "image": "log:2"}])
        );
        let state: Value = serde_json::from_str(
            patch["metadata"]["annotations"][a1::ANNOTATION_SIDECARSET_INPLACE_UPDATE_STATE]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            state["s"]["lastContainerStatuses"]["log"]["containerID"],
            "containerd://p0-log"
        );
        assert_eq!(state["s"]["revision"], "s-rev");
    }

    #[test]
    fn in_flight_updates_use_the_budget_and_not_ready_candidates_do_not() {
        let old = set("log:1", json!({}));
        let new = set("log:2", json!({}));
        let mut pods: Vec<Pod> = (0..3)
            .map(|i| pod(&format!("p{i}"), &old, i != 2))
            .collect();
        // p0 was updated and its sidecar restarts: one unavailable.
        let patch = pod_patch(&new, &pods[0], "r", "t");
        let mut v = serde_json::to_value(&pods[0]).unwrap();
        json_patch::merge(&mut v, &json!({"metadata": patch["metadata"]}));
        v["spec"]["containers"][0]["image"] = json!("log:2");
        pods[0] = serde_json::from_value(v).unwrap();
        assert!(status::is_updated(&new, &pods[0]));
        assert!(!status::is_consistent(&new, &pods[0]));
        let refs: Vec<&Pod> = pods.iter().collect();
        let r = plan(&new, &refs, "r", "t");
        // Budget 1 is used by p0; not-ready p2 goes anyway.
        let names: Vec<&str> = r.update.iter().map(|u| u.1.as_str()).collect();
        assert_eq!(names, ["p2"]);
        let c = status::counters(&new, &refs);
        assert_eq!(
            (
                c.matched_pods,
                c.updated_pods,
                c.ready_pods,
                c.updated_ready_pods
            ),
            (3, 1, 1, 0)
        );
    }

    #[test]
    fn the_priority_strategy_orders_candidates() {
        let old = set("log:1", json!({}));
        let new = set(
            "log:2",
            json!({"priorityStrategy": {"weightPriority": [
                {"weight": 50, "matchSelector": {"matchLabels": {"tier": "canary"}}}]}}),
        );
        let mut pods: Vec<Pod> = (0..3).map(|i| pod(&format!("p{i}"), &old, true)).collect();
        pods[2]
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("tier".into(), "canary".into());
        let refs: Vec<&Pod> = pods.iter().collect();
        let r = plan(&new, &refs, "r", "t");
        assert_eq!(r.update[0].1, "p2", "the weighted pod goes first");
    }

    #[test]
    fn a_change_beyond_the_image_is_not_upgradable_and_not_update_does_nothing() {
        let old = set("log:1", json!({}));
        let mut obj = serde_json::to_value(set("log:2", json!({}))).unwrap();
        obj["spec"]["containers"][0]["command"] = json!(["other"]);
        obj["metadata"]["annotations"] = json!({});
        super::super::defaults::default_and_hash(&mut obj);
        let changed: SidecarSet = serde_json::from_value(obj).unwrap();
        let p = pod("p0", &old, true);
        let r = plan(&changed, &[&p], "r", "t");
        assert!(r.update.is_empty());
        assert_eq!(r.not_upgradable, [("ns".to_string(), "p0".to_string())]);
        let frozen = set("log:2", json!({"type": "NotUpdate"}));
        assert!(plan(&frozen, &[&p], "r", "t").update.is_empty());
    }
}
