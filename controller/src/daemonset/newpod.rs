//! An Advanced DaemonSet's pod for one node, as upstream makes it: the
//! DaemonSet's current template with the revision label
//! (`controller-revision-hash` = the bare hash, plus
//! `pod-template-generation` when the DaemonSet carries the deprecated
//! template-generation annotation), the daemon tolerations, the
//! `InPlaceUpdateReady` readiness gate appended under `InPlaceIfPossible`
//! (without de-duplication, as upstream), and the pin to the node — a
//! required node affinity term on `metadata.name`, so the default
//! scheduler binds it. The name is generated (`<ds>-xxxxx`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodReadinessGate, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use keelson_api::apps::shared::IN_PLACE_UPDATE_READY;
use keelson_api::apps::v1beta1::daemonset::DaemonSet;

use super::placement::{add_daemon_tolerations, pin_to_node};
use crate::workload::revision::POD_REVISION_LABEL;

/// DaemonSet annotation (deprecated, from extensions/v1beta1): the
/// template generation, copied to pods as [`TEMPLATE_GENERATION_LABEL`].
pub const DEPRECATED_TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";
/// Pod label: the template generation it was made from.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// The spec the DaemonSet's pods get before pinning: the template's with
/// the daemon tolerations (what node eligibility is judged on).
pub fn daemon_spec(ds: &DaemonSet) -> PodSpec {
    let mut spec = ds.spec.template.spec.clone().unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    spec
}

/// The DaemonSet's template generation, if it carries the annotation.
pub fn template_generation(ds: &DaemonSet) -> Option<i64> {
    ds.metadata
        .annotations
        .as_ref()?
        .get(DEPRECATED_TEMPLATE_GENERATION)?
        .parse()
        .ok()
}

/// The pod for `node` of revision `hash`, owned by `owner`.
pub fn new_pod(
    ds: &DaemonSet,
    owner: &OwnerReference,
    hash: &str,
    node: &str,
    in_place: bool,
) -> Pod {
    let template = &ds.spec.template;
    let mut meta = template.metadata.clone().unwrap_or_default();
    let mut spec = daemon_spec(ds);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_REVISION_LABEL.into(), hash.into());
    if let Some(g) = template_generation(ds) {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.to_string());
    }
    if let Some(deps) = crate::cloneset::newpod::env_from_metadata(&spec.containers) {
        meta.annotations.get_or_insert_with(BTreeMap::new).insert(
            crate::cloneset::newpod::ENV_FROM_METADATA_ANNOTATION.into(),
            deps,
        );
    }
    if in_place {
        spec.readiness_gates
            .get_or_insert_with(Vec::new)
            .push(PodReadinessGate {
                condition_type: IN_PLACE_UPDATE_READY.into(),
            });
    }
    spec.affinity = Some(pin_to_node(spec.affinity.take(), node));
    let ds_name = ds.metadata.name.as_deref().unwrap_or("");
    let prefix: String = ds_name.chars().take(57).collect();
    Pod {
        metadata: ObjectMeta {
            name: None,
            generate_name: Some(format!("{prefix}-")),
            namespace: ds.metadata.namespace.clone(),
            owner_references: Some(vec![owner.clone()]),
            resource_version: None,
            uid: None,
            creation_timestamp: None,
            ..meta
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemonset::placement::target_node;
    use serde_json::json;

    #[test]
    fn pods_are_pinned_labelled_and_gated() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1beta1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "ns",
                "annotations": {DEPRECATED_TEMPLATE_GENERATION: "3"}},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                "template": {"metadata": {"labels": {"app": "a"}},
                    "spec": {"containers": [{"name": "main", "image": "img:1"}],
                        "readinessGates": [{"conditionType": IN_PLACE_UPDATE_READY}]}}}
        }))
        .unwrap();
        let owner = OwnerReference {
            api_version: "apps.kruise.io/v1beta1".into(),
            kind: "DaemonSet".into(),
            name: "agent".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let p = new_pod(&ds, &owner, "6d8f9", "node-a", true);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
        let l = p.metadata.labels.as_ref().unwrap();
        assert_eq!(l[POD_REVISION_LABEL], "6d8f9");
        assert_eq!(l[TEMPLATE_GENERATION_LABEL], "3");
        assert_eq!(l["app"], "a");
        let spec = p.spec.unwrap();
        assert_eq!(target_node(&spec).as_deref(), Some("node-a"));
        assert_eq!(spec.node_name, None, "bound by the scheduler");
        assert_eq!(spec.tolerations.unwrap().len(), 6);
        assert_eq!(
            spec.readiness_gates.unwrap().len(),
            2,
            "appended as upstream"
        );
    }
}
