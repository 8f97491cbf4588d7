//! The CloneSet controller on kube-runtime: reads a CloneSet's pods and
//! ControllerRevisions straight from the API server (consistent reads, so
//! no "expectations" bookkeeping can go stale and stall it — OpenKruise
//! #1765/#313), selects the update revision, runs the pure [`plan`] and
//! carries it out, then writes the status through the status subresource
//! and trims the revision history.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use keelson_api::apps::v1alpha1::cloneset::CloneSet;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use super::claims;
use super::newpod::{PodOf, instance_id, new_pod};
use super::plan::{self, Input, Step, revision_label};
use super::predownload;
use super::status::{self, Outcome};
use crate::workload::revision::{self, Parent};
use crate::workload::{inplace, pods};

mod steps;

use steps::{apply_predownload, apply_step, ignore_gone};

/// Why one reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Revision(#[from] revision::RevisionError),
    #[error("consulting the PodUnavailableBudget: {0}")]
    Budget(String),
}

/// The feature gates the CloneSet controller follows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gates {
    /// `InPlaceUpdateEnvFromMetadata`.
    pub env_from_metadata: bool,
    /// `PreDownloadImageForInPlaceUpdate` (with `KruiseDaemon`).
    pub predownload: bool,
    /// `PodUnavailableBudgetUpdateGate`.
    pub pub_update: bool,
    /// `CloneSetShortHash`.
    pub short_hash: bool,
    /// `CloneSetPartitionRollback`.
    pub partition_rollback: bool,
    /// `RecreatePodWhenChangeVCTInCloneSetGate`.
    pub recreate_on_vct_change: bool,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub gates: Gates,
    pub env_from_metadata: bool,
    pub exclude_preparing_delete: bool,
    /// `PreDownloadImageForInPlaceUpdate` (with `KruiseDaemon`).
    pub predownload: bool,
    /// The PodUnavailableBudget check before an in-place update
    /// (`PodUnavailableBudgetUpdateGate`).
    pub guard: Option<crate::podunavailablebudget::guard::Guard>,
}

fn owner_of(cs: &CloneSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps.kruise.io/v1alpha1".into(),
        kind: "CloneSet".into(),
        name: cs.name_any(),
        uid: cs.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

async fn publish(ctx: &Context, cs: &CloneSet, warning: bool, reason: &str, note: String) {
    crate::events::publish(&ctx.recorder, cs.object_ref(&()), warning, reason, note);
}

/// The update revision's name after storing what it needs (and whether
/// anything was stored).
async fn sync_revisions(
    revisions: &Api<ControllerRevision>,
    cs: &CloneSet,
    existing: &[ControllerRevision],
    collision_count: &mut i32,
) -> Result<(String, bool), ReconcileError> {
    let parent = Parent {
        name: cs.name_any(),
        namespace: cs.namespace().unwrap_or_default(),
        owner: owner_of(cs),
        annotations: cs.metadata.annotations.clone().unwrap_or_default(),
    };
    let template =
        serde_json::to_value(&cs.spec.template).map_err(revision::RevisionError::Template)?;
    let extra = BTreeMap::from([(
        revision::VCT_HASH_ANNOTATION.to_string(),
        super::vcthash::hash(&cs.spec.volume_claim_templates),
    )]);
    revision::store::sync(
        revisions,
        &parent,
        &template,
        existing,
        collision_count,
        &extra,
    )
    .await
    .map_err(|e| match e {
        revision::store::StoreError::Api(e) => ReconcileError::Api(e),
        revision::store::StoreError::Revision(e) => ReconcileError::Revision(e),
    })
}

async fn reconcile(cs: Arc<CloneSet>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if cs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cs.namespace().unwrap_or_default();
    let uid = cs.metadata.uid.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let revisions_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = crate::selector::to_query(&cs.spec.selector);
    let all_pods: Vec<Pod> = crate::api_call::list_controlled(&pods_api, &selector, &uid).await?;
    let revisions: Vec<ControllerRevision> = revisions_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| crate::api_call::controlled_by(&r.metadata, &uid))
        .collect();
    let vanished = plan::vanished_pods_to_delete(&cs, &all_pods);
    if !vanished.is_empty() {
        let keep: Vec<&String> = cs
            .spec
            .scale_strategy
            .pods_to_delete
            .iter()
            .filter(|n| !vanished.contains(n))
            .collect();
        let patch = json!({"metadata": {"resourceVersion": cs.metadata.resource_version},
            "spec": {"scaleStrategy": {"podsToDelete": keep}}});
        let cs_api: Api<CloneSet> = Api::namespaced(ctx.client.clone(), &ns);
        cs_api
            .patch(
                &cs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        // The spec change brings the CloneSet back with the pruned list.
        return Ok(Action::await_change());
    }
    let old_status = cs.status.clone().unwrap_or_default();
    let mut collision_count = old_status.collision_count.unwrap_or(0);
    let (update_revision, stored) =
        sync_revisions(&revisions_api, &cs, &revisions, &mut collision_count).await?;
    let revisions: Vec<ControllerRevision> = if stored {
        revisions_api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|r| crate::api_call::controlled_by(&r.metadata, &uid))
            .collect()
    } else {
        revisions
    };
    let mut templates = BTreeMap::new();
    let mut vct_hashes = BTreeMap::new();
    for r in &revisions {
        if let (Some(name), Ok(t)) = (r.metadata.name.clone(), revision::template_of(r)) {
            if let Some(h) = r
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(revision::VCT_HASH_ANNOTATION))
            {
                vct_hashes.insert(name.clone(), h.clone());
            }
            templates.insert(name, t);
        }
    }
    let current_revision = old_status
        .current_revision
        .clone()
        .filter(|c| templates.contains_key(c))
        .unwrap_or_else(|| update_revision.clone());
    let active: Vec<Pod> = all_pods
        .iter()
        .filter(|p| pods::is_active(p))
        .cloned()
        .collect();
    let now = Timestamp::now();
    let decision = plan::plan(&Input {
        cs: &cs,
        pods: &active,
        current_revision: &current_revision,
        update_revision: &update_revision,
        templates: &templates,
        now,
        env_from_metadata: ctx.env_from_metadata,
        exclude_preparing_delete: ctx.exclude_preparing_delete,
        vct_hashes: &vct_hashes,
        recreate_on_vct_change: ctx.gates.recreate_on_vct_change,
        short_hash: ctx.gates.short_hash,
        partition_rollback: ctx.gates.partition_rollback,
    });
    let taken: BTreeSet<String> = all_pods
        .iter()
        .filter_map(|p| {
            p.labels()
                .get(keelson_api::apps::v1alpha1::cloneset::CLONE_SET_INSTANCE_ID)
                .cloned()
        })
        .collect();
    // Claims left by pods that are gone: their ids are reused first, or
    // with disablePVCReuse the claims are cleaned up instead.
    let reusable =
        if cs.spec.volume_claim_templates.is_empty() && !cs.spec.scale_strategy.disable_pvc_reuse {
            vec![]
        } else {
            let claims_api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), &ns);
            let claims: Vec<_> = claims_api
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
                .into_iter()
                .filter(|c| {
                    crate::api_call::controlled_by(&c.metadata, &uid)
                        && c.metadata.deletion_timestamp.is_none()
                })
                .collect();
            let inactive: Vec<Pod> = all_pods
                .iter()
                .filter(|p| !pods::is_active(p))
                .cloned()
                .collect();
            let plan = claims::plan(&cs, &active, &inactive, &claims);
            steps::apply_claims(&ctx, &cs, &claims_api, plan.steps).await?;
            plan.reusable
        };
    let mut ids = steps::InstanceIds {
        taken: taken.clone(),
        reusable,
    };
    let mut failure: Option<ReconcileError>;
    let paced = std::sync::atomic::AtomicBool::new(false);
    let scaling = decision
        .steps
        .iter()
        .any(|s| matches!(s, Step::Create { .. } | Step::Delete { .. }));
    // Steps on distinct pods go out together (16 at a time); creations
    // run after them, in order (slow start, current revision first).
    let (creates, others): (Vec<Step>, Vec<Step>) = decision
        .steps
        .clone()
        .into_iter()
        .partition(|s| matches!(s, Step::Create { .. }));
    {
        use futures_util::stream::{self, StreamExt as _};
        let results: Vec<Result<(), ReconcileError>> = stream::iter(others)
            .map(|step| {
                let (ctx, cs, pods_api, templates, paced) =
                    (&ctx, &cs, &pods_api, &templates, &paced);
                async move {
                    let mut none = steps::InstanceIds {
                        taken: BTreeSet::new(),
                        reusable: vec![],
                    };
                    apply_step(ctx, cs, pods_api, templates, &mut none, step, paced).await
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        failure = results.into_iter().find_map(Result::err);
    }
    if failure.is_none() {
        for step in creates {
            if let Err(e) =
                apply_step(&ctx, &cs, &pods_api, &templates, &mut ids, step, &paced).await
            {
                failure = Some(e);
                break;
            }
        }
    }
    let failure_text = failure.as_ref().map(|e| e.to_string());
    let (failed_scale, failed_update) = match (&failure_text, scaling) {
        (Some(t), true) => (Some(t.as_str()), decision.failed_update.as_deref()),
        (Some(t), false) => (decision.failed_scale.as_deref(), Some(t.as_str())),
        (None, _) => (
            decision.failed_scale.as_deref(),
            decision.failed_update.as_deref(),
        ),
    };
    let new_status = status::compute(
        &cs,
        &active,
        &Outcome {
            update_revision: &update_revision,
            current_revision: &current_revision,
            collision_count: Some(collision_count),
            failed_scale,
            failed_update,
        },
        now,
    );
    if status::changed(cs.status.as_ref(), &new_status) {
        let cs_api: Api<CloneSet> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = crate::api_call::status_merge_patch(&old_status, &new_status);
        cs_api
            .patch_status(
                &cs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    if ctx.predownload
        && let Some(update) = revisions
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(update_revision.as_str()))
        && let Some(update_template) = templates.get(&update_revision)
    {
        let done = new_status.current_revision.as_deref() == Some(update_revision.as_str());
        let decision = predownload::decide(
            &cs,
            &owner_of(&cs),
            update,
            update_template,
            templates.get(&current_revision),
            done,
        );
        apply_predownload(&ctx, &cs, update, decision).await?;
    }
    // History: keep revisionHistoryLimit besides the live revisions.
    let mut live: Vec<String> = vec![update_revision.clone(), current_revision.clone()];
    for p in &all_pods {
        if let Some(r) = pods::revision(p)
            && let Some(n) = templates
                .keys()
                .find(|n| n.as_str() == r || revision::short_hash(n) == r)
        {
            live.push(n.clone());
        }
    }
    let limit = cs.spec.revision_history_limit.unwrap_or(10);
    for name in revision::history_to_delete(&revisions, &live, limit) {
        ignore_gone(revisions_api.delete(&name, &DeleteParams::default()).await)?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let requeue = match (
        decision.requeue_after,
        status::seconds_to_deadline(&cs, &new_status, now),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // A budget that held an update back frees up when a pod is available
    // again, which may raise no event here: look again soon.
    let requeue = if paced.load(std::sync::atomic::Ordering::Relaxed) {
        Some(requeue.map_or(2, |r| r.min(2)))
    } else {
        requeue
    };
    Ok(match requeue {
        Some(s) => Action::requeue(Duration::from_secs(s.max(1) as u64)),
        None if !decision.steps.is_empty() => Action::requeue(Duration::from_secs(30)),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

fn on_error(cs: Arc<CloneSet>, error: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!(cloneset = %cs.name_any(), namespace = ?cs.namespace(), error = %error, "CloneSet reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs until the task is dropped.
pub async fn run(client: Client, gates: Gates, exclude_preparing_delete: bool, identity: String) {
    crate::metrics::register_controller("cloneset");
    let sets: Api<CloneSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let revisions: Api<ControllerRevision> = Api::all(client.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "cloneset-controller".into(),
            instance: Some(identity),
        },
    );
    let (guard, budget_watch) = crate::podunavailablebudget::guard::Guard::for_workloads(
        &client,
        &recorder,
        gates.pub_update,
    );
    let ctx = Arc::new(Context {
        client,
        recorder,
        gates,
        env_from_metadata: gates.env_from_metadata,
        exclude_preparing_delete,
        predownload: gates.predownload,
        guard,
    });
    Controller::new(sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .owns(revisions, watcher::Config::default())
        .run(reconcile, on_error, ctx)
        .for_each(|r| async move {
            crate::metrics::reconciled("cloneset", r.is_ok());
            if let Err(e) = r {
                tracing::debug!(error = %e, "CloneSet controller event");
            }
        })
        .await;
    drop(budget_watch);
}
