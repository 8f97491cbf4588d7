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

use serde_json::{Map, Value, json};

use crate::apps::v1alpha1::sidecarset::LABEL_SIDECARSET_CUSTOM_VERSION;

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
}
