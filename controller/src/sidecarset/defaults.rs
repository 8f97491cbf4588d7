//! SidecarSet defaulting, as OpenKruise's SidecarSet mutating webhook does
//! it before hashing: update strategy `RollingUpdate` with `maxUnavailable:
//! 1` and `partition: 0`; per container `podInjectPolicy`
//! (`BeforeAppContainer` for containers, `AfterAppContainer` for init
//! containers), `upgradeStrategy.upgradeType: ColdUpgrade`,
//! `shareVolumePolicy.type: disabled` and Kubernetes' container defaults
//! (pull policy by tag, termination message, port protocol, fieldRef
//! apiVersion, liveness/readiness probe and lifecycle httpGet defaults; no
//! startup probe defaults, as upstream); volume defaults;
//! `revisionHistoryLimit: 10`; `patchPolicy: Retain`; revision policy
//! `Always`. Then the two hash annotations.

use serde_json::{Map, Value, json};

use keelson_api::apps::v1alpha1::sidecarset as a1;

use super::hash;
use crate::workload::defaults::{container_with, default, volumes};

fn object<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let slot = m.entry(key).or_insert_with(|| json!({}));
    if slot.is_null() {
        *slot = json!({});
    }
    slot.as_object_mut()
}

fn sidecar(c: &mut Value, policy: &str) {
    let Some(m) = c.as_object_mut() else { return };
    default(m, "podInjectPolicy", json!(policy));
    if let Some(u) = object(m, "upgradeStrategy") {
        default(u, "upgradeType", json!(a1::SIDECAR_CONTAINER_COLD_UPGRADE));
    }
    if let Some(s) = object(m, "shareVolumePolicy") {
        default(s, "type", json!(a1::SHARE_VOLUME_POLICY_DISABLED));
    }
    for t in m
        .get_mut("transferEnv")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(f) = t
            .pointer_mut("/sourceContainerNameFrom/fieldRef")
            .and_then(Value::as_object_mut)
        {
            default(f, "apiVersion", json!("v1"));
        }
    }
    container_with(c, false, &["livenessProbe", "readinessProbe"]);
}

/// Defaults a SidecarSet `spec` in place.
pub fn default_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    if let Some(u) = object(m, "updateStrategy") {
        default(u, "type", json!(a1::UPDATE_STRATEGY_ROLLING_UPDATE));
        if u.get("maxUnavailable").is_none_or(Value::is_null) {
            u.insert("maxUnavailable".into(), json!(1));
        }
        if u.get("partition").is_none_or(Value::is_null) {
            u.insert("partition".into(), json!(0));
        }
    }
    for (key, policy) in [
        ("initContainers", a1::POD_INJECT_POLICY_AFTER_APP_CONTAINER),
        ("containers", a1::POD_INJECT_POLICY_BEFORE_APP_CONTAINER),
    ] {
        for c in m
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            sidecar(c, policy);
        }
    }
    if let Some(v) = m.get_mut("volumes") {
        volumes(v);
    }
    if m.get("revisionHistoryLimit").is_none_or(Value::is_null) {
        m.insert(
            "revisionHistoryLimit".into(),
            json!(a1::DEFAULT_REVISION_HISTORY_LIMIT),
        );
    }
    for p in m
        .get_mut("patchPodMetadata")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(p) = p.as_object_mut() {
            default(p, "patchPolicy", json!(a1::PATCH_POLICY_RETAIN));
        }
    }
    if let Some(r) = m
        .get_mut("injectionStrategy")
        .and_then(|i| i.get_mut("revision"))
        .and_then(Value::as_object_mut)
    {
        default(r, "policy", json!(a1::INJECT_REVISION_POLICY_ALWAYS));
    }
}

/// Defaults the SidecarSet `obj` (either version) and writes its hash
/// annotations.
pub fn default_and_hash(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else { return };
    let spec = m.entry("spec").or_insert_with(|| json!({}));
    default_spec(spec);
    let (full, without_image) = (
        hash::sidecarset_hash(spec),
        hash::sidecarset_hash_without_image(spec),
    );
    let Some(meta) = object(m, "metadata") else {
        return;
    };
    if let Some(a) = object(meta, "annotations") {
        a.insert(a1::ANNOTATION_SIDECARSET_HASH.into(), json!(full));
        a.insert(
            a1::ANNOTATION_SIDECARSET_HASH_WITHOUT_IMAGE.into(),
            json!(without_image),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_sidecarset_gets_upstream_defaults() {
        let mut obj = json!({
            "metadata": {"name": "s"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "containers": [{"name": "sidecar1", "image": "centos:6.7", "command": ["sleep", "999d"]}],
                "initContainers": [{"name": "init", "image": "busybox"}],
                "patchPodMetadata": [{"annotations": {"a": "b"}}],
                "injectionStrategy": {"revision": {"revisionName": "r"}},
                "volumes": [{"name": "v", "configMap": {"name": "c"}}],
            }
        });
        default_and_hash(&mut obj);
        let spec = &obj["spec"];
        assert_eq!(
            spec["updateStrategy"],
            json!({"type": "RollingUpdate", "maxUnavailable": 1, "partition": 0})
        );
        let c = &spec["containers"][0];
        assert_eq!(c["podInjectPolicy"], "BeforeAppContainer");
        assert_eq!(c["upgradeStrategy"], json!({"upgradeType": "ColdUpgrade"}));
        assert_eq!(c["shareVolumePolicy"], json!({"type": "disabled"}));
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(
            spec["initContainers"][0]["podInjectPolicy"],
            "AfterAppContainer"
        );
        assert_eq!(spec["initContainers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["patchPodMetadata"][0]["patchPolicy"], "Retain");
        assert_eq!(spec["injectionStrategy"]["revision"]["policy"], "Always");
        assert_eq!(spec["volumes"][0]["configMap"]["defaultMode"], 420);
        // The defaulted container is the Go vector's plain sidecar, whose
        // hash Go computed (see hash.rs).
        assert_eq!(
            obj["metadata"]["annotations"][a1::ANNOTATION_SIDECARSET_HASH],
            "2xd6x7272b8v26fc9fcc4zw47vwcvcv2fcd45d6xvb2w2cwdw9x4f74v495949z2"
        );
    }

    #[test]
    fn startup_probes_are_not_defaulted_but_readiness_probes_are() {
        let mut spec = json!({"containers": [{
            "name": "c", "image": "i:1",
            "readinessProbe": {"httpGet": {"port": 80}},
            "startupProbe": {"exec": {"command": ["true"]}},
        }]});
        default_spec(&mut spec);
        let c = &spec["containers"][0];
        assert_eq!(c["readinessProbe"]["periodSeconds"], 10);
        assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTP");
        assert!(c["startupProbe"].get("periodSeconds").is_none());
    }
}
