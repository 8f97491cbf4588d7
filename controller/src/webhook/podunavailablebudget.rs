//! Validation of PodUnavailableBudgets (`vpodunavailablebudget.kb.io`):
//! exactly one of `targetRef` and `selector`, exactly one of
//! `maxUnavailable` and `minAvailable` (a non-negative number or a
//! percentage up to 100%), valid annotations, `selector` and `targetRef`
//! immutable, and no two budgets of a namespace guarding the same pods
//! (same target, or selectors that loosely overlap). OpenKruise's rules
//! and texts; everything is refused while both budget gates are off.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keelson_api::policy::v1alpha1::podunavailablebudget::{
    ANNOTATION_PROTECT_OPERATIONS, ANNOTATION_PROTECT_TOTAL_REPLICAS, OPERATION_DELETE,
    OPERATION_EVICT, OPERATION_RESIZE, OPERATION_UPDATE, PodUnavailableBudget,
};
use kube::ResourceExt;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use super::{Context, aggregate, deny, object};
use crate::podunavailablebudget::finder::group;
use crate::workload::percent;

/// OpenKruise's path.
pub const PATH: &str = "/validate-policy-kruise-io-podunavailablebudget";

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn int_or_percent(v: &IntOrString, path: &str) -> Vec<String> {
    // IntOrString prints itself unquoted in field errors.
    let shown = match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    match v {
        IntOrString::Int(i) if *i < 0 => {
            vec![format!(
                "{path}: Invalid value: {shown}: must be greater than or equal to 0"
            )]
        }
        IntOrString::Int(_) => vec![],
        IntOrString::String(_) => match percent::scaled(v, 100, false) {
            Err(_) => vec![format!(
                "{path}: Invalid value: {shown}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"
            )],
            Ok(p) if p < 0 => {
                vec![format!(
                    "{path}: Invalid value: {shown}: must be greater than or equal to 0"
                )]
            }
            Ok(p) if p > 100 => {
                vec![format!(
                    "{path}: Invalid value: {shown}: must not be greater than 100%"
                )]
            }
            Ok(_) => vec![],
        },
    }
}

fn selector_errors(s: &LabelSelector, path: &str) -> Vec<String> {
    let mut errs = vec![];
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let n = e.values.as_ref().map_or(0, Vec::len);
        match e.operator.as_str() {
            "In" | "NotIn" if n == 0 => errs.push(format!(
                "{p}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
            )),
            "Exists" | "DoesNotExist" if n > 0 => errs.push(format!(
                "{p}.values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => errs.push(format!(
                "{p}.operator: Invalid value: {op:?}: not a valid selector operator"
            )),
        }
    }
    errs
}

/// The field errors of `b` alone (and against `old` on update).
pub fn validate(b: &PodUnavailableBudget, old: Option<&PodUnavailableBudget>) -> Vec<String> {
    let mut errs = vec![];
    let ann = b.annotations();
    if let Some(ops) = ann.get(ANNOTATION_PROTECT_OPERATIONS) {
        let known = [
            OPERATION_UPDATE,
            OPERATION_DELETE,
            OPERATION_EVICT,
            OPERATION_RESIZE,
        ];
        for op in ops.split(',') {
            if !known.contains(&op) {
                errs.push(format!(
                    "metadata: Internal error: annotation[{ANNOTATION_PROTECT_OPERATIONS}] is invalid"
                ));
            }
        }
    }
    if let Some(v) = ann.get(ANNOTATION_PROTECT_TOTAL_REPLICAS)
        && v.parse::<i32>().is_err()
    {
        errs.push(format!(
            "metadata: Internal error: annotation[{ANNOTATION_PROTECT_TOTAL_REPLICAS}] is invalid"
        ));
    }
    let spec = &b.spec;
    match (&spec.selector, &spec.target_reference) {
        (None, None) => errs.push(
            "spec.selector, targetRef: Required value: no selector or targetRef defined in PodUnavailableBudget".into(),
        ),
        (Some(_), Some(_)) => errs.push(
            "spec.selector, targetRef: Required value: selector and targetRef are mutually exclusive".into(),
        ),
        (None, Some(r)) => {
            if r.api_version.is_empty() || r.name.is_empty() || r.kind.is_empty() {
                errs.push(format!(
                    "spec.TargetReference: Invalid value: {}: empty TargetReference is not valid for PodUnavailableBudget.",
                    json(r)
                ));
            }
            if r.api_version.matches('/').count() > 1 {
                errs.push(format!(
                    "spec.TargetReference: Invalid value: {}: unexpected GroupVersion string: {}",
                    json(r),
                    r.api_version
                ));
            }
        }
        (Some(s), None) => {
            errs.extend(selector_errors(s, "spec.selector"));
            if s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
            {
                errs.push(format!(
                    "spec.selector: Invalid value: {}: empty selector is not valid for PodUnavailableBudget.",
                    json(s)
                ));
            }
        }
    }
    match (&spec.max_unavailable, &spec.min_available) {
        (None, None) => errs.push("spec.maxUnavailable, minAvailable: Required value: no maxUnavailable or minAvailable defined in PodUnavailableBudget".into()),
        (Some(_), Some(_)) => errs.push("spec.maxUnavailable, minAvailable: Required value: maxUnavailable and minAvailable are mutually exclusive".into()),
        (Some(m), None) => errs.extend(int_or_percent(m, "spec.maxUnavailable")),
        (None, Some(m)) => errs.extend(int_or_percent(m, "spec.minAvailable")),
    }
    if let Some(old) = old
        && (old.spec.selector != spec.selector
            || old.spec.target_reference != spec.target_reference)
    {
        errs.push(
            "spec.selector, targetRef: Required value: selector and targetRef cannot be modified"
                .into(),
        );
    }
    errs
}

fn requirements(s: &LabelSelector) -> BTreeMap<String, LabelSelectorRequirement> {
    let mut out: BTreeMap<String, LabelSelectorRequirement> = s
        .match_expressions
        .iter()
        .flatten()
        .map(|e| (e.key.clone(), e.clone()))
        .collect();
    for (k, v) in s.match_labels.iter().flatten() {
        out.insert(
            k.clone(),
            LabelSelectorRequirement {
                key: k.clone(),
                operator: "In".into(),
                values: Some(vec![v.clone()]),
            },
        );
    }
    out
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    b.iter().any(|x| a.contains(x))
}

fn contains_all(a: &[String], b: &[String]) -> bool {
    b.iter().all(|x| a.contains(x))
}

fn requirement_overlap(a: &LabelSelectorRequirement, b: &LabelSelectorRequirement) -> bool {
    let (av, bv) = (
        a.values.clone().unwrap_or_default(),
        b.values.clone().unwrap_or_default(),
    );
    match (a.operator.as_str(), b.operator.as_str()) {
        ("In", "Exists") => true,
        ("In", "In") => overlaps(&bv, &av),
        ("In", "NotIn") => !contains_all(&bv, &av),
        ("Exists", "In" | "NotIn" | "Exists") => true,
        ("NotIn", "Exists" | "DoesNotExist" | "NotIn") => true,
        ("NotIn", "In") => !contains_all(&av, &bv),
        ("DoesNotExist", "DoesNotExist" | "NotIn") => true,
        _ => false,
    }
}

/// Whether two selectors constrain the same keys in ways that can select
/// the same pods (OpenKruise's loose overlap).
pub fn loosely_overlap(a: &LabelSelector, b: &LabelSelector) -> bool {
    let (x, y) = (requirements(a), requirements(b));
    x.iter()
        .all(|(k, e)| y.get(k).is_some_and(|f| requirement_overlap(e, f)))
        && y.iter()
            .all(|(k, f)| x.get(k).is_some_and(|e| requirement_overlap(f, e)))
}

/// The error if `b` guards what another budget of `others` guards.
pub fn conflict(b: &PodUnavailableBudget, others: &[&PodUnavailableBudget]) -> Option<String> {
    let name = b.name_any();
    for o in others.iter().filter(|o| o.name_any() != name) {
        match (
            &b.spec.target_reference,
            &o.spec.target_reference,
            &b.spec.selector,
            &o.spec.selector,
        ) {
            (Some(r), Some(q), _, _)
                if group(&r.api_version) == group(&q.api_version)
                    && r.kind == q.kind
                    && r.name == q.name =>
            {
                return Some(format!(
                    "spec.targetReference: Invalid value: {}: pub.spec.targetReference is in conflict with other PodUnavailableBudget {}",
                    json(r),
                    o.name_any()
                ));
            }
            (None, None, Some(s), Some(t)) if loosely_overlap(s, t) => {
                return Some(format!(
                    "spec.selector: Invalid value: {}: pub.spec.selector is in conflict with other PodUnavailableBudget {}",
                    json(s),
                    o.name_any()
                ));
            }
            _ => {}
        }
    }
    None
}

/// The answer to a PodUnavailableBudget AdmissionReview.
pub fn review(req: &AdmissionRequest<DynamicObject>, ctx: &Context) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return resp;
    }
    if !ctx.gates.enabled("PodUnavailableBudgetDeleteGate")
        && !ctx.gates.enabled("PodUnavailableBudgetUpdateGate")
    {
        return deny(
            resp,
            400,
            "BadRequest",
            "feature PodUnavailableBudget is invalid, please open via feature-gate(PodUnavailableBudgetDeleteGate, PodUnavailableBudgetUpdateGate)".into(),
        );
    }
    let parse = |o: Option<&DynamicObject>| {
        object(o).map(|v| {
            serde_json::from_value::<PodUnavailableBudget>(v)
                .map_err(|e| format!("not a PodUnavailableBudget: {e}"))
        })
    };
    let b = match parse(req.object.as_ref()) {
        Some(Ok(b)) => b,
        Some(Err(m)) => return deny(resp, 400, "BadRequest", m),
        None => return deny(resp, 400, "BadRequest", "the request has no object".into()),
    };
    let old = match (&req.operation, parse(req.old_object.as_ref())) {
        (Operation::Update, Some(Ok(o))) => Some(o),
        _ => None,
    };
    let mut errs = validate(&b, old.as_ref());
    let ns = req.namespace.clone().unwrap_or_default();
    let all = ctx.caches.budgets.state();
    let others: Vec<&PodUnavailableBudget> = all
        .iter()
        .map(|o| o.as_ref())
        .filter(|o| o.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    errs.extend(conflict(&b, &others));
    if errs.is_empty() {
        return resp;
    }
    deny(resp, 400, "BadRequest", aggregate(&errs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn budget(v: serde_json::Value) -> PodUnavailableBudget {
        serde_json::from_value(v).unwrap()
    }

    fn base(spec: serde_json::Value) -> PodUnavailableBudget {
        budget(
            json!({"apiVersion": "policy.kruise.io/v1alpha1", "kind": "PodUnavailableBudget",
            "metadata": {"name": "a", "namespace": "n"}, "spec": spec}),
        )
    }

    #[test]
    fn exactly_one_target_and_one_bound() {
        assert!(
            validate(
                &base(json!({"selector": {"matchLabels": {"app": "x"}}, "maxUnavailable": 1})),
                None
            )
            .is_empty()
        );
        let e = validate(&base(json!({"maxUnavailable": 1})), None);
        assert_eq!(
            e,
            vec![
                "spec.selector, targetRef: Required value: no selector or targetRef defined in PodUnavailableBudget"
            ]
        );
        let e = validate(
            &base(json!({"selector": {"matchLabels": {"a": "b"}},
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                "maxUnavailable": 1, "minAvailable": 1})),
            None,
        );
        assert!(
            e[0].ends_with("selector and targetRef are mutually exclusive"),
            "{e:?}"
        );
        assert!(
            e[1].ends_with("maxUnavailable and minAvailable are mutually exclusive"),
            "{e:?}"
        );
        let e = validate(&base(json!({"selector": {}, "minAvailable": "120%"})), None);
        assert!(e[0].contains("empty selector is not valid"), "{e:?}");
        assert!(e[1].ends_with("must not be greater than 100%"), "{e:?}");
        let e = validate(
            &base(json!({"selector": {"matchLabels": {"a": "b"}}, "maxUnavailable": -1})),
            None,
        );
        assert!(
            e[0].ends_with("must be greater than or equal to 0"),
            "{e:?}"
        );
    }

    #[test]
    fn annotations_and_immutable_targets() {
        let mut b = base(json!({"selector": {"matchLabels": {"a": "b"}}, "maxUnavailable": 1}));
        b.metadata.annotations = Some(
            [
                (
                    ANNOTATION_PROTECT_OPERATIONS.to_string(),
                    "DELETE,KILL".to_string(),
                ),
                (
                    ANNOTATION_PROTECT_TOTAL_REPLICAS.to_string(),
                    "ten".to_string(),
                ),
            ]
            .into(),
        );
        let old = base(json!({"selector": {"matchLabels": {"a": "c"}}, "maxUnavailable": 1}));
        let e = validate(&b, Some(&old));
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("annotation[kruise.io/pub-protect-operations] is invalid"));
        assert!(e[1].contains("annotation[pub.kruise.io/protect-total-replicas] is invalid"));
        assert!(e[2].ends_with("selector and targetRef cannot be modified"));
    }

    #[test]
    fn conflicts_with_same_target_or_loosely_overlapping_selector() {
        let t = |name: &str, dep: &str| {
            let mut b = base(
                json!({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep}, "maxUnavailable": 1}),
            );
            b.metadata.name = Some(name.into());
            b
        };
        let (a, b, c) = (t("a", "web"), t("b", "web"), t("c", "db"));
        let e = conflict(&a, &[&b, &c]).unwrap();
        assert!(
            e.ends_with("is in conflict with other PodUnavailableBudget b"),
            "{e}"
        );
        assert!(conflict(&a, &[&c]).is_none());
        let s = |name: &str, sel: serde_json::Value| {
            let mut b = base(json!({"selector": sel, "maxUnavailable": 1}));
            b.metadata.name = Some(name.into());
            b
        };
        let x = s("x", json!({"matchLabels": {"app": "web"}}));
        let y = s(
            "y",
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}),
        );
        let z = s("z", json!({"matchLabels": {"app": "web", "tier": "front"}}));
        assert!(conflict(&x, &[&y]).is_some());
        assert!(
            conflict(&x, &[&z]).is_none(),
            "different keys do not loosely overlap"
        );
        let w = s(
            "w",
            json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
        );
        assert!(conflict(&x, &[&w]).is_none());
    }
}
