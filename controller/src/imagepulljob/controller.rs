//! The ImagePullJob controller on kube-runtime: watches ImagePullJobs, the
//! NodeImages that name them as tag owners and the metadata of the Secrets
//! they name (never the data), and on each change reads
//! the job's targets, runs the pure [`reconcile`](super::reconcile) and
//! [`apply`](super::apply::apply)s the decision.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use keelson_api::apps::v1alpha1::imagepulljob::ImagePullJob;
use keelson_api::apps::v1beta1::nodeimage::NodeImage;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use super::apply::{Applied, apply};
use super::secrets::{self, DAEMON_CONFIG_NAMESPACE, REFERENCES_ANNOTATION, Synced};
use super::{Context, reconcile, targets};

/// Why one reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(#[from] kube::Error);

/// Shared state of the controller.
pub struct State {
    pub client: Client,
    /// Every NodeImage, fed by the same watch that wakes the jobs naming
    /// them: an event is in the store before the reconcile it triggers.
    pub nodes: Store<NodeImage>,
}

/// The jobs a NodeImage names as tag owners.
pub fn owners(node: NodeImage) -> Vec<ObjectRef<ImagePullJob>> {
    node.spec
        .images
        .values()
        .flat_map(|i| i.tags.iter())
        .flat_map(|t| t.owner_references.iter())
        .filter(|o| o.kind.as_deref() == Some("ImagePullJob"))
        .filter_map(|o| {
            let name = o.name.as_deref()?;
            Some(ObjectRef::new(name).within(o.namespace.as_deref().unwrap_or_default()))
        })
        .collect()
}

/// The jobs a Secret matters to: jobs naming it as a pull secret in its
/// namespace, and, for a copy in `kruise-daemon-config`, the jobs using it.
/// Only the Secret's metadata is read (the watch carries no data).
pub fn secret_users(
    jobs: &Store<ImagePullJob>,
    secret: &ObjectMeta,
) -> Vec<ObjectRef<ImagePullJob>> {
    let ns = secret.namespace.as_deref().unwrap_or_default();
    let name = secret.name.as_deref().unwrap_or_default();
    let mut refs: Vec<ObjectRef<ImagePullJob>> = jobs
        .state()
        .iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(ns))
        .filter(|j| j.spec.template.pull_secrets.iter().any(|s| s == name))
        .map(|j| ObjectRef::from_obj(j.as_ref()))
        .collect();
    if ns == DAEMON_CONFIG_NAMESPACE
        && let Some(users) = secret
            .annotations
            .as_ref()
            .and_then(|a| a.get(REFERENCES_ANNOTATION))
    {
        for key in users.split(',') {
            if let Some((job_ns, job_name)) = key.trim().split_once('/') {
                refs.push(ObjectRef::new(job_name).within(job_ns));
            }
        }
    }
    refs
}

fn jitter() -> i32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| (d.subsec_nanos() % 600) as i32)
}

async fn reconcile_one(
    job: Arc<ImagePullJob>,
    state: Arc<State>,
) -> Result<Action, ReconcileError> {
    // Pull secrets first: the entries name the copies the agents can read.
    let secrets = match secrets::sync(&state.client, &job).await? {
        Synced::Refs(refs) => refs,
        Synced::Conflict => return Ok(Action::requeue(Duration::from_millis(200))),
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // The store, not a LIST per reconcile: the watch feeding it is the
    // one that triggers this controller (see `run`), so the NodeImage
    // change that woke this job is already in it.
    if state.nodes.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let all = state.nodes.state();
    let pods = if job.spec.template.pod_selector.is_some() {
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        Api::<Pod>::namespaced(state.client.clone(), &ns)
            .list(&ListParams::default())
            .await?
            .items
    } else {
        vec![]
    };
    let selected = targets::select(&job, &all, &pods);
    let ctx = Context {
        now: Time(k8s_openapi::jiff::Timestamp::now()),
        secrets,
        jitter_seconds: jitter(),
    };
    let decision = reconcile(&job, &selected, &ctx);
    let name = job.metadata.name.clone().unwrap_or_default();
    Ok(match apply(&state.client, &job, decision).await? {
        Applied::Done {
            requeue_after_seconds: Some(s),
        } => Action::requeue(Duration::from_secs(s.max(1) as u64)),
        Applied::Done { .. } | Applied::Deleted => Action::await_change(),
        Applied::Conflict { node } => {
            tracing::debug!(job = %name, node = %node, "NodeImage changed meanwhile; reconciling again");
            Action::requeue(Duration::from_millis(200))
        }
        Applied::Ignored { reason } => {
            tracing::warn!(job = %name, reason = %reason, "ImagePullJob ignored");
            Action::await_change()
        }
    })
}

fn on_error(job: Arc<ImagePullJob>, error: &ReconcileError, _: Arc<State>) -> Action {
    tracing::warn!(job = ?job.metadata.name, error = %error, "ImagePullJob reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs until the task is dropped.
pub async fn run(client: Client) {
    crate::metrics::register_controller("imagepulljob");
    let jobs: Api<ImagePullJob> = Api::all(client.clone());
    let nodes: Api<NodeImage> = Api::all(client.clone());
    // Secrets by their metadata only (an `Api` of `PartialObjectMeta`
    // lists and watches metadata-only): which Secret changed is all a job
    // needs to hear (it reads the ones it names when it reconciles), and a
    // watch of every Secret's data would hold the cluster's credentials in
    // this process's memory.
    let secrets: Api<PartialObjectMeta<Secret>> = Api::all(client.clone());
    let controller = Controller::new(jobs, watcher::Config::default());
    let store = controller.store();
    // One watch of NodeImages both feeds the store reconciles read and
    // triggers the jobs a NodeImage names: the reflector applies each
    // event to the store before passing it on, so a reconcile never reads
    // a copy older than the event that caused it.
    let (node_store, node_writer) = reflector::store::<NodeImage>();
    let node_events = watcher(nodes, watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .touched_objects();
    controller
        .watches_stream(node_events, owners)
        .watches(
            secrets,
            watcher::Config::default(),
            move |s: PartialObjectMeta<Secret>| secret_users(&store, &s.metadata),
        )
        .run(
            reconcile_one,
            on_error,
            Arc::new(State {
                client,
                nodes: node_store,
            }),
        )
        .for_each(|r| async move {
            crate::metrics::reconciled("imagepulljob", r.is_ok());
            if let Err(e) = r {
                tracing::debug!(error = %e, "ImagePullJob controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_api::apps::v1beta1::nodeimage::{ImageSpec, ImageTagSpec, NodeImageSpec};

    #[test]
    fn a_nodeimage_maps_to_the_jobs_owning_its_tags() {
        let mut n = NodeImage::new("node-a", NodeImageSpec::default());
        let owner =
            |kind: &str, ns: &str, name: &str| k8s_openapi::api::core::v1::ObjectReference {
                kind: Some(kind.into()),
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            };
        n.spec.images.insert(
            "nginx".into(),
            ImageSpec {
                tags: vec![ImageTagSpec {
                    tag: "1".into(),
                    owner_references: vec![
                        owner("ImagePullJob", "team", "job-a"),
                        owner("Something", "team", "other"),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        let refs = owners(n);
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].name, "job-a");
        assert_eq!(refs[0].namespace.as_deref(), Some("team"));
    }

    #[test]
    fn a_secret_maps_to_the_jobs_naming_it_and_a_copy_to_the_jobs_using_it() {
        use kube::runtime::watcher::Event;
        let (reader, mut writer) = kube::runtime::reflector::store::<ImagePullJob>();
        for (ns, name, secret) in [
            ("team", "a", "regcred"),
            ("team", "b", "other"),
            ("prod", "c", "regcred"),
        ] {
            let mut j: ImagePullJob = serde_saphyr::from_str(&format!(
                "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  image: nginx\n  completionPolicy: {{}}\n"
            ))
            .unwrap();
            j.spec.template.pull_secrets = vec![secret.into()];
            writer.apply_watcher_event(&Event::Apply(j));
        }
        let secret = |ns: &str, name: &str, users: Option<&str>| ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            annotations: users.map(|u| [(REFERENCES_ANNOTATION.to_string(), u.to_string())].into()),
            ..Default::default()
        };
        let names = |refs: Vec<ObjectRef<ImagePullJob>>| {
            refs.iter()
                .map(|r| format!("{}/{}", r.namespace.clone().unwrap_or_default(), r.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(secret_users(&reader, &secret("team", "regcred", None))),
            ["team/a"]
        );
        assert_eq!(
            names(secret_users(
                &reader,
                &secret(DAEMON_CONFIG_NAMESPACE, "regcred-x", Some("team/a,prod/c"))
            )),
            ["team/a", "prod/c"]
        );
        assert!(secret_users(&reader, &secret("team", "unused", None)).is_empty());
    }
}
