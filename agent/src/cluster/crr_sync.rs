//! Cluster mode for in-place restarts: the active ContainerRecreateRequests
//! of this node (label `crr.apps.kruise.io/node-name`, read from the
//! watch's store: no LIST per round) become restart
//! requests of the host agent — each once: the CRR's uid is the restart's
//! key, and the restart's id follows from the key, so this side keeps no
//! state and a crash on either side resubmits into the same restart — and
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
use kube::api::{Api, Patch, PatchParams};

use super::crr::{Unready, acquiring_status, crr_status, key_of, restart_spec, unready};
use super::node::NodeClient;
use super::nodeimage_sync::SyncError;
use crate::restart::engine::id_for_key;

/// The CRR side of cluster mode.
pub struct CrrSync {
    client: Client,
    node: String,
    restarts: NodeClient,
    last_written:
        std::sync::Mutex<std::collections::HashMap<String, ContainerRecreateRequestStatus>>,
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
    pub fn new(client: Client, node: &str, restarts: NodeClient) -> Self {
        Self {
            client,
            node: node.to_string(),
            restarts,
            last_written: Default::default(),
        }
    }

    /// The label selector of this node's active requests.
    pub fn selector(&self) -> String {
        format!("{LABEL_NODE_NAME}={},{LABEL_ACTIVE}=true", self.node)
    }

    /// One round over this node's active requests as the watch has them
    /// (`listed`, from its store: no LIST per round); returns how many
    /// statuses were written.
    pub async fn sync_once(
        &self,
        listed: &[Arc<ContainerRecreateRequest>],
    ) -> Result<usize, SyncError> {
        // What this agent wrote last, per uid: the store's copy may not
        // show a write yet (its watch event is on the way), and writing
        // the same status again would only churn. Taken out for the
        // round (rounds run one at a time; the lock is not held across an
        // await) and put back after it.
        let mut last = self
            .last_written
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        let present: std::collections::HashSet<&str> = listed
            .iter()
            .filter_map(|c| c.metadata.uid.as_deref())
            .collect();
        last.retain(|uid, _| present.contains(uid.as_str()));
        let mut written = 0;
        for crr in listed.iter().map(|c| ContainerRecreateRequest::clone(c)) {
            let (Some(uid), Some(ns), Some(name)) = (
                crr.metadata.uid.clone(),
                crr.metadata.namespace.clone(),
                crr.metadata.name.clone(),
            ) else {
                continue;
            };
            let completed_here = last.get(&uid).is_some_and(|s| s.phase == "Completed");
            if completed_here || crr.status.as_ref().is_some_and(|s| s.phase == "Completed") {
                continue;
            }
            let next = match self.restarts.restart(&id_for_key(&key_of(&uid))).await? {
                Some(s) => crr_status(&s),
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
                            let wanted = Some((waiting.phase.as_str(), waiting.message.as_deref()));
                            if shown != wanted && last.get(&uid) != Some(&waiting) {
                                self.write_status(&ns, &name, &waiting).await?;
                                last.insert(uid, waiting);
                                written += 1;
                            }
                            continue;
                        }
                        Unready::Bad(m) => {
                            let done = completed(m);
                            self.write_status(&ns, &name, &done).await?;
                            last.insert(uid, done);
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
                        Ok(spec) => match self.restarts.submit_restart(&spec).await {
                            Ok(id) => Ok(id),
                            Err(e) if e.transient() => {
                                tracing::warn!(crr = %name, error = %e, "runtime or agent unreachable; will retry");
                                continue;
                            }
                            Err(e) => Err(e.to_string()),
                        },
                    };
                    match submitted {
                        Ok(id) => {
                            tracing::info!(crr = %name, namespace = %ns, restart = %id, "ContainerRecreateRequest accepted");
                            match self.restarts.restart(&id).await? {
                                Some(s) => crr_status(&s),
                                None => continue,
                            }
                        }
                        Err(reason) => completed(reason),
                    }
                }
            };
            if crr.status.as_ref() == Some(&next) || last.get(&uid) == Some(&next) {
                continue;
            }
            self.write_status(&ns, &name, &next).await?;
            last.insert(uid, next);
            written += 1;
        }
        if let Ok(mut l) = self.last_written.lock() {
            *l = last;
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
    use http::{Method, Request, Response};
    use kube::client::Body;

    fn reply(body: serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(200)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    /// A request as the watch's store holds it.
    fn listed(v: serde_json::Value) -> Arc<ContainerRecreateRequest> {
        Arc::new(serde_json::from_value(v).unwrap())
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
        let store = crate::store::Store::open(state.path()).unwrap();
        let (node, _, engine) = crate::testing::node_without_runtime(state.path(), &store);
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
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
            node.client.clone(),
        );
        let listed = [
            listed(crr("bad", "u1", "Sometimes")),
            listed(crr("good", "u2", "Fail")),
        ];
        assert_eq!(sync.sync_once(&listed).await.unwrap(), 1);
        assert!(
            engine.list().is_empty(),
            "nothing accepted without the runtime"
        );
        // The store may still show the request without the status just
        // written: not written again.
        assert_eq!(sync.sync_once(&listed).await.unwrap(), 0);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn unready_grace_waits_showing_recreating_until_the_pod_is_made_not_ready() {
        let state = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(state.path()).unwrap();
        let (node, _, engine) = crate::testing::node_without_runtime(state.path(), &store);
        let mut waiting = crr("r", "u1", "Fail");
        waiting["spec"]["strategy"]["unreadyGracePeriodSeconds"] = 5.into();
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::PATCH);
            assert!(
                req.uri()
                    .path()
                    .ends_with("/containerrecreaterequests/r/status")
            );
            let body: serde_json::Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            send.send_response(reply(crr("r", "u1", "Fail")));
            vec![body]
        });
        let sync = CrrSync::new(
            Client::new(service, "default"),
            "node-a",
            node.client.clone(),
        );
        assert_eq!(sync.sync_once(&[listed(waiting.clone())]).await.unwrap(), 1);
        // The status written is what the watch shows now, with a field
        // left over from someone else's write: nothing to write.
        let shown_now = {
            let mut item = waiting.clone();
            item["status"] = serde_json::json!({"phase": "Recreating",
                "message": "waiting for the pod to be made not-ready",
                "containerRecreateStates": [{"name": "app", "phase": "Pending"}]});
            item
        };
        assert_eq!(
            sync.sync_once(&[listed(shown_now)]).await.unwrap(),
            0,
            "written once"
        );
        // Nor while the store still has the copy from before the write.
        assert_eq!(sync.sync_once(&[listed(waiting)]).await.unwrap(), 0);
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
