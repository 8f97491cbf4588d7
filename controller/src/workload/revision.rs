//! Revisions of a workload's pod template: the `ControllerRevision` data,
//! its hash and name, and which revision a template change selects —
//! byte-compatible with OpenKruise (and the Kubernetes history library it
//! uses), so the same stored template yields the same revision name, and
//! `kubectl kruise rollout undo` finds matching bytes.
//!
//! The data is `{"spec":{"template":{…,"$patch":"replace"}}}`: the template
//! as Go's `encoding/json` writes a `corev1.PodTemplateSpec` (struct fields
//! Go always emits added, unknown fields dropped), re-marshalled through a
//! map so keys are sorted, with Go's HTML escaping. The hash is 32-bit
//! FNV-1 over those bytes followed by the decimal collision count, printed
//! as a decimal number and mapped through Kubernetes' "safe encode"
//! alphabet.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{Map, Value};

/// Label on a ControllerRevision: the hash of its data.
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller.kubernetes.io/hash";
/// Label on a workload's pods: the revision they were made from.
pub const POD_REVISION_LABEL: &str = "controller-revision-hash";
/// Annotation on a CloneSet revision: hash of its volumeClaimTemplates.
pub const VCT_HASH_ANNOTATION: &str = "kruise.io/cloneset-volumeclaimtemplate-hash";

/// Why a template cannot be turned into revision data.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error("pod template is not a valid PodTemplateSpec: {0}")]
    Template(#[source] serde_json::Error),
    #[error("revision {name} holds no readable template: {reason}")]
    Data { name: String, reason: String },
}

/// The revision data for `template` (the workload's stored
/// `spec.template`), exactly as OpenKruise writes it.
pub fn revision_data(template: &Value) -> Result<String, RevisionError> {
    let typed: PodTemplateSpec =
        serde_json::from_value(template.clone()).map_err(RevisionError::Template)?;
    let mut t = serde_json::to_value(&typed).map_err(RevisionError::Template)?;
    go_emitted_fields(&mut t);
    if let Value::Object(m) = &mut t {
        m.insert("$patch".into(), Value::String("replace".into()));
    }
    let data = serde_json::json!({"spec": {"template": t}});
    Ok(go_json(&data))
}

/// The template held by revision data (the inverse of [`revision_data`],
/// without the `$patch` marker).
pub fn template_of(revision: &ControllerRevision) -> Result<Value, RevisionError> {
    let name = revision.metadata.name.clone().unwrap_or_default();
    let mut data = revision
        .data
        .as_ref()
        .map(|d| d.0.clone())
        .unwrap_or(Value::Null);
    // Data written by a client as a JSON string (rare) is parsed first.
    if let Value::String(s) = &data {
        data = serde_json::from_str(s).map_err(|e| RevisionError::Data {
            name: name.clone(),
            reason: e.to_string(),
        })?;
    }
    let mut t = data
        .pointer("/spec/template")
        .cloned()
        .ok_or_else(|| RevisionError::Data {
            name: name.clone(),
            reason: "no spec.template".into(),
        })?;
    if let Value::Object(m) = &mut t {
        m.remove("$patch");
    }
    Ok(t)
}

/// Fields Go's `encoding/json` writes for a `PodTemplateSpec` even when
/// empty: struct-typed fields (`omitempty` does not drop structs), which
/// `k8s-openapi` models as absent `Option`s.
fn go_emitted_fields(t: &mut Value) {
    let Value::Object(m) = t else { return };
    let meta = m
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    creation_timestamp(meta);
    let spec = m.entry("spec").or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(spec) = spec else { return };
    spec.entry("containers").or_insert(Value::Null);
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs {
                if let Value::Object(c) = c {
                    c.entry("resources")
                        .or_insert_with(|| Value::Object(Map::new()));
                    for e in c
                        .get_mut("env")
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(r) = e.pointer_mut("/valueFrom/resourceFieldRef") {
                            divisor(r);
                        }
                    }
                }
            }
        }
    }
    for v in spec
        .get_mut("volumes")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(Value::Object(c)) = v.pointer_mut("/ephemeral/volumeClaimTemplate") {
            creation_timestamp(
                c.entry("metadata")
                    .or_insert_with(|| Value::Object(Map::new())),
            );
            let s = c.entry("spec").or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(s) = s {
                s.entry("resources")
                    .or_insert_with(|| Value::Object(Map::new()));
            }
        }
        for item in v
            .pointer_mut("/downwardAPI/items")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(r) = item.get_mut("resourceFieldRef") {
                divisor(r);
            }
        }
    }
}

fn creation_timestamp(meta: &mut Value) {
    if let Value::Object(m) = meta {
        m.entry("creationTimestamp").or_insert(Value::Null);
    }
}

/// Go writes a zero `resource.Quantity` as `"0"`.
fn divisor(r: &mut Value) {
    if let Value::Object(m) = r {
        m.entry("divisor")
            .or_insert_with(|| Value::String("0".into()));
    }
}

/// JSON as Go's `encoding/json` writes a `map[string]interface{}`: keys
/// sorted, no spaces, `<`, `>`, `&`, U+2028 and U+2029 escaped.
pub fn go_json(v: &Value) -> String {
    let mut out = String::new();
    write_go_json(v, &mut out);
    out
}

fn write_go_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(k, out);
                out.push(':');
                write_go_json(v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(v, out);
            }
            out.push(']');
        }
        Value::String(s) => write_go_string(s, out),
        Value::Number(n) if n.is_f64() => out.push_str(&go_float(n.as_f64().unwrap_or(0.0))),
        other => out.push_str(&other.to_string()),
    }
}

/// A non-integer number as `encoding/json` writes a `float64`: plain
/// decimals, exponent form (`1e+21`, `1e-7`) below 1e-6 and from 1e21 on.
fn go_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let sci = format!("{f:e}");
        match sci.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => sci,
        }
    } else {
        format!("{f}")
    }
}

fn write_go_string(s: &str, out: &mut String) {
    let plain = Value::String(s.to_string()).to_string();
    for ch in plain.chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
}

/// Kubernetes' `rand.SafeEncodeString` alphabet (no vowels, no 0/1/3).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The revision hash of `data` with the workload's collision count.
pub fn revision_hash(data: &[u8], collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h = h.wrapping_mul(0x0100_0193);
            h ^= u32::from(*b);
        }
    };
    feed(data);
    if let Some(c) = collision_count {
        feed(c.to_string().as_bytes());
    }
    safe_encode(&h.to_string())
}

/// Kubernetes' `rand.SafeEncodeString`: each byte mapped into an alphabet
/// without vowels or look-alike digits.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// `<parent>-<hash>`, the parent name cut to 223 characters.
pub fn revision_name(parent: &str, hash: &str) -> String {
    let prefix: String = parent.chars().take(223).collect();
    format!("{prefix}-{hash}")
}

/// The short form of a revision name (its last `-` segment), as in the
/// `pod-template-hash` label.
pub fn short_hash(revision_name: &str) -> &str {
    revision_name.rsplit('-').next().unwrap_or(revision_name)
}

/// What a revision is made for: the workload it belongs to.
#[derive(Debug, Clone)]
pub struct Parent {
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    pub annotations: BTreeMap<String, String>,
}

/// A new ControllerRevision for `template` (not yet stored).
pub fn new_revision(
    parent: &Parent,
    template: &Value,
    revision: i64,
    collision_count: Option<i32>,
    extra_annotations: &BTreeMap<String, String>,
) -> Result<ControllerRevision, RevisionError> {
    let data = revision_data(template)?;
    let hash = revision_hash(data.as_bytes(), collision_count);
    let mut labels: BTreeMap<String, String> = template
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.clone());
    let mut annotations = parent.annotations.clone();
    annotations.extend(extra_annotations.clone());
    let value: Value = serde_json::from_str(&data).map_err(RevisionError::Template)?;
    Ok(ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&parent.name, &hash)),
            namespace: Some(parent.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![parent.owner.clone()]),
            ..Default::default()
        },
        data: Some(RawExtension(value)),
        revision,
    })
}

/// Whether two revisions hold the same template (hash label, then data).
pub fn equal_revision(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    let label = |r: &ControllerRevision| {
        r.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL))
            .cloned()
    };
    let (la, lb) = (label(a), label(b));
    if la.is_none() || lb.is_none() || la != lb {
        return false;
    }
    let data = |r: &ControllerRevision| r.data.as_ref().map(|d| go_json(&d.0));
    data(a) == data(b)
}

/// What the stored history needs so that the update revision exists.
#[derive(Debug, Clone, PartialEq)]
pub enum RevisionChange {
    /// The newest revision already holds the template.
    Unchanged,
    /// An older revision holds it: its `revision` number is raised to
    /// `revision` (a rollback).
    Renumber { name: String, revision: i64 },
    /// No revision holds it: create this one.
    Create(Box<ControllerRevision>),
}

/// The revision a workload's current template selects among `existing`
/// (any order), and what to store for it.
pub fn select_update_revision(
    parent: &Parent,
    template: &Value,
    existing: &[ControllerRevision],
    collision_count: Option<i32>,
    extra_annotations: &BTreeMap<String, String>,
) -> Result<(String, RevisionChange), RevisionError> {
    let mut sorted: Vec<&ControllerRevision> = existing.iter().collect();
    sorted.sort_by_key(|r| (r.revision, r.metadata.name.clone()));
    let next = sorted.last().map_or(1, |r| r.revision + 1);
    let new = new_revision(parent, template, next, collision_count, extra_annotations)?;
    let equal: Vec<&&ControllerRevision> =
        sorted.iter().filter(|r| equal_revision(r, &new)).collect();
    let name_of = |r: &ControllerRevision| r.metadata.name.clone().unwrap_or_default();
    Ok(match (equal.last(), sorted.last()) {
        (Some(eq), Some(latest)) if name_of(eq) == name_of(latest) => {
            (name_of(latest), RevisionChange::Unchanged)
        }
        (Some(eq), _) => (
            name_of(eq),
            RevisionChange::Renumber {
                name: name_of(eq),
                revision: next,
            },
        ),
        (None, _) => (name_of(&new), RevisionChange::Create(Box::new(new))),
    })
}

/// Revisions to delete so that at most `limit` remain besides the live
/// ones (`live`: current and update revision and any a pod uses),
/// oldest first.
pub fn history_to_delete(
    existing: &[ControllerRevision],
    live: &[String],
    limit: i32,
) -> Vec<String> {
    let mut dead: Vec<&ControllerRevision> = existing
        .iter()
        .filter(|r| {
            let n = r.metadata.name.as_deref().unwrap_or_default();
            !live.iter().any(|l| l == n)
        })
        .collect();
    let keep = usize::try_from(limit.max(0)).unwrap_or(0);
    if dead.len() <= keep {
        return vec![];
    }
    dead.sort_by_key(|r| r.revision);
    let surplus = dead.len() - keep;
    dead.into_iter()
        .take(surplus)
        .filter_map(|r| r.metadata.name.clone())
        .collect()
}

pub mod store;

#[cfg(test)]
mod tests;
