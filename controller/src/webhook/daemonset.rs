//! The Advanced DaemonSet webhooks at OpenKruise's paths (create and
//! update). Mutating: OpenKruise's spec defaults — `burstReplicas` 250,
//! RollingUpdate, `rollingUpdateType` Standard (the deprecated `Surging`
//! becomes Standard with `maxSurge` 1 / `maxUnavailable` 0 unless set),
//! `maxUnavailable` 1 / `maxSurge` 0 when neither is set,
//! `revisionHistoryLimit` 10 — and, unlike CloneSet and Advanced
//! StatefulSet, **no** pod-template defaults. Validating: OpenKruise's
//! rules and messages, judged on a copy whose pod spec is defaulted (so
//! an omitted `restartPolicy` passes); as upstream a refused create
//! answers 500, a refused update 422, and an update may change only the
//! template, update strategy, lifecycle, `burstReplicas`,
//! `minReadySeconds` and `revisionHistoryLimit`.
//!
//! Both served versions come to the same paths, as upstream registers
//! them, and are judged in their own version's terms: only v1alpha1 knows
//! the deprecated `Surging` type (v1beta1 refuses it and does not default
//! it); only v1beta1 has `scaleStrategy`, which an update may change. Both
//! are read into the v1beta1 types (v1alpha1 has no field they lack).

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keelson_api::apps::v1alpha1::daemonset::DEPRECATED_SURGING_ROLLING_UPDATE_TYPE;
use keelson_api::apps::v1beta1::daemonset::{
    DaemonSet, DaemonSetSpec, INPLACE_ROLLING_UPDATE_TYPE, RollingUpdateDaemonSet,
    STANDARD_ROLLING_UPDATE_TYPE,
};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::{Value, json};

use super::cloneset::put_default;
use super::{aggregate, deny, object};

/// OpenKruise's mutating path.
pub const MUTATE_PATH: &str = "/mutate-apps-kruise-io-daemonset";
/// OpenKruise's validating path.
pub const VALIDATE_PATH: &str = "/validate-apps-kruise-io-daemonset";

/// Which served version a request is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1alpha1,
    V1beta1,
}

impl Version {
    /// The version of the request's resource (v1alpha1 unless it says
    /// v1beta1).
    pub fn of(req: &AdmissionRequest<DynamicObject>) -> Self {
        if req.resource.version == "v1beta1" {
            Self::V1beta1
        } else {
            Self::V1alpha1
        }
    }
}

/// The defaulted object (OpenKruise's `SetDefaultsDaemonSet`, or
/// `SetDefaultsDaemonSetV1beta1`, which knows no `Surging`).
pub fn defaulted(obj: &Value, version: Version) -> Value {
    let mut out = obj.clone();
    put_default(&mut out, &["spec", "burstReplicas"], json!(250));
    let ty = out.pointer("/spec/updateStrategy/type");
    if ty.is_none_or(|t| t.is_null() || t == "") {
        if let Some(us) = out
            .pointer_mut("/spec/updateStrategy")
            .and_then(Value::as_object_mut)
        {
            us.remove("type");
        }
        put_default(
            &mut out,
            &["spec", "updateStrategy", "type"],
            json!("RollingUpdate"),
        );
    }
    if out.pointer("/spec/updateStrategy/type") == Some(&json!("RollingUpdate")) {
        let ru = |k: &'static str| ["spec", "updateStrategy", "rollingUpdate", k];
        put_default(
            &mut out,
            &["spec", "updateStrategy", "rollingUpdate"],
            json!({}),
        );
        let rtype = out
            .pointer("/spec/updateStrategy/rollingUpdate/rollingUpdateType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let surging =
            version == Version::V1alpha1 && rtype == DEPRECATED_SURGING_ROLLING_UPDATE_TYPE;
        if surging {
            put_default(&mut out, &ru("maxSurge"), json!(1));
            put_default(&mut out, &ru("maxUnavailable"), json!(0));
        }
        if (rtype.is_empty() || surging)
            && let Some(r) = out
                .pointer_mut("/spec/updateStrategy/rollingUpdate")
                .and_then(Value::as_object_mut)
        {
            r.insert(
                "rollingUpdateType".into(),
                json!(STANDARD_ROLLING_UPDATE_TYPE),
            );
        }
        let unset = |out: &Value, k: &str| {
            out.pointer(&format!("/spec/updateStrategy/rollingUpdate/{k}"))
                .is_none_or(Value::is_null)
        };
        if unset(&out, "maxUnavailable") && unset(&out, "maxSurge") {
            put_default(&mut out, &ru("maxUnavailable"), json!(1));
            put_default(&mut out, &ru("maxSurge"), json!(0));
        }
    }
    put_default(&mut out, &["spec", "revisionHistoryLimit"], json!(10));
    out
}

/// Answers the mutating webhook.
pub fn mutate_review(req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    // Advanced DaemonSet's webhook never defaults the template.
    let version = Version::of(req);
    super::defaulting(req, true, |obj, _| defaulted(obj, version))
}

fn shown(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn text(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// A valid percent string's number (`[0-9]+%`).
fn percent(v: &IntOrString) -> Option<i64> {
    let IntOrString::String(s) = v else {
        return None;
    };
    let n = s.strip_suffix('%')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

/// Upstream's `getIntOrPercentValue`: the percent number, the integer,
/// or a non-percent string read as an integer (0 when it is none).
fn value(v: &IntOrString) -> i64 {
    match (percent(v), v) {
        (Some(p), _) => p,
        (None, IntOrString::Int(i)) => i64::from(*i),
        (None, IntOrString::String(s)) => s.parse().unwrap_or(0),
    }
}

const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')";

/// Kubernetes' `ValidatePositiveIntOrPercent` and
/// `IsNotMoreThan100Percent`.
fn int_or_percent_errors(v: &IntOrString, path: &str, errs: &mut Vec<String>) {
    match v {
        IntOrString::String(_) if percent(v).is_none() => {
            errs.push(format!(
                "{path}: Invalid value: {:?}: {PERCENT_MSG}",
                text(v)
            ));
        }
        IntOrString::Int(i) if *i < 0 => {
            errs.push(format!(
                "{path}: Invalid value: {i}: must be greater than or equal to 0"
            ));
        }
        _ => {}
    }
    if percent(v).is_some_and(|p| p > 100) {
        errs.push(format!(
            "{path}: Invalid value: {:?}: must not be greater than 100%",
            text(v)
        ));
    }
}

fn rolling_update_errors(ru: &RollingUpdateDaemonSet, version: Version, errs: &mut Vec<String>) {
    let p = "spec.updateStrategy.rollingUpdate";
    let has_unavailable = ru.max_unavailable.as_ref().is_some_and(|v| value(v) != 0);
    let has_surge = ru.max_surge.as_ref().is_some_and(|v| value(v) != 0);
    if let Some(v) = ru.max_unavailable.as_ref().filter(|_| has_unavailable) {
        int_or_percent_errors(v, &format!("{p}.maxUnavailable"), errs);
    }
    if let Some(v) = ru.max_surge.as_ref().filter(|_| has_surge) {
        int_or_percent_errors(v, &format!("{p}.maxSurge"), errs);
    }
    if has_unavailable && has_surge {
        let surge = ru.max_surge.as_ref().map(text).unwrap_or_default();
        errs.push(format!(
            "{p}.maxSurge: Invalid value: {surge}: may not be set when maxUnavailable is non-zero"
        ));
    } else if !has_unavailable && !has_surge {
        errs.push(format!(
            "{p}.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"
        ));
    }
    match ru.rolling_update_type.as_deref().unwrap_or("") {
        "" | STANDARD_ROLLING_UPDATE_TYPE => {}
        INPLACE_ROLLING_UPDATE_TYPE if has_surge => {
            errs.push(format!("{p}.maxSurge: Required value: must be 0 for InPlaceIfPossible type"));
        }
        INPLACE_ROLLING_UPDATE_TYPE => {}
        DEPRECATED_SURGING_ROLLING_UPDATE_TYPE
            if version == Version::V1alpha1 && has_unavailable =>
        {
            errs.push(format!("{p}.maxUnavailable: Required value: must be 0 for Surging type"));
        }
        DEPRECATED_SURGING_ROLLING_UPDATE_TYPE if version == Version::V1alpha1 => {}
        t if version == Version::V1alpha1 => errs.push(format!(
            "{p}.rollingUpdate.type: Unsupported value: {t:?}: supported values: \"Standard\", \"Surging\", \"InPlaceIfPossible\""
        )),
        t => errs.push(format!(
            "{p}.rollingUpdate.type: Unsupported value: {t:?}: supported values: \"Standard\", \"InPlaceIfPossible\""
        )),
    }
    if let Some(v) = &ru.partition {
        // Upstream names it under a doubled `rollingUpdate`.
        let path = format!("{p}.rollingUpdate.partition");
        match v {
            IntOrString::Int(i) if *i < 0 => errs.push(format!(
                "{path}: Invalid value: {i}: must be greater than or equal to 0"
            )),
            IntOrString::Int(_) => {}
            IntOrString::String(_) => int_or_percent_errors(v, &path, errs),
        }
    }
}

/// OpenKruise's field errors for the spec (empty: valid).
pub fn validate(spec: &DaemonSetSpec, version: Version) -> Vec<String> {
    let mut errs = vec![];
    let sel = &spec.selector;
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
    let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty());
    if empty {
        errs.push(format!(
            "spec.selector: Invalid value: {}: empty selector is invalid for daemonset",
            shown(sel)
        ));
    }
    let pod = spec.template.spec.clone().unwrap_or_default();
    // Judged after the pod defaults: an omitted policy is Always.
    if let Some(rp) = pod
        .restart_policy
        .as_deref()
        .filter(|p| !p.is_empty() && *p != "Always")
    {
        errs.push(format!(
            "spec.template.spec.restartPolicy: Unsupported value: {rp:?}: supported values: \"Always\""
        ));
    }
    if pod.active_deadline_seconds.is_some() {
        errs.push("spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in DaemonSet is not Supported".into());
    }
    if spec.min_ready_seconds < 0 {
        errs.push(format!(
            "spec.minReadySeconds: Invalid value: {}: must be greater than or equal to 0",
            spec.min_ready_seconds
        ));
    }
    let us = &spec.update_strategy;
    match us.type_.as_deref().unwrap_or("") {
        "OnDelete" => {}
        "RollingUpdate" => match &us.rolling_update {
            None => errs.push("spec.updateStrategy.rollingUpdate: Required value".into()),
            Some(ru) => rolling_update_errors(ru, version, &mut errs),
        },
        _ => errs.push(format!(
            "spec.updateStrategy: Unsupported value: {}: supported values: \"RollingUpdate\", \"OnDelete\"",
            shown(us)
        )),
    }
    if let Some(n) = spec.revision_history_limit.filter(|n| *n < 0) {
        errs.push(format!(
            "spec.revisionHistoryLimit: Invalid value: {n}: must be greater than or equal to 0"
        ));
    }
    if spec
        .lifecycle
        .as_ref()
        .is_some_and(|l| l.in_place_update.is_some())
    {
        errs.push(
            "spec.lifecycle.inPlaceUpdate: Forbidden: inPlaceUpdate hook has not supported yet"
                .into(),
        );
    }
    errs
}

/// The errors of updating `old` to `new`: only some spec fields may
/// change (v1beta1: `scaleStrategy` too), and the new spec must be valid.
pub fn validate_update(new: &DaemonSetSpec, old: &DaemonSetSpec, version: Version) -> Vec<String> {
    let mut errs = vec![];
    let kept = DaemonSetSpec {
        template: old.template.clone(),
        update_strategy: old.update_strategy.clone(),
        lifecycle: old.lifecycle.clone(),
        burst_replicas: old.burst_replicas.clone(),
        min_ready_seconds: old.min_ready_seconds,
        revision_history_limit: old.revision_history_limit,
        scale_strategy: old.scale_strategy.clone(),
        ..new.clone()
    };
    if kept != *old {
        errs.push(match version {
            Version::V1alpha1 => "spec: Forbidden: updates to daemonset spec for fields other than 'BurstReplicas', 'template', 'lifecycle',  'updateStrategy', 'minReadySeconds', and 'revisionHistoryLimit' are forbidden",
            Version::V1beta1 => "spec: Forbidden: updates to daemonset spec for fields other than 'BurstReplicas', 'template', 'lifecycle', 'scaleStrategy', 'updateStrategy', 'minReadySeconds', and 'revisionHistoryLimit' are forbidden",
        }.into());
    }
    errs.extend(validate(new, version));
    errs
}

fn typed(v: Value) -> Result<DaemonSet, String> {
    serde_json::from_value(v).map_err(|e| format!("not a DaemonSet: {e}"))
}

/// Answers the validating webhook.
pub fn validate_review(req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return resp;
    }
    let Some(obj) = object(req.object.as_ref()) else {
        return deny(resp, 400, "BadRequest", "the request has no object".into());
    };
    let version = Version::of(req);
    let ds = match typed(obj) {
        Ok(d) => d,
        Err(e) => return deny(resp, 400, "BadRequest", e),
    };
    let (errs, code, reason) = match req.operation {
        Operation::Update => {
            let Some(old) = object(req.old_object.as_ref()).and_then(|o| typed(o).ok()) else {
                return deny(
                    resp,
                    400,
                    "BadRequest",
                    "the request has no old object".into(),
                );
            };
            (
                validate_update(&ds.spec, &old.spec, version),
                422,
                "Invalid",
            )
        }
        // Upstream answers a refused create as an internal error.
        _ => (validate(&ds.spec, version), 500, "InternalError"),
    };
    if errs.is_empty() {
        return resp;
    }
    deny(resp, code, reason, aggregate(&errs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(spec: Value) -> Value {
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "DaemonSet",
            "metadata": {"name": "d", "namespace": "n"}, "spec": spec})
    }

    fn base() -> Value {
        json!({"selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "main", "image": "nginx"}]}}})
    }

    fn spec(v: Value) -> DaemonSetSpec {
        typed(defaulted(&obj(v), Version::V1alpha1)).unwrap().spec
    }

    #[test]
    fn defaults_as_openkruise_without_touching_the_template() {
        let out = defaulted(&obj(base()), Version::V1alpha1);
        assert_eq!(out["spec"]["burstReplicas"], 250);
        assert_eq!(out["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(
            out["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {
                "rollingUpdateType": "Standard", "maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(
            out["spec"]["template"],
            base()["template"],
            "no template defaults"
        );
        let mut surging = base();
        surging["updateStrategy"] = json!({"rollingUpdate": {"rollingUpdateType": "Surging"}});
        let out = defaulted(&obj(surging), Version::V1alpha1);
        assert_eq!(
            out["spec"]["updateStrategy"]["rollingUpdate"],
            json!({"rollingUpdateType": "Standard", "maxSurge": 1, "maxUnavailable": 0})
        );
        let mut on_delete = base();
        on_delete["updateStrategy"] = json!({"type": "OnDelete"});
        assert_eq!(
            defaulted(&obj(on_delete), Version::V1alpha1)["spec"]["updateStrategy"],
            json!({"type": "OnDelete"})
        );
        assert!(
            validate(&spec(base()), Version::V1alpha1).is_empty(),
            "{:?}",
            validate(&spec(base()), Version::V1alpha1)
        );
    }

    #[test]
    fn refuses_as_openkruise() {
        let mut s = base();
        s["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "10%"}});
        s["template"]["spec"]["restartPolicy"] = json!("Never");
        s["template"]["spec"]["activeDeadlineSeconds"] = json!(5);
        s["minReadySeconds"] = json!(-1);
        s["lifecycle"] = json!({"inPlaceUpdate": {"labelsHandler": {"a": "b"}}});
        let e = validate(&spec(s), Version::V1alpha1);
        for want in [
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in DaemonSet is not Supported",
            "spec.minReadySeconds: Invalid value: -1: must be greater than or equal to 0",
            "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 10%: may not be set when maxUnavailable is non-zero",
            "spec.lifecycle.inPlaceUpdate: Forbidden: inPlaceUpdate hook has not supported yet",
        ] {
            assert!(e.iter().any(|m| m == want), "{want} not in {e:?}");
        }
        let mut s = base();
        s["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0,
            "partition": "120%", "rollingUpdateType": "Sometimes"}});
        s["selector"] = json!({"matchLabels": {"app": "other"}});
        let e = validate(&spec(s), Version::V1alpha1);
        for want in [
            "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0",
            "spec.updateStrategy.rollingUpdate.rollingUpdate.partition: Invalid value: \"120%\": must not be greater than 100%",
            "spec.updateStrategy.rollingUpdate.rollingUpdate.type: Unsupported value: \"Sometimes\": supported values: \"Standard\", \"Surging\", \"InPlaceIfPossible\"",
            "spec.template.metadata.labels: Invalid value: {\"app\":\"d\"}: `selector` does not match template `labels`",
        ] {
            assert!(e.iter().any(|m| m == want), "{want} not in {e:?}");
        }
        let mut s = base();
        s["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"rollingUpdateType": "InPlaceIfPossible",
            "maxUnavailable": 0, "maxSurge": 1}});
        assert_eq!(
            validate(&spec(s), Version::V1alpha1),
            [
                "spec.updateStrategy.rollingUpdate.maxSurge: Required value: must be 0 for InPlaceIfPossible type"
            ]
        );
        let mut s = base();
        s["selector"] = json!({});
        s["template"]["metadata"]["labels"] = json!({});
        assert!(
            validate(&spec(s), Version::V1alpha1)
                .iter()
                .any(|m| m.ends_with("empty selector is invalid for daemonset"))
        );
    }

    #[test]
    fn updates_may_change_only_some_fields() {
        let old = spec(base());
        let mut changed = base();
        changed["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        changed["minReadySeconds"] = json!(5);
        assert!(validate_update(&spec(changed), &old, Version::V1alpha1).is_empty());
        let mut selector = base();
        selector["selector"]["matchLabels"]["tier"] = json!("x");
        selector["template"]["metadata"]["labels"]["tier"] = json!("x");
        let e = validate_update(&spec(selector), &old, Version::V1alpha1);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("spec: Forbidden: updates to daemonset spec for fields other than")
        );
    }

    #[test]
    fn v1beta1_knows_no_surging_and_may_change_its_scale_strategy() {
        let mut surging = base();
        surging["updateStrategy"] = json!({"rollingUpdate": {"rollingUpdateType": "Surging"}});
        let out = defaulted(&obj(surging), Version::V1beta1);
        assert_eq!(
            out["spec"]["updateStrategy"]["rollingUpdate"],
            json!({"rollingUpdateType": "Surging", "maxUnavailable": 1, "maxSurge": 0}),
            "not defaulted as Surging"
        );
        let spec = typed(out).unwrap().spec;
        assert_eq!(
            validate(&spec, Version::V1beta1),
            [
                "spec.updateStrategy.rollingUpdate.rollingUpdate.type: Unsupported value: \"Surging\": supported values: \"Standard\", \"InPlaceIfPossible\""
            ]
        );
        let old = typed(defaulted(&obj(base()), Version::V1beta1))
            .unwrap()
            .spec;
        let mut scaled = base();
        scaled["scaleStrategy"] = json!({"partitionedScaling": true});
        let new = typed(defaulted(&obj(scaled), Version::V1beta1))
            .unwrap()
            .spec;
        assert!(new.scale_strategy.as_ref().unwrap().partitioned_scaling);
        assert!(validate_update(&new, &old, Version::V1beta1).is_empty());
        let mut selector = base();
        selector["selector"]["matchLabels"]["tier"] = json!("x");
        selector["template"]["metadata"]["labels"]["tier"] = json!("x");
        let new = typed(defaulted(&obj(selector), Version::V1beta1))
            .unwrap()
            .spec;
        let e = validate_update(&new, &old, Version::V1beta1);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].contains("'lifecycle', 'scaleStrategy', 'updateStrategy'"),
            "{e:?}"
        );
    }
}
