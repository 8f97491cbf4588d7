//! The ContainerRecreateRequest controller on kube-runtime: applies
//! [`cleanup`](super::cleanup) — an expired request gets its final status
//! through the status subresource, a completed one loses the active label
//! (so agents stop watching it), one past its TTL is deleted.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keelson_api::apps::v1alpha1::containerrecreaterequest::{
    ContainerRecreateRequest, LABEL_ACTIVE,
};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::{Cleanup, cleanup};

/// Why one reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(#[from] kube::Error);

/// Carries out `cleanup` for `crr` at `now`; returns when to look again.
pub async fn apply(
    client: &Client,
    crr: &ContainerRecreateRequest,
    now: &Time,
) -> Result<Option<Duration>, kube::Error> {
    let name = crr.metadata.name.clone().unwrap_or_default();
    let ns = crr.metadata.namespace.clone().unwrap_or_default();
    let api: Api<ContainerRecreateRequest> = Api::namespaced(client.clone(), &ns);
    match cleanup(crr, now) {
        Cleanup::Wait { after_seconds } => {
            Ok(after_seconds.map(|s| Duration::from_secs(s.max(1) as u64)))
        }
        Cleanup::Expire(status) => {
            let patch = serde_json::json!({ "status": status });
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(Some(Duration::from_secs(1)))
        }
        Cleanup::Deactivate => {
            let patch = serde_json::json!({ "metadata": { "labels": { LABEL_ACTIVE: null } } });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(Some(Duration::from_secs(1)))
        }
        Cleanup::Delete => match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(e),
        },
    }
}

async fn reconcile_one(
    crr: Arc<ContainerRecreateRequest>,
    client: Arc<Client>,
) -> Result<Action, ReconcileError> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    Ok(match apply(&client, &crr, &now).await? {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

fn on_error(crr: Arc<ContainerRecreateRequest>, error: &ReconcileError, _: Arc<Client>) -> Action {
    tracing::warn!(crr = ?crr.metadata.name, error = %error, "ContainerRecreateRequest cleanup failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs until the task is dropped.
pub async fn run(client: Client) {
    let api: Api<ContainerRecreateRequest> = Api::all(client.clone());
    Controller::new(api, watcher::Config::default())
        .run(reconcile_one, on_error, Arc::new(client))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "ContainerRecreateRequest controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::at;
    use crate::testing::{mock_client, reply};
    use http::Method;

    fn crr(status: &str) -> ContainerRecreateRequest {
        serde_saphyr::from_str(&format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ContainerRecreateRequest\nmetadata:\n  name: r\n  namespace: team\n  creationTimestamp: '1970-01-01T00:16:40Z'\n  labels: {{crr.apps.kruise.io/active: 'true'}}\nspec:\n  podName: p\n  containers: [{{name: app}}]\n  activeDeadlineSeconds: 60\n  ttlSecondsAfterFinished: 30\n{status}"
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn expiry_then_deactivation_then_deletion_are_the_right_requests() {
        let (client, mut handle) = mock_client();
        let path = "/apis/apps.kruise.io/v1alpha1/namespaces/team/containerrecreaterequests/r";
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(
                (req.method(), req.uri().path()),
                (&Method::PATCH, &*format!("{path}/status"))
            );
            let body: serde_json::Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            assert_eq!(body["status"]["phase"], "Completed");
            assert_eq!(
                body["status"]["containerRecreateStates"][0]["phase"],
                "Failed"
            );
            send.send_response(reply(200, serde_json::to_value(crr("")).unwrap()));

            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!((req.method(), req.uri().path()), (&Method::PATCH, path));
            let body: serde_json::Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"metadata": {"labels": {LABEL_ACTIVE: null}}})
            );
            send.send_response(reply(200, serde_json::to_value(crr("")).unwrap()));

            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!((req.method(), req.uri().path()), (&Method::DELETE, path));
            send.send_response(reply(200, serde_json::to_value(crr("")).unwrap()));
        });
        // Created at 1000 s with a 60 s deadline.
        let running = crr("status: {phase: Recreating}\n");
        assert_eq!(
            apply(&client, &running, &at(1030)).await.unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            apply(&client, &running, &at(1060)).await.unwrap(),
            Some(Duration::from_secs(1))
        );
        let done = crr("status: {phase: Completed, completionTime: '1970-01-01T00:17:40Z'}\n");
        assert_eq!(
            apply(&client, &done, &at(1065)).await.unwrap(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(apply(&client, &done, &at(1090)).await.unwrap(), None);
        server.await.unwrap();
    }

    /// A finished request past its TTL, as the API server lists it.
    fn finished(name: &str, rv: &str) -> serde_json::Value {
        let mut c = crr("status: {phase: Completed, completionTime: '1970-01-01T00:17:40Z'}\n");
        c.metadata.name = Some(name.into());
        c.metadata.resource_version = Some(rv.into());
        serde_json::to_value(c).unwrap()
    }

    fn watch_body(lines: &[serde_json::Value]) -> http::Response<kube::client::Body> {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        http::Response::builder()
            .status(200)
            .body(kube::client::Body::from(text.into_bytes()))
            .unwrap()
    }

    /// The controller's watch ends twice (once cleanly, once with 410
    /// Gone) and it goes on: a clean end re-watches from the last
    /// resourceVersion seen, a 410 re-lists; objects arriving on every
    /// leg are reconciled.
    #[tokio::test]
    async fn the_watch_is_resumed_after_it_ends_and_relisted_after_410() {
        let (client, mut handle) = mock_client();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let mut log: Vec<String> = vec![];
            let mut held = vec![];
            let (mut lists, mut watches) = (0, 0);
            let mut done_tx = Some(done_tx);
            while let Some((req, send)) = handle.next_request().await {
                let uri = req.uri().to_string();
                let method = req.method().clone();
                log.push(format!("{method} {uri}").trim_end_matches('?').to_string());
                let path = req.uri().path().to_string();
                // Done once the relisted object is deleted and the watch
                // after the relist is open.
                let all_seen = |log: &[String]| {
                    log.iter()
                        .any(|l| l.starts_with("DELETE") && l.ends_with("/third"))
                        && log.iter().filter(|l| l.contains("watch=true")).count() >= 4
                };
                if method == Method::DELETE {
                    send.send_response(reply(200, serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})));
                    if all_seen(&log)
                        && let Some(tx) = done_tx.take()
                    {
                        let _ = tx.send(log.clone());
                    }
                    continue;
                }
                assert_eq!(
                    path, "/apis/apps.kruise.io/v1alpha1/containerrecreaterequests",
                    "{uri}"
                );
                if !uri.contains("watch=true") {
                    lists += 1;
                    let (rv, items) = match lists {
                        1 => ("10", vec![]),
                        _ => ("20", vec![finished("third", "20")]),
                    };
                    send.send_response(reply(200, serde_json::json!({"apiVersion": "apps.kruise.io/v1alpha1",
                        "kind": "ContainerRecreateRequestList", "metadata": {"resourceVersion": rv}, "items": items})));
                    continue;
                }
                watches += 1;
                match watches {
                    1 => send.send_response(watch_body(&[serde_json::json!({"type": "ADDED", "object": finished("first", "11")})])),
                    2 => send.send_response(watch_body(&[serde_json::json!({"type": "ADDED", "object": finished("second", "12")})])),
                    3 => send.send_response(watch_body(&[serde_json::json!({"type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired",
                        "code": 410, "message": "too old resource version: 12 (15)"}})])),
                    // The watch after the relist stays open.
                    _ => held.push(send),
                }
                if all_seen(&log)
                    && let Some(tx) = done_tx.take()
                {
                    let _ = tx.send(log.clone());
                }
            }
        });
        let controller = tokio::spawn(run(client));
        let log = tokio::time::timeout(Duration::from_secs(30), done_rx)
            .await
            .expect("the controller reconciled the relisted object")
            .unwrap();
        controller.abort();
        let _ = controller.await;
        server.await.unwrap();
        let watches: Vec<&String> = log.iter().filter(|l| l.contains("watch=true")).collect();
        assert!(watches[0].contains("resourceVersion=10"), "{log:#?}");
        assert!(
            watches[1].contains("resourceVersion=11"),
            "a clean end resumes from the last event: {log:#?}"
        );
        assert!(watches[2].contains("resourceVersion=12"), "{log:#?}");
        assert!(
            watches[3].contains("resourceVersion=20"),
            "410 means a new list: {log:#?}"
        );
        let lists = log
            .iter()
            .filter(|l| l.starts_with("GET") && !l.contains("watch=true"))
            .count();
        assert_eq!(lists, 2, "{log:#?}");
        for name in ["first", "second", "third"] {
            assert_eq!(
                log.iter()
                    .filter(|l| l.starts_with("DELETE") && l.contains(&format!("/{name}")))
                    .count(),
                1,
                "{name}: {log:#?}"
            );
        }
    }
}
