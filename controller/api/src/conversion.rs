//! Conversion between the served versions of a kind, as the CRD conversion
//! webhook answers it: objects in and out as JSON, so fields the types do
//! not model survive (the API server prunes to the schema anyway).
//!
//! SidecarSet v1alpha1 ⇄ v1beta1 follows OpenKruise v1.9: up, a non-empty
//! `spec.namespace` becomes `namespaceSelector.matchLabels
//! {kubernetes.io/metadata.name: <ns>}` (it wins over a namespaceSelector)
//! and the `apps.kruise.io/sidecarset-custom-version` label becomes
//! `spec.customVersion` (the label goes); down, the reverse, except that
//! the namespace stays a selector (v1alpha1 has `namespaceSelector` too).
//!
//! Advanced DaemonSet v1alpha1 ⇄ v1beta1 follows OpenKruise v1.9's
//! `daemonset_conversion.go`: up, the deprecated `Surging` rolling update
//! type becomes `Standard`, the `daemonset.kruise.io/progressive-create-pod:
//! "true"` annotation becomes `spec.scaleStrategy.partitionedScaling: true`
//! (the annotation stays, as upstream copies the metadata), and
//! `status.daemonSetHash` becomes `status.updateRevision`; down,
//! `partitionedScaling: true` sets the annotation, `scaleStrategy` goes and
//! `updateRevision` becomes `daemonSetHash`.
//!
//! ImagePullJob and ImageListPullJob have the same fields in both
//! versions: only `apiVersion` changes. NodeImage too, except that a v1beta1
//! pull secret reference may carry `mode`, which v1alpha1 lacks: down, it
//! goes (upstream copies only namespace and name).

use serde_json::{Map, Value, json};

use crate::apps::v1alpha1::daemonset::{
    DEPRECATED_SURGING_ROLLING_UPDATE_TYPE, STANDARD_ROLLING_UPDATE_TYPE,
};
use crate::apps::v1alpha1::sidecarset::LABEL_SIDECARSET_CUSTOM_VERSION;
use crate::apps::v1beta1::daemonset::PROGRESSIVE_CREATE_POD_ANNOTATION;

/// The group every converted kind belongs to.
pub const GROUP: &str = "apps.kruise.io";
/// `apps.kruise.io/v1alpha1`.
pub const V1ALPHA1: &str = "apps.kruise.io/v1alpha1";
/// `apps.kruise.io/v1beta1`, the version these kinds are stored in.
pub const V1BETA1: &str = "apps.kruise.io/v1beta1";

/// The kinds served as v1alpha1 and v1beta1 through [`convert`] (their
/// CRDs name the conversion webhook).
pub const CONVERTED_KINDS: [&str; 5] = [
    "SidecarSet",
    "DaemonSet",
    "ImagePullJob",
    "ImageListPullJob",
    "NodeImage",
];

/// The namespace label every namespace carries with its own name.
pub const LABEL_METADATA_NAME: &str = "kubernetes.io/metadata.name";

/// Why an object could not be converted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConversionError {
    #[error("object has no apiVersion or kind")]
    NoType,
    #[error("object is not a JSON object")]
    NotAnObject,
    #[error("no conversion of {kind} from {from} to {to}")]
    Unsupported {
        kind: String,
        from: String,
        to: String,
    },
}

/// `obj` converted to `desired` (`group/version`). An object already in
/// that version is returned as is.
pub fn convert(mut obj: Value, desired: &str) -> Result<Value, ConversionError> {
    let from = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(ConversionError::NoType)?
        .to_string();
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(ConversionError::NoType)?
        .to_string();
    if from == desired {
        return Ok(obj);
    }
    let m = obj.as_object_mut().ok_or(ConversionError::NotAnObject)?;
    match (kind.as_str(), from.as_str(), desired) {
        ("SidecarSet", "apps.kruise.io/v1alpha1", "apps.kruise.io/v1beta1") => {
            sidecarset_up(m);
        }
        ("SidecarSet", "apps.kruise.io/v1beta1", "apps.kruise.io/v1alpha1") => {
            sidecarset_down(m);
        }
        ("DaemonSet", V1ALPHA1, V1BETA1) => daemonset_up(m),
        ("DaemonSet", V1BETA1, V1ALPHA1) => daemonset_down(m),
        ("ImagePullJob" | "ImageListPullJob" | "NodeImage", V1ALPHA1, V1BETA1) => {}
        ("ImagePullJob" | "ImageListPullJob", V1BETA1, V1ALPHA1) => {}
        ("NodeImage", V1BETA1, V1ALPHA1) => nodeimage_down(m),
        _ => {
            return Err(ConversionError::Unsupported {
                kind,
                from,
                to: desired.into(),
            });
        }
    }
    m.insert("apiVersion".into(), Value::String(desired.into()));
    Ok(obj)
}

fn object<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = m.entry(key).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    match slot {
        Value::Object(o) => o,
        _ => unreachable!("made an object above"),
    }
}

fn sidecarset_up(m: &mut Map<String, Value>) {
    let custom = m
        .get_mut("metadata")
        .and_then(|md| md.get_mut("labels"))
        .and_then(Value::as_object_mut)
        .and_then(|labels| labels.remove(LABEL_SIDECARSET_CUSTOM_VERSION));
    let spec = object(m, "spec");
    let namespace = spec.remove("namespace");
    if let Some(ns) = namespace
        .as_ref()
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        spec.insert(
            "namespaceSelector".into(),
            json!({"matchLabels": {LABEL_METADATA_NAME: ns}}),
        );
    }
    if let Some(v) = custom.filter(|v| v.as_str().is_some_and(|s| !s.is_empty())) {
        spec.insert("customVersion".into(), v);
    }
}

fn sidecarset_down(m: &mut Map<String, Value>) {
    let custom = m
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .and_then(|spec| spec.remove("customVersion"))
        .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()));
    if let Some(v) = custom {
        let md = object(m, "metadata");
        object(md, "labels").insert(LABEL_SIDECARSET_CUSTOM_VERSION.into(), v);
    }
}

/// `m[a][b]…` as an object, if every step is one.
fn at<'a>(m: &'a mut Map<String, Value>, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    path.iter()
        .try_fold(m, |m, k| m.get_mut(*k).and_then(Value::as_object_mut))
}

/// Moves `status[from]` to `status[to]` (an empty or absent value goes).
fn rename_status(m: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(status) = at(m, &["status"]) {
        let v = status.remove(from);
        status.remove(to);
        if let Some(v) = v.filter(|v| v.as_str().is_some_and(|s| !s.is_empty())) {
            status.insert(to.into(), v);
        }
    }
}

fn daemonset_up(m: &mut Map<String, Value>) {
    let progressive = m
        .get("metadata")
        .and_then(|md| md.get("annotations"))
        .and_then(|a| a.get(PROGRESSIVE_CREATE_POD_ANNOTATION))
        .and_then(Value::as_str)
        == Some("true");
    let spec = object(m, "spec");
    if let Some(ru) = at(spec, &["updateStrategy", "rollingUpdate"])
        && ru.get("rollingUpdateType").and_then(Value::as_str)
            == Some(DEPRECATED_SURGING_ROLLING_UPDATE_TYPE)
    {
        ru.insert(
            "rollingUpdateType".into(),
            Value::String(STANDARD_ROLLING_UPDATE_TYPE.into()),
        );
    }
    // v1alpha1 has no scaleStrategy: only the annotation says it.
    spec.remove("scaleStrategy");
    if progressive {
        spec.insert("scaleStrategy".into(), json!({"partitionedScaling": true}));
    }
    rename_status(m, "daemonSetHash", "updateRevision");
}

fn daemonset_down(m: &mut Map<String, Value>) {
    let partitioned = m
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .and_then(|spec| spec.remove("scaleStrategy"))
        .and_then(|s| s.get("partitionedScaling").and_then(Value::as_bool))
        == Some(true);
    if partitioned {
        let md = object(m, "metadata");
        object(md, "annotations").insert(
            PROGRESSIVE_CREATE_POD_ANNOTATION.into(),
            Value::String("true".into()),
        );
    }
    rename_status(m, "updateRevision", "daemonSetHash");
}

fn nodeimage_down(m: &mut Map<String, Value>) {
    let Some(images) = at(m, &["spec", "images"]) else {
        return;
    };
    for image in images.values_mut() {
        let secrets = image
            .get_mut("pullSecrets")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten();
        for secret in secrets.filter_map(Value::as_object_mut) {
            secret.remove("mode");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alpha() -> Value {
        json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "SidecarSet",
            "metadata": {"name": "s", "labels": {"team": "a", LABEL_SIDECARSET_CUSTOM_VERSION: "v2"}},
            "spec": {
                "namespace": "shop",
                "namespaceSelector": {"matchLabels": {"env": "prod"}},
                "selector": {"matchLabels": {"app": "web"}},
                "containers": [{"name": "c", "image": "i", "unmodelled": 1}],
            },
            "status": {"matchedPods": 3, "updatedPods": 1, "readyPods": 2},
        })
    }

    #[test]
    fn up_moves_namespace_and_custom_version() {
        let b = convert(alpha(), "apps.kruise.io/v1beta1").unwrap();
        assert_eq!(b["apiVersion"], "apps.kruise.io/v1beta1");
        assert_eq!(
            b["spec"]["namespaceSelector"],
            json!({"matchLabels": {LABEL_METADATA_NAME: "shop"}})
        );
        assert!(b["spec"].get("namespace").is_none());
        assert_eq!(b["spec"]["customVersion"], "v2");
        assert_eq!(b["metadata"]["labels"], json!({"team": "a"}));
        assert_eq!(b["spec"]["containers"][0]["unmodelled"], 1);
        assert_eq!(b["status"]["matchedPods"], 3);
    }

    #[test]
    fn up_keeps_a_namespace_selector_without_namespace() {
        let mut a = alpha();
        a["spec"].as_object_mut().unwrap().remove("namespace");
        let b = convert(a, "apps.kruise.io/v1beta1").unwrap();
        assert_eq!(
            b["spec"]["namespaceSelector"],
            json!({"matchLabels": {"env": "prod"}})
        );
    }

    #[test]
    fn down_and_up_again_round_trip_the_v1beta1_object() {
        let b = convert(alpha(), "apps.kruise.io/v1beta1").unwrap();
        let a = convert(b.clone(), "apps.kruise.io/v1alpha1").unwrap();
        assert_eq!(
            a["metadata"]["labels"][LABEL_SIDECARSET_CUSTOM_VERSION],
            "v2"
        );
        assert!(a["spec"].get("customVersion").is_none());
        assert_eq!(convert(a, "apps.kruise.io/v1beta1").unwrap(), b);
    }

    #[test]
    fn same_version_is_untouched_and_unknown_pairs_are_refused() {
        assert_eq!(
            convert(alpha(), "apps.kruise.io/v1alpha1").unwrap(),
            alpha()
        );
        let err = convert(alpha(), "apps.kruise.io/v2").unwrap_err();
        assert!(matches!(err, ConversionError::Unsupported { .. }), "{err}");
        assert_eq!(
            convert(json!({"kind": "X"}), "v1"),
            Err(ConversionError::NoType)
        );
    }

    fn ads_alpha() -> Value {
        json!({
            "apiVersion": V1ALPHA1,
            "kind": "DaemonSet",
            "metadata": {"name": "d", "namespace": "n", "annotations": {
                PROGRESSIVE_CREATE_POD_ANNOTATION: "true", "team": "a"}},
            "spec": {
                "selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {
                    "rollingUpdateType": "Surging", "maxSurge": 1, "maxUnavailable": 0,
                    "partition": "20%", "paused": true,
                    "selector": {"matchLabels": {"pool": "canary"}}}},
                "minReadySeconds": 5,
                "burstReplicas": "50%",
                "revisionHistoryLimit": 3,
                "lifecycle": {"preDelete": {"labelsHandler": {"drain": "true"}}},
            },
            "status": {
                "currentNumberScheduled": 3, "numberMisscheduled": 1, "desiredNumberScheduled": 4,
                "numberReady": 2, "observedGeneration": 7, "updatedNumberScheduled": 1,
                "numberAvailable": 2, "numberUnavailable": 2, "collisionCount": 1,
                "conditions": [{"type": "Unavailable", "status": "False"}],
                "daemonSetHash": "abc123",
            },
        })
    }

    #[test]
    fn daemonset_up_is_upstreams_convert_to() {
        use crate::apps::v1beta1::daemonset::DaemonSet;
        let b = convert(ads_alpha(), V1BETA1).unwrap();
        let ds: DaemonSet = serde_json::from_value(b.clone()).unwrap();
        assert!(ds.partitioned_scaling());
        assert_eq!(
            ds.metadata.annotations.as_ref().unwrap()[PROGRESSIVE_CREATE_POD_ANNOTATION],
            "true",
            "the annotation stays (upstream copies the metadata)"
        );
        let ru = ds.spec.update_strategy.rolling_update.as_ref().unwrap();
        assert_eq!(ru.rolling_update_type.as_deref(), Some("Standard"));
        let a = ads_alpha();
        // Every other field is carried as it was.
        for path in [
            "/spec/selector",
            "/spec/template",
            "/spec/minReadySeconds",
            "/spec/burstReplicas",
            "/spec/revisionHistoryLimit",
            "/spec/lifecycle",
            "/spec/updateStrategy/type",
            "/spec/updateStrategy/rollingUpdate/maxSurge",
            "/spec/updateStrategy/rollingUpdate/maxUnavailable",
            "/spec/updateStrategy/rollingUpdate/partition",
            "/spec/updateStrategy/rollingUpdate/paused",
            "/spec/updateStrategy/rollingUpdate/selector",
            "/metadata/annotations/team",
        ] {
            assert_eq!(b.pointer(path), a.pointer(path), "{path}");
        }
        let st = ds.status.as_ref().unwrap();
        assert_eq!(st.update_revision.as_deref(), Some("abc123"));
        assert!(b["status"].get("daemonSetHash").is_none());
        for field in [
            "currentNumberScheduled",
            "numberMisscheduled",
            "desiredNumberScheduled",
            "numberReady",
            "observedGeneration",
            "updatedNumberScheduled",
            "numberAvailable",
            "numberUnavailable",
            "collisionCount",
            "conditions",
        ] {
            assert_eq!(b["status"][field], a["status"][field], "status.{field}");
        }
    }

    #[test]
    fn daemonset_without_the_annotation_has_no_scale_strategy() {
        let mut a = ads_alpha();
        a["metadata"]["annotations"][PROGRESSIVE_CREATE_POD_ANNOTATION] = json!("false");
        a["spec"]["updateStrategy"]["rollingUpdate"]["rollingUpdateType"] =
            json!("InPlaceIfPossible");
        a["status"].as_object_mut().unwrap().remove("daemonSetHash");
        let b = convert(a.clone(), V1BETA1).unwrap();
        assert!(b["spec"].get("scaleStrategy").is_none());
        assert!(b["status"].get("updateRevision").is_none());
        assert_eq!(
            b["spec"]["updateStrategy"]["rollingUpdate"]["rollingUpdateType"],
            "InPlaceIfPossible"
        );
        // Nothing was lost: down again gives the v1alpha1 object back.
        assert_eq!(convert(b, V1ALPHA1).unwrap(), a);
    }

    #[test]
    fn daemonset_down_is_upstreams_convert_from() {
        use crate::apps::v1alpha1::daemonset::DaemonSet;
        let b = json!({
            "apiVersion": V1BETA1, "kind": "DaemonSet",
            "metadata": {"name": "d", "namespace": "n"},
            "spec": {"selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}}},
                "scaleStrategy": {"partitionedScaling": true},
                "updateStrategy": {"type": "OnDelete"}},
            "status": {"currentNumberScheduled": 1, "numberMisscheduled": 0,
                "desiredNumberScheduled": 1, "numberReady": 1, "updatedNumberScheduled": 1,
                "updateRevision": "h1"},
        });
        let a = convert(b.clone(), V1ALPHA1).unwrap();
        let ds: DaemonSet = serde_json::from_value(a.clone()).unwrap();
        assert_eq!(
            ds.metadata.annotations.as_ref().unwrap()[PROGRESSIVE_CREATE_POD_ANNOTATION],
            "true"
        );
        assert!(a["spec"].get("scaleStrategy").is_none());
        assert_eq!(
            ds.status.as_ref().unwrap().daemon_set_hash.as_deref(),
            Some("h1")
        );
        assert!(a["status"].get("updateRevision").is_none());
        assert_eq!(a["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
        // Up again: the same v1beta1 spec and status, plus the annotation.
        let again = convert(a, V1BETA1).unwrap();
        assert_eq!(again["spec"], b["spec"]);
        assert_eq!(again["status"], b["status"]);

        let mut off = b.clone();
        off["spec"]["scaleStrategy"] = json!({"partitionedScaling": false});
        let a = convert(off, V1ALPHA1).unwrap();
        assert!(a["metadata"].get("annotations").is_none());
    }

    fn node_image_beta() -> Value {
        json!({
            "apiVersion": V1BETA1, "kind": "NodeImage",
            "metadata": {"name": "node-a", "labels": {"kubernetes.io/hostname": "node-a"}},
            "spec": {"images": {"nginx": {
                "pullSecrets": [{"namespace": "kruise-daemon-config", "name": "s1", "mode": "batch"},
                                {"namespace": "kruise-daemon-config", "name": "s2"}],
                "tags": [{"tag": "1.25", "version": 2, "createdAt": "2024-01-01T00:00:00Z",
                    "pullPolicy": {"timeoutSeconds": 60, "backoffLimit": 2,
                        "ttlSecondsAfterFinished": 300, "activeDeadlineSeconds": 900},
                    "ownerReferences": [{"kind": "ImagePullJob", "name": "j", "namespace": "n"}],
                    "imagePullPolicy": "Always"}],
                "sandboxConfig": {"labels": {"a": "b"}, "annotations": {"c": "d"}}}}},
            "status": {"desired": 1, "succeeded": 1, "failed": 0, "pulling": 0, "waiting": 0,
                "imageStatuses": {"nginx": {"tags": [{"tag": "1.25", "phase": "Succeeded",
                    "progress": 100, "version": 2, "imageID": "sha256:x", "message": "done",
                    "startTime": "2024-01-01T00:00:01Z", "completionTime": "2024-01-01T00:00:09Z"}]}},
                "firstSyncStatus": {"syncAt": "2024-01-01T00:00:10Z", "status": "Succeeded"}},
        })
    }

    #[test]
    fn nodeimage_down_drops_only_the_secret_mode() {
        use crate::apps::v1alpha1::nodeimage::NodeImage;
        let b = node_image_beta();
        let a = convert(b.clone(), V1ALPHA1).unwrap();
        assert_eq!(a["apiVersion"], V1ALPHA1);
        let secrets = &a["spec"]["images"]["nginx"]["pullSecrets"];
        assert_eq!(
            *secrets,
            json!([{"namespace": "kruise-daemon-config", "name": "s1"},
                   {"namespace": "kruise-daemon-config", "name": "s2"}])
        );
        let mut expected = b.clone();
        expected["apiVersion"] = json!(V1ALPHA1);
        expected["spec"]["images"]["nginx"]["pullSecrets"] = secrets.clone();
        assert_eq!(a, expected, "everything else is carried unchanged");
        let typed: NodeImage = serde_json::from_value(a.clone()).unwrap();
        let tag = &typed.spec.images["nginx"].tags[0];
        assert_eq!((tag.tag.as_str(), tag.version), ("1.25", 2));
        assert_eq!(
            tag.pull_policy.as_ref().unwrap().active_deadline_seconds,
            Some(900)
        );
        let st = &typed.status.as_ref().unwrap().image_statuses["nginx"].tags[0];
        assert_eq!(
            (st.phase.as_str(), st.image_id.as_str()),
            ("Succeeded", "sha256:x")
        );
        // Up again: the v1beta1 object less the mode.
        let up = convert(a, V1BETA1).unwrap();
        let mut less = b;
        less["spec"]["images"]["nginx"]["pullSecrets"][0]
            .as_object_mut()
            .unwrap()
            .remove("mode");
        assert_eq!(up, less);
        let typed: crate::apps::v1beta1::nodeimage::NodeImage = serde_json::from_value(up).unwrap();
        assert_eq!(typed.spec.images["nginx"].pull_secrets[0].mode, "");
    }

    #[test]
    fn image_pull_jobs_change_only_their_version() {
        let job = json!({
            "apiVersion": V1ALPHA1, "kind": "ImagePullJob",
            "metadata": {"name": "j", "namespace": "n"},
            "spec": {"image": "nginx:1.25", "pullSecrets": ["reg"],
                "selector": {"names": ["node-a"], "matchLabels": {"pool": "x"}},
                "parallelism": "50%", "pullPolicy": {"timeoutSeconds": 30, "backoffLimit": 1},
                "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 600,
                    "ttlSecondsAfterFinished": 60},
                "sandboxConfig": {"labels": {"a": "b"}}, "imagePullPolicy": "Always"},
            "status": {"desired": 2, "active": 0, "succeeded": 1, "failed": 1,
                "message": "1 failed", "failedNodes": ["node-b"],
                "startTime": "2024-01-01T00:00:00Z", "completionTime": "2024-01-01T00:01:00Z"},
        });
        let mut list = job.clone();
        list["kind"] = json!("ImageListPullJob");
        list["spec"].as_object_mut().unwrap().remove("image");
        list["spec"]["images"] = json!(["nginx:1.25", "redis:7"]);
        list["status"] = json!({"desired": 2, "active": 0, "completed": 2, "succeeded": 1,
            "failedImageStatuses": [{"imagePullJob": "l-x", "name": "redis:7", "message": "m"}]});
        for alpha in [job, list] {
            let beta = convert(alpha.clone(), V1BETA1).unwrap();
            let mut want = alpha.clone();
            want["apiVersion"] = json!(V1BETA1);
            assert_eq!(beta, want);
            assert_eq!(convert(beta, V1ALPHA1).unwrap(), alpha);
        }
        let b: crate::apps::v1beta1::imagepulljob::ImagePullJob = serde_json::from_value(
            convert(
                json!({"apiVersion": V1ALPHA1, "kind": "ImagePullJob", "metadata": {"name": "j"},
                    "spec": {"image": "i", "completionPolicy": {}}}),
                V1BETA1,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(b.spec.image, "i");
    }

    #[test]
    fn every_converted_kind_goes_both_ways() {
        for kind in CONVERTED_KINDS {
            for (from, to) in [(V1ALPHA1, V1BETA1), (V1BETA1, V1ALPHA1)] {
                let obj = json!({"apiVersion": from, "kind": kind, "metadata": {"name": "x"}});
                let out = convert(obj, to).unwrap_or_else(|e| panic!("{kind}: {e}"));
                assert_eq!(out["apiVersion"], to);
            }
        }
        let err =
            convert(json!({"apiVersion": V1ALPHA1, "kind": "CloneSet"}), V1BETA1).unwrap_err();
        assert!(matches!(err, ConversionError::Unsupported { .. }));
    }
}
