//! Carrying out an ImagePullJob [`Decision`] through the API server:
//! NodeImage entries as JSON merge patches of `spec.images.<image>` only
//! (with the resourceVersion they were computed from, so a concurrent
//! writer makes the API server answer 409 and nothing is clobbered), the
//! job's status through the status subresource (only when it changed), and
//! the deletion of a finished job past its TTL.

use keelson_api::apps::v1alpha1::imagepulljob::ImagePullJob;
use keelson_api::apps::v1beta1::nodeimage::NodeImage;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};

use crate::api_call::status_code;

use super::Decision;

/// How applying went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Everything written; look again after this many seconds (if any).
    Done { requeue_after_seconds: Option<i64> },
    /// A NodeImage changed since it was read (409): reconcile again now,
    /// from fresh objects.
    Conflict { node: String },
    /// The job was deleted (TTL).
    Deleted,
    /// Nothing to do (bad job), with why.
    Ignored { reason: String },
}

/// Applies `decision` for `job`.
pub async fn apply(
    client: &Client,
    job: &ImagePullJob,
    decision: Decision,
) -> Result<Applied, kube::Error> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let namespace = job.metadata.namespace.clone().unwrap_or_default();
    let jobs: Api<ImagePullJob> = Api::namespaced(client.clone(), &namespace);
    match decision {
        Decision::Ignore { reason } => Ok(Applied::Ignored { reason }),
        Decision::Delete => match jobs.delete(&name, &DeleteParams::background()).await {
            Ok(_) => Ok(Applied::Deleted),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Applied::Deleted),
            Err(e) => Err(e),
        },
        Decision::Sync {
            status,
            writes,
            requeue_after_seconds,
        } => {
            let nodes: Api<NodeImage> = Api::all(client.clone());
            for w in writes {
                let mut images = serde_json::Map::new();
                images.insert(
                    w.image.clone(),
                    serde_json::to_value(&w.spec).map_err(kube::Error::SerdeError)?,
                );
                let mut patch = serde_json::json!({ "spec": { "images": images } });
                if let Some(rv) = &w.resource_version {
                    patch["metadata"] = serde_json::json!({ "resourceVersion": rv });
                }
                match nodes
                    .patch(&w.node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if status_code(&e) == Some(409) => {
                        return Ok(Applied::Conflict { node: w.node });
                    }
                    Err(e) => return Err(e),
                }
            }
            if job.status.as_ref() != Some(&status) {
                let patch = serde_json::json!({ "status": status });
                jobs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Ok(Applied::Done {
                requeue_after_seconds,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Context, reconcile};
    use super::*;
    use crate::testing::{at, body_json, mock_client, reply};
    use http::Method;
    use keelson_api::apps::v1beta1::nodeimage::NodeImageSpec;

    fn job() -> ImagePullJob {
        serde_saphyr::from_str(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata: {name: job, namespace: team, uid: uid-job}\nspec:\n  image: nginx:1.9.1\n  parallelism: 2\n  completionPolicy: {type: Always, ttlSecondsAfterFinished: 5}\n",
        )
        .unwrap()
    }

    fn node(name: &str, rv: &str) -> NodeImage {
        let mut n = NodeImage::new(name, NodeImageSpec::default());
        n.metadata.resource_version = Some(rv.into());
        n
    }

    #[tokio::test]
    async fn entries_are_merge_patches_of_one_image_then_the_status_subresource() {
        let (client, mut handle) = mock_client();
        let j = job();
        let nodes = [node("node-a", "11"), node("node-b", "12")];
        let refs: Vec<&NodeImage> = nodes.iter().collect();
        let decision = reconcile(
            &j,
            &refs,
            &Context {
                now: at(1000),
                secrets: vec![],
                jitter_seconds: 0,
            },
        );
        let server = tokio::spawn(async move {
            for (node, rv) in [("node-a", "11"), ("node-b", "12")] {
                let (req, send) = handle.next_request().await.unwrap();
                assert_eq!(req.method(), Method::PATCH);
                assert_eq!(
                    req.uri().path(),
                    format!("/apis/apps.kruise.io/v1beta1/nodeimages/{node}")
                );
                assert_eq!(
                    req.headers()["content-type"],
                    "application/merge-patch+json"
                );
                let body = body_json(req).await;
                assert_eq!(body["metadata"]["resourceVersion"], rv);
                let images = body["spec"]["images"].as_object().unwrap();
                assert_eq!(
                    images.keys().collect::<Vec<_>>(),
                    vec!["nginx"],
                    "only this image"
                );
                assert_eq!(images["nginx"]["tags"][0]["tag"], "1.9.1");
                assert_eq!(
                    images["nginx"]["tags"][0]["ownerReferences"][0]["uid"],
                    "uid-job"
                );
                send.send_response(reply(
                    200,
                    serde_json::to_value(NodeImage::new(node, NodeImageSpec::default())).unwrap(),
                ));
            }
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::PATCH);
            assert_eq!(
                req.uri().path(),
                "/apis/apps.kruise.io/v1alpha1/namespaces/team/imagepulljobs/job/status"
            );
            let body = body_json(req).await;
            assert_eq!(body["status"]["desired"], 2);
            assert!(body.get("spec").is_none(), "status only");
            send.send_response(reply(200, serde_json::to_value(job()).unwrap()));
        });
        let applied = apply(&client, &j, decision).await.unwrap();
        assert_eq!(
            applied,
            Applied::Done {
                requeue_after_seconds: None
            }
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_conflict_stops_and_asks_for_a_fresh_reconcile_and_ttl_deletes() {
        let (client, mut handle) = mock_client();
        let j = job();
        let nodes = [node("node-a", "11")];
        let refs: Vec<&NodeImage> = nodes.iter().collect();
        let ctx = Context {
            now: at(1000),
            secrets: vec![],
            jitter_seconds: 0,
        };
        let decision = reconcile(&j, &refs, &ctx);
        let mut done = job();
        done.status = Some(
            keelson_api::apps::v1alpha1::imagepulljob::ImagePullJobStatus {
                completion_time: Some(at(900)),
                ..Default::default()
            },
        );
        let expired = reconcile(&done, &refs, &ctx);
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::PATCH);
            send.send_response(reply(
                409,
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "the object has been modified", "reason": "Conflict", "code": 409}),
            ));
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::DELETE);
            assert_eq!(
                req.uri().path(),
                "/apis/apps.kruise.io/v1alpha1/namespaces/team/imagepulljobs/job"
            );
            send.send_response(reply(200, serde_json::to_value(job()).unwrap()));
        });
        assert_eq!(
            apply(&client, &j, decision).await.unwrap(),
            Applied::Conflict {
                node: "node-a".into()
            }
        );
        assert_eq!(
            apply(&client, &done, expired).await.unwrap(),
            Applied::Deleted
        );
        server.await.unwrap();
    }
}
