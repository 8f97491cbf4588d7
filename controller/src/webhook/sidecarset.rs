//! SidecarSet admission at OpenKruise's paths (`msidecarset.kb.io`,
//! `vsidecarset.kb.io`), for both served versions: defaulting plus the
//! hash annotations ([`crate::sidecarset::defaults`]), and validation
//! ([`crate::sidecarset::validate`]) of the object as v1beta1, against the
//! other SidecarSets in the cache and the `kruise-configuration`
//! whitelist.

use k8s_openapi::api::core::v1::ConfigMap;
use keelson_api::apps::v1beta1::sidecarset::SidecarSet;
use keelson_api::conversion;
use kube::Api;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::Value;

use super::{Context, deny, object};
use crate::sidecarset::{defaults, validate};

/// OpenKruise's mutating path.
pub const MUTATE_PATH: &str = "/mutate-apps-kruise-io-sidecarset";
/// OpenKruise's validating path.
pub const VALIDATE_PATH: &str = "/validate-apps-kruise-io-sidecarset";

/// Defaults and hashes.
pub fn mutate_review(req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return resp;
    }
    let Some(before) = object(req.object.as_ref()) else {
        return deny(resp, 400, "BadRequest", "the request has no object".into());
    };
    let mut after = before.clone();
    defaults::default_and_hash(&mut after);
    let patch = json_patch::diff(&before, &after);
    if patch.0.is_empty() {
        return resp;
    }
    resp.with_patch(patch).unwrap_or_else(|e| {
        deny(
            AdmissionResponse::from(req),
            500,
            "InternalError",
            e.to_string(),
        )
    })
}

/// The object as v1beta1.
fn as_v1beta1(v: Value) -> Result<SidecarSet, String> {
    let v = conversion::convert(v, "apps.kruise.io/v1beta1")
        .map_err(|e| format!("failed to convert v1alpha1->v1beta1: {e}"))?;
    serde_json::from_value(v).map_err(|e| format!("not a SidecarSet: {e}"))
}

/// The patchPodMetadata whitelist from `kruise-configuration` in the
/// controller's namespace, if set.
async fn whitelist(ctx: &Context) -> Result<Option<validate::Whitelist>, String> {
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let cm = cms
        .get_opt(validate::CONFIGURATION_CONFIGMAP)
        .await
        .map_err(|e| format!("reading {}: {e}", validate::CONFIGURATION_CONFIGMAP))?;
    let Some(raw) = cm
        .and_then(|c| c.data)
        .and_then(|d| d.get(validate::WHITELIST_KEY).cloned())
    else {
        return Ok(None);
    };
    serde_json::from_str(&raw).map(Some).map_err(|e| {
        format!(
            "{} in {}: {e}",
            validate::WHITELIST_KEY,
            validate::CONFIGURATION_CONFIGMAP
        )
    })
}

/// Whether the revision `injectionStrategy.revision` pins is missing, as
/// upstream looks it up (by name in the controller's namespace, or the
/// SidecarSet's revisions labelled with the custom version): the error
/// text, `<nil>` when the lookup found nothing without an error.
async fn pin_missing(set: &SidecarSet, ctx: &Context) -> Result<Option<String>, String> {
    use k8s_openapi::api::apps::v1::ControllerRevision;
    use kube::api::ListParams;
    let Some(pin) = &set.spec.injection_strategy.revision else {
        return Ok(None);
    };
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    if let Some(name) = &pin.revision_name {
        return match api.get_opt(name).await {
            Ok(Some(_)) => Ok(None),
            Ok(None) => Ok(Some(format!(
                "controllerrevisions.apps \"{name}\" not found"
            ))),
            Err(e) => Err(format!("reading ControllerRevision {name}: {e}")),
        };
    }
    let Some(version) = &pin.custom_version else {
        return Ok(None);
    };
    let labels = format!(
        "{}={},{}={version}",
        crate::sidecarset::controller::LABEL_SIDECARSET_NAME,
        set.metadata.name.as_deref().unwrap_or(""),
        keelson_api::apps::v1alpha1::sidecarset::LABEL_SIDECARSET_CUSTOM_VERSION,
    );
    match api.list(&ListParams::default().labels(&labels)).await {
        Ok(l) if l.items.is_empty() => Ok(Some("<nil>".into())),
        Ok(_) => Ok(None),
        Err(e) => Err(format!("listing ControllerRevisions: {e}")),
    }
}

/// Validates.
pub async fn validate_review(
    req: &AdmissionRequest<DynamicObject>,
    ctx: &Context,
) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return resp;
    }
    let set = match object(req.object.as_ref()).map(as_v1beta1) {
        Some(Ok(s)) => s,
        Some(Err(m)) => return deny(resp, 400, "BadRequest", m),
        None => return deny(resp, 400, "BadRequest", "the request has no object".into()),
    };
    let old = match (
        &req.operation,
        object(req.old_object.as_ref()).map(as_v1beta1),
    ) {
        (Operation::Update, Some(Ok(o))) => Some(o),
        (Operation::Update, Some(Err(m))) => return deny(resp, 400, "BadRequest", m),
        _ => None,
    };
    let whitelist = if set.spec.patch_pod_metadata.is_empty() {
        None
    } else {
        match whitelist(ctx).await {
            Ok(w) => w,
            Err(m) => return deny(resp, 500, "InternalError", m),
        }
    };
    let pin_missing = match pin_missing(&set, ctx).await {
        Ok(m) => m,
        Err(e) => return deny(resp, 500, "InternalError", e),
    };
    let others: Vec<SidecarSet> = ctx
        .caches
        .sidecarsets()
        .iter()
        .map(|s| s.as_ref().clone())
        .collect();
    let errs = validate::validate(
        &set,
        &validate::Context {
            old: old.as_ref(),
            others: &others,
            whitelist: whitelist.as_ref(),
            patch_defaults_allowed: ctx
                .gates
                .enabled("SidecarSetPatchPodMetadataDefaultsAllowed"),
            pin_missing,
        },
    );
    if errs.is_empty() {
        return resp;
    }
    let msg = super::aggregate(&errs);
    // Upstream answers field errors through admission.Errored(500).
    deny(resp, 500, "InternalError", msg)
}
