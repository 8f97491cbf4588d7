//! Deletion protection (gate `ResourcesDeletionProtection`): an object
//! labelled `policy.kruise.io/delete-protection` is not deleted while the
//! label says so. `Always` refuses every deletion; `Cascading` refuses
//! deleting a workload that still has replicas, a namespace that still
//! has active pods or Bound claims, or a CRD that still has objects
//! (gate `DeletionProtectionForCRDCascadingGate`). Services and Ingresses
//! honour only `Always`. OpenKruise's paths, rules and texts; the
//! webhooks are registered for objects carrying the label only.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

use super::{Context, deny};

/// The label.
pub const LABEL: &str = "policy.kruise.io/delete-protection";
/// Never deleted while labelled.
pub const ALWAYS: &str = "Always";
/// Deleted only once empty.
pub const CASCADING: &str = "Cascading";

pub const NAMESPACE_PATH: &str = "/validate-namespace";
pub const CRD_PATH: &str = "/validate-customresourcedefinition";
pub const DEPLOYMENT_PATH: &str = "/validate-apps-deployment";
pub const REPLICASET_PATH: &str = "/validate-apps-replicaset";
pub const STATEFULSET_PATH: &str = "/validate-apps-statefulset";
pub const SERVICE_PATH: &str = "/validate-service";
pub const INGRESS_PATH: &str = "/validate-ingress";
/// Advanced StatefulSet (its validation of create/update is its issue's).
pub const KRUISE_STATEFULSET_PATH: &str = "/validate-apps-kruise-io-statefulset";
/// UnitedDeployment (likewise).
pub const UNITEDDEPLOYMENT_PATH: &str = "/validate-apps-kruise-io-v1alpha1-uniteddeployment";

/// Every path this module answers alone (CloneSet deletions arrive at the
/// CloneSet validating path).
pub const PATHS: &[&str] = &[
    NAMESPACE_PATH,
    CRD_PATH,
    DEPLOYMENT_PATH,
    REPLICASET_PATH,
    STATEFULSET_PATH,
    SERVICE_PATH,
    INGRESS_PATH,
    KRUISE_STATEFULSET_PATH,
    UNITEDDEPLOYMENT_PATH,
];

/// What the object is, for the rule that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A workload with `spec.replicas`.
    Workload,
    Namespace,
    Crd,
    /// Service or Ingress: only `Always`.
    AlwaysOnly,
}

fn kind_of(kind: &str, group: &str) -> Option<Kind> {
    Some(match (group, kind) {
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet")
        | ("apps.kruise.io", "CloneSet" | "StatefulSet" | "UnitedDeployment") => Kind::Workload,
        ("", "Namespace") => Kind::Namespace,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => Kind::Crd,
        ("", "Service") | ("networking.k8s.io" | "extensions", "Ingress") => Kind::AlwaysOnly,
        _ => return None,
    })
}

fn refusal(value: &str, detail: &str) -> String {
    format!("forbidden by ResourcesProtectionDeletion for {LABEL}={value}{detail}")
}

/// The refusal for deleting `obj` by its label alone, or what must be
/// counted first (`Cascading` on a namespace or CRD); `None` allows.
pub enum Decision {
    Allow,
    Refuse(String),
    CountNamespace(String),
    CountCrd,
}

/// Decides from the object itself: its label, deletion state and replicas.
pub fn decide(kind: Kind, obj: &Value) -> Decision {
    if !obj["metadata"]["deletionTimestamp"].is_null() {
        return Decision::Allow;
    }
    let value = obj["metadata"]["labels"][LABEL].as_str().unwrap_or("");
    match (value, kind) {
        (ALWAYS, _) => Decision::Refuse(refusal(value, "")),
        (CASCADING, Kind::Workload) => match obj["spec"]["replicas"].as_i64() {
            Some(n) if n > 0 => Decision::Refuse(refusal(value, &format!(" and replicas {n}>0"))),
            _ => Decision::Allow,
        },
        (CASCADING, Kind::Namespace) => {
            Decision::CountNamespace(obj["metadata"]["name"].as_str().unwrap_or("").to_string())
        }
        (CASCADING, Kind::Crd) => Decision::CountCrd,
        _ => Decision::Allow,
    }
}

async fn namespace_refusal(ctx: &Context, ns: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let active = match pods.list(&ListParams::default()).await {
        Ok(l) => l
            .items
            .iter()
            .filter(|p| crate::workload::pods::is_active(p))
            .count(),
        Err(e) => {
            return Some(format!(
                "forbidden by ResourcesProtectionDeletion for list pods error: {e}"
            ));
        }
    };
    if active > 0 {
        return Some(refusal(CASCADING, &format!(" and active pods {active}>0")));
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let bound = match pvcs.list(&ListParams::default()).await {
        Ok(l) => l
            .items
            .iter()
            .filter(|c| {
                c.metadata.deletion_timestamp.is_none()
                    && c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
            })
            .count(),
        Err(e) => {
            return Some(format!(
                "forbidden by ResourcesProtectionDeletion for list pvc error: {e}"
            ));
        }
    };
    (bound > 0).then(|| refusal(CASCADING, &format!(" and \"Bound\" status pvc {bound}>0")))
}

async fn crd_refusal(ctx: &Context, obj: &Value) -> Option<String> {
    if !ctx.gates.enabled("DeletionProtectionForCRDCascadingGate") {
        return Some("feature-gate DeletionProtectionForCRDCascadingGate is not enabled".into());
    }
    let crd: CustomResourceDefinition = match serde_json::from_value(obj.clone()) {
        Ok(c) => c,
        Err(e) => return Some(format!("not a CustomResourceDefinition: {e}")),
    };
    let storage = crd.spec.versions.iter().find(|v| v.storage)?;
    let gvk = GroupVersionKind::gvk(&crd.spec.group, &storage.name, &crd.spec.names.kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural);
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ar);
    match api.list_metadata(&ListParams::default()).await {
        Ok(l) => {
            let active = l
                .items
                .iter()
                .filter(|o| o.metadata.deletion_timestamp.is_none())
                .count();
            (active > 0).then(|| refusal(CASCADING, &format!(" and active CRs {active}>0")))
        }
        Err(e) => Some(format!(
            "failed to list CRs of {}/{}, Kind={}: {e}",
            gvk.group, gvk.version, gvk.kind
        )),
    }
}

/// The answer to a DELETE AdmissionReview on a protected kind.
pub async fn review(req: &AdmissionRequest<DynamicObject>, ctx: &Context) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if req.operation != Operation::Delete
        || req.sub_resource.as_deref().is_some_and(|s| !s.is_empty())
        || !ctx.gates.enabled("ResourcesDeletionProtection")
    {
        return resp;
    }
    let Some(kind) = kind_of(&req.kind.kind, &req.kind.group) else {
        return resp;
    };
    // An API server that sends no old object: nothing to judge.
    let Some(obj) = super::object(req.old_object.as_ref()) else {
        return resp;
    };
    let refused = match decide(kind, &obj) {
        Decision::Allow => None,
        Decision::Refuse(m) => Some(m),
        Decision::CountNamespace(ns) => namespace_refusal(ctx, &ns).await,
        Decision::CountCrd => crd_refusal(ctx, &obj).await,
    };
    match refused {
        None => resp,
        Some(m) => {
            crate::metrics::deletion_refused(&req.kind.kind);
            tracing::info!(kind = %req.kind.kind, namespace = ?req.namespace, name = %req.name,
                user = ?req.user_info.username, "deletion refused by delete-protection");
            deny(resp, 403, "Forbidden", m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(value: &str, replicas: Option<i64>) -> Value {
        let mut o = json!({"metadata": {"name": "x", "labels": {LABEL: value}}, "spec": {}});
        if let Some(r) = replicas {
            o["spec"]["replicas"] = json!(r);
        }
        o
    }

    fn refused(d: Decision) -> Option<String> {
        match d {
            Decision::Refuse(m) => Some(m),
            _ => None,
        }
    }

    #[test]
    fn always_refuses_every_kind_with_upstream_text() {
        for k in [Kind::Workload, Kind::Namespace, Kind::Crd, Kind::AlwaysOnly] {
            assert_eq!(
                refused(decide(k, &labelled("Always", Some(0)))).as_deref(),
                Some(
                    "forbidden by ResourcesProtectionDeletion for policy.kruise.io/delete-protection=Always"
                )
            );
        }
    }

    #[test]
    fn cascading_refuses_workloads_with_replicas_only() {
        assert_eq!(
            refused(decide(Kind::Workload, &labelled("Cascading", Some(3)))).as_deref(),
            Some(
                "forbidden by ResourcesProtectionDeletion for policy.kruise.io/delete-protection=Cascading and replicas 3>0"
            )
        );
        assert!(matches!(
            decide(Kind::Workload, &labelled("Cascading", Some(0))),
            Decision::Allow
        ));
        assert!(matches!(
            decide(Kind::AlwaysOnly, &labelled("Cascading", None)),
            Decision::Allow
        ));
        assert!(matches!(
            decide(Kind::Namespace, &labelled("Cascading", None)),
            Decision::CountNamespace(n) if n == "x"
        ));
        assert!(matches!(
            decide(Kind::Crd, &labelled("Cascading", None)),
            Decision::CountCrd
        ));
        // Other values, and objects already being deleted, are not guarded.
        assert!(matches!(
            decide(Kind::Workload, &labelled("Sometimes", Some(3))),
            Decision::Allow
        ));
        let mut going = labelled("Always", None);
        going["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(matches!(decide(Kind::Workload, &going), Decision::Allow));
    }

    #[test]
    fn kinds_by_group() {
        assert_eq!(kind_of("Deployment", "apps"), Some(Kind::Workload));
        assert_eq!(
            kind_of("StatefulSet", "apps.kruise.io"),
            Some(Kind::Workload)
        );
        assert_eq!(
            kind_of("Ingress", "networking.k8s.io"),
            Some(Kind::AlwaysOnly)
        );
        assert_eq!(kind_of("Namespace", ""), Some(Kind::Namespace));
        assert_eq!(kind_of("Deployment", "example.com"), None);
    }
}
