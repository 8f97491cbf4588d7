//! The CloneSet webhooks at OpenKruise's paths. Mutating: the spec
//! defaults (replicas 1, history 10, `ReCreate`, partition 0,
//! maxUnavailable 20%, maxSurge 0, an empty `inPlaceUpdateStrategy` for
//! the in-place types) and, unless `TemplateNoDefaults`, the pod-template
//! defaults on create and on updates that change the template. Validating:
//! OpenKruise's rules and messages (422), pure, except that pods newly
//! named in `podsToDelete` are read to check they may be deleted.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keelson_api::apps::v1alpha1::cloneset::CloneSet;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::{Value, json};

use super::{deny, object};
use crate::gates::FeatureGates;
use crate::workload::defaults::default_pod_template;
use crate::workload::percent::scaled;

/// OpenKruise's mutating path.
pub const MUTATE_PATH: &str = "/mutate-apps-kruise-io-v1alpha1-cloneset";
/// OpenKruise's validating path.
pub const VALIDATE_PATH: &str = "/validate-apps-kruise-io-v1alpha1-cloneset";

/// Sets `path` in `v` to `value` unless it holds something already.
pub(super) fn put_default(v: &mut Value, path: &[&str], value: Value) {
    let mut cur = v;
    for (i, key) in path.iter().enumerate() {
        let Some(m) = cur.as_object_mut() else { return };
        if i + 1 == path.len() {
            if m.get(*key).is_none_or(Value::is_null) {
                m.insert((*key).into(), value);
            }
            return;
        }
        cur = m.entry(*key).or_insert_with(|| json!({}));
    }
}

/// The defaulted CloneSet object.
pub fn defaulted(obj: &Value, template_defaults: bool) -> Value {
    let mut out = obj.clone();
    put_default(&mut out, &["spec", "replicas"], json!(1));
    put_default(&mut out, &["spec", "revisionHistoryLimit"], json!(10));
    if template_defaults {
        if let Some(t) = out.pointer_mut("/spec/template") {
            default_pod_template(t);
        }
        for vct in out
            .pointer_mut("/spec/volumeClaimTemplates")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            put_default(vct, &["spec", "volumeMode"], json!("Filesystem"));
        }
    }
    let t = out
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        .unwrap_or("");
    match t {
        "" => {
            if let Some(s) = out.pointer_mut("/spec").and_then(Value::as_object_mut) {
                let us = s.entry("updateStrategy").or_insert_with(|| json!({}));
                if let Some(us) = us.as_object_mut() {
                    us.insert("type".into(), json!("ReCreate"));
                }
            }
        }
        "InPlaceIfPossible" | "InPlaceOnly" => {
            put_default(
                &mut out,
                &["spec", "updateStrategy", "inPlaceUpdateStrategy"],
                json!({}),
            );
        }
        _ => {}
    }
    put_default(&mut out, &["spec", "updateStrategy", "partition"], json!(0));
    put_default(
        &mut out,
        &["spec", "updateStrategy", "maxUnavailable"],
        json!("20%"),
    );
    put_default(&mut out, &["spec", "updateStrategy", "maxSurge"], json!(0));
    out
}

/// Answers the mutating webhook.
pub fn mutate_review(
    req: &AdmissionRequest<DynamicObject>,
    gates: &FeatureGates,
) -> AdmissionResponse {
    super::defaulting(req, gates.enabled("TemplateNoDefaults"), defaulted)
}

fn int_or_string_text(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => format!("{s:?}"),
    }
}

/// OpenKruise's field errors for `cs` (empty: valid). `old` is the stored
/// object on update.
pub fn validate(cs: &CloneSet, old: Option<&CloneSet>) -> Vec<String> {
    let mut errs = vec![];
    let spec = &cs.spec;
    let replicas = spec.replicas.unwrap_or(1);
    if replicas < 0 {
        errs.push(format!(
            "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
        ));
    }
    let sel = &spec.selector;
    let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty());
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if empty {
        errs.push(
            "spec.selector: Invalid value: \"null\": empty selector is invalid for cloneset".into(),
        );
    } else if !crate::selector::matches(sel, &labels) {
        errs.push("spec.template.metadata.labels: Invalid value: \"null\": `selector` does not match template `labels`".into());
    }
    let pod = spec.template.spec.clone().unwrap_or_default();
    if pod.containers.is_empty() {
        errs.push("spec.template.spec.containers: Required value".into());
    }
    for c in &pod.containers {
        if c.image.as_deref().unwrap_or("").is_empty() {
            errs.push(format!(
                "spec.template.spec.containers[{}].image: Required value",
                c.name
            ));
        }
    }
    if let Some(p) = pod.restart_policy.as_deref()
        && !p.is_empty()
        && p != "Always"
    {
        errs.push(format!("spec.template.spec.restartPolicy: Unsupported value: {p:?}: supported values: \"Always\""));
    }
    if pod.active_deadline_seconds.is_some() {
        errs.push("spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in cloneset is not Supported".into());
    }
    let dup = duplicated_pods_to_delete(cs);
    if !dup.is_empty() {
        let all: Vec<String> = spec
            .scale_strategy
            .pods_to_delete
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        errs.push(format!(
            "spec.scaleStrategy.podsToDelete: Invalid value: []string{{{}}}: duplicated items [{}]",
            all.join(", "),
            dup.join(" ")
        ));
    }
    let us = &spec.update_strategy;
    let t = us.type_.as_deref().unwrap_or("ReCreate");
    if !matches!(t, "ReCreate" | "InPlaceIfPossible" | "InPlaceOnly") {
        errs.push(format!("spec.updateStrategy.type: Invalid value: {t:?}: must be 'ReCreate', InPlaceIfPossible or 'InPlaceOnly'"));
    }
    if let Some(p) = &us.partition {
        match scaled(p, replicas, true) {
            Ok(v) if v < 0 => errs.push(format!("spec.updateStrategy.partition: Invalid value: {}: must be greater than or equal to 0", int_or_string_text(p))),
            Ok(_) => {}
            Err(e) => errs.push(format!("spec.updateStrategy.partition: Invalid value: {}: {e}", int_or_string_text(p))),
        }
    }
    let mut numbers = |field: &str, v: Option<&IntOrString>, round_up: bool| -> Option<i32> {
        let v = v?;
        match scaled(v, replicas, round_up) {
            Ok(n) if n < 0 => {
                errs.push(format!("spec.updateStrategy.{field}: Invalid value: {}: must be greater than or equal to 0", int_or_string_text(v)));
                None
            }
            Ok(n) => Some(n),
            Err(e) => {
                errs.push(format!(
                    "spec.updateStrategy.{field}: Invalid value: {}: {e}",
                    int_or_string_text(v)
                ));
                None
            }
        }
    };
    let surge = numbers("maxSurge", us.max_surge.as_ref(), true).unwrap_or(0);
    let unavailable =
        numbers("maxUnavailable", us.max_unavailable.as_ref(), surge == 0).unwrap_or(1);
    if t == "InPlaceOnly" && surge > 0 {
        errs.push(format!("spec.updateStrategy.maxSurge: Invalid value: {surge}: can not use maxSurge with strategy type InPlaceOnly"));
    }
    if replicas > 0 && unavailable < 1 && surge < 1 {
        errs.push(format!("spec.updateStrategy.maxUnavailable: Invalid value: {unavailable}: maxUnavailable and maxSurge should not both be less than 1"));
    }
    if let Some(d) = spec.progress_deadline_seconds {
        if d < 0 {
            errs.push(format!("spec.progressDeadlineSeconds: Invalid value: {d}: must be greater than or equal to 0"));
        } else if d != i32::MAX && d <= spec.min_ready_seconds {
            errs.push(format!("spec.progressDeadlineSeconds: Invalid value: {d}: must be greater than minReadySeconds"));
        }
    }
    if let Some(old) = old {
        let mut a = serde_json::to_value(&cs.spec).unwrap_or_default();
        let mut b = serde_json::to_value(&old.spec).unwrap_or_default();
        for k in [
            "replicas",
            "template",
            "scaleStrategy",
            "updateStrategy",
            "minReadySeconds",
            "lifecycle",
            "revisionHistoryLimit",
            "volumeClaimTemplates",
            "progressDeadlineSeconds",
        ] {
            for v in [&mut a, &mut b] {
                if let Some(m) = v.as_object_mut() {
                    m.remove(k);
                }
            }
        }
        if a != b {
            errs.push("spec: Forbidden: updates to cloneset spec for fields other than 'replicas', 'template', 'lifecycle', 'scaleStrategy', 'updateStrategy', 'minReadySeconds', 'progressDeadlineSeconds', 'volumeClaimTemplates' and 'revisionHistoryLimit' are forbidden".into());
        }
        if t == "InPlaceOnly" {
            let (o, n) = (
                serde_json::to_value(&old.spec.template.spec).unwrap_or_default(),
                serde_json::to_value(&cs.spec.template.spec).unwrap_or_default(),
            );
            for op in json_patch::diff(&o, &n).0 {
                let path = op.path().to_string();
                let image_replace = matches!(op, json_patch::PatchOperation::Replace(_))
                    && path.starts_with("/containers/")
                    && path.ends_with("/image")
                    && path.matches('/').count() == 3;
                if !image_replace {
                    let kind = match op {
                        json_patch::PatchOperation::Add(_) => "add",
                        json_patch::PatchOperation::Remove(_) => "remove",
                        json_patch::PatchOperation::Replace(_) => "replace",
                        _ => "change",
                    };
                    errs.push(format!("spec.template: Forbidden: only allowed to update images in spec for InPlaceOnly, but found {kind} {path}"));
                    break;
                }
            }
        }
    }
    errs
}

/// The `podsToDelete` names given more than once (each repeat listed).
fn duplicated_pods_to_delete(cs: &CloneSet) -> Vec<&str> {
    let mut seen = BTreeSet::new();
    cs.spec
        .scale_strategy
        .pods_to_delete
        .iter()
        .filter(|n| !seen.insert(n.as_str()))
        .map(String::as_str)
        .collect()
}

/// The `podsToDelete` names the webhook looks up: those not in the old
/// object's list, sorted (none while the list has duplicates: that error
/// is reported alone, as upstream).
pub fn added_pods_to_delete(cs: &CloneSet, old: Option<&CloneSet>) -> Vec<String> {
    if !duplicated_pods_to_delete(cs).is_empty() {
        return vec![];
    }
    let before: BTreeSet<&str> = old
        .iter()
        .flat_map(|o| o.spec.scale_strategy.pods_to_delete.iter())
        .map(String::as_str)
        .collect();
    let added: BTreeSet<&String> = cs
        .spec
        .scale_strategy
        .pods_to_delete
        .iter()
        .filter(|n| !before.contains(n.as_str()))
        .collect();
    added.into_iter().cloned().collect()
}

/// What looking up one added `podsToDelete` name gave.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Box<k8s_openapi::api::core::v1::Pod>),
    /// The read failed (the API server's message, e.g. not found).
    Failed(String),
}

/// OpenKruise's errors for the added `podsToDelete` names: each must be
/// a pod that exists, is not terminating, and whose controller is the
/// CloneSet `uid`.
pub fn pods_to_delete_errors(uid: &str, lookups: &[(String, Lookup)]) -> Vec<String> {
    let mut errs = vec![];
    for (name, found) in lookups {
        let why = match found {
            Lookup::Failed(e) => format!("find pod {name} failed: {e}"),
            Lookup::Found(p) if p.metadata.deletion_timestamp.is_some() => {
                format!("find pod {name} already terminating")
            }
            Lookup::Found(p) => {
                let owner = p
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.controller == Some(true));
                if owner.is_some_and(|o| o.uid == uid) {
                    continue;
                }
                format!("find pod {name} owner is not this CloneSet")
            }
        };
        errs.push(format!(
            "spec.scaleStrategy.podsToDelete: Invalid value: {name:?}: {why}"
        ));
    }
    errs
}

/// Looks up `names` in `namespace`.
async fn look_up(
    client: &kube::Client,
    namespace: &str,
    names: Vec<String>,
) -> Vec<(String, Lookup)> {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), namespace);
    let mut out = vec![];
    for name in names {
        let found = match api.get(&name).await {
            Ok(p) => Lookup::Found(Box::new(p)),
            Err(kube::Error::Api(s)) => Lookup::Failed(s.message),
            Err(e) => Lookup::Failed(e.to_string()),
        };
        out.push((name, found));
    }
    out
}

/// Answers the validating webhook (reading the pods newly named in
/// `podsToDelete`).
pub async fn validate_review(
    req: &AdmissionRequest<DynamicObject>,
    client: &kube::Client,
) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return resp;
    }
    let parse = |o: Option<&DynamicObject>| -> Option<Result<CloneSet, String>> {
        object(o).map(|v| serde_json::from_value(v).map_err(|e| format!("not a CloneSet: {e}")))
    };
    let cs = match parse(req.object.as_ref()) {
        Some(Ok(cs)) => cs,
        Some(Err(m)) => return deny(resp, 400, "BadRequest", m),
        None => return deny(resp, 400, "BadRequest", "the request has no object".into()),
    };
    let old = match (&req.operation, parse(req.old_object.as_ref())) {
        (Operation::Update, Some(Ok(o))) => Some(o),
        _ => None,
    };
    let mut errs = validate(&cs, old.as_ref());
    let added = added_pods_to_delete(&cs, old.as_ref());
    if !added.is_empty() {
        let namespace = cs
            .metadata
            .namespace
            .clone()
            .or_else(|| req.namespace.clone())
            .unwrap_or_default();
        let lookups = look_up(client, &namespace, added).await;
        let uid = cs.metadata.uid.clone().unwrap_or_default();
        errs.extend(pods_to_delete_errors(&uid, &lookups));
    }
    if errs.is_empty() {
        return resp;
    }
    let msg = super::aggregate(&errs);
    deny(resp, 422, "Invalid", msg)
}

#[cfg(test)]
mod tests;
