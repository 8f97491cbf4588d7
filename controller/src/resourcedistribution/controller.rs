//! The ResourceDistribution controller on kube-runtime. Per distribution:
//! list the namespaces and the same-named objects of the distributed kind
//! (one field-selected LIST across namespaces), plan every matched
//! namespace ([`super::copy::plan`]), create or update copies and delete
//! this distribution's copies from unmatched namespaces in slow-start
//! batches (1, 2, 4, …; every namespace is attempted, as upstream), then
//! write the status ([`super::status`]) when it changed. Woken by the
//! distribution, by namespace creations, deletions and label changes that
//! concern it, and by changes to the Secrets and ConfigMaps it owns (a
//! manual edit is reverted, a deleted copy recreated). Failures other than
//! conflicts and missing namespaces are retried with exponential backoff.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keelson_api::apps::v1alpha1::resourcedistribution::ResourceDistribution;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::copy::{self, Owner, Step, Template};
use super::status::{self, Failure, Kind};
use super::targets::{self, NamespaceInfo, NamespaceTracker, SelectorError};

const NAME: &str = "resourcedistribution";
/// Upstream's rate limiter: 5ms doubling per failure up to 1000s.
const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1000);

/// Why one reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// Some copies could not be read, written or deleted (the status
    /// says where).
    #[error("{0}")]
    Distribution(String),
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// Consecutive failures per distribution, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

/// Runs `f` over `items` in batches of 1, 2, 4, … (each batch
/// concurrently), keeping the input order in the results.
pub async fn slow_start<T, R, F, Fut>(items: Vec<T>, f: F) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = R>,
{
    let mut out = Vec::with_capacity(items.len());
    let mut rest = items.into_iter();
    let mut batch = 1;
    loop {
        let chunk: Vec<T> = rest.by_ref().take(batch).collect();
        if chunk.is_empty() {
            return out;
        }
        out.extend(join_all(chunk.into_iter().map(&f)).await);
        batch *= 2;
    }
}

/// The text upstream records for a failed call (the API server's message).
fn error_text(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// The same-named objects of the template's kind, by namespace, with
/// apiVersion and kind filled in (list items come without them).
async fn existing_copies(
    client: &Client,
    ar: &ApiResource,
    name: &str,
) -> Result<HashMap<String, Value>, kube::Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let listed = api
        .list(&ListParams::default().fields(&format!("metadata.name={name}")))
        .await?;
    Ok(listed
        .items
        .into_iter()
        .filter_map(|o| {
            let ns = o.metadata.namespace.clone()?;
            let mut v = serde_json::to_value(&o).ok()?;
            let m = v.as_object_mut()?;
            m.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
            m.insert("kind".into(), Value::String(ar.kind.clone()));
            Some((ns, v))
        })
        .collect())
}

enum Write {
    Create(Value),
    Update(Value),
    Delete,
}

async fn write(
    client: &Client,
    ar: &ApiResource,
    name: &str,
    ns: &str,
    w: Write,
) -> Result<(), Failure> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    let fail = |kind: Kind, e: kube::Error| Failure {
        kind,
        namespace: ns.to_string(),
        message: error_text(&e),
    };
    let object =
        |v: Value| serde_json::from_value::<DynamicObject>(v).map_err(kube::Error::SerdeError);
    match w {
        Write::Create(v) => {
            let o = object(v).map_err(|e| fail(Kind::Create, e))?;
            api.create(&PostParams::default(), &o)
                .await
                .map_err(|e| fail(Kind::Create, e))?;
            tracing::debug!(namespace = %ns, name = %name, kind = %ar.kind, "copy created");
        }
        Write::Update(v) => {
            let o = object(v).map_err(|e| fail(Kind::Update, e))?;
            api.replace(name, &PostParams::default(), &o)
                .await
                .map_err(|e| fail(Kind::Update, e))?;
            tracing::debug!(namespace = %ns, name = %name, kind = %ar.kind, "copy updated");
        }
        Write::Delete => match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::debug!(namespace = %ns, name = %name, kind = %ar.kind, "copy deleted")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(fail(Kind::Delete, e)),
        },
    }
    Ok(())
}

async fn reconcile(
    rd: Arc<ResourceDistribution>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    // Copies go by garbage collection once the distribution is deleted.
    if rd.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let rd_name = rd.name_any();
    let resource = &rd.spec.resource.0;
    let (template, ar) = match Template::parse(resource).and_then(|t| {
        let ar = t.api_resource()?;
        Ok((t, ar))
    }) {
        Ok(x) => x,
        Err(e) => {
            // As upstream: nothing to retry until the spec changes.
            tracing::warn!(resourcedistribution = %rd_name, error = %e, "spec.resource cannot be distributed");
            return Ok(Action::await_change());
        }
    };
    let client = &ctx.client;
    let namespaces: Vec<NamespaceInfo> = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(NamespaceInfo::of)
        .collect();
    let by_name: HashMap<&str, &NamespaceInfo> =
        namespaces.iter().map(|n| (n.name.as_str(), n)).collect();
    let part = targets::partition(&rd.spec.targets, &namespaces)?;
    let owner = Owner {
        name: rd_name.clone(),
        uid: rd.metadata.uid.clone().unwrap_or_default(),
    };
    let hash = copy::resource_hash(resource);

    let mut failures: Vec<Failure> = vec![];
    let mut succeeded = 0;
    match existing_copies(client, &ar, &template.name).await {
        Err(e) => {
            // Nothing could be read: every namespace that would be looked
            // at fails its read.
            let text = error_text(&e);
            for ns in part.matched.iter().chain(&part.unmatched) {
                match by_name.get(ns.as_str()) {
                    Some(n) if !n.terminating => failures.push(Failure {
                        kind: Kind::Get,
                        namespace: ns.clone(),
                        message: text.clone(),
                    }),
                    _ if part.matched.contains(ns) => failures.push(Failure {
                        kind: Kind::NotExists,
                        namespace: ns.clone(),
                        message: status::NOT_EXISTS_MESSAGE.into(),
                    }),
                    _ => {}
                }
            }
        }
        Ok(existing) => {
            let mut writes: Vec<(String, Write)> = vec![];
            for ns in &part.matched {
                let info = by_name.get(ns.as_str()).copied();
                let fail = |kind: Kind, message: &str| Failure {
                    kind,
                    namespace: ns.clone(),
                    message: message.to_string(),
                };
                match copy::plan(ns, info, existing.get(ns), &template, &owner, &hash) {
                    Step::NamespaceNotExists => {
                        failures.push(fail(Kind::NotExists, status::NOT_EXISTS_MESSAGE))
                    }
                    Step::Conflict => failures.push(fail(Kind::Conflict, status::CONFLICT_MESSAGE)),
                    Step::InSync => succeeded += 1,
                    Step::Create(v) => writes.push((ns.clone(), Write::Create(v))),
                    Step::Update(v) => writes.push((ns.clone(), Write::Update(v))),
                }
            }
            let name = template.name.as_str();
            let results = slow_start(writes, |(ns, w)| {
                let ar = &ar;
                async move { write(client, ar, name, &ns, w).await }
            })
            .await;
            for r in results {
                match r {
                    Ok(()) => succeeded += 1,
                    Err(f) => failures.push(f),
                }
            }
            let cleanup: Vec<String> = part
                .unmatched
                .iter()
                .filter(|ns| {
                    copy::to_clean(
                        by_name.get(ns.as_str()).copied(),
                        existing.get(*ns),
                        &rd_name,
                    )
                })
                .cloned()
                .collect();
            let results = slow_start(cleanup, |ns| {
                let ar = &ar;
                async move { write(client, ar, name, &ns, Write::Delete).await }
            })
            .await;
            failures.extend(results.into_iter().filter_map(Result::err));
        }
    }

    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let new = status::compute(
        rd.status.as_ref(),
        rd.metadata.generation.unwrap_or(0),
        part.matched.len() as i32,
        succeeded,
        &failures,
        &now,
    );
    if rd.status.as_ref() != Some(&new) {
        let api: Api<ResourceDistribution> = Api::all(client.clone());
        api.patch_status(
            &rd_name,
            &PatchParams::default(),
            &Patch::Merge(status::patch(&new)),
        )
        .await?;
    }
    let errs = status::retried_errors(&new);
    if !errs.is_empty() {
        return Err(ReconcileError::Distribution(crate::webhook::aggregate(
            &errs,
        )));
    }
    if let Ok(mut f) = ctx.failures.lock() {
        f.remove(&rd_name);
    }
    Ok(Action::await_change())
}

/// Upstream's per-item backoff after `n` consecutive failures.
pub fn backoff(n: u32) -> Duration {
    BASE_DELAY
        .checked_mul(1u32 << n.saturating_sub(1).min(30))
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY)
}

fn on_error(rd: Arc<ResourceDistribution>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let name = rd.name_any();
    let n = match ctx.failures.lock() {
        Ok(mut f) => {
            let n = f.entry(name.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        }
        Err(_) => 1,
    };
    let delay = backoff(n);
    tracing::warn!(resourcedistribution = %name, error = %error, failures = n, retry_in_ms = delay.as_millis() as u64, "ResourceDistribution reconcile failed; retrying");
    Action::requeue(delay)
}

/// Runs until the task is dropped.
pub async fn run(client: Client) {
    crate::metrics::register_controller(NAME);
    let rds: Api<ResourceDistribution> = Api::all(client.clone());
    let controller = Controller::new(rds, watcher::Config::default());
    let store = controller.store();
    let tracker = Mutex::new(NamespaceTracker::default());
    let on_namespace = move |ns: Namespace| -> Vec<ObjectRef<ResourceDistribution>> {
        let change = match tracker.lock() {
            Ok(mut t) => t.observe(&ns),
            Err(_) => return vec![],
        };
        store
            .state()
            .iter()
            .filter(|rd| targets::concerns(&change, &rd.spec.targets))
            .map(|rd| ObjectRef::from_obj(rd.as_ref()))
            .collect()
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        failures: Mutex::new(HashMap::new()),
    });
    controller
        .watches(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            on_namespace,
        )
        .owns(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default(),
        )
        // The copies' metadata only (their owner): the data stays out of
        // this process's memory.
        .owns(
            Api::<kube::core::PartialObjectMeta<Secret>>::all(client),
            watcher::Config::default(),
        )
        .run(reconcile, on_error, ctx)
        .for_each(|r| async move {
            crate::metrics::reconciled(NAME, r.is_ok());
            if let Err(e) = r {
                tracing::debug!(error = %e, "ResourceDistribution controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn slow_start_doubles_and_attempts_everything() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(Mutex::new(vec![]));
        let items: Vec<usize> = (0..10).collect();
        let out = slow_start(items, |i| {
            let (running, peak) = (running.clone(), peak.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.lock().unwrap().push(now);
                tokio::task::yield_now().await;
                running.fetch_sub(1, Ordering::SeqCst);
                // Failures do not stop the later batches.
                if i % 3 == 0 { Err(i) } else { Ok(i) }
            }
        })
        .await;
        assert_eq!(out.len(), 10);
        assert_eq!(out.iter().filter(|r| r.is_err()).count(), 4);
        assert_eq!(out[9], Err(9));
        // Batches of 1, 2, 4, then the remaining 3.
        assert!(peak.lock().unwrap().iter().max().copied().unwrap() <= 4);
    }

    #[test]
    fn backoff_is_exponential_and_capped() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(11), Duration::from_millis(5 * 1024));
        assert_eq!(backoff(40), MAX_DELAY);
    }
}
