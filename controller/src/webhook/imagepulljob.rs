//! The ImagePullJob and ImageListPullJob webhooks, as OpenKruise's: the
//! mutating ones fill in the defaults (completion type Always, a 600 s
//! pull timeout, 3 retries; for a job also IfNotPresent and, on create,
//! the deletion-protection finalizer); the validating ones refuse what
//! could not be carried out (both node names and labels, both node and pod
//! selectors, a malformed selector or image, duplicate or too many list
//! images, a job deadline shorter than the pull timeout, deadlines with
//! `completionPolicy: Never`), and everything while the KruiseDaemon or
//! ImagePullJobGate gate is off. Pure: no I/O.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use keelson_api::apps::v1alpha1::imagelistpulljob::ImageListPullJob;
use keelson_api::apps::v1alpha1::imagepulljob::{
    COMPLETION_POLICY_ALWAYS, COMPLETION_POLICY_NEVER, IMAGE_PULL_POLICY_IF_NOT_PRESENT,
    ImagePullJob, ImagePullJobTemplate, PullPolicy,
};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde::de::DeserializeOwned;

use super::deny;
use crate::gates::FeatureGates;
use crate::imagepulljob::image_ref;
use crate::imagepulljob::secrets::PROTECTION_FINALIZER;

/// The path OpenKruise's validating webhook configuration points at.
pub const PATH: &str = "/validate-apps-kruise-io-imagepulljob";

/// The path OpenKruise's mutating webhook configuration points at.
pub const MUTATE_PATH: &str = "/mutate-apps-kruise-io-imagepulljob";

/// The ImageListPullJob validating webhook's path.
pub const LIST_PATH: &str = "/validate-apps-kruise-io-imagelistpulljob";

/// The ImageListPullJob mutating webhook's path.
pub const LIST_MUTATE_PATH: &str = "/mutate-apps-kruise-io-imagelistpulljob";

/// Most images one ImageListPullJob may name.
const MAX_LIST_IMAGES: usize = 255;

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

/// The selector checks shared by ImagePullJob and ImageListPullJob.
fn check_selectors(t: &ImagePullJobTemplate) -> Result<(), String> {
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
    Ok(())
}

fn check_image(image: &str) -> Result<(), String> {
    image_ref::familiar_name_and_tag(image)
        .map(|_| ())
        .map_err(|e| format!("invalid image {image}: {e}"))
}

/// The completion policy checks; a single job's deadline must also leave
/// room for one pull (`deadline_after_timeout`).
fn check_completion(t: &ImagePullJobTemplate, deadline_after_timeout: bool) -> Result<(), String> {
    let timeout = t
        .pull_policy
        .as_ref()
        .and_then(|p| p.timeout_seconds)
        .map_or(DEFAULT_TIMEOUT_SECONDS, i64::from);
    let c = &t.completion_policy;
    // The mutating webhook defaults an empty type to Always first.
    match c.type_.as_deref().unwrap_or(COMPLETION_POLICY_ALWAYS) {
        "" | COMPLETION_POLICY_ALWAYS => {
            if deadline_after_timeout && c.active_deadline_seconds.is_some_and(|d| timeout > d) {
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

/// Checks `job` the way OpenKruise's webhook does; the message on refusal.
pub fn validate(job: &ImagePullJob) -> Result<(), String> {
    check_selectors(&job.spec.template)?;
    if job.spec.image.is_empty() {
        return Err("image can not be empty".into());
    }
    check_image(&job.spec.image)?;
    check_completion(&job.spec.template, true)
}

/// Checks `list` the way OpenKruise's webhook does; the message on refusal.
pub fn validate_list(list: &ImageListPullJob) -> Result<(), String> {
    check_selectors(&list.spec.template)?;
    let images = &list.spec.images;
    if images.is_empty() {
        return Err("image can not be empty".into());
    }
    if images.iter().collect::<BTreeSet<_>>().len() != images.len() {
        return Err("images cannot have duplicate values".into());
    }
    if images.len() > MAX_LIST_IMAGES {
        return Err(format!(
            "the maximum number of images cannot > {MAX_LIST_IMAGES}"
        ));
    }
    images.iter().try_for_each(|i| check_image(i))?;
    check_completion(&list.spec.template, false)
}

/// The template defaults both kinds share: completion type Always, a
/// 600 s pull timeout, 3 retries.
fn default_template(t: &mut ImagePullJobTemplate) {
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
}

/// `job` with OpenKruise's defaults filled in (also IfNotPresent); on
/// `create` also the deletion-protection finalizer (the controller drops
/// it again when the job has no pull secrets to release).
pub fn defaulted(job: &ImagePullJob, create: bool) -> ImagePullJob {
    let mut job = job.clone();
    let t = &mut job.spec.template;
    default_template(t);
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

/// `list` with OpenKruise's defaults filled in.
pub fn defaulted_list(list: &ImageListPullJob) -> ImageListPullJob {
    let mut list = list.clone();
    default_template(&mut list.spec.template);
    list
}

fn parse<T: DeserializeOwned>(
    req: &AdmissionRequest<DynamicObject>,
    kind: &str,
) -> Result<T, String> {
    req.object
        .as_ref()
        .ok_or_else(|| "the request has no object".to_string())
        .and_then(|o| serde_json::to_value(o).map_err(|e| e.to_string()))
        .and_then(|v| serde_json::from_value::<T>(v).map_err(|e| format!("not an {kind}: {e}")))
}

/// `resp` carrying `ops` as its JSON patch (none when `ops` is empty).
fn with_ops(resp: AdmissionResponse, ops: Vec<serde_json::Value>) -> AdmissionResponse {
    if ops.is_empty() {
        return resp;
    }
    match serde_json::from_value::<json_patch::Patch>(serde_json::Value::Array(ops))
        .map_err(|e| e.to_string())
        .and_then(|p| resp.clone().with_patch(p).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(m) => deny(resp, 500, "InternalError", m),
    }
}

/// An "add" (set) operation for `path` with `value`'s JSON.
fn set(path: &str, value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::json!({"op": "add", "path": path, "value": value})
}

/// Answers one request to a mutating webhook (`list`: the ImageListPullJob
/// one): the defaults as a JSON patch of what changed (whole spec,
/// finalizers), or no patch.
pub fn mutate_review(req: &AdmissionRequest<DynamicObject>, list: bool) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return resp;
    }
    let mut ops = vec![];
    if list {
        let l = match parse::<ImageListPullJob>(req, "ImageListPullJob") {
            Ok(l) => l,
            Err(m) => return deny(resp, 400, "BadRequest", m),
        };
        let out = defaulted_list(&l);
        if out.spec != l.spec {
            ops.push(set("/spec", &out.spec));
        }
    } else {
        let job = match parse::<ImagePullJob>(req, "ImagePullJob") {
            Ok(j) => j,
            Err(m) => return deny(resp, 400, "BadRequest", m),
        };
        let out = defaulted(&job, matches!(req.operation, Operation::Create));
        if out.spec != job.spec {
            ops.push(set("/spec", &out.spec));
        }
        if out.metadata.finalizers != job.metadata.finalizers {
            ops.push(set("/metadata/finalizers", &out.metadata.finalizers));
        }
    }
    with_ops(resp, ops)
}

/// Answers one request to a validating webhook (`list`: the
/// ImageListPullJob one).
pub fn review(
    req: &AdmissionRequest<DynamicObject>,
    gates: &FeatureGates,
    list: bool,
) -> AdmissionResponse {
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
    let checked = if list {
        parse::<ImageListPullJob>(req, "ImageListPullJob").and_then(|l| validate_list(&l))
    } else {
        parse::<ImagePullJob>(req, "ImagePullJob").and_then(|j| validate(&j))
    };
    match checked {
        Ok(()) => resp,
        Err(m) => deny(resp, 400, "BadRequest", m),
    }
}

#[cfg(test)]
mod tests;
