//! An Advanced StatefulSet's pod for one ordinal, from a revision's
//! template: name `<set>-<n>`, hostname and subdomain (the governing
//! Service), the StatefulSet labels (`statefulset.kubernetes.io/pod-name`,
//! `apps.kubernetes.io/pod-index` under `PodIndexLabel`), the revision
//! label, the lifecycle state, and one claim per `volumeClaimTemplates`
//! entry (`<template>-<set>-<n>`) mounted in place of the template's volume
//! of that name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use keelson_api::apps::shared::{
    LIFECYCLE_STATE_KEY, LIFECYCLE_STATE_NORMAL, LIFECYCLE_STATE_PREPARING_NORMAL,
    LIFECYCLE_TIMESTAMP_KEY,
};
use keelson_api::apps::v1beta1::statefulset::{
    RETAIN_PERSISTENT_VOLUME_CLAIM_RETENTION_POLICY_TYPE, StatefulSet,
};
use serde_json::Value;

use super::ordinals::pod_name;
use crate::workload::revision::{POD_REVISION_LABEL, RevisionError};

/// Label: the pod's name (Kubernetes' StatefulSet label).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Label: the pod's ordinal (`PodIndexLabel`).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The claim name of template `vct` for ordinal `n` of `set`.
pub fn claim_name(vct: &str, set: &str, n: i32) -> String {
    crate::workload::claims::claim_name(vct, set, &n.to_string())
}

/// The claims ordinal `n` needs, as they are created: the set's
/// selector's labels over the template's, in the set's namespace.
pub fn claims(sts: &StatefulSet, n: i32) -> Vec<PersistentVolumeClaim> {
    crate::workload::claims::claims(
        &sts.spec.volume_claim_templates,
        sts.metadata.name.as_deref().unwrap_or(""),
        sts.metadata.namespace.as_deref(),
        &n.to_string(),
        &sts.spec.selector.match_labels.clone().unwrap_or_default(),
    )
}

/// The stale claim blocking the creation of ordinal `n`'s pod, if any:
/// with `whenScaled: Delete` (default Retain), a claim of that ordinal
/// owned by a pod of the same name — an earlier pod, since the one to
/// create has no UID yet. Upstream waits for the garbage collector to
/// remove it rather than hand old data to the new pod.
pub fn stale_claim(
    sts: &StatefulSet,
    n: i32,
    existing: &BTreeMap<String, PersistentVolumeClaim>,
) -> Option<String> {
    let when_scaled = sts
        .spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_scaled.as_deref())
        .unwrap_or(RETAIN_PERSISTENT_VOLUME_CLAIM_RETENTION_POLICY_TYPE);
    if when_scaled == RETAIN_PERSISTENT_VOLUME_CLAIM_RETENTION_POLICY_TYPE {
        return None;
    }
    let pod = pod_name(sts.metadata.name.as_deref().unwrap_or(""), n);
    claims(sts, n).into_iter().find_map(|c| {
        let name = c.metadata.name?;
        let found = existing.get(&name)?;
        found
            .metadata
            .owner_references
            .as_ref()?
            .iter()
            .any(|o| o.name == pod)
            .then_some(name)
    })
}

/// The pod of ordinal `n` made from `template` of `revision`.
pub fn new_pod(
    sts: &StatefulSet,
    owner: &OwnerReference,
    template: &Value,
    revision: &str,
    n: i32,
    pod_index_label: bool,
    now: &str,
) -> Result<Pod, RevisionError> {
    let set = sts.metadata.name.as_deref().unwrap_or("");
    let name = pod_name(set, n);
    let t: PodTemplateSpec =
        serde_json::from_value(template.clone()).map_err(RevisionError::Template)?;
    let mut meta = t.metadata.unwrap_or_default();
    let mut spec = t.spec.unwrap_or_default();
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_REVISION_LABEL.into(), revision.into());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    if pod_index_label {
        labels.insert(POD_INDEX_LABEL.into(), n.to_string());
    }
    let pre_normal = sts
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_normal.as_ref())
        .is_some();
    labels.insert(
        LIFECYCLE_STATE_KEY.into(),
        if pre_normal {
            LIFECYCLE_STATE_PREPARING_NORMAL
        } else {
            LIFECYCLE_STATE_NORMAL
        }
        .into(),
    );
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(LIFECYCLE_TIMESTAMP_KEY.into(), now.into());
    meta.name = Some(name.clone());
    meta.generate_name = None;
    meta.namespace = sts.metadata.namespace.clone();
    meta.owner_references = Some(vec![owner.clone()]);
    spec.hostname = Some(name);
    if let Some(service) = sts.spec.service_name.as_ref().filter(|s| !s.is_empty()) {
        spec.subdomain = Some(service.clone());
    }
    crate::workload::claims::mount(
        &mut spec,
        &sts.spec.volume_claim_templates,
        set,
        &n.to_string(),
    );
    Ok(Pod {
        metadata: meta,
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_carry_identity_revision_and_claims() {
        let sts: StatefulSet = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1beta1", "kind": "StatefulSet",
            "metadata": {"name": "sample", "namespace": "ns"},
            "spec": {"serviceName": "svc", "selector": {"matchLabels": {"app": "s"}},
                "template": {"metadata": {"labels": {"app": "s"}}, "spec": {"containers": [{"name": "main", "image": "nginx"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"tier": "db"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
        }))
        .unwrap();
        let owner = OwnerReference {
            api_version: "apps.kruise.io/v1beta1".into(),
            kind: "StatefulSet".into(),
            name: "sample".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let t = serde_json::to_value(&sts.spec.template).unwrap();
        let p = new_pod(
            &sts,
            &owner,
            &t,
            "sample-abc",
            3,
            true,
            "2026-01-01T00:00:00Z",
        )
        .unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("sample-3"));
        let l = p.metadata.labels.as_ref().unwrap();
        assert_eq!(l[POD_REVISION_LABEL], "sample-abc");
        assert_eq!(l[POD_NAME_LABEL], "sample-3");
        assert_eq!(l[POD_INDEX_LABEL], "3");
        assert_eq!(l[LIFECYCLE_STATE_KEY], "Normal");
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("sample-3"));
        assert_eq!(spec.subdomain.as_deref(), Some("svc"));
        let v = &spec.volumes.unwrap()[0];
        assert_eq!(
            v.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-sample-3"
        );
        let c = &claims(&sts, 3)[0];
        assert_eq!(c.metadata.name.as_deref(), Some("data-sample-3"));
        let cl = c.metadata.labels.as_ref().unwrap();
        assert_eq!((cl["tier"].as_str(), cl["app"].as_str()), ("db", "s"));
    }

    #[test]
    fn a_claim_left_by_an_earlier_pod_of_the_name_is_stale_unless_retained() {
        let sts = |when_scaled: &str| -> StatefulSet {
            serde_json::from_value(json!({
                "apiVersion": "apps.kruise.io/v1beta1", "kind": "StatefulSet",
                "metadata": {"name": "db", "namespace": "ns"},
                "spec": {"selector": {"matchLabels": {"app": "db"}}, "template": {},
                    "persistentVolumeClaimRetentionPolicy": {"whenScaled": when_scaled},
                    "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}
            }))
            .unwrap()
        };
        let owned_by = |owner: &str| -> BTreeMap<String, PersistentVolumeClaim> {
            let c: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {
                "name": "data-db-1", "ownerReferences": [{"apiVersion": "v1", "kind": "Pod",
                    "name": owner, "uid": "old-uid"}]}}))
            .unwrap();
            BTreeMap::from([("data-db-1".to_string(), c)])
        };
        assert_eq!(
            stale_claim(&sts("Delete"), 1, &owned_by("db-1")).as_deref(),
            Some("data-db-1")
        );
        assert_eq!(stale_claim(&sts("Retain"), 1, &owned_by("db-1")), None);
        // Owned by something else (the set), or another ordinal's claim.
        assert_eq!(stale_claim(&sts("Delete"), 1, &owned_by("db")), None);
        assert_eq!(stale_claim(&sts("Delete"), 2, &owned_by("db-1")), None);
        assert_eq!(stale_claim(&sts("Delete"), 1, &BTreeMap::new()), None);
    }
}
