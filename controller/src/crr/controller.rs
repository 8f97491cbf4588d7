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
}
