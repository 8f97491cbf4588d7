//! ResourceDistribution validation at OpenKruise's path
//! (`vresourcedistribution.kb.io`, CREATE and UPDATE): refused with 403
//! unless `ResourceDistributionGate` is on; otherwise upstream's rules
//! ([`crate::resourcedistribution::validate`]) plus a server-side dry-run
//! create of `spec.resource` in the controller's namespace (an existing
//! object of that name is fine). Refusals are 422 with the Kubernetes
//! field-error aggregate.

use keelson_api::apps::v1alpha1::resourcedistribution::ResourceDistribution;
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::Value;

use super::{Context, aggregate, deny, object};
use crate::resourcedistribution::copy::Template;
use crate::resourcedistribution::validate;

/// OpenKruise's validating path.
pub const PATH: &str = "/validate-apps-kruise-io-v1alpha1-resourcedistribution";

fn parse(v: Option<Value>) -> Result<ResourceDistribution, String> {
    let v = v.ok_or("the request has no object")?;
    serde_json::from_value(v).map_err(|e| format!("not a ResourceDistribution: {e}"))
}

/// The dry-run create of the resource in `namespace`: the API server's
/// refusal, if any (AlreadyExists is no refusal).
async fn dry_run(template: &Template, ctx: &Context) -> Option<String> {
    if template.version != "v1" {
        // What Go's client answers before calling the server.
        return Some(format!(
            "no matches for kind {:?} in version {:?}",
            template.kind, template.version
        ));
    }
    let ar = match template.api_resource() {
        Ok(ar) => ar,
        Err(e) => return Some(e.to_string()),
    };
    let mut object = template.object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("namespace".into(), Value::String(ctx.namespace.clone()));
    }
    let object: DynamicObject = match serde_json::from_value(object) {
        Ok(o) => o,
        Err(e) => return Some(e.to_string()),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &ar);
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match api.create(&params, &object).await {
        Ok(_) => None,
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => None,
        Err(kube::Error::Api(s)) => Some(s.message.clone()),
        Err(e) => Some(e.to_string()),
    }
}

/// Validates a create or update.
pub async fn review(req: &AdmissionRequest<DynamicObject>, ctx: &Context) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return resp;
    }
    let rd = match parse(object(req.object.as_ref())) {
        Ok(rd) => rd,
        Err(m) => return deny(resp, 400, "BadRequest", m),
    };
    let old = if req.operation == Operation::Update {
        match parse(object(req.old_object.as_ref())) {
            Ok(o) => Some(o),
            Err(m) => return deny(resp, 400, "BadRequest", m),
        }
    } else {
        None
    };
    if !ctx.gates.enabled(validate::GATE) {
        return deny(
            resp,
            403,
            "Forbidden",
            format!("feature-gate {} is not enabled", validate::GATE),
        );
    }
    let mut errs = validate::metadata_errors(
        rd.metadata.name.as_deref().unwrap_or(""),
        rd.metadata.generate_name.as_deref().unwrap_or(""),
    );
    match validate::deserialize(&rd.spec.resource.0) {
        Err(e) => errs.push(e),
        Ok(template) => {
            let old_template = match old
                .as_ref()
                .map(|o| validate::deserialize(&o.spec.resource.0))
            {
                Some(Ok(t)) => Some(t),
                Some(Err(e)) => {
                    errs.push(e);
                    None
                }
                None => None,
            };
            match validate::resource_error(&template, old_template.as_ref()) {
                Some(e) => errs.push(e),
                None => {
                    if let Some(why) = dry_run(&template, ctx).await {
                        errs.push(validate::dry_run_error(&why));
                    }
                }
            }
            errs.extend(validate::targets_errors(&rd.spec.targets));
        }
    }
    if errs.is_empty() {
        return resp;
    }
    deny(resp, 422, "Invalid", aggregate(&errs))
}

#[cfg(test)]
mod tests;
