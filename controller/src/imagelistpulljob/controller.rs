//! The ImageListPullJob controller on kube-runtime: reads the ImagePullJobs
//! a list job owns, runs the pure [`reconcile`](super::reconcile) and
//! applies it — template-hash label, ImagePullJobs created and deleted,
//! status through the status subresource, the list job deleted after its
//! TTL.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keelson_api::apps::v1alpha1::imagelistpulljob::ImageListPullJob;
use keelson_api::apps::v1alpha1::imagepulljob::ImagePullJob;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::{Decision, TEMPLATE_HASH_LABEL, reconcile};

/// Why one reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(#[from] kube::Error);

/// The ImagePullJobs `list` owns (by owner uid), from `all` in its namespace.
pub fn owned_by(list: &ImageListPullJob, all: Vec<ImagePullJob>) -> Vec<ImagePullJob> {
    let uid = list.metadata.uid.clone().unwrap_or_default();
    all.into_iter()
        .filter(|j| {
            j.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.kind == "ImageListPullJob")
        })
        .collect()
}

/// Carries out `decision` for `list`; returns when to look again.
pub async fn apply(
    client: &Client,
    list: &ImageListPullJob,
    decision: Decision,
) -> Result<Option<Duration>, kube::Error> {
    let name = list.metadata.name.clone().unwrap_or_default();
    let ns = list.metadata.namespace.clone().unwrap_or_default();
    let lists: Api<ImageListPullJob> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<ImagePullJob> = Api::namespaced(client.clone(), &ns);
    if decision.delete_self {
        return match lists.delete(&name, &DeleteParams::background()).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(e),
        };
    }
    let current = list
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(TEMPLATE_HASH_LABEL));
    if current != Some(&decision.template_hash) {
        let patch = serde_json::json!({"metadata": {"labels": {TEMPLATE_HASH_LABEL: decision.template_hash}}});
        lists
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    for old in &decision.delete {
        match jobs.delete(old, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    for new in &decision.create {
        jobs.create(&PostParams::default(), new).await?;
    }
    if list.status.as_ref() != Some(&decision.status) {
        let patch = serde_json::json!({ "status": decision.status });
        lists
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(decision
        .requeue_after_seconds
        .map(|s| Duration::from_secs(s.max(1) as u64)))
}

async fn reconcile_one(
    list: Arc<ImageListPullJob>,
    client: Arc<Client>,
) -> Result<Action, ReconcileError> {
    let ns = list.metadata.namespace.clone().unwrap_or_default();
    let all = Api::<ImagePullJob>::namespaced((*client).clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items;
    let owned = owned_by(&list, all);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let decision = reconcile(&list, &owned, &now);
    Ok(match apply(&client, &list, decision).await? {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

fn on_error(list: Arc<ImageListPullJob>, error: &ReconcileError, _: Arc<Client>) -> Action {
    tracing::warn!(job = ?list.metadata.name, error = %error, "ImageListPullJob reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs until the task is dropped.
pub async fn run(client: Client) {
    crate::metrics::register_controller("imagelistpulljob");
    let lists: Api<ImageListPullJob> = Api::all(client.clone());
    let jobs: Api<ImagePullJob> = Api::all(client.clone());
    Controller::new(lists, watcher::Config::default())
        .owns(jobs, watcher::Config::default())
        .run(reconcile_one, on_error, Arc::new(client))
        .for_each(|r| async move {
            crate::metrics::reconciled("imagelistpulljob", r.is_ok());
            if let Err(e) = r {
                tracing::debug!(error = %e, "ImageListPullJob controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{mock_client, reply};
    use http::Method;

    fn list() -> ImageListPullJob {
        serde_saphyr::from_str(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ImageListPullJob\nmetadata: {name: prefetch, namespace: team, uid: uid-list}\nspec:\n  images: [nginx:1.9]\n  completionPolicy: {type: Always}\n",
        )
        .unwrap()
    }

    #[tokio::test]
    async fn label_then_create_then_status() {
        let (client, mut handle) = mock_client();
        let l = list();
        let decision = reconcile(
            &l,
            &[],
            &Time(k8s_openapi::jiff::Timestamp::from_second(1000).unwrap()),
        );
        let hash = decision.template_hash.clone();
        let server = tokio::spawn(async move {
            let base = "/apis/apps.kruise.io/v1alpha1/namespaces/team";
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(
                (req.method(), req.uri().path()),
                (
                    &Method::PATCH,
                    &*format!("{base}/imagelistpulljobs/prefetch")
                )
            );
            let body: serde_json::Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            assert_eq!(body["metadata"]["labels"][TEMPLATE_HASH_LABEL], hash);
            send.send_response(reply(200, serde_json::to_value(list()).unwrap()));

            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(
                (req.method(), req.uri().path()),
                (&Method::POST, &*format!("{base}/imagepulljobs"))
            );
            let body: serde_json::Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            assert_eq!(body["metadata"]["generateName"], "prefetch-");
            assert_eq!(body["spec"]["image"], "nginx:1.9");
            assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-list");
            let mut created = body.clone();
            created["metadata"]["name"] = "prefetch-x1".into();
            send.send_response(reply(200, created));

            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(
                (req.method(), req.uri().path()),
                (
                    &Method::PATCH,
                    &*format!("{base}/imagelistpulljobs/prefetch/status")
                )
            );
            let body: serde_json::Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            assert_eq!(body["status"]["desired"], 1);
            send.send_response(reply(200, serde_json::to_value(list()).unwrap()));
        });
        assert_eq!(apply(&client, &l, decision).await.unwrap(), None);
        server.await.unwrap();
    }

    #[test]
    fn only_jobs_owned_by_this_list_count() {
        let l = list();
        let d = reconcile(
            &l,
            &[],
            &Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap()),
        );
        let mine = d.create[0].clone();
        let mut other = mine.clone();
        other.metadata.owner_references.as_mut().unwrap()[0].uid = "someone-else".into();
        assert_eq!(owned_by(&l, vec![mine, other]).len(), 1);
    }
}
