//! Per-instance PersistentVolumeClaims from a workload's
//! `volumeClaimTemplates`: claim `<template>-<workload>-<instance>` (the
//! instance is a StatefulSet ordinal or a CloneSet instance id) with the
//! template's labels, the selector's labels and any the workload adds,
//! and the pod's volume of the template's name pointing at it (replacing
//! a template volume of that name).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The claim name of template `vct` for `instance` of `workload`.
pub fn claim_name(vct: &str, workload: &str, instance: &str) -> String {
    format!("{vct}-{workload}-{instance}")
}

/// The claims `instance` needs, as they are created (owner references are
/// the caller's).
pub fn claims(
    templates: &[PersistentVolumeClaim],
    workload: &str,
    namespace: Option<&str>,
    instance: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<PersistentVolumeClaim> {
    templates
        .iter()
        .map(|t| {
            let vct = t.metadata.name.clone().unwrap_or_default();
            let mut all = t.metadata.labels.clone().unwrap_or_default();
            all.extend(labels.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&vct, workload, instance)),
                    namespace: namespace.map(String::from),
                    labels: Some(all),
                    annotations: t.metadata.annotations.clone(),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// Mounts the claims of `instance` in `spec`.
pub fn mount(
    spec: &mut PodSpec,
    templates: &[PersistentVolumeClaim],
    workload: &str,
    instance: &str,
) {
    if templates.is_empty() {
        return;
    }
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    for t in templates {
        let vct = t.metadata.name.clone().unwrap_or_default();
        volumes.retain(|v| v.name != vct);
        volumes.push(Volume {
            name: vct.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&vct, workload, instance),
                read_only: None,
            }),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_and_their_volumes() {
        let t: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "labels": {"tier": "db"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .unwrap();
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let c = &claims(
            std::slice::from_ref(&t),
            "web",
            Some("ns"),
            "x7k2q",
            &labels,
        )[0];
        assert_eq!(c.metadata.name.as_deref(), Some("data-web-x7k2q"));
        let l = c.metadata.labels.as_ref().unwrap();
        assert_eq!((l["tier"].as_str(), l["app"].as_str()), ("db", "web"));
        let mut spec: PodSpec = serde_json::from_value(json!({"containers": [],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "other", "emptyDir": {}}]}))
        .unwrap();
        mount(&mut spec, &[t], "web", "x7k2q");
        let v = spec.volumes.unwrap();
        assert_eq!(v.len(), 2);
        let d = v.iter().find(|v| v.name == "data").unwrap();
        assert_eq!(
            d.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-web-x7k2q"
        );
        assert!(
            d.empty_dir.is_none(),
            "the template's volume of that name is replaced"
        );
    }
}
