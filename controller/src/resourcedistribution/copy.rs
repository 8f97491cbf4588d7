//! The copies a ResourceDistribution writes, as OpenKruise v1.9 builds
//! them: the embedded object with the target namespace, a controller
//! ownerReference to the distribution (so garbage collection removes the
//! copies with it), and the annotations
//! `kruise.io/resourcedistribution.resource.hashcode` (hex SHA-256 of
//! `spec.resource` exactly as the API server serialises it: Go's
//! `encoding/json` of the object) and `kruise.io/resourcedistribution.resource.from`.
//! A copy is updated when anything but its metadata and status differs
//! from the embedded object; the update keeps the copy's own labels and
//! annotations and unions its finalizers. A same-named object this
//! distribution does not control is a conflict and never touched.

use std::collections::BTreeSet;

use kube::core::ApiResource;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::targets::NamespaceInfo;
use crate::workload::revision::go_json;

/// Annotation: hash of the distributed `spec.resource`.
pub const ANNOTATION_HASH: &str = "kruise.io/resourcedistribution.resource.hashcode";
/// Annotation: name of the distribution a copy comes from.
pub const ANNOTATION_FROM: &str = "kruise.io/resourcedistribution.resource.from";
/// The owner's apiVersion and kind in the copies' ownerReference.
pub const OWNER_API_VERSION: &str = "apps.kruise.io/v1alpha1";
pub const OWNER_KIND: &str = "ResourceDistribution";

/// Why `spec.resource` cannot be distributed (not retried: only a spec
/// change helps).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("empty resource is not allowed")]
    Empty,
    #[error("spec.resource is not an object with a kind")]
    NoKind,
    #[error("unsupported resource {0}: only core Secret and ConfigMap are distributed")]
    Unsupported(String),
}

/// The embedded object and what addresses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub object: Value,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub name: String,
}

/// Go's `schema.FromAPIVersionAndKind`: group and version of an
/// apiVersion (both empty when it does not parse).
pub fn group_version(api_version: &str) -> (String, String) {
    match api_version.split_once('/') {
        None => (String::new(), api_version.to_string()),
        Some((_, v)) if v.contains('/') => (String::new(), String::new()),
        Some((g, v)) => (g.to_string(), v.to_string()),
    }
}

impl Template {
    /// Reads `spec.resource` (any kind; see [`Template::supported`]).
    pub fn parse(resource: &Value) -> Result<Template, TemplateError> {
        let Value::Object(m) = resource else {
            return Err(if resource.is_null() {
                TemplateError::Empty
            } else {
                TemplateError::NoKind
            });
        };
        let kind = m.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind.is_empty() {
            return Err(TemplateError::NoKind);
        }
        let api_version = m.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let (group, version) = group_version(api_version);
        let name = resource
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Ok(Template {
            object: resource.clone(),
            group,
            version,
            kind: kind.to_string(),
            name,
        })
    }

    /// Whether the kind is one OpenKruise distributes (core Secret or
    /// ConfigMap).
    pub fn supported(&self) -> bool {
        self.group.is_empty() && matches!(self.kind.as_str(), "Secret" | "ConfigMap")
    }

    /// The API resource of the copies.
    pub fn api_resource(&self) -> Result<ApiResource, TemplateError> {
        if !self.supported() {
            return Err(TemplateError::Unsupported(format!(
                "{}/{}",
                self.group, self.kind
            )));
        }
        Ok(ApiResource {
            group: String::new(),
            version: self.version.clone(),
            api_version: self.version.clone(),
            kind: self.kind.clone(),
            plural: format!("{}s", self.kind.to_lowercase()),
        })
    }
}

/// Lowercase hex SHA-256 of `spec.resource` as Go's `encoding/json`
/// writes it (what the API server sends and OpenKruise hashes).
pub fn resource_hash(resource: &Value) -> String {
    let sum = Sha256::digest(go_json(resource).as_bytes());
    sum.iter().map(|b| format!("{b:02x}")).collect()
}

/// The distribution a copy is written for.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub name: String,
    pub uid: String,
}

/// Whether `object`'s controller ownerReference is the distribution
/// `name` (by apiVersion, kind and name, as upstream: not by uid).
pub fn controlled_by(object: &Value, name: &str) -> bool {
    let controller = object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
    controller.is_some_and(|r| {
        r.get("apiVersion").and_then(Value::as_str) == Some(OWNER_API_VERSION)
            && r.get("kind").and_then(Value::as_str) == Some(OWNER_KIND)
            && r.get("name").and_then(Value::as_str) == Some(name)
    })
}

fn content(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// Whether `existing` differs from the template in anything but
/// metadata and status (`existing` must carry apiVersion and kind).
pub fn needs_update(existing: &Value, template: &Template) -> bool {
    content(existing) != content(&template.object)
}

fn string_map(meta: &Map<String, Value>, key: &str) -> Map<String, Value> {
    meta.get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The copy to write into `namespace`: the template with the namespace,
/// the owner reference and the annotations; on update (`existing`), the
/// existing copy's labels and annotations the template lacks kept and its
/// finalizers unioned. Other metadata of the existing copy is not kept.
pub fn build(
    template: &Template,
    owner: &Owner,
    namespace: &str,
    hash: &str,
    existing: Option<&Value>,
) -> Value {
    let mut object = template.object.clone();
    let Some(root) = object.as_object_mut() else {
        return object;
    };
    let meta_value = root.entry("metadata").or_insert_with(|| json!({}));
    if !meta_value.is_object() {
        *meta_value = json!({});
    }
    let Some(meta) = meta_value.as_object_mut() else {
        return object;
    };
    let mut labels = string_map(meta, "labels");
    let mut annotations = string_map(meta, "annotations");
    if let Some(old) = existing
        .and_then(|e| e.get("metadata"))
        .and_then(Value::as_object)
    {
        for (k, v) in string_map(old, "labels") {
            labels.entry(k).or_insert(v);
        }
        for (k, v) in string_map(old, "annotations") {
            annotations.entry(k).or_insert(v);
        }
        let finalizers: BTreeSet<String> = [meta.get("finalizers"), old.get("finalizers")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        if !finalizers.is_empty() {
            meta.insert("finalizers".into(), json!(finalizers));
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    meta.insert("namespace".into(), json!(namespace));
    let mut owners: Vec<Value> = meta
        .get("ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !owners
        .iter()
        .any(|o| o.get("uid").and_then(Value::as_str) == Some(owner.uid.as_str()))
    {
        owners.push(json!({
            "apiVersion": OWNER_API_VERSION,
            "kind": OWNER_KIND,
            "name": owner.name,
            "uid": owner.uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }));
    }
    meta.insert("ownerReferences".into(), Value::Array(owners));
    annotations.insert(ANNOTATION_HASH.into(), json!(hash));
    annotations.insert(ANNOTATION_FROM.into(), json!(owner.name));
    meta.insert("annotations".into(), Value::Object(annotations));
    object
}

/// What to do in one matched namespace.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The namespace does not exist or is terminating.
    NamespaceNotExists,
    Create(Value),
    /// A same-named object this distribution does not control.
    Conflict,
    Update(Value),
    InSync,
}

/// The step for matched `namespace` (`None`: it does not exist), given
/// the same-named object there, if any.
pub fn plan(
    namespace: &str,
    info: Option<&NamespaceInfo>,
    existing: Option<&Value>,
    template: &Template,
    owner: &Owner,
    hash: &str,
) -> Step {
    if info.is_none_or(|n| n.terminating) {
        return Step::NamespaceNotExists;
    }
    match existing {
        None => Step::Create(build(template, owner, namespace, hash, None)),
        Some(e) if !controlled_by(e, &owner.name) => Step::Conflict,
        Some(e) if needs_update(e, template) => {
            Step::Update(build(template, owner, namespace, hash, Some(e)))
        }
        Some(_) => Step::InSync,
    }
}

/// Whether the copy in unmatched `namespace` is to be deleted: the
/// namespace exists and is not terminating, and this distribution
/// controls the object.
pub fn to_clean(info: Option<&NamespaceInfo>, existing: Option<&Value>, owner: &str) -> bool {
    info.is_some_and(|n| !n.terminating) && existing.is_some_and(|e| controlled_by(e, owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Go 1.26, `encoding/json` of the map the API server decodes this
    // object into (k8s.io/apimachinery v0.32.10 `utiljson.Unmarshal`),
    // then `sha256.Sum256` + `hex.EncodeToString`, as OpenKruise hashes
    // `spec.resource.Raw`.
    const GO_INPUT: &str = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"game-demo","labels":{"z":"1","a":"x&y"}},"data":{"html":"<b>bold</b> & \"quoted\"","unicode":"héllo wörld ✓ 日本 😀","seps":"a\u2028b\u2029c","ctl":"tab\there\nnl\r\b\f\u0001\u001f\u007f","slash":"a/b\\c"},"immutable":false,"nested":{"list":[1,2.5,-3,1e21,1e-7,0.000001,100000000000000000000,null,true,{"b":1,"a":[]}]}}"#;
    const GO_RAW: &str = "{\"apiVersion\":\"v1\",\"data\":{\"ctl\":\"tab\\there\\nnl\\r\\b\\f\\u0001\\u001f\u{7f}\",\"html\":\"\\u003cb\\u003ebold\\u003c/b\\u003e \\u0026 \\\"quoted\\\"\",\"seps\":\"a\\u2028b\\u2029c\",\"slash\":\"a/b\\\\c\",\"unicode\":\"héllo wörld ✓ 日本 😀\"},\"immutable\":false,\"kind\":\"ConfigMap\",\"metadata\":{\"labels\":{\"a\":\"x\\u0026y\",\"z\":\"1\"},\"name\":\"game-demo\"},\"nested\":{\"list\":[1,2.5,-3,1e+21,1e-7,0.000001,100000000000000000000,null,true,{\"a\":[],\"b\":1}]}}";
    const GO_HASH: &str = "224d3b1a8f127c1b43c7c2b89ecb1a2ae195daba0e4cb21d55fe6d487697aa7a";

    fn owner() -> Owner {
        Owner {
            name: "sample".into(),
            uid: "rd-uid".into(),
        }
    }

    fn template() -> Template {
        Template::parse(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "game-demo", "labels": {"t": "1"}, "annotations": {"a": "template"}},
            "data": {"k": "v"}}))
        .unwrap()
    }

    fn ns(name: &str) -> NamespaceInfo {
        NamespaceInfo {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_hash_is_sha256_of_gos_bytes() {
        let v: Value = serde_json::from_str(GO_INPUT).unwrap();
        assert_eq!(go_json(&v), GO_RAW);
        assert_eq!(resource_hash(&v), GO_HASH);
    }

    #[test]
    fn a_new_copy_carries_the_owner_and_the_annotations() {
        let t = template();
        let step = plan("ns-1", Some(&ns("ns-1")), None, &t, &owner(), "h1");
        let Step::Create(c) = step else {
            panic!("{step:?}")
        };
        assert_eq!(c["metadata"]["namespace"], "ns-1");
        assert_eq!(c["metadata"]["name"], "game-demo");
        assert_eq!(c["metadata"]["labels"], json!({"t": "1"}));
        assert_eq!(
            c["metadata"]["annotations"],
            json!({"a": "template", ANNOTATION_HASH: "h1", ANNOTATION_FROM: "sample"})
        );
        assert_eq!(
            c["metadata"]["ownerReferences"],
            json!([{"apiVersion": OWNER_API_VERSION, "kind": OWNER_KIND, "name": "sample",
                "uid": "rd-uid", "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(c["data"], json!({"k": "v"}));
        assert!(controlled_by(&c, "sample") && !controlled_by(&c, "other"));
    }

    #[test]
    fn missing_namespaces_conflicts_and_in_sync_copies() {
        let t = template();
        assert_eq!(
            plan("gone", None, None, &t, &owner(), "h"),
            Step::NamespaceNotExists
        );
        let mut terminating = ns("t");
        terminating.terminating = true;
        assert_eq!(
            plan("t", Some(&terminating), None, &t, &owner(), "h"),
            Step::NamespaceNotExists
        );
        let foreign = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "game-demo", "namespace": "a"}, "data": {"k": "v"}});
        assert_eq!(
            plan("a", Some(&ns("a")), Some(&foreign), &t, &owner(), "h"),
            Step::Conflict
        );
        // Owned by another kind of controller, or only as a non-controller.
        let mut other = foreign.clone();
        other["metadata"]["ownerReferences"] = json!([
            {"apiVersion": OWNER_API_VERSION, "kind": OWNER_KIND, "name": "sample", "uid": "x"},
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sample", "uid": "y", "controller": true}]);
        assert_eq!(
            plan("a", Some(&ns("a")), Some(&other), &t, &owner(), "h"),
            Step::Conflict
        );
        // Controlled (same name, any uid) and equal content: nothing to do,
        // whatever its metadata and status say.
        let mut mine = build(&t, &owner(), "a", "old-hash", None);
        mine["metadata"]["ownerReferences"][0]["uid"] = json!("recreated");
        mine["metadata"]["labels"] = json!({"x": "y"});
        mine["status"] = json!({"whatever": 1});
        assert_eq!(
            plan("a", Some(&ns("a")), Some(&mine), &t, &owner(), "h"),
            Step::InSync
        );
    }

    #[test]
    fn updates_keep_the_copys_own_metadata_and_union_finalizers() {
        let t = Template::parse(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "game-demo", "labels": {"t": "new"}, "finalizers": ["b/x"]},
            "data": {"k": "v2"}}))
        .unwrap();
        let existing = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "game-demo", "namespace": "a", "resourceVersion": "7",
                "labels": {"t": "old", "mine": "1"},
                "annotations": {"note": "kept", ANNOTATION_HASH: "old"},
                "finalizers": ["a/y", "b/x"],
                "ownerReferences": [{"apiVersion": OWNER_API_VERSION, "kind": OWNER_KIND,
                    "name": "sample", "uid": "rd-uid", "controller": true},
                    {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "pod"}]},
            "data": {"k": "edited"}});
        let step = plan("a", Some(&ns("a")), Some(&existing), &t, &owner(), "h2");
        let Step::Update(u) = step else {
            panic!("{step:?}")
        };
        assert_eq!(u["data"], json!({"k": "v2"}));
        assert_eq!(u["metadata"]["labels"], json!({"t": "new", "mine": "1"}));
        assert_eq!(
            u["metadata"]["annotations"],
            json!({"note": "kept", ANNOTATION_HASH: "h2", ANNOTATION_FROM: "sample"})
        );
        assert_eq!(u["metadata"]["finalizers"], json!(["a/y", "b/x"]));
        // As upstream: the template's owner references plus this one.
        assert_eq!(
            u["metadata"]["ownerReferences"].as_array().unwrap().len(),
            1
        );
        assert!(u["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn templates_and_cleanup() {
        assert_eq!(Template::parse(&Value::Null), Err(TemplateError::Empty));
        assert_eq!(
            Template::parse(&json!({"apiVersion": "v1"})),
            Err(TemplateError::NoKind)
        );
        let secret = Template::parse(&json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s"}}))
        .unwrap();
        let ar = secret.api_resource().unwrap();
        assert_eq!((ar.plural.as_str(), ar.version.as_str()), ("secrets", "v1"));
        let dep = Template::parse(&json!({"apiVersion": "apps/v1", "kind": "Deployment"})).unwrap();
        assert!(!dep.supported() && dep.api_resource().is_err());
        assert_eq!(group_version("a/b/c"), (String::new(), String::new()));

        let mine = build(&template(), &owner(), "a", "h", None);
        assert!(to_clean(Some(&ns("a")), Some(&mine), "sample"));
        assert!(!to_clean(Some(&ns("a")), Some(&mine), "other"));
        assert!(!to_clean(None, Some(&mine), "sample"));
        let mut terminating = ns("a");
        terminating.terminating = true;
        assert!(!to_clean(Some(&terminating), Some(&mine), "sample"));
        assert!(!to_clean(Some(&ns("a")), None, "sample"));
    }
}
