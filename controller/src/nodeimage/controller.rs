//! The NodeImage controller on kube-runtime. One [`sync`] per name reads
//! the Node, the NodeImage and the tag owners, runs the pure
//! [`reconcile`](super::reconcile) and carries the decision out. Two
//! kube-runtime controllers drive it, because kube-runtime reconciles only
//! objects that exist: one over NodeImages (woken by their Nodes and by the
//! ImagePullJobs they carry, so a deleted job's tags go) and one over Nodes
//! that have no NodeImage yet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use keelson_api::apps::v1alpha1::imagepulljob::ImagePullJob;
use keelson_api::apps::v1beta1::nodeimage::{NodeImage, NodeImageSpec};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::api_call::status_code;

use super::{Decision, Observed, reconcile};

/// Why one reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(#[from] kube::Error);

/// Shared state of the two controllers.
pub struct State {
    pub client: Client,
    pub creation_delay_seconds: i64,
    /// The NodeImages as the NodeImage controller's watch knows them.
    pub images: Store<NodeImage>,
}

/// The ImagePullJobs (namespace, name) the NodeImage's tags name as owners.
fn owner_jobs(image: &NodeImage) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = image
        .spec
        .images
        .values()
        .flat_map(|i| i.tags.iter())
        .flat_map(|t| t.owner_references.iter())
        .filter(|r| r.kind.as_deref() == Some("ImagePullJob"))
        .map(|r| {
            (
                r.namespace.clone().unwrap_or_default(),
                r.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The NodeImages in `store` that carry `job`.
pub fn carriers(store: &Store<NodeImage>, job: &ImagePullJob) -> Vec<ObjectRef<NodeImage>> {
    let key = (job.namespace().unwrap_or_default(), job.name_any());
    store
        .state()
        .iter()
        .filter(|i| owner_jobs(i).contains(&key))
        .map(|i| ObjectRef::from_obj(i.as_ref()))
        .collect()
}

/// Reads what the NodeImage `name` depends on, decides, and acts.
pub async fn sync(
    client: &Client,
    name: &str,
    creation_delay_seconds: i64,
) -> Result<Action, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let images: Api<NodeImage> = Api::all(client.clone());
    let node = nodes.get_opt(name).await?;
    let image = images.get_opt(name).await?;
    let mut jobs = BTreeMap::new();
    for (ns, job) in image.as_ref().map(owner_jobs).unwrap_or_default() {
        let api: Api<ImagePullJob> = Api::namespaced(client.clone(), &ns);
        match api.get_opt(&job).await {
            Ok(found) => {
                jobs.insert((ns, job), found.map(|j| j.uid().unwrap_or_default()));
            }
            // Unknown: the tag keeps this owner until it can be read.
            Err(e) => {
                tracing::warn!(nodeimage = %name, namespace = %ns, job = %job, error = %e, "cannot read a tag owner")
            }
        }
    }
    let decision = reconcile(&Observed {
        node: node.as_ref(),
        image: image.as_ref(),
        jobs: &jobs,
        // Whole seconds, as the API stores times: what is written now
        // compares equal to what is read back later.
        now: Time(
            k8s_openapi::jiff::Timestamp::from_second(
                k8s_openapi::jiff::Timestamp::now().as_second(),
            )
            .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
        ),
        creation_delay_seconds,
    });
    let again = || Action::requeue(Duration::from_millis(200));
    Ok(match decision {
        Decision::Wait { after_seconds } => wait(after_seconds),
        Decision::Create { labels } => {
            let object = NodeImage {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    labels: Some(labels),
                    ..Default::default()
                },
                spec: NodeImageSpec::default(),
                status: None,
            };
            match images.create(&PostParams::default(), &object).await {
                Ok(_) => tracing::info!(nodeimage = %name, "NodeImage created"),
                Err(e) if status_code(&e) == Some(409) => return Ok(again()),
                Err(e) => return Err(e),
            }
            Action::await_change()
        }
        Decision::Delete => {
            match images.delete(name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(nodeimage = %name, "NodeImage deleted: its Node is gone"),
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(e),
            }
            Action::await_change()
        }
        Decision::Update { object, changes } => {
            match images.replace(name, &PostParams::default(), &object).await {
                Ok(_) => {
                    tracing::info!(nodeimage = %name, changes = ?changes, "NodeImage updated")
                }
                Err(e) if status_code(&e) == Some(409) => return Ok(again()),
                Err(e) => return Err(e),
            }
            Action::await_change()
        }
        Decision::UpdateStatus {
            object,
            after_seconds,
        } => {
            match images
                .replace_status(name, &PostParams::default(), &object)
                .await
            {
                Ok(_) => {
                    tracing::info!(nodeimage = %name, "NodeImage status: overdue tags marked Failed")
                }
                Err(e) if status_code(&e) == Some(409) => return Ok(again()),
                Err(e) => return Err(e),
            }
            wait(after_seconds)
        }
    })
}

fn wait(after_seconds: Option<i64>) -> Action {
    match after_seconds {
        Some(s) => Action::requeue(Duration::from_secs(s.max(1) as u64)),
        None => Action::await_change(),
    }
}

async fn reconcile_image(
    image: Arc<NodeImage>,
    state: Arc<State>,
) -> Result<Action, ReconcileError> {
    Ok(sync(
        &state.client,
        &image.name_any(),
        state.creation_delay_seconds,
    )
    .await?)
}

async fn reconcile_node(node: Arc<Node>, state: Arc<State>) -> Result<Action, ReconcileError> {
    // No waiting for the store's first list here: kube-runtime's readiness
    // signal wakes only the last of several waiters (the image side's
    // controller waits on it too), which left this reconcile asleep for
    // good. Before the first list the store is empty and `sync` reads the
    // NodeImage itself, so the worst case is one redundant sync.
    let name = node.name_any();
    if state.images.get(&ObjectRef::new(&name)).is_some() {
        // The NodeImage controller looks after it.
        return Ok(Action::await_change());
    }
    Ok(sync(&state.client, &name, state.creation_delay_seconds).await?)
}

fn on_error<K: kube::Resource>(obj: Arc<K>, error: &ReconcileError, _: Arc<State>) -> Action {
    tracing::warn!(name = ?obj.meta().name, error = %error, "NodeImage reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs until the task is dropped.
pub async fn run(client: Client, creation_delay_seconds: i64) {
    crate::metrics::register_controller("nodeimage");
    crate::metrics::register_controller("nodeimage-node");
    let images: Api<NodeImage> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let jobs: Api<ImagePullJob> = Api::all(client.clone());
    let by_image = Controller::new(images, watcher::Config::default());
    let store = by_image.store();
    let state = Arc::new(State {
        client,
        creation_delay_seconds,
        images: store.clone(),
    });
    let image_side = by_image
        .watches(nodes.clone(), watcher::Config::default(), |n: Node| {
            n.metadata
                .name
                .map(|name| ObjectRef::<NodeImage>::new(&name))
        })
        .watches(jobs, watcher::Config::default(), move |j: ImagePullJob| {
            carriers(&store, &j)
        })
        .run(reconcile_image, on_error, state.clone())
        .for_each(|r| async move {
            crate::metrics::reconciled("nodeimage", r.is_ok());
            if let Err(e) = r {
                tracing::debug!(error = %e, "NodeImage controller event");
            }
        });
    let node_side = Controller::new(nodes, watcher::Config::default())
        .run(reconcile_node, on_error, state)
        .for_each(|r| async move {
            crate::metrics::reconciled("nodeimage-node", r.is_ok());
            if let Err(e) = r {
                tracing::debug!(error = %e, "Node controller event");
            }
        });
    tokio::join!(image_side, node_side);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{body_json, mock_client, reply};
    use http::Method;

    fn node_json() -> serde_json::Value {
        serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-a", "labels": {"zone": "a"}},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2020-01-01T00:00:00Z"}]}})
    }

    fn not_found() -> http::Response<kube::client::Body> {
        reply(
            404,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": "not found"}),
        )
    }

    #[tokio::test]
    async fn a_ready_node_without_a_nodeimage_gets_one_with_its_labels() {
        let (client, mut handle) = mock_client();
        let server = tokio::spawn(async move {
            let mut seen = vec![];
            while let Some((req, send)) = handle.next_request().await {
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                let answer = match (&method, path.as_str()) {
                    (&Method::GET, "/api/v1/nodes/node-a") => reply(200, node_json()),
                    (&Method::GET, "/apis/apps.kruise.io/v1beta1/nodeimages/node-a") => not_found(),
                    (&Method::POST, "/apis/apps.kruise.io/v1beta1/nodeimages") => {
                        let body = body_json(req).await;
                        seen.push(body.clone());
                        reply(201, body)
                    }
                    other => panic!("unexpected request {other:?}"),
                };
                send.send_response(answer);
            }
            seen
        });
        let action = sync(&client, "node-a", 30).await.unwrap();
        assert_eq!(action, Action::await_change());
        drop(client);
        let created = server.await.unwrap();
        assert_eq!(created.len(), 1);
        assert_eq!(created[0]["metadata"]["name"], "node-a");
        assert_eq!(created[0]["metadata"]["labels"]["zone"], "a");
        assert_eq!(created[0]["spec"], serde_json::json!({}));
    }

    /// Regression: the Node side once awaited the NodeImage store's first
    /// list, a signal that wakes only one of its waiters, and slept for good.
    #[tokio::test]
    async fn a_node_reconcile_goes_ahead_while_the_nodeimage_store_is_cold() {
        let (client, mut handle) = mock_client();
        let server = tokio::spawn(async move {
            let mut created = 0;
            while let Some((req, send)) = handle.next_request().await {
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                send.send_response(match (&method, path.as_str()) {
                    (&Method::GET, "/api/v1/nodes/node-a") => reply(200, node_json()),
                    (&Method::GET, "/apis/apps.kruise.io/v1beta1/nodeimages/node-a") => not_found(),
                    (&Method::POST, "/apis/apps.kruise.io/v1beta1/nodeimages") => {
                        created += 1;
                        reply(201, body_json(req).await)
                    }
                    other => panic!("unexpected request {other:?}"),
                });
            }
            created
        });
        // A store whose writer never sees its first list.
        let (images, _writer) = kube::runtime::reflector::store::<NodeImage>();
        let state = Arc::new(State {
            client,
            creation_delay_seconds: 30,
            images,
        });
        let node: Node = serde_json::from_value(node_json()).unwrap();
        let action = tokio::time::timeout(
            Duration::from_secs(30),
            reconcile_node(Arc::new(node), state),
        )
        .await
        .expect("the reconcile must not wait for the store")
        .unwrap();
        assert_eq!(action, Action::await_change());
        assert_eq!(server.await.unwrap(), 1, "the NodeImage was created");
    }

    #[tokio::test]
    async fn a_deleted_jobs_tag_is_removed_by_a_conditional_replace_and_a_conflict_retries() {
        let image = serde_json::json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage",
            "metadata": {"name": "node-a", "resourceVersion": "41", "labels": {"zone": "a"}},
            "spec": {"images": {
                "nginx": {"tags": [{"tag": "1.9.1", "version": 1, "createdAt": "2020-01-01T00:00:00Z",
                    "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
                        "namespace": "team", "name": "gone", "uid": "u1"}]}]},
                "redis": {"tags": [{"tag": "7", "version": 1, "createdAt": "2020-01-01T00:00:00Z",
                    "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
                        "namespace": "team", "name": "live", "uid": "u2"}]}]}}},
            "status": {"imageStatuses": {
                "nginx": {"tags": [{"tag": "1.9.1", "phase": "Succeeded", "version": 1}]},
                "redis": {"tags": [{"tag": "7", "phase": "Succeeded", "version": 1}]}}}});
        for conflict in [false, true] {
            let (client, mut handle) = mock_client();
            let body = image.clone();
            let server = tokio::spawn(async move {
                let mut puts = vec![];
                while let Some((req, send)) = handle.next_request().await {
                    let (method, path) = (req.method().clone(), req.uri().path().to_string());
                    let answer = match (&method, path.as_str()) {
                        (&Method::GET, "/api/v1/nodes/node-a") => reply(200, node_json()),
                        (&Method::GET, "/apis/apps.kruise.io/v1beta1/nodeimages/node-a") => {
                            reply(200, body.clone())
                        }
                        (
                            &Method::GET,
                            "/apis/apps.kruise.io/v1alpha1/namespaces/team/imagepulljobs/gone",
                        ) => not_found(),
                        (
                            &Method::GET,
                            "/apis/apps.kruise.io/v1alpha1/namespaces/team/imagepulljobs/live",
                        ) => reply(
                            200,
                            serde_json::json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
                                "metadata": {"name": "live", "namespace": "team", "uid": "u2"},
                                "spec": {"image": "redis:7", "completionPolicy": {}}}),
                        ),
                        (&Method::PUT, "/apis/apps.kruise.io/v1beta1/nodeimages/node-a") => {
                            let sent = body_json(req).await;
                            puts.push(sent.clone());
                            if conflict {
                                reply(
                                    409,
                                    serde_json::json!({"kind": "Status", "apiVersion": "v1",
                                    "status": "Failure", "reason": "Conflict", "code": 409,
                                    "message": "the object has been modified"}),
                                )
                            } else {
                                reply(200, sent)
                            }
                        }
                        other => panic!("unexpected request {other:?}"),
                    };
                    send.send_response(answer);
                }
                puts
            });
            let action = sync(&client, "node-a", 30).await.unwrap();
            drop(client);
            let puts = server.await.unwrap();
            assert_eq!(puts.len(), 1);
            let sent = &puts[0];
            assert_eq!(
                sent["metadata"]["resourceVersion"], "41",
                "conditional on what was read"
            );
            assert!(sent["spec"]["images"].get("nginx").is_none(), "{sent}");
            assert_eq!(sent["spec"]["images"]["redis"]["tags"][0]["tag"], "7");
            if conflict {
                assert_eq!(action, Action::requeue(Duration::from_millis(200)));
            } else {
                assert_eq!(action, Action::await_change());
            }
        }
    }

    #[tokio::test]
    async fn a_nodeimage_whose_node_is_gone_is_deleted() {
        let (client, mut handle) = mock_client();
        let server = tokio::spawn(async move {
            let mut deleted = 0;
            while let Some((req, send)) = handle.next_request().await {
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                let answer = match (&method, path.as_str()) {
                    (&Method::GET, "/api/v1/nodes/node-a") => not_found(),
                    (&Method::GET, "/apis/apps.kruise.io/v1beta1/nodeimages/node-a") => reply(
                        200,
                        serde_json::json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage",
                            "metadata": {"name": "node-a"}, "spec": {}}),
                    ),
                    (&Method::DELETE, "/apis/apps.kruise.io/v1beta1/nodeimages/node-a") => {
                        deleted += 1;
                        reply(
                            200,
                            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                        )
                    }
                    other => panic!("unexpected request {other:?}"),
                };
                send.send_response(answer);
            }
            deleted
        });
        sync(&client, "node-a", 30).await.unwrap();
        drop(client);
        assert_eq!(server.await.unwrap(), 1);
    }

    #[tokio::test]
    async fn an_unanswered_tag_is_failed_through_the_status_subresource() {
        let (client, mut handle) = mock_client();
        let server = tokio::spawn(async move {
            let mut statuses = vec![];
            while let Some((req, send)) = handle.next_request().await {
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                let answer = match (&method, path.as_str()) {
                    (&Method::GET, "/api/v1/nodes/node-a") => reply(200, node_json()),
                    (&Method::GET, "/apis/apps.kruise.io/v1beta1/nodeimages/node-a") => reply(
                        200,
                        serde_json::json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage",
                            "metadata": {"name": "node-a", "resourceVersion": "5", "labels": {"zone": "a"}},
                            "spec": {"images": {"nginx": {"tags": [{"tag": "1.9.1", "version": 2,
                                "createdAt": "2020-01-01T00:00:00Z",
                                "ownerReferences": [{"kind": "Deployment", "name": "x"}]}]}}}}),
                    ),
                    (&Method::PUT, "/apis/apps.kruise.io/v1beta1/nodeimages/node-a/status") => {
                        let sent = body_json(req).await;
                        statuses.push(sent.clone());
                        reply(200, sent)
                    }
                    other => panic!("unexpected request {other:?}"),
                };
                send.send_response(answer);
            }
            statuses
        });
        sync(&client, "node-a", 30).await.unwrap();
        drop(client);
        let statuses = server.await.unwrap();
        assert_eq!(statuses.len(), 1);
        let s = &statuses[0];
        assert_eq!(s["metadata"]["resourceVersion"], "5");
        let tag = &s["status"]["imageStatuses"]["nginx"]["tags"][0];
        assert_eq!(tag["phase"], "Failed");
        assert_eq!(tag["version"], 2);
        assert_eq!(tag["message"], super::super::NOT_RESPONDED);
        assert_eq!(s["status"]["failed"], 1);
    }
}
