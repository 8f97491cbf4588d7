//! The Advanced StatefulSet webhooks at OpenKruise's paths (both API
//! versions; their shapes agree on every field checked here). Mutating:
//! OpenKruise's spec defaults (OrderedReady, RollingUpdate with partition
//! 0, maxUnavailable 1, ReCreate, minReadySeconds 0; replicas 1, history
//! 10; PVC retention Retain/Retain under `StatefulSetAutoDeletePVC`) and,
//! unless `TemplateNoDefaults`, the pod-template defaults on create and on
//! updates that change the template. Validating: OpenKruise's spec rules
//! and messages (422); deletions go to deletion protection.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keelson_api::apps::shared::IN_PLACE_UPDATE_READY;
use keelson_api::apps::v1beta1::statefulset::StatefulSet;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::{Value, json};

use super::cloneset::put_default;
use super::{aggregate, deny, object};
use crate::gates::FeatureGates;
use crate::workload::defaults::default_pod_template;
use crate::workload::percent::scaled;

/// OpenKruise's mutating path.
pub const MUTATE_PATH: &str = "/mutate-apps-kruise-io-statefulset";
/// OpenKruise's validating path.
pub const VALIDATE_PATH: &str = super::deletion::KRUISE_STATEFULSET_PATH;

/// The defaulted object.
pub fn defaulted(obj: &Value, template_defaults: bool, auto_delete_pvc: bool) -> Value {
    let mut out = obj.clone();
    put_default(
        &mut out,
        &["spec", "podManagementPolicy"],
        json!("OrderedReady"),
    );
    put_default(
        &mut out,
        &["spec", "updateStrategy", "type"],
        json!("RollingUpdate"),
    );
    if out.pointer("/spec/updateStrategy/type") == Some(&json!("RollingUpdate")) {
        let ru = ["spec", "updateStrategy", "rollingUpdate"];
        put_default(&mut out, &[ru[0], ru[1], ru[2], "partition"], json!(0));
        put_default(&mut out, &[ru[0], ru[1], ru[2], "maxUnavailable"], json!(1));
        put_default(
            &mut out,
            &[ru[0], ru[1], ru[2], "podUpdatePolicy"],
            json!("ReCreate"),
        );
        put_default(
            &mut out,
            &[ru[0], ru[1], ru[2], "minReadySeconds"],
            json!(0),
        );
    }
    if auto_delete_pvc {
        let p = ["spec", "persistentVolumeClaimRetentionPolicy"];
        put_default(&mut out, &[p[0], p[1], "whenDeleted"], json!("Retain"));
        put_default(&mut out, &[p[0], p[1], "whenScaled"], json!("Retain"));
    }
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
    out
}

/// Answers the mutating webhook.
pub fn mutate_review(
    req: &AdmissionRequest<DynamicObject>,
    gates: &FeatureGates,
) -> AdmissionResponse {
    let auto_delete_pvc = gates.enabled("StatefulSetAutoDeletePVC");
    super::defaulting(req, gates.enabled("TemplateNoDefaults"), |obj, template| {
        defaulted(obj, template, auto_delete_pvc)
    })
}

fn shown(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn int_or_percent(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

fn max_unavailable_errors(v: &IntOrString, parallel: bool, path: &str) -> Vec<String> {
    let mut errs = vec![];
    let text = int_or_percent(v);
    match v {
        IntOrString::Int(i) if *i < 0 => errs.push(format!(
            "{path}: Invalid value: {i}: must be greater than or equal to 0"
        )),
        IntOrString::String(_) if scaled(v, 100, true).is_err() => errs.push(format!(
            "{path}: Invalid value: {text}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"
        )),
        _ => {}
    }
    if scaled(v, 1, true).is_ok_and(|n| n < 1) {
        errs.push(format!(
            "{path}: Invalid value: {text}: should not be less than 1"
        ));
    }
    if !parallel && *v != IntOrString::Int(1) {
        errs.push(format!(
            "{path}: Invalid value: {text}: can only work with Parallel PodManagementPolicyType"
        ));
    }
    errs
}

/// OpenKruise's field errors for the spec (empty: valid).
pub fn validate(sts: &StatefulSet) -> Vec<String> {
    let spec = &sts.spec;
    let mut errs = vec![];
    let policy = spec.pod_management_policy.as_deref().unwrap_or("");
    match policy {
        "" => errs.push("spec.podManagementPolicy: Required value".into()),
        "OrderedReady" | "Parallel" => {}
        p => errs.push(format!(
            "spec.podManagementPolicy: Invalid value: {p:?}: must be 'OrderedReady' or 'Parallel'"
        )),
    }
    let parallel = policy == "Parallel";
    for (i, r) in spec.reserve_ordinals.iter().enumerate() {
        match r {
            IntOrString::String(s) => {
                let ok = s.split_once('-').is_some_and(|(a, b)| {
                    !a.is_empty()
                        && !b.is_empty()
                        && a.bytes().all(|c| c.is_ascii_digit())
                        && b.bytes().all(|c| c.is_ascii_digit())
                });
                if !ok {
                    errs.push(format!(
                        "spec: Invalid value: {}: {i} th reserve ordinal is not a valid range: {s}",
                        shown(&spec.reserve_ordinals)
                    ));
                } else if let Some((a, b)) = s.split_once('-')
                    && a.parse::<i64>().ok() > b.parse::<i64>().ok()
                {
                    errs.push(format!(
                        "spec: Invalid value: {}: {i} th reserve ordinal is invalid: {s}, err = invalid range {s}",
                        shown(&spec.reserve_ordinals)
                    ));
                }
            }
            IntOrString::Int(n) if *n < 0 => errs.push(format!(
                "spec: Invalid value: {}: {i} th reserve ordinal is negative: {n}",
                shown(&spec.reserve_ordinals)
            )),
            IntOrString::Int(_) => {}
        }
    }
    if let Some(m) = spec
        .scale_strategy
        .as_ref()
        .and_then(|s| s.max_unavailable.as_ref())
    {
        errs.extend(max_unavailable_errors(
            m,
            parallel,
            "spec.scaleStrategy.maxUnavailable",
        ));
    }
    let us = &spec.update_strategy;
    match us.type_.as_deref().unwrap_or("") {
        "" => errs.push("spec.updateStrategy: Required value".into()),
        "OnDelete" => {
            if let Some(ru) = &us.rolling_update {
                errs.push(format!(
                    "spec.updateStrategy.rollingUpdate: Invalid value: {}: only allowed for updateStrategy 'RollingUpdate'",
                    shown(ru)
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(ru) = &us.rolling_update {
                let p = "spec.updateStrategy.rollingUpdate";
                if let Some(n) = ru.partition.filter(|n| *n < 0) {
                    errs.push(format!(
                        "{p}.partition: Invalid value: {n}: must be greater than or equal to 0"
                    ));
                }
                let mrs = ru.min_ready_seconds.unwrap_or(0);
                if mrs < 0 {
                    errs.push(format!("{p}.minReadySeconds: Invalid value: {mrs}: must be greater than or equal to 0"));
                }
                if mrs > 300 {
                    errs.push(format!("{p}.minReadySeconds: Invalid value: {mrs}: must be no more than 300 seconds"));
                }
                match &ru.max_unavailable {
                    None => errs.push(format!("{p}.maxUnavailable: Required value")),
                    Some(m) => errs.extend(max_unavailable_errors(
                        m,
                        parallel,
                        &format!("{p}.maxUnavailable"),
                    )),
                }
                match ru.pod_update_policy.as_deref().unwrap_or("") {
                    "" => errs.push(format!("{p}.podUpdatePolicy: Required value")),
                    "ReCreate" => {}
                    pol @ ("InPlaceIfPossible" | "InPlaceOnly") => {
                        let gates = spec
                            .template
                            .spec
                            .as_ref()
                            .and_then(|s| s.readiness_gates.clone())
                            .unwrap_or_default();
                        if !gates.iter().any(|g| g.condition_type == IN_PLACE_UPDATE_READY) {
                            errs.push(format!(
                                "spec.template.spec.readinessGates: Invalid value: {}: must contains {IN_PLACE_UPDATE_READY} when podUpdatePolicy is {pol}",
                                if gates.is_empty() { "null".to_string() } else { shown(&gates) }
                            ));
                        }
                    }
                    pol => errs.push(format!(
                        "{p}.podUpdatePolicy: Invalid value: {pol:?}: must be 'ReCreate', InPlaceIfPossible or 'InPlaceOnly'"
                    )),
                }
                if ru.unordered_update.is_some() && !parallel {
                    errs.push(format!(
                        "{p}.unorderedUpdate: Required value: unorderedUpdate can only work with Parallel PodManagementPolicyType"
                    ));
                }
            }
        }
        t => errs.push(format!(
            "spec.updateStrategy: Invalid value: {}: must be 'RollingUpdate' or 'OnDelete'",
            shown(&json!({"type": t}))
        )),
    }
    if let Some(p) = &spec.persistent_volume_claim_retention_policy {
        for (field, v) in [
            ("whenDeleted", &p.when_deleted),
            ("whenScaled", &p.when_scaled),
        ] {
            let v = v.as_deref().unwrap_or("");
            if v != "Retain" && v != "Delete" {
                errs.push(format!(
                    "spec.persistentVolumeClaimRetentionPolicy.{field}: Unsupported value: {v:?}: supported values: \"Retain\", \"Delete\""
                ));
            }
        }
    }
    if let Some(r) = spec.replicas.filter(|r| *r < 0) {
        errs.push(format!(
            "spec.replicas: Invalid value: {r}: must be greater than or equal to 0"
        ));
    }
    let sel = &spec.selector;
    let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty());
    if empty {
        errs.push(format!(
            "spec.selector: Invalid value: {}: empty selector is invalid for statefulset",
            shown(sel)
        ));
    } else {
        let labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        if !crate::selector::matches(sel, &labels) {
            errs.push(format!(
                "spec.template.metadata.labels: Invalid value: {}: `selector` does not match template `labels`",
                shown(&labels)
            ));
        }
    }
    let pod = spec.template.spec.clone().unwrap_or_default();
    if let Some(rp) = pod.restart_policy.as_deref().filter(|p| *p != "Always") {
        errs.push(format!(
            "spec.template.spec.restartPolicy: Unsupported value: {rp:?}: supported values: \"Always\""
        ));
    }
    if pod.active_deadline_seconds.is_some() {
        errs.push("spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in StatefulSet is not Supported".into());
    }
    errs
}

/// The errors of an update from `old` to `new`: beyond the fields
/// OpenKruise lets change, the spec is immutable.
pub fn validate_update(new: &StatefulSet, old: &StatefulSet) -> Vec<String> {
    let mut kept = new.spec.clone();
    let o = &old.spec;
    kept.replicas = o.replicas;
    kept.template = o.template.clone();
    kept.update_strategy = o.update_strategy.clone();
    kept.persistent_volume_claim_retention_policy =
        o.persistent_volume_claim_retention_policy.clone();
    kept.scale_strategy = o.scale_strategy.clone();
    kept.volume_claim_templates = o.volume_claim_templates.clone();
    kept.volume_claim_update_strategy = o.volume_claim_update_strategy.clone();
    kept.reserve_ordinals = o.reserve_ordinals.clone();
    kept.lifecycle = o.lifecycle.clone();
    kept.revision_history_limit = o.revision_history_limit;
    kept.ordinals = o.ordinals.clone();
    if kept != *o {
        return vec!["spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'reserveOrdinals', 'lifecycle', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy', `volumeClaimTemplates`, `VolumeClaimUpdateStrategy` and 'updateStrategy' are forbidden".into()];
    }
    vec![]
}

/// Under `InPlaceOnly`, the template change's first operation that is not
/// an image replace (OpenKruise's unanchored `/containers/N/image` match).
pub fn not_in_place(new: &StatefulSet, old: &StatefulSet) -> Option<String> {
    let policy = new
        .spec
        .update_strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.pod_update_policy.as_deref());
    if policy != Some("InPlaceOnly") {
        return None;
    }
    let (a, b) = (
        serde_json::to_value(&old.spec.template.spec).unwrap_or_default(),
        serde_json::to_value(&new.spec.template.spec).unwrap_or_default(),
    );
    let image = |path: &str| {
        let parts: Vec<&str> = path.split('/').collect();
        parts.windows(3).any(|w| {
            w[0] == "containers"
                && !w[1].is_empty()
                && w[1].bytes().all(|c| c.is_ascii_digit())
                && w[2] == "image"
        })
    };
    for op in json_patch::diff(&a, &b).0 {
        let (kind, path) = match &op {
            json_patch::PatchOperation::Replace(r) => ("replace", r.path.to_string()),
            json_patch::PatchOperation::Add(x) => ("add", x.path.to_string()),
            json_patch::PatchOperation::Remove(x) => ("remove", x.path.to_string()),
            other => ("replace", other.path().to_string()),
        };
        if kind != "replace" || !image(&path) {
            return Some(format!(
                "invalid template modified with InPlaceOnly strategy: {kind} {path}, currently only image update is allowed for InPlaceOnly"
            ));
        }
    }
    None
}

/// Answers the validating webhook (create and update; deletions are
/// deletion protection's).
pub fn validate_review(req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return resp;
    }
    let Some(obj) = object(req.object.as_ref()) else {
        return deny(resp, 400, "BadRequest", "the request has no object".into());
    };
    let sts: StatefulSet = match serde_json::from_value(obj) {
        Ok(s) => s,
        Err(e) => return deny(resp, 400, "BadRequest", format!("not a StatefulSet: {e}")),
    };
    let mut errs = validate(&sts);
    let old = match req.operation {
        Operation::Update => object(req.old_object.as_ref())
            .and_then(|o| serde_json::from_value::<StatefulSet>(o).ok()),
        _ => None,
    };
    if let Some(old) = &old {
        errs.extend(validate_update(&sts, old));
    }
    if !errs.is_empty() {
        return deny(resp, 422, "Invalid", aggregate(&errs));
    }
    if let Some(why) = old.as_ref().and_then(|o| not_in_place(&sts, o)) {
        return deny(resp, 422, "Invalid", why);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(spec: Value) -> StatefulSet {
        let obj = json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "StatefulSet",
            "metadata": {"name": "s", "namespace": "n"}, "spec": spec});
        serde_json::from_value(defaulted(&obj, true, true)).unwrap()
    }

    fn base() -> Value {
        json!({"selector": {"matchLabels": {"app": "s"}},
            "template": {"metadata": {"labels": {"app": "s"}},
                "spec": {"containers": [{"name": "main", "image": "nginx"}]}}})
    }

    #[test]
    fn defaults_as_openkruise() {
        let s = sts(base());
        assert_eq!(
            s.spec.pod_management_policy.as_deref(),
            Some("OrderedReady")
        );
        assert_eq!(
            s.spec.update_strategy.type_.as_deref(),
            Some("RollingUpdate")
        );
        let ru = s.spec.update_strategy.rolling_update.as_ref().unwrap();
        assert_eq!(ru.partition, Some(0));
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(ru.pod_update_policy.as_deref(), Some("ReCreate"));
        assert_eq!(ru.min_ready_seconds, Some(0));
        assert_eq!(
            (s.spec.replicas, s.spec.revision_history_limit),
            (Some(1), Some(10))
        );
        let p = s
            .spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(
            (p.when_deleted.as_deref(), p.when_scaled.as_deref()),
            (Some("Retain"), Some("Retain"))
        );
        let c = &s.spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            c.image_pull_policy.as_deref(),
            Some("Always"),
            "Kruise's template default"
        );
        assert!(validate(&s).is_empty(), "{:?}", validate(&s));
    }

    #[test]
    fn updates_change_only_what_openkruise_lets_change() {
        let old = sts(base());
        let mut new = old.clone();
        new.spec.replicas = Some(7);
        new.spec.ordinals = Some(Default::default());
        assert!(validate_update(&new, &old).is_empty());
        new.spec.service_name = Some("other".into());
        let e = validate_update(&new, &old);
        assert!(
            e[0].starts_with(
                "spec: Forbidden: updates to statefulset spec for fields other than 'replicas'"
            ),
            "{e:?}"
        );
        let mut spec = base();
        spec["template"]["spec"]["readinessGates"] =
            json!([{"conditionType": "InPlaceUpdateReady"}]);
        spec["updateStrategy"] = json!({"rollingUpdate": {"podUpdatePolicy": "InPlaceOnly"}});
        let old = sts(spec);
        let mut image = old.clone();
        image.spec.template.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
        assert_eq!(not_in_place(&image, &old), None);
        let mut cmd = image.clone();
        cmd.spec.template.spec.as_mut().unwrap().containers[0].command = Some(vec!["sh".into()]);
        assert_eq!(
            not_in_place(&cmd, &old).as_deref(),
            Some(
                "invalid template modified with InPlaceOnly strategy: add /containers/0/command, currently only image update is allowed for InPlaceOnly"
            )
        );
    }

    #[test]
    fn refuses_as_openkruise() {
        let mut spec = base();
        spec["podManagementPolicy"] = json!("Sometimes");
        spec["reserveOrdinals"] = json!([-1, "3-x"]);
        let e = validate(&sts(spec));
        assert!(
            e[0].ends_with("must be 'OrderedReady' or 'Parallel'"),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("0 th reserve ordinal is negative: -1")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("1 th reserve ordinal is not a valid range: 3-x")),
            "{e:?}"
        );
        let mut spec = base();
        spec["updateStrategy"] = json!({"rollingUpdate": {"maxUnavailable": 2, "podUpdatePolicy": "InPlaceIfPossible",
            "minReadySeconds": 301, "unorderedUpdate": {}}});
        let e = validate(&sts(spec));
        assert!(
            e.iter()
                .any(|m| m.ends_with("must be no more than 300 seconds")),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.ends_with("maxUnavailable: Invalid value: 2: can only work with Parallel PodManagementPolicyType")), "{e:?}");
        assert!(
            e.iter().any(|m| m.ends_with(
                "must contains InPlaceUpdateReady when podUpdatePolicy is InPlaceIfPossible"
            )),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m
                .ends_with("unorderedUpdate can only work with Parallel PodManagementPolicyType")),
            "{e:?}"
        );
        let mut spec = base();
        spec["selector"] = json!({"matchLabels": {"app": "other"}});
        spec["template"]["spec"]["restartPolicy"] = json!("Never");
        let e = validate(&sts(spec));
        assert!(
            e.iter()
                .any(|m| m.contains("`selector` does not match template `labels`")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("restartPolicy: Unsupported value: \"Never\"")),
            "{e:?}"
        );
        let mut spec = base();
        spec["podManagementPolicy"] = json!("Parallel");
        spec["updateStrategy"] = json!({"rollingUpdate": {"maxUnavailable": "50%"}});
        assert!(validate(&sts(spec)).is_empty());
    }
}
