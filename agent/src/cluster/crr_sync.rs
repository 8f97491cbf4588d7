//! Cluster mode for in-place restarts: the active ContainerRecreateRequests
//! of this node (label `crr.apps.kruise.io/node-name`) become restart
//! requests — each once (CRR uid → restart id is journaled in sled) — and
//! their status is written back through the status subresource. A request
//! the node can never carry out (bad spec, pod or container not here) is
//! completed with the reason; a runtime that cannot be reached is only
//! retried. A request with `unreadyGracePeriodSeconds` waits (showing
//! Recreating) until the controller has made the pod not-ready, and gets
//! the grace left from that moment.

use std::sync::Arc;

use keelson_api::apps::v1alpha1::containerrecreaterequest::{
    ContainerRecreateRequest, ContainerRecreateRequestStatus, LABEL_ACTIVE, LABEL_NODE_NAME,
};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::crr::{Unready, acquiring_status, crr_status, restart_spec, unready};
use super::nodeimage_sync::SyncError;
use crate::restart::engine::{RestartEngine, SubmitError};
use crate::store::{Store, StoreError, Table};

/// The CRR side of cluster mode.
pub struct CrrSync {
    client: Client,
    node: String,
    restarts: Arc<RestartEngine>,
    requests: Table<String>,
}

fn completed(message: String) -> ContainerRecreateRequestStatus {
    ContainerRecreateRequestStatus {
        phase: "Completed".into(),
        completion_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        )),
        message: Some(message),
        container_recreate_states: vec![],
    }
}

impl CrrSync {
    pub fn new(
        client: Client,
        node: &str,
        restarts: Arc<RestartEngine>,
        store: &Store,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            client,
            node: node.to_string(),
            restarts,
            requests: store.table("cluster.crr-restarts", 100_000)?,
        })
    }

    /// The label selector of this node's active requests.
    pub fn selector(&self) -> String {
        format!("{LABEL_NODE_NAME}={},{LABEL_ACTIVE}=true", self.node)
    }

    /// One round; returns how many statuses were written.
    pub async fn sync_once(&self) -> Result<usize, SyncError> {
        let all: Api<ContainerRecreateRequest> = Api::all(self.client.clone());
        let list = all
            .list(&ListParams::default().labels(&self.selector()))
            .await?;
        let mut written = 0;
        for crr in list.items {
            let (Some(uid), Some(ns), Some(name)) = (
                crr.metadata.uid.clone(),
                crr.metadata.namespace.clone(),
                crr.metadata.name.clone(),
            ) else {
                continue;
            };
            if crr.status.as_ref().is_some_and(|s| s.phase == "Completed") {
                continue;
            }
            let next = match self.requests.get(&uid)? {
                Some(id) => match self.restarts.status(&id) {
                    Some(s) => crr_status(&s),
                    None => continue,
                },
                None => {
                    let now_s = k8s_openapi::jiff::Timestamp::now().as_second();
                    let grace_left = match unready(&crr, now_s) {
                        Unready::NotAsked => None,
                        Unready::Left(s) => Some(s),
                        Unready::Acquiring => {
                            // Shown as Recreating: that is the controller's cue.
                            // Phase and message only: a merge patch cannot
                            // clear other fields, and comparing them would
                            // rewrite the same status every round.
                            let waiting = acquiring_status();
                            let shown = crr
                                .status
                                .as_ref()
                                .map(|s| (s.phase.as_str(), s.message.as_deref()));
                            if shown != Some((waiting.phase.as_str(), waiting.message.as_deref())) {
                                self.write_status(&ns, &name, &waiting).await?;
                                written += 1;
                            }
                            continue;
                        }
                        Unready::Bad(m) => {
                            self.write_status(&ns, &name, &completed(m)).await?;
                            written += 1;
                            continue;
                        }
                    };
                    let submitted = match restart_spec(&crr).map(|mut spec| {
                        if let Some(left) = grace_left {
                            spec.strategy.unready_grace_period_seconds =
                                Some(left).filter(|s| *s > 0);
                        }
                        spec
                    }) {
                        Err(e) => Err(e),
                        Ok(spec) => match self.restarts.submit(spec).await {
                            Ok(id) => Ok(id),
                            Err(SubmitError::Runtime(e)) => {
                                tracing::warn!(crr = %name, error = %e, "runtime unreachable; will retry");
                                continue;
                            }
                            Err(SubmitError::Store(e)) => return Err(e.into()),
                            Err(e) => Err(e.to_string()),
                        },
                    };
                    match submitted {
                        Ok(id) => {
                            self.requests.put(&uid, &id).await?;
                            tracing::info!(crr = %name, namespace = %ns, restart = %id, "ContainerRecreateRequest accepted");
                            match self.restarts.status(&id) {
                                Some(s) => crr_status(&s),
                                None => continue,
                            }
                        }
                        Err(reason) => completed(reason),
                    }
                }
            };
            if crr.status.as_ref() == Some(&next) {
                continue;
            }
            self.write_status(&ns, &name, &next).await?;
            written += 1;
        }
        Ok(written)
    }

    async fn write_status(
        &self,
        ns: &str,
        name: &str,
        status: &ContainerRecreateRequestStatus,
    ) -> Result<(), SyncError> {
        let api: Api<ContainerRecreateRequest> = Api::namespaced(self.client.clone(), ns);
        let patch = serde_json::json!({ "status": status });
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::PodBook;
    use crate::restart::engine::EngineConfig;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use std::time::Duration;

    fn reply(body: serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(200)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    fn crr(name: &str, uid: &str, policy: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequest",
            "metadata": {"name": name, "namespace": "team", "uid": uid,
                "labels": {LABEL_NODE_NAME: "node-a", LABEL_ACTIVE: "true", "crr.apps.kruise.io/pod-uid": "pod-uid"}},
            "spec": {"podName": "web-0", "containers": [{"name": "app"}],
                "strategy": {"failurePolicy": policy}}
        })
    }

    #[tokio::test]
    async fn impossible_requests_complete_with_the_reason_transient_ones_wait() {
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path()).unwrap();
        let book = PodBook::open(&store).unwrap();
        let engine = RestartEngine::start(
            EngineConfig {
                runtime: state.path().join("no-runtime.sock"),
                pods_at_once: 1,
                default_ttl: Duration::from_secs(60),
            },
            book,
            tokio::sync::broadcast::channel(4).0,
            Arc::new(crate::priority::RunningIsReady),
            &store,
        )
        .unwrap();
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::GET);
            assert_eq!(
                req.uri().path(),
                "/apis/apps.kruise.io/v1alpha1/containerrecreaterequests"
            );
            let query = req.uri().query().unwrap_or_default().to_string();
            assert!(
                query.contains("labelSelector=crr.apps.kruise.io%2Fnode-name%3Dnode-a%2Ccrr.apps.kruise.io%2Factive%3Dtrue"),
                "{query}"
            );
            send.send_response(reply(serde_json::json!({
                "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequestList",
                "metadata": {}, "items": [crr("bad", "u1", "Sometimes"), crr("good", "u2", "Fail")]})));
            // Only the impossible one gets a status: the other waits for
            // the runtime.
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::PATCH);
            assert_eq!(
                req.uri().path(),
                "/apis/apps.kruise.io/v1alpha1/namespaces/team/containerrecreaterequests/bad/status"
            );
            let body: serde_json::Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            assert_eq!(body["status"]["phase"], "Completed");
            assert!(
                body["status"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("Sometimes"),
                "{body}"
            );
            send.send_response(reply(crr("bad", "u1", "Sometimes")));
        });
        let sync = CrrSync::new(
            Client::new(service, "default"),
            "node-a",
            engine.clone(),
            &store,
        )
        .unwrap();
        assert_eq!(sync.sync_once().await.unwrap(), 1);
        assert!(
            engine.list().is_empty(),
            "nothing accepted without the runtime"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn unready_grace_waits_showing_recreating_until_the_pod_is_made_not_ready() {
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path()).unwrap();
        let engine = RestartEngine::start(
            EngineConfig {
                runtime: state.path().join("no-runtime.sock"),
                pods_at_once: 1,
                default_ttl: Duration::from_secs(60),
            },
            PodBook::open(&store).unwrap(),
            tokio::sync::broadcast::channel(4).0,
            Arc::new(crate::priority::RunningIsReady),
            &store,
        )
        .unwrap();
        let mut waiting = crr("r", "u1", "Fail");
        waiting["spec"]["strategy"]["unreadyGracePeriodSeconds"] = 5.into();
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let listed = waiting.clone();
        let server = tokio::spawn(async move {
            let mut patches: Vec<serde_json::Value> = vec![];
            for round in 0..2 {
                let (req, send) = handle.next_request().await.unwrap();
                assert_eq!(req.method(), Method::GET);
                let mut item = listed.clone();
                if round == 1 {
                    // The status written in round 0 is what is listed now,
                    // with a field left over from someone else's write.
                    item["status"] = patches[0]["status"].clone();
                    item["status"]["containerRecreateStates"] =
                        serde_json::json!([{"name": "app", "phase": "Pending"}]);
                }
                send.send_response(reply(serde_json::json!({
                    "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequestList",
                    "metadata": {}, "items": [item]})));
                if round == 0 {
                    let (req, send) = handle.next_request().await.unwrap();
                    assert_eq!(req.method(), Method::PATCH);
                    assert!(
                        req.uri()
                            .path()
                            .ends_with("/containerrecreaterequests/r/status")
                    );
                    let body: serde_json::Value =
                        serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap())
                            .unwrap();
                    patches.push(body);
                    send.send_response(reply(listed.clone()));
                }
            }
            patches
        });
        let sync = CrrSync::new(
            Client::new(service, "default"),
            "node-a",
            engine.clone(),
            &store,
        )
        .unwrap();
        assert_eq!(sync.sync_once().await.unwrap(), 1);
        assert_eq!(sync.sync_once().await.unwrap(), 0, "written once");
        let patches = server.await.unwrap();
        assert_eq!(patches[0]["status"]["phase"], "Recreating");
        assert_eq!(
            patches[0]["status"]["message"],
            "waiting for the pod to be made not-ready"
        );
        assert!(
            engine.list().is_empty(),
            "no container is touched meanwhile"
        );
    }
}
