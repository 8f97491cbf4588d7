//! The ContainerRecreateRequest admission webhook (OpenKruise serves it as
//! one mutating webhook that also refuses): on create, the request is
//! defaulted and checked against its pod by [`crate::crr::admit_create`]
//! and the answer patches in the labels and spec it should be stored with;
//! on update, [`crate::crr::admit_update`] keeps the spec and identity
//! labels immutable. Reading the pod is the only I/O.

use k8s_openapi::api::core::v1::Pod;
use keelson_api::apps::v1alpha1::containerrecreaterequest::ContainerRecreateRequest;
use kube::Client;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use super::deny;
use crate::crr::{Refused, admit_create, admit_update};

/// The path OpenKruise's webhook configuration points at.
pub const PATH: &str = "/mutate-apps-kruise-io-v1alpha1-containerrecreaterequest";

fn refused(resp: AdmissionResponse, r: Refused) -> AdmissionResponse {
    match r {
        Refused::BadRequest(m) => deny(resp, 400, "BadRequest", m),
        Refused::Forbidden(m) => deny(resp, 403, "Forbidden", m),
    }
}

fn parse(
    obj: &Option<DynamicObject>,
    which: &str,
) -> Result<(serde_json::Value, ContainerRecreateRequest), String> {
    let obj = obj
        .as_ref()
        .ok_or_else(|| format!("the request has no {which}"))?;
    let raw = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    let typed = serde_json::from_value(raw.clone())
        .map_err(|e| format!("not a ContainerRecreateRequest: {e}"))?;
    Ok((raw, typed))
}

/// The answer to a create, given the pod it names (`None`: no such pod).
pub fn on_create(req: &AdmissionRequest<DynamicObject>, pod: Option<&Pod>) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    let (raw, crr) = match parse(&req.object, "object") {
        Ok(x) => x,
        Err(m) => return deny(resp, 400, "BadRequest", m),
    };
    let admitted = match admit_create(&crr, pod) {
        Ok(a) => a,
        Err(r) => return refused(resp, r),
    };
    // Whole labels and spec: robust whatever the incoming object omitted.
    let labels =
        serde_json::to_value(admitted.metadata.labels.unwrap_or_default()).unwrap_or_default();
    let spec = serde_json::to_value(&admitted.spec).unwrap_or_default();
    let has_labels = raw.pointer("/metadata/labels").is_some();
    let ops = serde_json::json!([
        {"op": if has_labels { "replace" } else { "add" }, "path": "/metadata/labels", "value": labels},
        {"op": "replace", "path": "/spec", "value": spec},
    ]);
    match serde_json::from_value::<json_patch::Patch>(ops)
        .map_err(|e| e.to_string())
        .and_then(|p| resp.clone().with_patch(p).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(m) => deny(resp, 500, "InternalError", m),
    }
}

/// The answer to an update.
pub fn on_update(req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    let old = parse(&req.old_object, "oldObject");
    let new = parse(&req.object, "object");
    match (old, new) {
        (Ok((_, old)), Ok((_, new))) => match admit_update(&old, &new) {
            Ok(()) => resp,
            Err(r) => refused(resp, r),
        },
        (Err(m), _) | (_, Err(m)) => deny(resp, 400, "BadRequest", m),
    }
}

/// Answers one request, reading the pod for a create.
pub async fn review(req: &AdmissionRequest<DynamicObject>, client: &Client) -> AdmissionResponse {
    match req.operation {
        Operation::Create => {
            let pod_name = req
                .object
                .as_ref()
                .and_then(|o| o.data.pointer("/spec/podName"))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            if pod_name.is_empty() {
                return on_create(req, None);
            }
            let ns = req.namespace.clone().unwrap_or_default();
            match Api::<Pod>::namespaced(client.clone(), &ns)
                .get_opt(&pod_name)
                .await
            {
                Ok(pod) => on_create(req, pod.as_ref()),
                Err(e) => deny(
                    AdmissionResponse::from(req),
                    500,
                    "InternalError",
                    format!("reading Pod {ns}/{pod_name}: {e}"),
                ),
            }
        }
        Operation::Update => on_update(req),
        _ => AdmissionResponse::from(req),
    }
}
