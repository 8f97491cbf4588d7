//! The Advanced StatefulSet reconciler (leader only): the update revision
//! stored ([`crate::workload::revision::store`]), the plan
//! ([`super::plan`]) carried out — claims created before their pod, pods
//! created, deleted, updated in place through the shared
//! [`crate::workload::apply`] (PodUnavailableBudget asked first) — the
//! status written, and revision history trimmed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use keelson_api::apps::v1beta1::statefulset::{
    DELETE_PERSISTENT_VOLUME_CLAIM_RETENTION_POLICY_TYPE, StatefulSet,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use super::newpod::{self, claims, new_pod};
use super::ordinals::ordinal_of;
use super::plan::{Input, Step, plan};
use super::status;
use crate::workload::apply::{ApplyError, Started};
use crate::workload::revision::{self, Parent};
use crate::workload::{inplace, pods};

/// Why one reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Revision(#[from] revision::RevisionError),
    #[error(transparent)]
    Store(#[from] revision::store::StoreError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// `StatefulSetStartOrdinal`.
    pub start_ordinal: bool,
    /// `PodIndexLabel`.
    pub pod_index_label: bool,
    /// `InPlaceUpdateEnvFromMetadata`.
    pub env_from_metadata: bool,
    /// `PodUnavailableBudgetUpdateGate`: asked before in-place updates.
    pub guard: Option<crate::podunavailablebudget::guard::Guard>,
    /// `PreDownloadImageForInPlaceUpdate` (with `KruiseDaemon`).
    pub predownload: bool,
}

fn owner_of(sts: &StatefulSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps.kruise.io/v1beta1".into(),
        kind: "StatefulSet".into(),
        name: sts.name_any(),
        uid: sts.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn publish(ctx: &Context, sts: &StatefulSet, warning: bool, reason: &str, note: String) {
    crate::events::publish(&ctx.recorder, sts.object_ref(&()), warning, reason, note);
}

fn gone_ok<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if crate::api_call::status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The claims of ordinal `n`, created where missing (owned by the set
/// when `whenDeleted: Delete`).
async fn ensure_claims(ctx: &Context, sts: &StatefulSet, n: i32) -> Result<(), ReconcileError> {
    let ns = sts.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let delete_with_set = sts
        .spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some(DELETE_PERSISTENT_VOLUME_CLAIM_RETENTION_POLICY_TYPE);
    for mut c in claims(sts, n) {
        let name = c.name_any();
        if api.get_opt(&name).await?.is_some() {
            continue;
        }
        if delete_with_set {
            c.metadata.owner_references = Some(vec![OwnerReference {
                controller: Some(false),
                ..owner_of(sts)
            }]);
        }
        match api.create(&PostParams::default(), &c).await {
            Ok(_) => publish(
                ctx,
                sts,
                false,
                "SuccessfulCreate",
                format!(
                    "create Claim {name} Pod {} in StatefulSet {} success",
                    super::ordinals::pod_name(&sts.name_any(), n),
                    sts.name_any()
                ),
            ),
            Err(e) if crate::api_call::status_code(&e) == Some(409) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// With `whenScaled: Delete`, a condemned pod's claims go with it: they
/// get the pod as owner before it is deleted.
async fn release_claims(ctx: &Context, sts: &StatefulSet, pod: &Pod) -> Result<(), ReconcileError> {
    let scaled_delete = sts
        .spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_scaled.as_deref())
        == Some(DELETE_PERSISTENT_VOLUME_CLAIM_RETENTION_POLICY_TYPE);
    if !scaled_delete {
        return Ok(());
    }
    let Some(n) = ordinal_of(&sts.name_any(), &pod.name_any()) else {
        return Ok(());
    };
    let ns = sts.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let owner = json!([{"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(),
        "uid": pod.uid().unwrap_or_default(), "controller": false}]);
    for c in claims(sts, n) {
        let patch = json!({"metadata": {"ownerReferences": owner}});
        gone_ok(
            api.patch(
                &c.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await,
        )?;
    }
    Ok(())
}

/// What carrying out one reconcile's steps reads.
struct Round<'a> {
    sts: &'a StatefulSet,
    pods_api: &'a Api<Pod>,
    by_name: BTreeMap<String, &'a Pod>,
    templates: &'a BTreeMap<String, Value>,
    wanted: Vec<i32>,
    now: Timestamp,
}

/// Carries out `step`; whether a budget held it back.
async fn apply(ctx: &Context, round: &Round<'_>, step: Step) -> Result<bool, ReconcileError> {
    let (sts, pods_api, templates, now) = (round.sts, round.pods_api, round.templates, round.now);
    let (by_name, wanted) = (&round.by_name, &round.wanted);
    let set = sts.name_any();
    match step {
        Step::MarkReady { pod } => {
            let patch = inplace::ready_patch(&Time(now));
            gone_ok(
                pods_api
                    .patch_status(&pod, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await,
            )?;
        }
        Step::Patch { pod, patch } => {
            gone_ok(
                pods_api
                    .patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
                    .await,
            )?;
        }
        Step::Repair { pod, patch } => {
            match pods_api
                .patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => publish(
                    ctx,
                    sts,
                    false,
                    "SuccessfulUpdate",
                    format!("update Pod {pod} in StatefulSet {set} successful"),
                ),
                Err(e) if crate::api_call::status_code(&e) == Some(404) => {}
                Err(e) => {
                    publish(
                        ctx,
                        sts,
                        true,
                        "FailedUpdate",
                        format!("update Pod {pod} in StatefulSet {set} failed error: {e}"),
                    );
                    return Err(e.into());
                }
            }
        }
        Step::Create { ordinal, revision } => {
            let Some(template) = templates.get(&revision) else {
                return Err(revision::RevisionError::Data {
                    name: revision,
                    reason: "no template".into(),
                }
                .into());
            };
            ensure_claims(ctx, sts, ordinal).await?;
            let pod = new_pod(
                sts,
                &owner_of(sts),
                template,
                &revision,
                ordinal,
                ctx.pod_index_label,
                &now.to_string(),
            )?;
            let name = pod.name_any();
            match pods_api.create(&PostParams::default(), &pod).await {
                Ok(_) => publish(
                    ctx,
                    sts,
                    false,
                    "SuccessfulCreate",
                    format!("create Pod {name} in StatefulSet {set} successful"),
                ),
                Err(e) if crate::api_call::status_code(&e) == Some(409) => {}
                Err(e) => {
                    publish(
                        ctx,
                        sts,
                        true,
                        "FailedCreate",
                        format!("create Pod {name} in StatefulSet {set} failed error: {e}"),
                    );
                    return Err(e.into());
                }
            }
        }
        Step::Delete { pod } => {
            if let Some(p) = by_name.get(&pod)
                && ordinal_of(&set, &pod).is_none_or(|n| !wanted.contains(&n))
            {
                release_claims(ctx, sts, p).await?;
            }
            match pods_api.delete(&pod, &DeleteParams::default()).await {
                Ok(_) => publish(
                    ctx,
                    sts,
                    false,
                    "SuccessfulDelete",
                    format!("delete Pod {pod} in StatefulSet {set} successful"),
                ),
                Err(e) if crate::api_call::status_code(&e) == Some(404) => {}
                Err(e) => {
                    publish(
                        ctx,
                        sts,
                        true,
                        "FailedDelete",
                        format!("delete Pod {pod} in StatefulSet {set} failed error: {e}"),
                    );
                    return Err(e.into());
                }
            }
        }
        Step::InPlace { pod, start } => {
            match crate::workload::apply::in_place(
                pods_api,
                ctx.guard.as_ref(),
                &pod,
                &start,
                &Time(now),
            )
            .await
            {
                Ok(Started::Yes) => publish(
                    ctx,
                    sts,
                    false,
                    "SuccessfulUpdatePodInPlace",
                    format!(
                        "successfully update pod {pod} in-place(revision {})",
                        start.state.revision
                    ),
                ),
                Ok(Started::Paced(why)) => {
                    tracing::debug!(statefulset = %set, pod = %pod, reason = %why, "in-place update held back by its PodUnavailableBudget");
                    return Ok(true);
                }
                Ok(Started::Gone) => {}
                Err(e) => {
                    publish(
                        ctx,
                        sts,
                        true,
                        "FailedUpdatePodInPlace",
                        format!("failed to update pod {pod} in-place: {e}"),
                    );
                    return Err(e.into());
                }
            }
        }
    }
    Ok(false)
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = sts.namespace().unwrap_or_default();
    let uid = sts.metadata.uid.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let revisions_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = crate::selector::to_query(&sts.spec.selector);
    let all_pods: Vec<Pod> = crate::api_call::list_controlled(&pods_api, &selector, &uid).await?;
    let old_status = sts.status.clone().unwrap_or_default();
    let parent = Parent {
        name: sts.name_any(),
        namespace: ns.clone(),
        owner: owner_of(&sts),
        annotations: sts.metadata.annotations.clone().unwrap_or_default(),
    };
    let template =
        serde_json::to_value(&sts.spec.template).map_err(revision::RevisionError::Template)?;
    let revision::store::History {
        revisions,
        templates,
        update_revision,
        collision_count,
    } = revision::store::load(
        &revisions_api,
        &parent,
        &template,
        old_status.collision_count.unwrap_or(0),
        &BTreeMap::new(),
    )
    .await?;
    let current_revision = Some(old_status.current_revision.clone())
        .filter(|c| templates.contains_key(c))
        .unwrap_or_else(|| update_revision.clone());
    let claims: BTreeMap<String, PersistentVolumeClaim> =
        if sts.spec.volume_claim_templates.is_empty() {
            BTreeMap::new()
        } else {
            Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns)
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter_map(|c| Some((c.metadata.name.clone()?, c)))
                .collect()
        };
    if ctx.predownload
        && let Some(update) = revisions
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(update_revision.as_str()))
        && let Some(update_template) = templates.get(&update_revision)
    {
        // Before the update steps, as upstream.
        let current = Some(&current_revision)
            .filter(|c| **c != update_revision)
            .and_then(|c| templates.get(c));
        let decision = super::predownload::decide(
            &sts,
            &owner_of(&sts),
            update,
            update_template,
            current,
            ctx.env_from_metadata,
        );
        let target = crate::workload::predownload::Target {
            client: &ctx.client,
            recorder: &ctx.recorder,
            reference: sts.object_ref(&()),
            namespace: &ns,
            uid: &uid,
        };
        if let Err(e) = crate::workload::predownload::carry_out(&target, update, decision).await {
            // Pre-download is an optimisation: the rollout goes on.
            tracing::warn!(statefulset = %sts.name_any(), namespace = %ns, error = %e, "image pre-download failed");
        }
    }
    let now = Timestamp::now();
    let input = Input {
        sts: &sts,
        pods: &all_pods,
        current_revision: &current_revision,
        update_revision: &update_revision,
        templates: &templates,
        now,
        start_ordinal: ctx.start_ordinal,
        env_from_metadata: ctx.env_from_metadata,
        pod_index_label: ctx.pod_index_label,
    };
    let decision = plan(&input);
    let round = Round {
        sts: &sts,
        pods_api: &pods_api,
        by_name: all_pods.iter().map(|p| (p.name_any(), p)).collect(),
        templates: &templates,
        wanted: input.wanted(),
        now,
    };
    let mut failure = None;
    let mut failures = status::Failures::default();
    let mut paced = false;
    for step in decision.steps.clone() {
        if let Step::Create { ordinal, .. } = &step
            && let Some(claim) = newpod::stale_claim(&sts, *ordinal, &claims)
        {
            // Its garbage collection (the owner pod is gone) comes first;
            // nothing more this round, as upstream.
            tracing::info!(statefulset = %sts.name_any(), namespace = %ns, claim = %claim, ordinal = *ordinal, "claim left by an earlier pod of this name: waiting for its removal");
            paced = true;
            break;
        }
        let (creating, repairing) = (
            matches!(step, Step::Create { .. }),
            matches!(step, Step::Repair { .. }),
        );
        match apply(&ctx, &round, step).await {
            Ok(p) => paced |= p,
            Err(e) => {
                if creating {
                    failures.create = Some(e.to_string());
                } else if repairing {
                    failures.update = Some(e.to_string());
                }
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(why) = &decision.failed_update {
        publish(&ctx, &sts, true, "FailedUpdate", why.clone());
    }
    let mut new_status = status::compute(&sts, &all_pods, &current_revision, &update_revision, now);
    new_status.collision_count = Some(collision_count);
    new_status.volume_claims = status::volume_claims(&sts, &round.wanted, &claims);
    new_status.conditions = status::conditions(&old_status.conditions, &failures, now);
    if new_status != old_status {
        let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
        gone_ok(
            sts_api
                .patch_status(
                    &sts.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&crate::api_call::status_merge_patch(
                        &old_status,
                        &new_status,
                    )),
                )
                .await,
        )?;
    }
    let mut live = vec![update_revision.clone(), current_revision.clone()];
    live.extend(
        all_pods
            .iter()
            .filter_map(|p| pods::revision(p).map(String::from)),
    );
    let limit = sts.spec.revision_history_limit.unwrap_or(10);
    for name in revision::history_to_delete(&revisions, &live, limit) {
        gone_ok(revisions_api.delete(&name, &DeleteParams::default()).await)?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let mut requeue = decision.requeue_after;
    if paced {
        requeue = Some(requeue.map_or(2, |r| r.min(2)));
    }
    Ok(match requeue {
        Some(s) => Action::requeue(Duration::from_secs(s.max(1) as u64)),
        None if !decision.steps.is_empty() => Action::requeue(Duration::from_secs(30)),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

fn on_error(sts: Arc<StatefulSet>, error: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!(statefulset = %sts.name_any(), namespace = ?sts.namespace(), error = %error, "Advanced StatefulSet reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// The gates the reconciler follows.
#[derive(Debug, Clone, Copy)]
pub struct Gates {
    pub start_ordinal: bool,
    pub pod_index_label: bool,
    pub env_from_metadata: bool,
    pub pub_update: bool,
    /// `PreDownloadImageForInPlaceUpdate` and `KruiseDaemon`.
    pub predownload: bool,
}

/// Runs until the task is dropped.
pub async fn run(client: Client, gates: Gates, identity: String) {
    crate::metrics::register_controller("statefulset");
    let sets: Api<StatefulSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let revisions: Api<ControllerRevision> = Api::all(client.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "statefulset-controller".into(),
            instance: Some(identity),
        },
    );
    let (guard, _budget_watch) = crate::podunavailablebudget::guard::Guard::for_workloads(
        &client,
        &recorder,
        gates.pub_update,
    );
    let ctx = Arc::new(Context {
        client,
        recorder,
        start_ordinal: gates.start_ordinal,
        pod_index_label: gates.pod_index_label,
        env_from_metadata: gates.env_from_metadata,
        guard,
        predownload: gates.predownload,
    });
    Controller::new(sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .owns(revisions, watcher::Config::default())
        .run(reconcile, on_error, ctx)
        .for_each(|r| async move {
            crate::metrics::reconciled("statefulset", r.is_ok());
            if let Err(e) = r {
                tracing::debug!(error = %e, "Advanced StatefulSet controller event");
            }
        })
        .await;
}
