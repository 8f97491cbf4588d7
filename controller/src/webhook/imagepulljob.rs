//! The ImagePullJob webhooks, as OpenKruise's: the mutating one fills in
//! the defaults (completion type Always, a 600 s pull timeout, 3 retries,
//! IfNotPresent, and on create the deletion-protection finalizer); the
//! validating one refuses jobs that could not be carried out (both node
//! names and labels, both node and pod selectors, a malformed selector or
//! image, deadlines shorter than the pull timeout, deadlines with
//! `completionPolicy: Never`), and all jobs while the KruiseDaemon or
//! ImagePullJobGate gate is off. Pure: no I/O.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use keelson_api::apps::v1alpha1::imagepulljob::{
    COMPLETION_POLICY_ALWAYS, COMPLETION_POLICY_NEVER, IMAGE_PULL_POLICY_IF_NOT_PRESENT,
    ImagePullJob, PullPolicy,
};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use super::deny;
use crate::gates::FeatureGates;
use crate::imagepulljob::image_ref;
use crate::imagepulljob::secrets::PROTECTION_FINALIZER;

/// The path OpenKruise's validating webhook configuration points at.
pub const PATH: &str = "/validate-apps-kruise-io-v1alpha1-imagepulljob";

/// The path OpenKruise's mutating webhook configuration points at.
pub const MUTATE_PATH: &str = "/mutate-apps-kruise-io-v1alpha1-imagepulljob";

/// The pull timeout OpenKruise assumes when the job sets none.
const DEFAULT_TIMEOUT_SECONDS: i64 = 600;

/// Why `selector` is not a usable label selector, if it is not.
fn selector_error(selector: &LabelSelector) -> Option<String> {
    for e in selector.match_expressions.iter().flatten() {
        if e.key.is_empty() {
            return Some("a matchExpressions key can not be empty".into());
        }
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Some(format!(
                    "for 'In', 'NotIn' operators, values set can't be empty (key {:?})",
                    e.key
                ));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Some(format!(
                    "values set must be empty for Exists and DoesNotExist (key {:?})",
                    e.key
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => return Some(format!("{other:?} is not a valid label selector operator")),
        }
    }
    selector
        .match_labels
        .iter()
        .flatten()
        .any(|(k, _)| k.is_empty())
        .then(|| "a matchLabels key can not be empty".into())
}

/// Checks `job` the way OpenKruise's webhook does; the message on refusal.
pub fn validate(job: &ImagePullJob) -> Result<(), String> {
    let t = &job.spec.template;
    if let Some(sel) = &t.selector {
        let labels = &sel.label_selector;
        if labels.match_labels.is_some() || labels.match_expressions.is_some() {
            if !sel.names.is_empty() {
                return Err(
                    "can not set both names and labelSelector in this spec.selector".into(),
                );
            }
            if let Some(e) = selector_error(labels) {
                return Err(format!("invalid selector: {e}"));
            }
        }
        let unique: BTreeSet<&String> = sel.names.iter().collect();
        if unique.len() != sel.names.len() {
            return Err("duplicated name in selector names".into());
        }
    }
    if let Some(pods) = &t.pod_selector {
        if t.selector.is_some() {
            return Err("can not set both selector and podSelector".into());
        }
        if let Some(e) = selector_error(pods) {
            return Err(format!("invalid podSelector: {e}"));
        }
    }
    if job.spec.image.is_empty() {
        return Err("image can not be empty".into());
    }
    if let Err(e) = image_ref::familiar_name_and_tag(&job.spec.image) {
        return Err(format!("invalid image {}: {e}", job.spec.image));
    }
    let timeout = t
        .pull_policy
        .as_ref()
        .and_then(|p| p.timeout_seconds)
        .map_or(DEFAULT_TIMEOUT_SECONDS, i64::from);
    let c = &t.completion_policy;
    // The mutating webhook defaults an empty type to Always first.
    match c.type_.as_deref().unwrap_or(COMPLETION_POLICY_ALWAYS) {
        "" | COMPLETION_POLICY_ALWAYS => {
            if c.active_deadline_seconds.is_some_and(|d| timeout > d) {
                return Err("completionPolicy.activeDeadlineSeconds must be greater than pullPolicy.timeoutSeconds(default 600)".into());
            }
        }
        COMPLETION_POLICY_NEVER => {
            if c.active_deadline_seconds.is_some() || c.ttl_seconds_after_finished.is_some() {
                return Err("activeDeadlineSeconds and ttlSecondsAfterFinished can only work with Always CompletionPolicyType".into());
            }
        }
        other => return Err(format!("unknown type of completionPolicy: {other}")),
    }
    Ok(())
}

/// `job` with OpenKruise's defaults filled in; on `create` also the
/// deletion-protection finalizer (the controller drops it again when the
/// job has no pull secrets to release).
pub fn defaulted(job: &ImagePullJob, create: bool) -> ImagePullJob {
    let mut job = job.clone();
    let t = &mut job.spec.template;
    if t.completion_policy
        .type_
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        t.completion_policy.type_ = Some(COMPLETION_POLICY_ALWAYS.into());
    }
    let pull = t.pull_policy.get_or_insert_with(PullPolicy::default);
    pull.timeout_seconds
        .get_or_insert(DEFAULT_TIMEOUT_SECONDS as i32);
    pull.backoff_limit.get_or_insert(3);
    if t.image_pull_policy
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        t.image_pull_policy = Some(IMAGE_PULL_POLICY_IF_NOT_PRESENT.into());
    }
    if create {
        let finalizers = job.metadata.finalizers.get_or_insert_with(Vec::new);
        if !finalizers.iter().any(|f| f == PROTECTION_FINALIZER) {
            finalizers.push(PROTECTION_FINALIZER.into());
        }
    }
    job
}

fn parse(req: &AdmissionRequest<DynamicObject>) -> Result<ImagePullJob, String> {
    req.object
        .as_ref()
        .ok_or_else(|| "the request has no object".to_string())
        .and_then(|o| serde_json::to_value(o).map_err(|e| e.to_string()))
        .and_then(|v| {
            serde_json::from_value::<ImagePullJob>(v)
                .map_err(|e| format!("not an ImagePullJob: {e}"))
        })
}

/// Answers one request to the mutating webhook: the defaults as a JSON
/// patch (whole spec and finalizers), or no patch when nothing changes.
pub fn mutate_review(req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return resp;
    }
    let job = match parse(req) {
        Ok(j) => j,
        Err(m) => return deny(resp, 400, "BadRequest", m),
    };
    let out = defaulted(&job, matches!(req.operation, Operation::Create));
    if out.spec == job.spec && out.metadata.finalizers == job.metadata.finalizers {
        return resp;
    }
    let ops = serde_json::json!([
        {"op": "add", "path": "/spec", "value": out.spec},
        {"op": "add", "path": "/metadata/finalizers", "value": out.metadata.finalizers},
    ]);
    match serde_json::from_value::<json_patch::Patch>(ops)
        .map_err(|e| e.to_string())
        .and_then(|p| resp.clone().with_patch(p).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(m) => deny(resp, 500, "InternalError", m),
    }
}

/// Answers one request to the validating webhook.
pub fn review(req: &AdmissionRequest<DynamicObject>, gates: &FeatureGates) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return resp;
    }
    for gate in ["KruiseDaemon", "ImagePullJobGate"] {
        if !gates.enabled(gate) {
            return deny(
                resp,
                403,
                "Forbidden",
                format!("feature-gate {gate} is not enabled"),
            );
        }
    }
    match parse(req).and_then(|j| validate(&j)) {
        Ok(()) => resp,
        Err(m) => deny(resp, 400, "BadRequest", m),
    }
}

#[cfg(test)]
mod tests;
