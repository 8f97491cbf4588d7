//! The pod mutating webhook (`/mutate-pod`, pods CREATE; OpenKruise's
//! `mpod.kb.io`). Steps in OpenKruise's order, one JSON patch for all:
//!
//! 1. readiness gate `KruisePodReady` for pods an `apps.kruise.io`
//!    workload controls (all pods under the `KruisePodReadinessGate` gate);
//! 2. WorkloadSpread subset injection — not served yet (its issue);
//! 3. SidecarSet injection ([`crate::sidecarset::inject`]);
//! 4. container launch priority, stamped for the agent ([`priority`]),
//!    after injection so sidecars are ordered too;
//! 5. PodUnavailableBudget `kruise.io/related-pub` ([`budget`]);
//! 6. PersistentPodState — its issue;
//!
//! and Keelson's node stamps: the pod's `restartPolicy` for the agent's
//! Job sidecar terminator (`keelson.io/restart-policy` and the main
//! containers, `keelson.io/main-containers`, when a container carries
//! `KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT`), and the
//! env-from-metadata map for pods of Kruise workloads
//! (`keelson.io/env-from-metadata`).
//!
//! Failures refuse the pod with 500, as upstream, except bad launch
//! priorities (admitted with a warning, default priority).

pub mod budget;
pub mod priority;
pub mod validate;

use k8s_openapi::api::core::v1::{Pod, PodReadinessGate};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use super::Context;
use super::deny;
use k8s_openapi::api::apps::v1::ControllerRevision;
use keelson_api::apps::v1beta1::sidecarset::SidecarSet;
use kube::api::{Api, ListParams};

use crate::sidecarset::controller::LABEL_SIDECARSET_NAME;
use crate::sidecarset::{inject, matching, revision};

/// OpenKruise's path.
pub const PATH: &str = "/mutate-pod";
/// The readiness gate Kruise workloads' pods carry.
pub const KRUISE_POD_READY: &str = crate::podreadiness::KRUISE_POD_READY;
/// Env marking a Job sidecar the agent stops when the mains are done.
pub const ENV_TERMINATE_SIDECAR: &str = "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT";
/// Stamp: the pod's restartPolicy, for the agent.
pub const ANNOTATION_RESTART_POLICY: &str = "keelson.io/restart-policy";
/// Stamp: the names of the main (non-sidecar) containers, for the agent's
/// Job sidecar terminator.
pub const ANNOTATION_MAIN_CONTAINERS: &str = "keelson.io/main-containers";

/// Whether the pod's controller is an `apps.kruise.io` object.
pub fn kruise_owned(pod: &Pod) -> bool {
    pod.metadata.owner_references.iter().flatten().any(|r| {
        r.controller == Some(true) && r.api_version.split('/').next() == Some("apps.kruise.io")
    })
}

/// Step 1; whether it changed the pod.
fn readiness_gate(pod: &mut Pod, all_pods: bool) -> bool {
    if !all_pods && !kruise_owned(pod) {
        return false;
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    let gates = spec.readiness_gates.get_or_insert_with(Vec::new);
    if gates.iter().any(|g| g.condition_type == KRUISE_POD_READY) {
        return false;
    }
    gates.push(PodReadinessGate {
        condition_type: KRUISE_POD_READY.into(),
    });
    true
}

/// Warnings for what a SidecarSet asks that Keelson does not do yet (the
/// pod is injected without it, and the answer says so).
fn unsupported(set: &SidecarSet) -> Vec<String> {
    let name = set.metadata.name.as_deref().unwrap_or("");
    let mut out = vec![];
    for c in set.spec.containers.iter().chain(&set.spec.init_containers) {
        if c.resources_policy.is_some() {
            out.push(format!(
                "SidecarSet {name}: resourcesPolicy of container {} is not applied by Keelson yet; it keeps the resources it declares",
                c.container.name
            ));
        }
    }
    out
}

/// The SidecarSets (latest versions) that select `pod`, in name order;
/// none for a pod that is not active.
pub fn matched(pod: &Pod, ctx: &Context) -> Vec<SidecarSet> {
    if !matching::is_active(pod) {
        return vec![];
    }
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let ns_labels = ctx.caches.namespace_labels(&namespace);
    let sets = ctx.caches.sidecarsets();
    matching::for_pod(sets.iter().map(|s| s.as_ref()), pod, ns_labels.as_ref())
        .into_iter()
        .cloned()
        .collect()
}

/// Each matched SidecarSet in the version this pod gets
/// ([`revision::choose`]); the ControllerRevisions are read only for
/// SidecarSets that pin one.
pub async fn versions(
    sets: Vec<SidecarSet>,
    pod: &Pod,
    ctx: &Context,
) -> Result<Vec<SidecarSet>, kube::Error> {
    let mut out = Vec::with_capacity(sets.len());
    for set in sets {
        if set.spec.injection_strategy.revision.is_none() {
            out.push(set);
            continue;
        }
        let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        let revisions = api
            .list(&ListParams::default().labels(&format!(
                "{LABEL_SIDECARSET_NAME}={}",
                set.metadata.name.as_deref().unwrap_or("")
            )))
            .await?
            .items;
        let pinned =
            revision::pinned(&set, &revisions).and_then(|r| revision::from_revision(&set, r));
        if pinned.is_none() {
            tracing::info!(sidecarset = ?set.metadata.name, "pinned revision not found; injecting the latest");
        }
        let chosen = revision::choose(&set, pinned.as_ref(), pod, fastrand::f64()).clone();
        out.push(chosen);
    }
    Ok(out)
}

/// The mutated pod, and the warnings for the answer; `sets` are the
/// SidecarSets to inject, each in the version chosen for this pod.
pub fn mutate(
    pod: &mut Pod,
    ctx: &Context,
    sets: &[SidecarSet],
    now: &str,
) -> Result<Vec<String>, inject::InjectError> {
    let mut warnings = vec![];
    readiness_gate(pod, ctx.gates.enabled("KruisePodReadinessGate"));
    // WorkloadSpread subset injection goes here (WorkloadSpread issue).
    let refs: Vec<&SidecarSet> = sets.iter().collect();
    inject::inject(
        pod,
        &refs,
        now,
        ctx.gates.enabled("EnableSortSidecarContainerByName"),
    )?;
    warnings.extend(sets.iter().flat_map(unsupported));
    let spec = pod.spec.clone().unwrap_or_default();
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    let (priorities, w) = priority::priorities(&spec.containers, annotations);
    warnings.extend(w);
    if let Some(p) = priorities {
        annotations.insert(
            priority::ANNOTATION_PRIORITIES.into(),
            serde_json::to_string(&p).unwrap_or_default(),
        );
    }
    // PodUnavailableBudget: in `review` (it may read the API). The
    // PersistentPodState step goes here (its issue).
    let terminator = spec
        .containers
        .iter()
        .flat_map(|c| c.env.iter().flatten())
        .any(|e| e.name == ENV_TERMINATE_SIDECAR);
    if terminator {
        annotations.insert(
            ANNOTATION_RESTART_POLICY.into(),
            spec.restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
        );
        let sidecar = |c: &&k8s_openapi::api::core::v1::Container| {
            c.env.iter().flatten().any(|e| {
                e.name == ENV_TERMINATE_SIDECAR
                    && e.value
                        .as_deref()
                        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            })
        };
        let mains: Vec<&str> = spec
            .containers
            .iter()
            .filter(|c| !sidecar(c))
            .map(|c| c.name.as_str())
            .collect();
        annotations.insert(
            ANNOTATION_MAIN_CONTAINERS.into(),
            serde_json::to_string(&mains).unwrap_or_default(),
        );
    }
    if kruise_owned(pod) {
        let annotations = pod
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        if !annotations.contains_key(crate::cloneset::newpod::ENV_FROM_METADATA_ANNOTATION)
            && let Some(deps) = crate::cloneset::newpod::env_from_metadata(&spec.containers)
        {
            annotations.insert(
                crate::cloneset::newpod::ENV_FROM_METADATA_ANNOTATION.into(),
                deps,
            );
        }
    }
    if pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.is_empty())
    {
        pod.metadata.annotations = None;
    }
    Ok(warnings)
}

/// The answer to a pod AdmissionReview.
pub async fn review(req: &AdmissionRequest<DynamicObject>, ctx: &Context) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if req.operation != Operation::Create
        || req.sub_resource.as_deref().is_some_and(|s| !s.is_empty())
        || req.resource.resource != "pods"
    {
        return resp;
    }
    let Some(obj) = req.object.as_ref() else {
        return deny(resp, 400, "BadRequest", "the request has no object".into());
    };
    let original: Pod = match serde_json::to_value(obj).and_then(serde_json::from_value) {
        Ok(p) => p,
        Err(e) => return deny(resp, 400, "BadRequest", format!("not a Pod: {e}")),
    };
    let mut pod = original.clone();
    if pod.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        pod.metadata.namespace = req.namespace.clone();
    }
    let now = inject::timestamp_now();
    let sets = match versions(matched(&pod, ctx), &pod, ctx).await {
        Ok(s) => s,
        Err(e) => {
            return deny(
                resp,
                500,
                "InternalError",
                format!("reading SidecarSet revisions: {e}"),
            );
        }
    };
    let warnings = match mutate(&mut pod, ctx, &sets, &now) {
        Ok(w) => w,
        Err(e) => return deny(resp, 500, "InternalError", e.to_string()),
    };
    if ctx.gates.enabled("PodUnavailableBudgetDeleteGate")
        || ctx.gates.enabled("PodUnavailableBudgetUpdateGate")
    {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        match budget::related(&pod, &ns, ctx).await {
            Ok(Some(name)) => {
                pod.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(
                        crate::podunavailablebudget::guard::ANNOTATION_RELATED_PUB.into(),
                        name,
                    );
            }
            Ok(None) => {}
            // The budget's controller annotates the pod later.
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e, "finding the pod's PodUnavailableBudget failed")
            }
        }
    }
    // The namespace was only filled in for matching.
    pod.metadata.namespace = original.metadata.namespace.clone();
    let (Ok(before), Ok(after)) = (serde_json::to_value(&original), serde_json::to_value(&pod))
    else {
        return deny(
            resp,
            500,
            "InternalError",
            "the pod does not serialise".into(),
        );
    };
    let patch = json_patch::diff(&before, &after);
    let mut resp = if patch.0.is_empty() {
        resp
    } else {
        match resp.with_patch(patch) {
            Ok(r) => r,
            Err(e) => {
                return deny(
                    AdmissionResponse::from(req),
                    500,
                    "InternalError",
                    e.to_string(),
                );
            }
        }
    };
    if !warnings.is_empty() {
        resp.warnings = Some(warnings);
    }
    resp
}
