//! The pod validating webhook (`/validate-pod`; OpenKruise's `vpod.kb.io`
//! for pod UPDATE and DELETE, `vpodeviction.kb.io` for `pods/eviction`
//! CREATE): the PodUnavailableBudget guard on deletion and eviction
//! (gate `PodUnavailableBudgetDeleteGate`) and on updates that may make a
//! pod unavailable (`PodUnavailableBudgetUpdateGate`). The pod checked is
//! the one as it is now (the old object). An eviction the budget refuses
//! is answered 429 Too Many Requests, as a PodDisruptionBudget's is, so
//! `kubectl drain` waits and retries instead of giving up; a refused
//! deletion or update is 403, as upstream.

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use super::super::{Context, deny};
use crate::podunavailablebudget::availability;
use crate::podunavailablebudget::budget::Operation as PubOperation;
use crate::podunavailablebudget::guard::{ANNOTATION_RELATED_PUB, Verdict};

/// OpenKruise's path.
pub const PATH: &str = "/validate-pod";

fn pod_of(o: Option<&DynamicObject>) -> Result<Option<Pod>, String> {
    match super::super::object(o) {
        None => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| format!("not a Pod: {e}")),
    }
}

fn guarded(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_RELATED_PUB))
        .is_some_and(|v| !v.is_empty())
}

/// What is asked of the guard: the pod, the operation, dry run.
enum Ask {
    Nothing,
    Check(Box<Pod>, PubOperation, bool),
}

async fn ask(req: &AdmissionRequest<DynamicObject>, ctx: &Context) -> Result<Ask, String> {
    let sub = req.sub_resource.as_deref().unwrap_or("");
    match req.operation {
        Operation::Update if sub.is_empty() => {
            if !ctx.gates.enabled("PodUnavailableBudgetUpdateGate") {
                return Ok(Ask::Nothing);
            }
            let (Some(new), Some(old)) = (
                pod_of(req.object.as_ref())?,
                pod_of(req.old_object.as_ref())?,
            ) else {
                return Ok(Ask::Nothing);
            };
            if !guarded(&new) || !availability::may_disrupt(&old, &new) {
                return Ok(Ask::Nothing);
            }
            let op = if availability::resizes_in_place(&old, &new) {
                PubOperation::Resize
            } else {
                PubOperation::Update
            };
            Ok(Ask::Check(Box::new(old), op, req.dry_run))
        }
        Operation::Delete if sub.is_empty() => {
            if !ctx.gates.enabled("PodUnavailableBudgetDeleteGate") {
                return Ok(Ask::Nothing);
            }
            // An API server that sends no old object: nothing to judge.
            let Some(old) = pod_of(req.old_object.as_ref())? else {
                return Ok(Ask::Nothing);
            };
            Ok(Ask::Check(Box::new(old), PubOperation::Delete, req.dry_run))
        }
        Operation::Create if sub == "eviction" => {
            if !ctx.gates.enabled("PodUnavailableBudgetDeleteGate") {
                return Ok(Ask::Nothing);
            }
            let eviction = super::super::object(req.object.as_ref()).unwrap_or_default();
            let dry_run = req.dry_run
                || eviction["deleteOptions"]["dryRun"]
                    .as_array()
                    .is_some_and(|d| !d.is_empty());
            let ns = req.namespace.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            match api.get_opt(&req.name).await {
                // The API server answers the eviction of a missing pod.
                Ok(None) => Ok(Ask::Nothing),
                Ok(Some(p)) => Ok(Ask::Check(Box::new(p), PubOperation::Evict, dry_run)),
                Err(e) => Err(format!("reading pod {ns}/{}: {e}", req.name)),
            }
        }
        _ => Ok(Ask::Nothing),
    }
}

/// The answer to a pod UPDATE, DELETE or eviction AdmissionReview.
pub async fn review(req: &AdmissionRequest<DynamicObject>, ctx: &Context) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    let (pod, op, dry_run) = match ask(req, ctx).await {
        Ok(Ask::Nothing) => return resp,
        Ok(Ask::Check(pod, op, dry_run)) => (pod, op, dry_run),
        Err(e) => return deny(resp, 400, "BadRequest", e),
    };
    if !guarded(&pod) {
        return resp;
    }
    match ctx.guard.check(&pod, op, dry_run).await {
        Ok(Verdict::Allowed) => resp,
        Ok(Verdict::Refused(why)) if op == PubOperation::Evict => {
            deny(resp, 429, "TooManyRequests", why)
        }
        Ok(Verdict::Refused(why)) => deny(resp, 403, "Forbidden", why),
        Err(e) => deny(resp, 400, "BadRequest", e.to_string()),
    }
}
