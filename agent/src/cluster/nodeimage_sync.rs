//! Cluster mode for image pulls: keeps this node's NodeImage and the pull
//! engine in step. One [`NodeImageSync::sync_once`] reads the NodeImage,
//! submits every tag round it asks for that was not submitted before (the
//! round → pull id map is in sled, so a restart submits nothing twice),
//! with the referenced pull secrets read from the API, and writes the
//! status the pulls make through the status subresource when it changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use keelson_api::apps::v1alpha1::nodeimage::NodeImage;
use kube::Client;
use kube::api::{Api, PostParams};

use super::nodeimage::{changes, finished, status, wanted};
use crate::images::pulls::PullEngine;
use crate::store::{Store, StoreError, Table};

/// Why a sync round failed (the caller retries with backoff).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("API server: {0}")]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The NodeImage side of cluster mode.
pub struct NodeImageSync {
    client: Client,
    node: String,
    pulls: Arc<PullEngine>,
    rounds: Table<String>,
}

impl NodeImageSync {
    pub fn new(
        client: Client,
        node: &str,
        pulls: Arc<PullEngine>,
        store: &Store,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            client,
            node: node.to_string(),
            pulls,
            rounds: store.table("cluster.nodeimage-rounds", 100_000)?,
        })
    }

    /// The `.dockerconfigjson` documents of the referenced secrets (missing
    /// ones are skipped, as kubelet does; so are ones this agent may not
    /// read — entries written before pull secrets were copied into
    /// `kruise-daemon-config` name the job's own namespace — rather than
    /// failing every round).
    async fn secrets(
        &self,
        refs: &[keelson_api::apps::v1alpha1::nodeimage::ReferenceObject],
    ) -> Result<Vec<String>, kube::Error> {
        let mut out = vec![];
        for r in refs {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &r.namespace);
            let secret = match api.get_opt(&r.name).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    tracing::warn!(namespace = %r.namespace, name = %r.name, "pull secret not found; skipped");
                    continue;
                }
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    tracing::warn!(namespace = %r.namespace, name = %r.name, "pull secret not readable by this agent; skipped");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(doc) = secret
                .data
                .as_ref()
                .and_then(|d| d.get(".dockerconfigjson"))
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
            {
                out.push(doc);
            }
        }
        Ok(out)
    }

    /// One round; returns whether the status was written.
    pub async fn sync_once(&self) -> Result<bool, SyncError> {
        let api: Api<NodeImage> = Api::all(self.client.clone());
        let Some(node) = api.get_opt(&self.node).await? else {
            return Ok(false);
        };
        let mut known = BTreeMap::new();
        for want in wanted(&node) {
            let key = want.key();
            if finished(&node, &want.name, &want.tag, want.version).is_some() {
                // Done for this version (by this agent before, or failed
                // by the controller's timeouts): its entry stays as it is.
                continue;
            }
            let id = match self.rounds.get(&key)? {
                Some(id) => id,
                None => {
                    let mut spec = want.spec.clone();
                    spec.secrets = self.secrets(&want.secrets).await?;
                    match self.pulls.submit(spec).await {
                        Ok(id) => {
                            self.rounds.put(&key, &id).await?;
                            tracing::info!(round = %key, pull = %id, "NodeImage pull submitted");
                            id
                        }
                        Err(e) => {
                            tracing::warn!(round = %key, error = %e, "NodeImage pull refused");
                            continue;
                        }
                    }
                }
            };
            if let Some(s) = self.pulls.status(&id) {
                known.insert(key, s);
            }
        }
        let next = status(&node, &known);
        if !changes(&node, &next) {
            return Ok(false);
        }
        // A replace of the whole status, conditional on the resourceVersion
        // read: entries of images gone from the spec really go (a merge
        // patch keeps map keys it does not name), and a write that crossed
        // another writer's (the controller's timeouts) is not lost: the
        // conflict's watch event brings the next round.
        let mut object = node;
        object.status = Some(next);
        match api
            .replace_status(&self.node, &PostParams::default(), &object)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!(node = %self.node, "NodeImage status changed meanwhile; next round");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::credentials::Credentials;
    use crate::images::pulls::EngineConfig;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use std::time::Duration;

    fn reply(code: u16, body: serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    fn node_image() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "NodeImage",
            "metadata": {"name": "node-a", "resourceVersion": "5"},
            "spec": {"images": {"nginx": {
                "pullSecrets": [{"namespace": "kruise-daemon-config", "name": "regcred"}],
                "tags": [{"tag": "1.9.1", "version": 3}]}}},
            // An image dropped from the spec since the last status write.
            "status": {"desired": 1, "succeeded": 1, "imageStatuses": {"redis": {"tags": [
                {"tag": "7", "phase": "Succeeded", "version": 1,
                 "completionTime": "2020-01-01T00:00:00Z"}]}}}
        })
    }

    /// Answers like an API server holding `node_image()` and the secret;
    /// returns every request seen as (method, path, body).
    async fn serve(
        mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    ) -> Vec<(Method, String, serde_json::Value)> {
        let mut seen = vec![];
        let mut current = node_image();
        while let Some((req, send)) = handle.next_request().await {
            let (method, path) = (req.method().clone(), req.uri().path().to_string());
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            let answer = match (&method, path.as_str()) {
                (&Method::GET, "/apis/apps.kruise.io/v1alpha1/nodeimages/node-a") => {
                    reply(200, current.clone())
                }
                (&Method::GET, "/api/v1/namespaces/kruise-daemon-config/secrets/regcred") => reply(
                    200,
                    serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "regcred", "namespace": "kruise-daemon-config"},
                        "type": "kubernetes.io/dockerconfigjson",
                        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"}}),
                ),
                // A secret outside kruise-daemon-config: RBAC says no.
                (&Method::GET, "/api/v1/namespaces/team/secrets/old") => reply(
                    403,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1",
                    "status": "Failure", "reason": "Forbidden", "code": 403}),
                ),
                // A conditional replace of the status, stored as sent (the
                // times as serialised: whole seconds).
                (&Method::PUT, "/apis/apps.kruise.io/v1alpha1/nodeimages/node-a/status") => {
                    if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]
                    {
                        reply(
                            409,
                            serde_json::json!({"kind": "Status", "apiVersion": "v1",
                            "status": "Failure", "reason": "Conflict", "code": 409}),
                        )
                    } else {
                        let rv: u64 = current["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        current["status"] = body["status"].clone();
                        current["metadata"]["resourceVersion"] = (rv + 1).to_string().into();
                        reply(200, current.clone())
                    }
                }
                _ => reply(
                    404,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1",
                    "status": "Failure", "reason": "NotFound", "code": 404}),
                ),
            };
            seen.push((method, path, body));
            send.send_response(answer);
        }
        seen
    }

    /// A pull engine with no runtime behind it (nothing is pulled).
    fn engine(state: &std::path::Path, store: &Store) -> Arc<PullEngine> {
        let creds = Arc::new(Credentials::new(vec![], Duration::from_secs(5), store).unwrap());
        PullEngine::start(
            EngineConfig {
                runtime: state.join("no-runtime.sock"),
                parallelism: 1,
                backoff_base: Duration::from_secs(60),
                ttl: Duration::from_secs(60),
            },
            creds,
            store,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn unreadable_and_missing_secrets_are_skipped_not_fatal() {
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path()).unwrap();
        let engine = engine(state.path(), &store);
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(serve(handle));
        let sync =
            NodeImageSync::new(Client::new(service, "default"), "node-a", engine, &store).unwrap();
        let r = |ns: &str, name: &str| keelson_api::apps::v1alpha1::nodeimage::ReferenceObject {
            namespace: ns.into(),
            name: name.into(),
        };
        let docs = sync
            .secrets(&[
                r("team", "old"),
                r("kruise-daemon-config", "gone"),
                r("kruise-daemon-config", "regcred"),
            ])
            .await
            .unwrap();
        assert_eq!(docs, vec![r#"{"auths":{}}"#.to_string()]);
        drop(sync);
        assert_eq!(server.await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn submits_each_round_once_reads_its_secret_and_writes_status() {
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path()).unwrap();
        let engine = engine(state.path(), &store);
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(serve(handle));
        let client = Client::new(service, "default");
        let sync = NodeImageSync::new(client, "node-a", engine.clone(), &store).unwrap();
        assert!(sync.sync_once().await.unwrap(), "status written");
        // Nothing changes: no more writes (what was written reads back
        // the same, times in whole seconds).
        for _ in 0..3 {
            assert!(!sync.sync_once().await.unwrap(), "nothing to write");
        }
        drop(sync);
        let seen = server.await.unwrap();

        assert_eq!(engine.list().len(), 1, "one round, one pull: {seen:?}");
        assert_eq!(engine.list()[0].image, "nginx:1.9.1");
        let secret_reads = seen
            .iter()
            .filter(|(_, p, _)| p.contains("/secrets/"))
            .count();
        assert_eq!(
            secret_reads, 1,
            "the secret is read for the submission only"
        );
        let writes: Vec<_> = seen
            .iter()
            .filter(|(m, p, _)| *m != Method::GET && p.ends_with("/status"))
            .collect();
        assert_eq!(writes.len(), 1, "one status write: {writes:?}");
        let (method, _, body) = writes[0];
        assert_eq!(*method, Method::PUT, "a replace, not a merge patch");
        assert_eq!(body["metadata"]["resourceVersion"], "5", "conditional");
        assert!(
            body["status"]["imageStatuses"].get("redis").is_none(),
            "the entry of the image dropped from the spec goes: {body}"
        );
        assert_eq!(body["status"]["desired"], 1);
        assert_eq!(body["status"]["succeeded"], 0);
        let tag = &body["status"]["imageStatuses"]["nginx"]["tags"][0];
        assert_eq!(
            (tag["tag"].as_str(), tag["version"].as_i64()),
            (Some("1.9.1"), Some(3))
        );
    }
}
