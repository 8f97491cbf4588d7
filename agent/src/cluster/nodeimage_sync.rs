//! Cluster mode for image pulls: keeps this node's NodeImage and the pull
//! engine in step. One [`NodeImageSync::sync_once`] reads the NodeImage,
//! submits every tag round it asks for to the host agent under a key
//! naming the round ([`round_key`]: the agent answers a key it knows with
//! the pull it made, so a restart on either side pulls nothing twice and
//! this side keeps no state), with the referenced pull secrets read from
//! the API, and writes the status the pulls make through the status
//! subresource when it changed.
//!
//! The NodeImage is read and written in the version the cluster stores
//! ([`NodeImages::discover`]: v1beta1 with Keelson's and OpenKruise v1.9's
//! CRDs, v1alpha1 with older ones), so the agent never needs the
//! controller's conversion webhook; whatever it reads is handled as
//! v1beta1, converted by [`keelson_api::conversion`] when stored as
//! v1alpha1.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use keelson_api::apps::v1beta1::nodeimage::NodeImage;
use keelson_api::conversion::{self, ConversionError};
use kube::api::{Api, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, Resource};

use super::node::{NodeClient, NodeError};
use super::nodeimage::{TagPull, changes, finished, status, wanted};

/// Why a sync round failed (the caller retries with backoff).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("API server: {0}")]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("NodeImage not convertible: {0}")]
    Convert(#[from] ConversionError),
    #[error("NodeImage not understood: {0}")]
    Decode(#[from] serde_json::Error),
}

/// This cluster's NodeImages, at the version it stores them in.
#[derive(Clone)]
pub struct NodeImages {
    api: Api<DynamicObject>,
    resource: ApiResource,
}

impl NodeImages {
    /// NodeImages at `version` (`v1alpha1` or `v1beta1`).
    pub fn at(client: Client, version: &str) -> Self {
        let gvk = GroupVersionKind::gvk(conversion::GROUP, version, "NodeImage");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "nodeimages");
        Self {
            api: Api::all_with(client, &resource),
            resource,
        }
    }

    /// NodeImages at the version discovery says the cluster stores them
    /// in ([`keelson_api::served::pick`]); v1beta1 when discovery says
    /// nothing usable.
    pub async fn discover(client: Client) -> Result<Self, kube::Error> {
        let mut lists = vec![];
        for version in ["v1beta1", "v1alpha1"] {
            let gv = format!("{}/{version}", conversion::GROUP);
            match client.list_api_group_resources(&gv).await {
                Ok(l) => lists.push((version, Some(l))),
                Err(kube::Error::Api(s)) if s.code == 404 => lists.push((version, None)),
                Err(e) => return Err(e),
            }
        }
        let candidates: Vec<(&str, Option<&_>)> =
            lists.iter().map(|(v, l)| (*v, l.as_ref())).collect();
        let version =
            keelson_api::served::pick(conversion::GROUP, "NodeImage", "nodeimages", &candidates)
                .unwrap_or("v1beta1");
        tracing::info!(
            version,
            "NodeImage read and written in the version the cluster stores"
        );
        Ok(Self::at(client, version))
    }

    /// The version read and written.
    pub fn version(&self) -> &str {
        &self.resource.version
    }

    /// The API, for watches.
    pub fn api(&self) -> Api<DynamicObject> {
        self.api.clone()
    }

    /// The object named `name`, as v1beta1.
    pub async fn get_opt(&self, name: &str) -> Result<Option<NodeImage>, SyncError> {
        let Some(obj) = self.api.get_opt(name).await? else {
            return Ok(None);
        };
        let hub = conversion::convert(serde_json::to_value(obj)?, &NodeImage::api_version(&()))?;
        Ok(Some(serde_json::from_value(hub)?))
    }

    /// Replaces the status of `object` (a v1beta1 object read by
    /// [`Self::get_opt`]), conditional on its resourceVersion.
    pub async fn replace_status(&self, object: &NodeImage) -> Result<(), SyncError> {
        let wire = conversion::convert(serde_json::to_value(object)?, &self.resource.api_version)?;
        let wire: DynamicObject = serde_json::from_value(wire)?;
        let name = object.metadata.name.clone().unwrap_or_default();
        self.api
            .replace_status(&name, &PostParams::default(), &wire)
            .await?;
        Ok(())
    }
}

/// The key the pull of tag round `want` of the NodeImage with `uid` is
/// submitted under: a new NodeImage object (the node joined again) starts
/// its versions afresh and must not be answered with an old pull.
pub fn round_key(uid: &str, want: &TagPull) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(want.key().as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("nodeimage/{uid}/{hex}")
}

/// The NodeImage side of cluster mode.
pub struct NodeImageSync {
    client: Client,
    images: NodeImages,
    node: String,
    pulls: NodeClient,
}

impl NodeImageSync {
    pub fn new(client: Client, images: NodeImages, node: &str, pulls: NodeClient) -> Self {
        Self {
            client,
            images,
            node: node.to_string(),
            pulls,
        }
    }

    /// The `.dockerconfigjson` documents of the referenced secrets (missing
    /// ones are skipped, as kubelet does; so are ones this agent may not
    /// read — entries written before pull secrets were copied into
    /// `kruise-daemon-config` name the job's own namespace — rather than
    /// failing every round).
    async fn secrets(
        &self,
        refs: &[keelson_api::apps::v1beta1::nodeimage::ReferenceObject],
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
        let Some(node) = self.images.get_opt(&self.node).await? else {
            return Ok(false);
        };
        let uid = node.metadata.uid.clone().unwrap_or_default();
        let mut known = BTreeMap::new();
        for want in wanted(&node) {
            let key = want.key();
            if finished(&node, &want.name, &want.tag, want.version).is_some() {
                // Done for this version (by this agent before, or failed
                // by the controller's timeouts): its entry stays as it is.
                continue;
            }
            let round = round_key(&uid, &want);
            let id = crate::images::pulls::id_for_key(&round);
            let status = match self.pulls.pull(&id).await? {
                Some(s) => s,
                None => {
                    let mut spec = want.spec.clone();
                    spec.key = Some(round);
                    spec.secrets = self.secrets(&want.secrets).await?;
                    match self.pulls.submit_pull(&spec).await {
                        Ok(id) => {
                            tracing::info!(round = %key, pull = %id, "NodeImage pull submitted");
                            match self.pulls.pull(&id).await? {
                                Some(s) => s,
                                None => continue,
                            }
                        }
                        Err(e) if e.transient() => return Err(e.into()),
                        Err(e) => {
                            tracing::warn!(round = %key, error = %e, "NodeImage pull refused");
                            continue;
                        }
                    }
                }
            };
            known.insert(key, status);
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
        match self.images.replace_status(&object).await {
            Ok(()) => Ok(true),
            Err(SyncError::Api(kube::Error::Api(s))) if s.code == 409 => {
                tracing::debug!(node = %self.node, "NodeImage status changed meanwhile; next round");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request, Response};
    use kube::client::Body;

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

    #[tokio::test]
    async fn unreadable_and_missing_secrets_are_skipped_not_fatal() {
        let state = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(state.path()).unwrap();
        let (node, _, _) = crate::testing::node_without_runtime(state.path(), &store);
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(serve(handle));
        let client = Client::new(service, "default");
        let images = NodeImages::at(client.clone(), "v1alpha1");
        let sync = NodeImageSync::new(client, images, "node-a", node.client.clone());
        let r = |ns: &str, name: &str| keelson_api::apps::v1beta1::nodeimage::ReferenceObject {
            namespace: ns.into(),
            name: name.into(),
            mode: String::new(),
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
        let store = crate::store::Store::open(state.path()).unwrap();
        let (node, engine, _) = crate::testing::node_without_runtime(state.path(), &store);
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(serve(handle));
        let client = Client::new(service, "default");
        let images = NodeImages::at(client.clone(), "v1alpha1");
        let sync = NodeImageSync::new(client, images, "node-a", node.client.clone());
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

    /// Discovery as an API server answers it: `served` versions list
    /// nodeimages with the hash of `stored`.
    async fn discovery(
        mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
        served: &[&str],
        stored: &str,
    ) {
        let hash = keelson_api::served::storage_version_hash("apps.kruise.io", stored, "NodeImage");
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_string();
            let version = path.trim_start_matches("/apis/apps.kruise.io/");
            let answer = if served.contains(&version) {
                reply(
                    200,
                    serde_json::json!({"kind": "APIResourceList", "apiVersion": "v1",
                        "groupVersion": format!("apps.kruise.io/{version}"),
                        "resources": [{"name": "nodeimages", "singularName": "nodeimage",
                            "namespaced": false, "kind": "NodeImage",
                            "verbs": ["get", "list", "watch"], "storageVersionHash": hash}]}),
                )
            } else {
                reply(
                    404,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1",
                    "status": "Failure", "reason": "NotFound", "code": 404}),
                )
            };
            send.send_response(answer);
        }
    }

    #[tokio::test]
    async fn reads_the_version_the_cluster_stores() {
        for (served, stored, want) in [
            (&["v1alpha1", "v1beta1"][..], "v1beta1", "v1beta1"),
            (&["v1alpha1", "v1beta1"][..], "v1alpha1", "v1alpha1"),
            (&["v1alpha1"][..], "v1alpha1", "v1alpha1"),
        ] {
            let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            let server = tokio::spawn(discovery(handle, served, stored));
            let images = NodeImages::discover(Client::new(service, "default"))
                .await
                .unwrap();
            assert_eq!(images.version(), want, "served {served:?}, stored {stored}");
            drop(images);
            server.await.unwrap();
        }
    }
}
