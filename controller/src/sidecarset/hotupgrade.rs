//! Hot upgrade (`upgradeStrategy.upgradeType: HotUpgrade`): a sidecar `X`
//! runs as `X-1` and `X-2`, one working, the other on the
//! `hotUpgradeEmptyImage`. An update puts the new image into the idle one
//! (the one on the empty image, else the not-ready one, else the one not
//! working), makes it the working one in
//! `kruise.io/sidecarset-working-hotupgrade-container` and moves the
//! `version.`/`versionalt.sidecarset.kruise.io/<container>` annotations
//! (the SidecarSet's resourceVersion) so the two processes can hand over;
//! once everything but the idle containers is consistent and ready, the
//! old one is reset to the empty image ("flip"), its version and its
//! partner's alt version back to "0". As OpenKruise does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use keelson_api::apps::v1alpha1::sidecarset as a1;
use keelson_api::apps::v1beta1::sidecarset::{SidecarContainer, SidecarSet};
use serde_json::{Value, json};

use super::inject::{
    ANNOTATION_WORKING_HOT_UPGRADE_CONTAINER, hot_upgrade_names, version_alt_annotation,
    version_annotation,
};
use super::status::{self, InPlaceState, last_status};

fn is_hot(sc: &SidecarContainer) -> bool {
    sc.upgrade_strategy.upgrade_type == a1::SIDECAR_CONTAINER_HOT_UPGRADE
}

fn container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .find(|c| c.name == name)
}

fn container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find(|s| s.name == name)
}

/// The pod's working-container map.
pub fn working_map(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_WORKING_HOT_UPGRADE_CONTAINER))
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// (working, idle) container of sidecar `name`.
pub fn pair(pod: &Pod, name: &str) -> (String, String) {
    let (one, two) = hot_upgrade_names(name);
    if working_map(pod).get(name) == Some(&one) {
        (one, two)
    } else {
        (two, one)
    }
}

/// (to upgrade, the other) for a hot sidecar, as upstream picks.
pub fn to_upgrade(sc: &SidecarContainer, pod: &Pod, set: &SidecarSet) -> (String, String) {
    let (one, two) = hot_upgrade_names(&sc.container.name);
    let empty = &sc.upgrade_strategy.hot_upgrade_empty_image;
    let image = |n: &str| {
        container(pod, n)
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    };
    if &image(&one) == empty {
        return (one, two);
    }
    if &image(&two) == empty {
        return (two, one);
    }
    let consistent = status::is_consistent(set, pod);
    let ready = |n: &str| container_status(pod, n).is_some_and(|s| s.ready) && consistent;
    match (ready(&one), ready(&two)) {
        (true, false) => (two, one),
        (false, true) => (one, two),
        _ => {
            let (work, idle) = pair(pod, &sc.container.name);
            (idle, work)
        }
    }
}

/// A hot sidecar's update: (container to change, annotations to set), or
/// `None` when the working container already runs the image.
pub fn upgrade(
    sc: &SidecarContainer,
    pod: &Pod,
    set: &SidecarSet,
    annotations: &mut BTreeMap<String, String>,
) -> Option<String> {
    let (target, other) = to_upgrade(sc, pod, set);
    let old = container(pod, &other).and_then(|c| c.image.clone());
    if old == sc.container.image {
        return None;
    }
    let mut working = working_map(pod);
    working.insert(sc.container.name.clone(), target.clone());
    annotations.insert(
        ANNOTATION_WORKING_HOT_UPGRADE_CONTAINER.into(),
        serde_json::to_string(&working).unwrap_or_default(),
    );
    let rv = set.metadata.resource_version.clone().unwrap_or_default();
    let other_version = annotations
        .get(&version_annotation(&other))
        .cloned()
        .unwrap_or_default();
    annotations.insert(version_annotation(&target), rv.clone());
    annotations.insert(version_alt_annotation(&target), other_version);
    annotations.insert(version_alt_annotation(&other), rv);
    Some(target)
}

/// Whether the pod needs its idle containers reset: some idle container is
/// not on the empty image, and every other container is consistent and
/// ready (or the pod is Ready).
pub fn needs_flip(set: &SidecarSet, pod: &Pod) -> bool {
    let idle: Vec<(String, &str)> = set
        .spec
        .containers
        .iter()
        .filter(|sc| is_hot(sc))
        .map(|sc| {
            (
                pair(pod, &sc.container.name).1,
                sc.upgrade_strategy.hot_upgrade_empty_image.as_str(),
            )
        })
        .collect();
    let upgrading = idle
        .iter()
        .any(|(n, empty)| container(pod, n).and_then(|c| c.image.as_deref()) != Some(*empty));
    if !upgrading || !status::is_consistent(set, pod) {
        return false;
    }
    status::is_running_ready(pod)
        || pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .filter(|s| !idle.iter().any(|(n, _)| n == &s.name))
            .all(|s| s.ready)
}

/// The flip as a strategic merge patch.
pub fn flip_patch(set: &SidecarSet, pod: &Pod, now: &str) -> Value {
    let name = set.metadata.name.clone().unwrap_or_default();
    let mut containers = vec![];
    let mut annotations = BTreeMap::new();
    let mut states = status::inplace_states(pod);
    let state = states.entry(name).or_insert_with(|| InPlaceState {
        revision: status::set_hash(set, a1::ANNOTATION_SIDECARSET_HASH),
        update_timestamp: Some(now.into()),
        last_container_statuses: BTreeMap::new(),
    });
    for sc in set.spec.containers.iter().filter(|sc| is_hot(sc)) {
        let (work, idle) = pair(pod, &sc.container.name);
        let empty = &sc.upgrade_strategy.hot_upgrade_empty_image;
        if container(pod, &idle).and_then(|c| c.image.as_ref()) == Some(empty) {
            continue;
        }
        containers.push(json!({"name": idle, "image": empty}));
        annotations.insert(version_annotation(&idle), "0".to_string());
        annotations.insert(version_alt_annotation(&work), "0".to_string());
        state
            .last_container_statuses
            .insert(idle.clone(), last_status(pod, &idle));
    }
    annotations.insert(
        a1::ANNOTATION_SIDECARSET_INPLACE_UPDATE_STATE.into(),
        serde_json::to_string(&states).unwrap_or_default(),
    );
    json!({"metadata": {"annotations": annotations}, "spec": {"containers": containers}})
}

/// Ready as the set counts it: the idle containers on the empty image too.
pub fn idle_on_empty(set: &SidecarSet, pod: &Pod) -> bool {
    set.spec
        .containers
        .iter()
        .filter(|sc| is_hot(sc))
        .all(|sc| {
            let idle = pair(pod, &sc.container.name).1;
            container(pod, &idle).and_then(|c| c.image.as_ref())
                == Some(&sc.upgrade_strategy.hot_upgrade_empty_image)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(image: &str) -> SidecarSet {
        let mut obj = json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "SidecarSet",
            "metadata": {"name": "s", "resourceVersion": "42"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "containers": [{"name": "mesh", "image": image,
                        "upgradeStrategy": {"upgradeType": "HotUpgrade", "hotUpgradeEmptyImage": "empty:1"}}]}});
        super::super::defaults::default_and_hash(&mut obj);
        serde_json::from_value(obj).unwrap()
    }

    fn running(pod: &mut Pod) {
        let statuses: Vec<Value> = pod
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| json!({"name": c.name, "image": c.image, "imageID": format!("id-{}", c.image.clone().unwrap()),
                "ready": true, "restartCount": 0, "containerID": format!("cid-{}-{}", c.name, c.image.clone().unwrap()),
                "state": {"running": {}}}))
            .collect();
        pod.status = Some(
            serde_json::from_value(json!({"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": statuses}))
            .unwrap(),
        );
    }

    #[test]
    fn an_update_goes_to_the_idle_container_then_the_old_one_is_flipped() {
        let old = set("mesh:1");
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}}))
        .unwrap();
        super::super::inject::inject(&mut pod, &[&old], "t", false).unwrap();
        running(&mut pod);
        assert_eq!(
            pair(&pod, "mesh"),
            ("mesh-1".to_string(), "mesh-2".to_string())
        );
        assert!(idle_on_empty(&old, &pod));

        let new = set("mesh:2");
        let patch = super::super::update::pod_patch(&new, &pod, "r", "t");
        assert_eq!(
            patch["spec"]["containers"],
            json!([{"name": "mesh-2", "image": "mesh:2"}])
        );
        let a = &patch["metadata"]["annotations"];
        assert_eq!(
            a[ANNOTATION_WORKING_HOT_UPGRADE_CONTAINER],
            r#"{"mesh":"mesh-2"}"#
        );
        assert_eq!(a["version.sidecarset.kruise.io/mesh-2"], "42");
        // versionalt of mesh-2 = mesh-1's version, "1" since injection (so
        // not in the patch, which carries changes only).
        assert!(a.get("versionalt.sidecarset.kruise.io/mesh-2").is_none());
        assert_eq!(a["versionalt.sidecarset.kruise.io/mesh-1"], "42");

        // Applied and restarted: mesh-2 runs mesh:2; mesh-1 still runs mesh:1.
        let mut v = serde_json::to_value(&pod).unwrap();
        json_patch::merge(&mut v, &json!({"metadata": patch["metadata"]}));
        let cs = v["spec"]["containers"].as_array_mut().unwrap();
        cs.iter_mut().find(|c| c["name"] == "mesh-2").unwrap()["image"] = json!("mesh:2");
        let mut updated: Pod = serde_json::from_value(v).unwrap();
        assert!(!status::is_consistent(&new, &updated));
        running(&mut updated);
        assert!(status::is_consistent(&new, &updated));
        assert!(!idle_on_empty(&new, &updated));
        assert!(needs_flip(&new, &updated));
        let flip = flip_patch(&new, &updated, "t");
        assert_eq!(
            flip["spec"]["containers"],
            json!([{"name": "mesh-1", "image": "empty:1"}])
        );
        assert_eq!(
            flip["metadata"]["annotations"]["version.sidecarset.kruise.io/mesh-1"],
            "0"
        );
        assert_eq!(
            flip["metadata"]["annotations"]["versionalt.sidecarset.kruise.io/mesh-2"],
            "0"
        );
    }
}
