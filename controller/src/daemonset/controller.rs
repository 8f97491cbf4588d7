//! The Advanced DaemonSet reconciler (leader only): the update revision
//! stored ([`crate::workload::revision::store`], labelled with its bare
//! hash as upstream), the plan ([`super::plan`]) carried out — pods
//! created on their nodes, deleted (failed ones under a per-node
//! backoff), updated in place through the shared
//! [`crate::workload::apply`] (PodUnavailableBudget asked first) — the
//! status written, and revision history trimmed. Node changes that matter
//! (labels, taints, unschedulable) wake every DaemonSet.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use keelson_api::apps::v1beta1::daemonset::DaemonSet;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use super::newpod::new_pod;
use super::plan::{Input, Step, plan};
use super::status;
use crate::workload::apply::{ApplyError, Started};
use crate::workload::inplace;
use crate::workload::revision::{self, POD_REVISION_LABEL, Parent, short_hash};

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

/// Failed-pod deletion backoff of one node: (delay seconds, last time).
type Backoff = HashMap<String, (i64, i64)>;

/// First and longest delay between deletions of failed pods on a node.
const BACKOFF_INITIAL: i64 = 1;
const BACKOFF_MAX: i64 = 15 * 60;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// `InPlaceUpdateEnvFromMetadata`.
    pub env_from_metadata: bool,
    /// `PodUnavailableBudgetUpdateGate`: asked before in-place updates.
    pub guard: Option<crate::podunavailablebudget::guard::Guard>,
    /// `PreDownloadImageForDaemonSetUpdate` (with `KruiseDaemon`).
    pub predownload: bool,
    /// `<uid>/<observedGeneration>/<node>` → failed-pod backoff.
    backoff: Mutex<Backoff>,
}

fn owner_of(ds: &DaemonSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps.kruise.io/v1beta1".into(),
        kind: "DaemonSet".into(),
        name: ds.name_any(),
        uid: ds.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn publish(ctx: &Context, ds: &DaemonSet, warning: bool, reason: &str, note: String) {
    crate::events::publish(&ctx.recorder, ds.object_ref(&()), warning, reason, note);
}

fn gone_ok<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if crate::api_call::status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}

fn backoff_key(ds: &DaemonSet, node: &str) -> String {
    let uid = ds.metadata.uid.as_deref().unwrap_or("");
    let generation = ds.status.as_ref().map_or(0, |s| s.observed_generation);
    format!("{uid}/{generation}/{node}")
}

/// Node → seconds its failed pods must still wait.
fn backoff_left(ctx: &Context, ds: &DaemonSet, nodes: &[Node], now: i64) -> BTreeMap<String, i64> {
    let Ok(b) = ctx.backoff.lock() else {
        return BTreeMap::new();
    };
    nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let (delay, last) = b.get(&backoff_key(ds, &name))?;
            let left = last + delay - now;
            (left > 0).then_some((name, left))
        })
        .collect()
}

fn bump_backoff(ctx: &Context, ds: &DaemonSet, node: &str, now: i64) {
    if let Ok(mut b) = ctx.backoff.lock() {
        let e = b.entry(backoff_key(ds, node)).or_insert((0, now));
        // An entry idle for twice the longest delay starts over.
        e.0 = if e.0 == 0 || now - e.1 > 2 * BACKOFF_MAX {
            BACKOFF_INITIAL
        } else {
            (e.0 * 2).min(BACKOFF_MAX)
        };
        e.1 = now;
    }
}

/// Carries out `step`; whether a budget held it back.
async fn apply(
    ctx: &Context,
    ds: &DaemonSet,
    pods_api: &Api<Pod>,
    hash: &str,
    step: Step,
    now: Timestamp,
) -> Result<bool, ReconcileError> {
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
        Step::Create { node } => {
            let in_place = super::plan::Input::in_place_of(ds);
            let pod = new_pod(ds, &owner_of(ds), hash, &node, in_place);
            match pods_api.create(&PostParams::default(), &pod).await {
                Ok(p) => {
                    tracing::info!(daemonset = %ds.name_any(), pod = %p.name_any(), node = %node, "created daemon pod");
                    publish(
                        ctx,
                        ds,
                        false,
                        "SuccessfulCreate",
                        format!("Created pod: {}", p.name_any()),
                    );
                }
                Err(e) => {
                    publish(
                        ctx,
                        ds,
                        true,
                        "FailedCreate",
                        format!("Error creating: {e}"),
                    );
                    return Err(e.into());
                }
            }
        }
        Step::Delete { pod } => delete(ctx, ds, pods_api, &pod).await?,
        Step::DeleteFailed { pod, node } => {
            bump_backoff(ctx, ds, &node, now.as_second());
            let ns = ds.namespace().unwrap_or_default();
            publish(
                ctx,
                ds,
                true,
                "FailedDaemonPod",
                format!("Found failed daemon pod {ns}/{pod} on node {node}, will try to kill it"),
            );
            delete(ctx, ds, pods_api, &pod).await?;
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
                    ds,
                    false,
                    "SuccessfulUpdatePodInPlace",
                    format!("successfully update pod {pod} in-place"),
                ),
                Ok(Started::Paced(why)) => {
                    tracing::debug!(daemonset = %ds.name_any(), pod = %pod, reason = %why, "in-place update held back by its PodUnavailableBudget");
                    return Ok(true);
                }
                Ok(Started::Gone) => {}
                Err(e) => {
                    publish(
                        ctx,
                        ds,
                        true,
                        "FailedUpdatePodInPlace",
                        format!(
                            "failed to update pod {pod} in-place(revision {}-{hash}): {e}",
                            ds.name_any()
                        ),
                    );
                    return Err(e.into());
                }
            }
        }
    }
    Ok(false)
}

async fn delete(
    ctx: &Context,
    ds: &DaemonSet,
    pods_api: &Api<Pod>,
    pod: &str,
) -> Result<(), ReconcileError> {
    match pods_api.delete(pod, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(daemonset = %ds.name_any(), pod = %pod, "deleted daemon pod");
            publish(
                ctx,
                ds,
                false,
                "SuccessfulDelete",
                format!("Deleted pod: {pod}"),
            );
            Ok(())
        }
        Err(e) if crate::api_call::status_code(&e) == Some(404) => Ok(()),
        Err(e) => {
            publish(
                ctx,
                ds,
                true,
                "FailedDelete",
                format!("Error deleting: {e}"),
            );
            Err(e.into())
        }
    }
}

/// The stored revisions, each labelled `controller-revision-hash` with
/// its hash (added where missing, as upstream keys revisions by it).
async fn label_revisions(
    api: &Api<ControllerRevision>,
    revisions: &[ControllerRevision],
) -> Result<(), kube::Error> {
    for r in revisions {
        let name = r.name_any();
        let has = r
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(POD_REVISION_LABEL));
        if !has {
            let patch = json!({"metadata": {"labels": {POD_REVISION_LABEL: short_hash(&name)}}});
            gone_ok(
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await,
            )?;
        }
    }
    Ok(())
}

/// The status as a merge patch writing every counter (zeros included).
pub fn status_patch(s: &keelson_api::apps::v1beta1::daemonset::DaemonSetStatus) -> Value {
    json!({"status": {
        "desiredNumberScheduled": s.desired_number_scheduled,
        "currentNumberScheduled": s.current_number_scheduled,
        "numberMisscheduled": s.number_misscheduled,
        "numberReady": s.number_ready,
        "updatedNumberScheduled": s.updated_number_scheduled,
        "numberAvailable": s.number_available,
        "numberUnavailable": s.number_unavailable,
        "observedGeneration": s.observed_generation,
        "collisionCount": s.collision_count,
        "updateRevision": s.update_revision,
    }})
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let sel = &ds.spec.selector;
    if sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty())
    {
        publish(
            &ctx,
            &ds,
            true,
            "SelectingAll",
            "This DaemonSet is selecting all pods. A non-empty selector is required.".into(),
        );
        return Ok(Action::await_change());
    }
    let ns = ds.namespace().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let revisions_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let nodes: Vec<Node> = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let selector = crate::selector::to_query(sel);
    let all_pods: Vec<Pod> = crate::api_call::list_controlled(&pods_api, &selector, &uid).await?;
    let old_status = ds.status.clone().unwrap_or_default();
    let parent = Parent {
        name: ds.name_any(),
        namespace: ns.clone(),
        owner: owner_of(&ds),
        annotations: ds.metadata.annotations.clone().unwrap_or_default(),
    };
    let template =
        serde_json::to_value(&ds.spec.template).map_err(revision::RevisionError::Template)?;
    let revision::store::History {
        revisions,
        update_revision,
        collision_count,
        ..
    } = revision::store::load(
        &revisions_api,
        &parent,
        &template,
        old_status.collision_count.unwrap_or(0),
        &BTreeMap::new(),
    )
    .await?;
    label_revisions(&revisions_api, &revisions).await?;
    let hash = short_hash(&update_revision).to_string();
    let mut templates = BTreeMap::new();
    let mut names_by_hash = BTreeMap::new();
    for r in &revisions {
        if let (Some(name), Ok(t)) = (r.metadata.name.clone(), revision::template_of(r)) {
            templates.insert(short_hash(&name).to_string(), t);
            names_by_hash.insert(short_hash(&name).to_string(), name);
        }
    }
    if ctx.predownload
        && let Some(update) = revisions
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(update_revision.as_str()))
        && let Some(update_template) = templates.get(&hash)
    {
        // Before the rollout steps, as upstream: nodes held back pull
        // the new images while they wait.
        let old: Vec<&Value> = templates
            .iter()
            .filter(|(h, _)| **h != hash)
            .map(|(_, t)| t)
            .collect();
        let decision =
            super::predownload::decide(&ds, &owner_of(&ds), update, update_template, &old, &hash);
        let target = crate::workload::predownload::Target {
            client: &ctx.client,
            recorder: &ctx.recorder,
            reference: ds.object_ref(&()),
            namespace: &ns,
            uid: &uid,
        };
        if let Err(e) = crate::workload::predownload::carry_out(&target, update, decision).await {
            // Pre-download is an optimisation: the rollout goes on.
            tracing::warn!(daemonset = %ds.name_any(), namespace = %ns, error = %e, "image pre-download failed");
        }
    }
    let now = Timestamp::now();
    let backoff = backoff_left(&ctx, &ds, &nodes, now.as_second());
    let input = Input {
        ds: &ds,
        nodes: &nodes,
        pods: &all_pods,
        hash: &hash,
        templates: &templates,
        now,
        env_from_metadata: ctx.env_from_metadata,
        backoff: &backoff,
    };
    let decision = plan(&input);
    let mut failure = None;
    let mut paced = false;
    for step in decision.steps.clone() {
        match apply(&ctx, &ds, &pods_api, &hash, step, now).await {
            Ok(p) => paced |= p,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let mut new_status = status::compute(&input);
    new_status.observed_generation = ds.metadata.generation.unwrap_or(0);
    new_status.collision_count = Some(collision_count);
    new_status.conditions = old_status.conditions.clone();
    if new_status != old_status {
        let ds_api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
        gone_ok(
            ds_api
                .patch_status(
                    &ds.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&status_patch(&new_status)),
                )
                .await,
        )?;
    }
    let mut live = vec![update_revision.clone()];
    live.extend(
        all_pods
            .iter()
            .filter_map(|p| crate::workload::pods::revision(p))
            .filter_map(|h| names_by_hash.get(h).cloned()),
    );
    let limit = ds.spec.revision_history_limit.unwrap_or(10);
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
    if new_status.number_ready != new_status.number_available && ds.spec.min_ready_seconds > 0 {
        let m = i64::from(ds.spec.min_ready_seconds);
        requeue = Some(requeue.map_or(m, |r| r.min(m)));
    }
    Ok(match requeue {
        Some(s) => Action::requeue(Duration::from_secs(s.max(1) as u64)),
        None if !decision.steps.is_empty() => Action::requeue(Duration::from_secs(30)),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

fn on_error(ds: Arc<DaemonSet>, error: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!(daemonset = %ds.name_any(), namespace = ?ds.namespace(), error = %error, "Advanced DaemonSet reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// What of a node decides placement: labels, taints, unschedulable.
fn node_fingerprint(n: &Node) -> String {
    let spec = n.spec.as_ref();
    serde_json::to_string(&(
        &n.metadata.labels,
        spec.and_then(|s| s.taints.as_ref()),
        spec.and_then(|s| s.unschedulable),
    ))
    .unwrap_or_default()
}

/// The gates the reconciler follows.
#[derive(Debug, Clone, Copy)]
pub struct Gates {
    pub env_from_metadata: bool,
    pub pub_update: bool,
    /// `PreDownloadImageForDaemonSetUpdate` and `KruiseDaemon`.
    pub predownload: bool,
}

/// Runs until the task is dropped.
pub async fn run(client: Client, gates: Gates, identity: String) {
    crate::metrics::register_controller("daemonset");
    let sets: Api<DaemonSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "daemonset-controller".into(),
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
        env_from_metadata: gates.env_from_metadata,
        guard,
        predownload: gates.predownload,
        backoff: Mutex::new(HashMap::new()),
    });
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    let seen: Mutex<HashMap<String, String>> = Mutex::new(HashMap::new());
    let on_node = move |n: Node| -> Vec<ObjectRef<DaemonSet>> {
        let changed = seen.lock().is_ok_and(|mut s| {
            let fp = node_fingerprint(&n);
            s.insert(n.name_any(), fp.clone()).as_ref() != Some(&fp)
        });
        if !changed {
            return vec![];
        }
        store
            .state()
            .iter()
            .map(|d| ObjectRef::from_obj(d.as_ref()))
            .collect()
    };
    controller
        .owns(pods, watcher::Config::default())
        .watches(nodes, watcher::Config::default(), on_node)
        .run(reconcile, on_error, ctx)
        .for_each(|r| async move {
            crate::metrics::reconciled("daemonset", r.is_ok());
            if let Err(e) = r {
                tracing::debug!(error = %e, "Advanced DaemonSet controller event");
            }
        })
        .await;
}
