//! The PodUnavailableBudget reconciler (leader only): for each budget, the
//! pods it guards (annotated `kruise.io/related-pub` when they are not
//! yet), how many must stay available, and the status the webhook draws
//! on: records of disruptions it let through are dropped once the pod is
//! gone or the record expires, and `unavailableAllowed` is recomputed.
//! Status is written under the resourceVersion it was computed from, so a
//! disruption the webhook takes meanwhile is never overwritten.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use keelson_api::policy::v1alpha1::podunavailablebudget::PodUnavailableBudget;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use super::availability;
use super::budget::{self, Seen};
use super::finder::{self, FindError};
use super::guard::ANNOTATION_RELATED_PUB;

/// Looked at again at least this often (a budget whose pods appear later
/// is not forgotten; OpenKruise #1857).
const RESYNC: Duration = Duration::from_secs(30);
/// Conflicting status writes tried per reconcile.
const ATTEMPTS: usize = 4;

/// What went wrong in one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Find(#[from] FindError),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the budget's numbers are invalid: {0}")]
    Numbers(String),
}

struct Context {
    client: Client,
    pods: Store<Pod>,
    recorder: Recorder,
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ReconcileError {
    let what = what.into();
    move |source| ReconcileError::Api { what, source }
}

async fn reconcile(
    cached: Arc<PodUnavailableBudget>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    if cached.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let in_ns: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .collect();
    let (pods, total) = finder::pods_for(&ctx.client, &cached, &in_ns).await?;
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if pods.is_empty() {
        let first = cached
            .status
            .as_ref()
            .is_none_or(|s| s.observed_generation != cached.metadata.generation.unwrap_or(0));
        if first {
            crate::events::publish(
                &ctx.recorder,
                cached.object_ref(&()),
                false,
                "NoPods",
                "No matching pods found".into(),
            );
        }
    }
    for p in &pods {
        if p.annotations()
            .get(ANNOTATION_RELATED_PUB)
            .is_some_and(|v| !v.is_empty())
        {
            continue;
        }
        let body = serde_json::json!({"metadata": {"annotations": {ANNOTATION_RELATED_PUB: name}}});
        match pod_api
            .patch(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(body),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if crate::api_call::status_code(&e) == Some(404) => {}
            Err(e) => return Err(api_err(format!("annotating pod {}", p.name_any()))(e)),
        }
    }
    let desired = budget::desired_available(
        cached.spec.max_unavailable.as_ref(),
        cached.spec.min_available.as_ref(),
        total,
    )
    .map_err(|e| {
        crate::events::publish(
            &ctx.recorder,
            cached.object_ref(&()),
            true,
            "CalculateExpectedPodCountFailed",
            format!("Failed to calculate the number of expected pods: {e}"),
        );
        ReconcileError::Numbers(e.to_string())
    })?;
    let seen: Vec<Seen> = pods
        .iter()
        .map(|p| Seen {
            name: p.name_any(),
            active: crate::workload::pods::is_active(p),
            available: availability::is_available(p),
        })
        .collect();
    let api: Api<PodUnavailableBudget> = Api::namespaced(ctx.client.clone(), &ns);
    let mut current = (*cached).clone();
    let mut recheck = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            match api
                .get_opt(&name)
                .await
                .map_err(api_err("rereading the budget"))?
            {
                Some(b) => current = b,
                None => return Ok(Action::await_change()),
            }
        }
        let old = current.status.clone().unwrap_or_default();
        let computed = budget::compute(
            &old,
            &seen,
            desired,
            total,
            current.metadata.generation.unwrap_or(0),
            Timestamp::now(),
        );
        recheck = computed.recheck_at;
        if current.status.as_ref() == Some(&computed.status) {
            break;
        }
        let mut next = current.clone();
        next.status = Some(computed.status.clone());
        match api
            .replace_status(&name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => {
                for p in &computed.not_deleted {
                    if let Some(pod) = pods.iter().find(|x| &x.name_any() == p) {
                        crate::events::publish(
                            &ctx.recorder,
                            pod.object_ref(&()),
                            true,
                            "NotDeleted",
                            format!(
                                "Pod was expected by PUB {ns}/{name} to be deleted but it wasn't"
                            ),
                        );
                    }
                }
                tracing::debug!(namespace = %ns, pub_ = %name, allowed = computed.status.unavailable_allowed,
                    current = computed.status.current_available, desired, total, "budget status written");
                break;
            }
            Err(e) if crate::api_call::status_code(&e) == Some(409) => continue,
            Err(e) if crate::api_call::status_code(&e) == Some(404) => {
                return Ok(Action::await_change());
            }
            Err(e) => return Err(api_err("writing the budget's status")(e)),
        }
    }
    let wait = recheck
        .map(|at| {
            let d = at.duration_since(Timestamp::now());
            Duration::from_millis(d.as_millis().max(0) as u64 + 100)
        })
        .map_or(RESYNC, |d| d.min(RESYNC));
    Ok(Action::requeue(wait))
}

fn on_error(b: Arc<PodUnavailableBudget>, error: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!(namespace = ?b.namespace(), pub_ = %b.name_any(), error = %error, "PodUnavailableBudget reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// The budgets a pod event wakes: every budget of its namespace (a pod's
/// labels or availability may change which and how many count).
fn budgets_of(
    store: &Store<PodUnavailableBudget>,
    pod: &Pod,
) -> Vec<ObjectRef<PodUnavailableBudget>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    store
        .state()
        .iter()
        .filter(|b| b.metadata.namespace.as_deref() == Some(ns))
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

/// Runs until the task is dropped.
pub async fn run(client: Client, identity: String) {
    crate::metrics::register_controller("podunavailablebudget");
    let budgets: Api<PodUnavailableBudget> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    // Stopped with this task (leadership lost), not left running.
    let (pod_store, _pod_watch) =
        crate::follow::follow(pods.clone(), "pods (for PodUnavailableBudgets)");
    let _ = pod_store.wait_until_ready().await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "podunavailablebudget-controller".into(),
            instance: Some(identity),
        },
    );
    let ctx = Arc::new(Context {
        client,
        pods: pod_store,
        recorder,
    });
    let controller = Controller::new(budgets, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(pods, watcher::Config::default(), move |pod| {
            budgets_of(&store, &pod)
        })
        .run(reconcile, on_error, ctx)
        .for_each(|r| async move {
            crate::metrics::reconciled("podunavailablebudget", r.is_ok());
            if let Err(e) = r {
                tracing::debug!(error = %e, "PodUnavailableBudget controller event");
            }
        })
        .await;
}
