//! A new CloneSet pod from a revision's template: named
//! `<cloneset>-<instance id>`, labelled with its revision, instance id and
//! lifecycle state, controlled by the CloneSet, with the
//! `InPlaceUpdateReady` readiness gate, and with the env-from-metadata map
//! the node agent needs to restart exactly the right containers in place.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, PodReadinessGate, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use keelson_api::apps::shared::{
    IN_PLACE_UPDATE_READY, LIFECYCLE_STATE_KEY, LIFECYCLE_STATE_PREPARING_NORMAL,
    LIFECYCLE_TIMESTAMP_KEY,
};
use keelson_api::apps::v1alpha1::cloneset::CLONE_SET_INSTANCE_ID;
use keelson_api::envmeta;
use serde_json::Value;

use super::plan::POD_TEMPLATE_HASH_LABEL;
use crate::workload::revision::{POD_REVISION_LABEL, RevisionError, short_hash};

/// Pod annotation the node agent reads at sandbox creation: per container,
/// env name → the metadata fieldPath it reads.
pub const ENV_FROM_METADATA_ANNOTATION: &str = "keelson.io/env-from-metadata";

/// The [`ENV_FROM_METADATA_ANNOTATION`] value for `containers`: JSON
/// `{container: {ENV: fieldPath}}` of the env vars that read pod labels or
/// annotations; `None` when no container has one.
pub fn env_from_metadata(containers: &[k8s_openapi::api::core::v1::Container]) -> Option<String> {
    let deps: BTreeMap<String, BTreeMap<String, String>> = containers
        .iter()
        .filter_map(|c| {
            let refs = envmeta::references(c);
            let envs: BTreeMap<String, String> = c
                .env
                .iter()
                .flatten()
                .filter(|e| refs.contains_key(&e.name))
                .filter_map(|e| {
                    Some((
                        e.name.clone(),
                        e.value_from
                            .as_ref()?
                            .field_ref
                            .as_ref()?
                            .field_path
                            .clone(),
                    ))
                })
                .collect();
            (!envs.is_empty()).then(|| (c.name.clone(), envs))
        })
        .collect();
    (!deps.is_empty()).then(|| serde_json::to_string(&deps).unwrap_or_default())
}

/// The characters Kubernetes' random names use.
const ID_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A fresh 5-character instance id not in `taken`.
pub fn instance_id(taken: &BTreeSet<String>) -> String {
    loop {
        let id: String = (0..5)
            .map(|_| ID_ALPHABET[fastrand::usize(..ID_ALPHABET.len())] as char)
            .collect();
        if !taken.contains(&id) {
            return id;
        }
    }
}

/// Whose pod it is and of which revision.
pub struct PodOf<'a> {
    pub cs_name: &'a str,
    pub namespace: &'a str,
    pub owner: &'a OwnerReference,
    pub revision: &'a str,
    /// The pod's `controller-revision-hash` value.
    pub revision_label: &'a str,
    /// The CloneSet's `volumeClaimTemplates`.
    pub claims: &'a [k8s_openapi::api::core::v1::PersistentVolumeClaim],
}

/// The claims of instance `id` (owner references are the caller's): the
/// templates' labels, the selector's and the instance id.
pub fn claims(
    cs: &keelson_api::apps::v1alpha1::cloneset::CloneSet,
    id: &str,
) -> Vec<k8s_openapi::api::core::v1::PersistentVolumeClaim> {
    let mut labels = cs.spec.selector.match_labels.clone().unwrap_or_default();
    labels.insert(CLONE_SET_INSTANCE_ID.into(), id.into());
    crate::workload::claims::claims(
        &cs.spec.volume_claim_templates,
        cs.metadata.name.as_deref().unwrap_or(""),
        cs.metadata.namespace.as_deref(),
        id,
        &labels,
    )
}

/// The pod for instance `id` of `of`, from the revision's `template`.
pub fn new_pod(of: &PodOf, template: &Value, id: &str, now: &str) -> Result<Pod, RevisionError> {
    let PodOf {
        cs_name,
        namespace,
        owner,
        revision,
        revision_label,
        claims: _,
    } = *of;
    let t: PodTemplateSpec =
        serde_json::from_value(template.clone()).map_err(RevisionError::Template)?;
    let mut meta = t.metadata.unwrap_or_default();
    let mut spec = t.spec.unwrap_or_default();
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_REVISION_LABEL.into(), revision_label.into());
    labels.insert(POD_TEMPLATE_HASH_LABEL.into(), short_hash(revision).into());
    labels.insert(CLONE_SET_INSTANCE_ID.into(), id.into());
    labels.insert(
        LIFECYCLE_STATE_KEY.into(),
        LIFECYCLE_STATE_PREPARING_NORMAL.into(),
    );
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(LIFECYCLE_TIMESTAMP_KEY.into(), now.into());
    if let Some(deps) = env_from_metadata(&spec.containers) {
        annotations.insert(ENV_FROM_METADATA_ANNOTATION.into(), deps);
    }
    meta.name = Some(format!("{cs_name}-{id}"));
    meta.generate_name = None;
    meta.namespace = Some(namespace.into());
    meta.owner_references = Some(vec![owner.clone()]);
    crate::workload::claims::mount(&mut spec, of.claims, cs_name, id);
    let gates = spec.readiness_gates.get_or_insert_with(Vec::new);
    if !gates
        .iter()
        .any(|g| g.condition_type == IN_PLACE_UPDATE_READY)
    {
        gates.push(PodReadinessGate {
            condition_type: IN_PLACE_UPDATE_READY.into(),
        });
    }
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
    fn pods_carry_revision_identity_gate_and_env_map() {
        let owner = OwnerReference {
            api_version: "apps.kruise.io/v1alpha1".into(),
            kind: "CloneSet".into(),
            name: "web".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
            "name": "main", "image": "nginx",
            "env": [{"name": "CFG", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['cfg']"}}}, {"name": "X", "value": "1"}]
        }]}});
        let of = PodOf {
            cs_name: "web",
            namespace: "ns",
            owner: &owner,
            revision: "web-abc12",
            revision_label: "web-abc12",
            claims: &[],
        };
        let p = new_pod(&of, &t, "x7k2q", "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("web-x7k2q"));
        let l = p.metadata.labels.as_ref().unwrap();
        assert_eq!(l[POD_REVISION_LABEL], "web-abc12");
        assert_eq!(l[POD_TEMPLATE_HASH_LABEL], "abc12");
        assert_eq!(l[CLONE_SET_INSTANCE_ID], "x7k2q");
        assert_eq!(l[LIFECYCLE_STATE_KEY], "PreparingNormal");
        assert_eq!(
            p.metadata.annotations.as_ref().unwrap()[ENV_FROM_METADATA_ANNOTATION],
            r#"{"main":{"CFG":"metadata.annotations['cfg']"}}"#
        );
        assert_eq!(
            p.spec.unwrap().readiness_gates.unwrap()[0].condition_type,
            IN_PLACE_UPDATE_READY
        );
        let taken = BTreeSet::from(["aaaaa".to_string()]);
        let id = instance_id(&taken);
        assert_eq!(id.len(), 5);
        assert!(id.bytes().all(|b| ID_ALPHABET.contains(&b)));
    }
}
