//! Which version of a SidecarSet a new pod gets under
//! `injectionStrategy.revision` (OpenKruise's `getSuitableRevisionSidecarSet`
//! on CREATE): without it, the latest. With it, the pinned
//! ControllerRevision (by `revisionName`, or the newest labelled with
//! `customVersion`) rebuilt as a SidecarSet — missing, the latest — and
//! then: `updateStrategy.paused` or policy `Always` → the pinned one;
//! policy `Partial` → the pinned one for pods the update `selector` does
//! not pick, else by chance, the pinned one with the probability of a
//! percentage `partition` (an integer or no partition: the latest).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keelson_api::apps::v1alpha1::sidecarset as a1;
use keelson_api::apps::v1beta1::sidecarset::SidecarSet;

/// The pinned revision among `revisions` (those of this SidecarSet).
pub fn pinned<'a>(
    set: &SidecarSet,
    revisions: &'a [ControllerRevision],
) -> Option<&'a ControllerRevision> {
    let pin = set.spec.injection_strategy.revision.as_ref()?;
    if let Some(name) = &pin.revision_name {
        return revisions
            .iter()
            .find(|r| r.metadata.name.as_ref() == Some(name));
    }
    let version = pin.custom_version.as_ref()?;
    revisions
        .iter()
        .filter(|r| {
            r.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(a1::LABEL_SIDECARSET_CUSTOM_VERSION))
                == Some(version)
        })
        .max_by_key(|r| r.revision)
}

/// `set` with the injected parts (and hashes) of `revision`.
pub fn from_revision(set: &SidecarSet, revision: &ControllerRevision) -> Option<SidecarSet> {
    let data = &revision.data.as_ref()?.0;
    let spec = data.get("spec")?;
    let mut out = set.clone();
    let part = |k: &str| {
        spec.get(k)
            .cloned()
            .unwrap_or(serde_json::Value::Array(vec![]))
    };
    out.spec.containers = serde_json::from_value(part("containers")).ok()?;
    out.spec.init_containers = serde_json::from_value(part("initContainers")).ok()?;
    out.spec.volumes = serde_json::from_value(part("volumes")).ok()?;
    out.spec.image_pull_secrets = serde_json::from_value(part("imagePullSecrets")).ok()?;
    out.spec.patch_pod_metadata = serde_json::from_value(part("patchPodMetadata")).ok()?;
    let annotations = out.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for key in [
        a1::ANNOTATION_SIDECARSET_HASH,
        a1::ANNOTATION_SIDECARSET_HASH_WITHOUT_IMAGE,
    ] {
        if let Some(v) = revision
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
        {
            annotations.insert(key.into(), v.clone());
        }
    }
    out.status
        .get_or_insert_with(Default::default)
        .latest_revision = revision.metadata.name.clone().unwrap_or_default();
    Some(out)
}

/// The version a pod being created gets; `chance` is a uniform draw in
/// [0, 1) (for `Partial`).
pub fn choose<'a>(
    set: &'a SidecarSet,
    pinned: Option<&'a SidecarSet>,
    pod: &Pod,
    chance: f64,
) -> &'a SidecarSet {
    let Some(pin) = set.spec.injection_strategy.revision.as_ref() else {
        return set;
    };
    let Some(old) = pinned else {
        return set;
    };
    let u = &set.spec.update_strategy;
    if u.paused || pin.policy != a1::INJECT_REVISION_POLICY_PARTIAL {
        return old;
    }
    if let Some(sel) = &u.selector {
        let empty = BTreeMap::new();
        if !crate::selector::matches(sel, pod.metadata.labels.as_ref().unwrap_or(&empty)) {
            return old;
        }
    }
    match &u.partition {
        Some(IntOrString::String(p)) => {
            let probability = p
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .map(|n| n / 100.0)
                .unwrap_or(0.0);
            if chance < probability { old } else { set }
        }
        _ => set,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(extra: serde_json::Value) -> SidecarSet {
        let mut v = json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "SidecarSet",
            "metadata": {"name": "s", "annotations": {a1::ANNOTATION_SIDECARSET_HASH: "new"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "containers": [{"name": "c", "image": "c:2"}]}});
        json_patch::merge(&mut v, &extra);
        serde_json::from_value(v).unwrap()
    }

    fn revision(name: &str, number: i64, version: Option<&str>, image: &str) -> ControllerRevision {
        serde_json::from_value(json!({
            "metadata": {"name": name,
                "labels": version.map(|v| json!({a1::LABEL_SIDECARSET_CUSTOM_VERSION: v})).unwrap_or(json!({})),
                "annotations": {a1::ANNOTATION_SIDECARSET_HASH: format!("h-{name}")}},
            "data": {"spec": {"containers": [{"name": "c", "image": image}], "$patch": "replace"}},
            "revision": number,
        }))
        .unwrap()
    }

    #[test]
    fn the_pin_by_name_or_newest_custom_version() {
        let revs = [
            revision("s-a", 1, Some("v1"), "c:0"),
            revision("s-b", 2, Some("v1"), "c:1"),
        ];
        let by_version =
            set(json!({"spec": {"injectionStrategy": {"revision": {"customVersion": "v1"}}}}));
        assert_eq!(
            pinned(&by_version, &revs).unwrap().metadata.name.as_deref(),
            Some("s-b")
        );
        let by_name =
            set(json!({"spec": {"injectionStrategy": {"revision": {"revisionName": "s-a"}}}}));
        let old = from_revision(&by_name, pinned(&by_name, &revs).unwrap()).unwrap();
        assert_eq!(
            old.spec.containers[0].container.image.as_deref(),
            Some("c:0")
        );
        assert_eq!(
            old.metadata.annotations.as_ref().unwrap()[a1::ANNOTATION_SIDECARSET_HASH],
            "h-s-a"
        );
        assert_eq!(old.status.as_ref().unwrap().latest_revision, "s-a");
    }

    #[test]
    fn policies() {
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}}})).unwrap();
        let always = set(
            json!({"spec": {"injectionStrategy": {"revision": {"revisionName": "r", "policy": "Always"}}}}),
        );
        let old = set(json!({"metadata": {"name": "old"}}));
        assert_eq!(
            choose(&always, Some(&old), &pod, 0.5)
                .metadata
                .name
                .as_deref(),
            Some("old")
        );
        assert_eq!(
            choose(&always, None, &pod, 0.5).metadata.name.as_deref(),
            Some("s")
        );
        let partial = set(json!({"spec": {
            "injectionStrategy": {"revision": {"revisionName": "r", "policy": "Partial"}},
            "updateStrategy": {"partition": "30%"}}}));
        assert_eq!(
            choose(&partial, Some(&old), &pod, 0.1)
                .metadata
                .name
                .as_deref(),
            Some("old")
        );
        assert_eq!(
            choose(&partial, Some(&old), &pod, 0.9)
                .metadata
                .name
                .as_deref(),
            Some("s")
        );
        let picky = set(json!({"spec": {
            "injectionStrategy": {"revision": {"revisionName": "r", "policy": "Partial"}},
            "updateStrategy": {"selector": {"matchLabels": {"canary": "true"}}}}}));
        assert_eq!(
            choose(&picky, Some(&old), &pod, 0.9)
                .metadata
                .name
                .as_deref(),
            Some("old")
        );
        let paused = set(json!({"spec": {
            "injectionStrategy": {"revision": {"revisionName": "r", "policy": "Partial"}},
            "updateStrategy": {"paused": true}}}));
        assert_eq!(
            choose(&paused, Some(&old), &pod, 0.9)
                .metadata
                .name
                .as_deref(),
            Some("old")
        );
    }
}
