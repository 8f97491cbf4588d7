//! The ContainerRecreateRequest controller on kube-runtime. Each reconcile
//! first takes the request's [`lifecycle`](super::lifecycle) step (pod
//! gone, no node answering, container statuses mirrored, the pod made
//! not-ready and released again), and when there is none applies
//! [`cleanup`](super::cleanup) — an expired request gets its final status
//! through the status subresource, a completed one loses the active label
//! (so agents stop watching it), one past its TTL is deleted. Woken by its
//! requests and by their pods.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keelson_api::apps::v1alpha1::containerrecreaterequest::{
    ANNOTATION_SYNC_CONTAINER_STATUSES, ANNOTATION_UNREADY_ACQUIRED, ContainerRecreateRequest,
    LABEL_ACTIVE,
};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};

use super::index::PodIndex;

use crate::api_call::{finalizer_patch, status_code};

use super::lifecycle::{self, Step, UNREADY_FINALIZER};
use super::{Cleanup, cleanup, completed};

/// Why one reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(#[from] kube::Error);

/// Carries out `cleanup` for `crr` (called `name` in `api`) at `now`;
/// returns when to look again.
pub async fn apply(
    api: &Api<ContainerRecreateRequest>,
    name: &str,
    crr: &ContainerRecreateRequest,
    now: &Time,
) -> Result<Option<Duration>, kube::Error> {
    match cleanup(crr, now) {
        Cleanup::Wait { after_seconds } => {
            Ok(after_seconds.map(|s| Duration::from_secs(s.max(1) as u64)))
        }
        Cleanup::Expire(status) => {
            // Under the resourceVersion read: the agent may be writing the
            // status too, and neither write may silently undo the other.
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": crr.metadata.resource_version},
                "status": status,
            });
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(Some(Duration::from_secs(1))),
                Err(e) if status_code(&e) == Some(409) => Ok(Some(Duration::from_millis(200))),
                Err(e) => Err(e),
            }
        }
        Cleanup::Deactivate => {
            let patch = serde_json::json!({ "metadata": { "labels": { LABEL_ACTIVE: null } } });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(Some(Duration::from_secs(1)))
        }
        Cleanup::Delete => match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(e),
        },
    }
}

/// Whether the reconcile needs the pod: an unfinished request, or one
/// still holding the pod not-ready.
fn needs_pod(crr: &ContainerRecreateRequest) -> bool {
    let finished = crr.metadata.deletion_timestamp.is_some()
        || crr
            .status
            .as_ref()
            .is_some_and(|s| s.completion_time.is_some());
    let holds = crr
        .metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == UNREADY_FINALIZER));
    !finished || holds
}

/// Takes `crr`'s lifecycle step at `now`, then (when there was none) its
/// cleanup; returns when to look again.
pub async fn reconcile_at(
    client: &Client,
    crr: &ContainerRecreateRequest,
    now: &Time,
) -> Result<Option<Duration>, kube::Error> {
    let name = crr.metadata.name.clone().unwrap_or_default();
    let ns = crr.metadata.namespace.clone().unwrap_or_default();
    let api: Api<ContainerRecreateRequest> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = if needs_pod(crr) {
        pods.get_opt(&crr.spec.pod_name).await?
    } else {
        None
    };
    let again = Some(Duration::from_millis(200));
    let finalizers = |add: bool| finalizer_patch(&crr.metadata, UNREADY_FINALIZER, add);
    let pod_status = |patch: serde_json::Value| {
        let pods = pods.clone();
        let pod_name = crr.spec.pod_name.clone();
        async move {
            match pods
                .patch_status(
                    &pod_name,
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if status_code(&e) == Some(409) => Ok(false),
                Err(e) if status_code(&e) == Some(404) => Ok(true),
                Err(e) => Err(e),
            }
        }
    };
    let merge = |patch: serde_json::Value| {
        let api = api.clone();
        let name = name.clone();
        async move {
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if status_code(&e) == Some(409) => Ok(false),
                Err(e) => Err(e),
            }
        }
    };
    match lifecycle::step(crr, pod.as_ref(), now) {
        Step::Nothing { after_seconds } => {
            let later = apply(&api, &name, crr, now).await?;
            let own = after_seconds.map(|s| Duration::from_secs(s.max(1) as u64));
            Ok(match (later, own) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            })
        }
        Step::Complete { message } => {
            tracing::info!(crr = %name, namespace = %ns, reason = %message, "ContainerRecreateRequest completed");
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": crr.metadata.resource_version},
                "status": completed(crr, now, &message),
            });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(Some(Duration::from_secs(1))),
                Err(e) if status_code(&e) == Some(409) => Ok(again),
                Err(e) => Err(e),
            }
        }
        Step::SyncStatuses { value } => {
            merge(serde_json::json!({"metadata": {"annotations": {ANNOTATION_SYNC_CONTAINER_STATUSES: value}}}))
                .await?;
            Ok(None)
        }
        Step::Acquire {
            add_finalizer,
            pod_patch,
            at,
        } => {
            // Finalizer first, then the pod, then the time the node waits for.
            if add_finalizer && !merge(finalizers(true)).await? {
                return Ok(again);
            }
            if let Some(p) = pod_patch
                && !pod_status(p).await?
            {
                return Ok(again);
            }
            merge(
                serde_json::json!({"metadata": {"annotations": {ANNOTATION_UNREADY_ACQUIRED: at}}}),
            )
            .await?;
            tracing::info!(crr = %name, namespace = %ns, pod = %crr.spec.pod_name, "pod made not-ready for the restart");
            Ok(None)
        }
        Step::Release { pod_patch } => {
            if let Some(p) = pod_patch
                && !pod_status(p).await?
            {
                return Ok(again);
            }
            if !merge(finalizers(false)).await? {
                return Ok(again);
            }
            Ok(None)
        }
    }
}

async fn reconcile_one(
    crr: Arc<ContainerRecreateRequest>,
    client: Arc<Client>,
) -> Result<Action, ReconcileError> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    Ok(match reconcile_at(&client, &crr, &now).await? {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

fn on_error(crr: Arc<ContainerRecreateRequest>, error: &ReconcileError, _: Arc<Client>) -> Action {
    tracing::warn!(crr = ?crr.metadata.name, error = %error, "ContainerRecreateRequest reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs until the task is dropped.
pub async fn run(client: Client) {
    crate::metrics::register_controller("containerrecreaterequest");
    let api: Api<ContainerRecreateRequest> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    // One watch of the requests feeds the controller's store and the
    // pod → requests index a pod event is mapped through.
    let (reader, writer) = kube::runtime::reflector::store();
    let index = Arc::new(PodIndex::default());
    let feed = index.clone();
    let requests = kube::runtime::reflector(writer, watcher(api, watcher::Config::default()))
        .inspect(move |ev| {
            if let Ok(ev) = ev {
                feed.apply(ev);
            }
        })
        .touched_objects();
    Controller::for_stream(requests, reader)
        .watches(pods, watcher::Config::default(), move |p: Pod| {
            index.requests_of(&p)
        })
        .run(reconcile_one, on_error, Arc::new(client))
        .for_each(|r| async move {
            crate::metrics::reconciled("containerrecreaterequest", r.is_ok());
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
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ContainerRecreateRequest\nmetadata:\n  name: r\n  namespace: team\n  resourceVersion: '8'\n  creationTimestamp: '1970-01-01T00:16:40Z'\n  labels: {{crr.apps.kruise.io/active: 'true'}}\nspec:\n  podName: p\n  containers: [{{name: app}}]\n  activeDeadlineSeconds: 60\n  ttlSecondsAfterFinished: 30\n{status}"
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
            // Conditional: the agent may be writing the status too.
            assert_eq!(body["metadata"]["resourceVersion"], "8");
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
        let api = Api::namespaced(client, "team");
        // Created at 1000 s with a 60 s deadline.
        let running = crr("status: {phase: Recreating}\n");
        assert_eq!(
            apply(&api, "r", &running, &at(1030)).await.unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            apply(&api, "r", &running, &at(1060)).await.unwrap(),
            Some(Duration::from_secs(1))
        );
        let done = crr("status: {phase: Completed, completionTime: '1970-01-01T00:17:40Z'}\n");
        assert_eq!(
            apply(&api, "r", &done, &at(1065)).await.unwrap(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(apply(&api, "r", &done, &at(1090)).await.unwrap(), None);
        server.await.unwrap();
    }

    /// The requests, in order, `reconcile_at` makes for `crr` against a
    /// server holding `pod` (answers echo the request body).
    async fn requests_for(
        crr: ContainerRecreateRequest,
        pod: serde_json::Value,
        now: i64,
    ) -> Vec<(Method, String, String, serde_json::Value)> {
        let (client, mut handle) = mock_client();
        let crr_json = serde_json::to_value(&crr).unwrap();
        let server = tokio::spawn(async move {
            let mut seen = vec![];
            while let Some((req, send)) = handle.next_request().await {
                let method = req.method().clone();
                let path = req.uri().path().to_string();
                let answer = if path.contains("/containerrecreaterequests/") {
                    crr_json.clone()
                } else {
                    pod.clone()
                };
                let ctype = req
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                if method == Method::GET {
                    seen.push((method, path, ctype, serde_json::Value::Null));
                    send.send_response(reply(200, pod.clone()));
                    continue;
                }
                let body: serde_json::Value =
                    serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap())
                        .unwrap();
                seen.push((method, path, ctype, body));
                send.send_response(reply(200, answer));
            }
            seen
        });
        reconcile_at(&client, &crr, &at(now)).await.unwrap();
        drop(client);
        server.await.unwrap()
    }

    fn gated_pod() -> serde_json::Value {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "team", "uid": "pod-uid", "resourceVersion": "40"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}],
                "readinessGates": [{"conditionType": "KruisePodReady"}]},
            "status": {"conditions": [{"type": "KruisePodReady", "status": "True"}]}})
    }

    #[tokio::test]
    async fn acquiring_unready_writes_finalizer_then_pod_then_annotation() {
        let mut r = crr("status: {phase: Recreating}\n");
        r.metadata.resource_version = Some("5".into());
        r.metadata.labels.as_mut().unwrap().insert(
            keelson_api::apps::v1alpha1::containerrecreaterequest::LABEL_POD_UID.into(),
            "pod-uid".into(),
        );
        r.metadata.annotations = Some(
            [(
                ANNOTATION_SYNC_CONTAINER_STATUSES.to_string(),
                "[]".to_string(),
            )]
            .into(),
        );
        r.spec.strategy = Some(Default::default());
        r.spec
            .strategy
            .as_mut()
            .unwrap()
            .unready_grace_period_seconds = Some(5);
        let seen = requests_for(r, gated_pod(), 1010).await;
        let steps: Vec<(String, String)> = seen
            .iter()
            .map(|(m, p, _, _)| (m.to_string(), p.clone()))
            .collect();
        let crr_path = "/apis/apps.kruise.io/v1alpha1/namespaces/team/containerrecreaterequests/r";
        assert_eq!(
            steps,
            [
                ("GET".into(), "/api/v1/namespaces/team/pods/p".into()),
                ("PATCH".into(), crr_path.into()),
                (
                    "PATCH".into(),
                    "/api/v1/namespaces/team/pods/p/status".into()
                ),
                ("PATCH".into(), crr_path.into()),
            ]
        );
        assert_eq!(
            seen[1].3,
            serde_json::json!({"metadata": {"finalizers": [UNREADY_FINALIZER], "resourceVersion": "5"}})
        );
        assert_eq!(seen[2].2, "application/strategic-merge-patch+json");
        assert_eq!(seen[2].3["metadata"]["resourceVersion"], "40");
        assert_eq!(seen[2].3["status"]["conditions"][0]["status"], "False");
        assert_eq!(
            seen[3].3["metadata"]["annotations"][ANNOTATION_UNREADY_ACQUIRED],
            "1970-01-01T00:16:50Z"
        );
    }

    #[tokio::test]
    async fn a_completed_request_releases_the_pod_then_its_finalizer() {
        let mut r = crr("status: {phase: Completed, completionTime: '1970-01-01T00:17:00Z'}\n");
        r.metadata.finalizers = Some(vec!["keep/me".into(), UNREADY_FINALIZER.into()]);
        r.metadata.resource_version = Some("9".into());
        let mut pod = gated_pod();
        pod["status"]["conditions"][0] = serde_json::json!({"type": "KruisePodReady", "status": "False",
            "message": r#"[{"userAgent":"ContainerRecreateRequest","key":"team/r"}]"#});
        let seen = requests_for(r, pod, 1030).await;
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[1].1, "/api/v1/namespaces/team/pods/p/status");
        assert_eq!(seen[1].3["status"]["conditions"][0]["status"], "True");
        assert_eq!(
            seen[2].3,
            serde_json::json!({"metadata": {"finalizers": ["keep/me"], "resourceVersion": "9"}})
        );
    }

    #[tokio::test]
    async fn a_request_whose_pod_is_gone_is_completed_through_the_status_subresource() {
        let mut r = crr("status: {phase: Recreating}\n");
        r.metadata.labels.as_mut().unwrap().insert(
            keelson_api::apps::v1alpha1::containerrecreaterequest::LABEL_POD_UID.into(),
            "old-uid".into(),
        );
        let seen = requests_for(r, gated_pod(), 1010).await;
        assert_eq!(seen.len(), 2);
        assert!(seen[1].1.ends_with("/containerrecreaterequests/r/status"));
        assert_eq!(seen[1].3["status"]["phase"], "Completed");
        assert_eq!(
            seen[1].3["status"]["message"],
            super::super::lifecycle::POD_GONE
        );
        assert_eq!(
            seen[1].3["status"]["containerRecreateStates"][0]["phase"],
            "Failed"
        );
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
                // The pod watch: nothing there, and it stays open.
                if req.uri().path() == "/api/v1/pods" {
                    if uri.contains("watch=true") {
                        held.push(send);
                    } else {
                        send.send_response(reply(
                            200,
                            serde_json::json!({"apiVersion": "v1",
                            "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": []}),
                        ));
                    }
                    continue;
                }
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
