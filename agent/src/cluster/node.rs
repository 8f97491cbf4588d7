//! The node as the cluster side sees it: the host agent's admin API
//! ([`crate::admin`]) behind typed calls. The cluster side reaches the
//! node features only through this, whether it runs inside the host
//! agent (`--node-name`) or in the DaemonSet pod (`keelson-agent
//! cluster`), so both deployments take one path, and the pod never holds
//! more than the root-only socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::admin::client::call;
use crate::admin::feed::Changes;
use crate::envdeps::MetadataUpdate;
use crate::images::pulls::{PullSpec, PullStatus};
use crate::pods::PodView;
use crate::readiness::PodReport;
use crate::restart::spec::{RestartSpec, RestartStatus};

/// Why a call to the host agent failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The agent is not answering (restarting, upgrading, not installed).
    #[error("host agent unreachable: {0}")]
    Unreachable(String),
    /// The agent answered with an error.
    #[error("{message} (HTTP {status})")]
    Refused { status: u16, message: String },
    #[error("host agent's answer not understood: {0}")]
    Decode(#[from] serde_json::Error),
}

impl NodeError {
    /// Worth retrying later (the agent or its runtime is away), as opposed
    /// to a request the agent will never take.
    pub fn transient(&self) -> bool {
        match self {
            NodeError::Unreachable(_) | NodeError::Decode(_) => true,
            NodeError::Refused { status, .. } => *status >= 500,
        }
    }
}

/// A client of one host agent's admin socket (cheap to clone; a
/// connection per call).
#[derive(Debug, Clone)]
pub struct NodeClient {
    socket: PathBuf,
}

impl NodeClient {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
        }
    }

    /// The admin socket called.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), NodeError> {
        call(&self.socket, method, path, body)
            .await
            .map_err(|e| NodeError::Unreachable(format!("{e:#}")))
    }

    /// Calls and returns the body when the answer is `want`; otherwise the
    /// agent's refusal.
    async fn call_expecting(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        want: u16,
    ) -> Result<Bytes, NodeError> {
        let (code, reply) = self.send(method, path, body).await?;
        if code != want {
            return Err(refused(code, &reply));
        }
        Ok(reply)
    }

    /// Calls and decodes a 200 answer; `None` on 404.
    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, NodeError> {
        let (code, body) = self.send("GET", path, None).await?;
        match code {
            200 => Ok(Some(serde_json::from_slice(&body)?)),
            404 => Ok(None),
            status => Err(refused(status, &body)),
        }
    }

    async fn submit(&self, path: &str, body: Vec<u8>) -> Result<String, NodeError> {
        let reply = self.call_expecting("POST", path, Some(body), 202).await?;
        let v: serde_json::Value = serde_json::from_slice(&reply)?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }

    /// Submits a pull; its id.
    pub async fn submit_pull(&self, spec: &PullSpec) -> Result<String, NodeError> {
        self.submit("/v1/pulls", serde_json::to_vec(spec)?).await
    }

    /// Pull `id`, `None` when the agent does not know it.
    pub async fn pull(&self, id: &str) -> Result<Option<PullStatus>, NodeError> {
        self.get(&format!("/v1/pulls/{id}")).await
    }

    /// Submits a restart; its id.
    pub async fn submit_restart(&self, spec: &RestartSpec) -> Result<String, NodeError> {
        self.submit("/v1/restarts", serde_json::to_vec(spec)?).await
    }

    /// Restart `id`, `None` when the agent does not know it.
    pub async fn restart(&self, id: &str) -> Result<Option<RestartStatus>, NodeError> {
        self.get(&format!("/v1/restarts/{id}")).await
    }

    /// New metadata of pod `namespace/name` for its env-from-metadata
    /// containers: the containers restarted and the restart's id.
    pub async fn update_metadata(
        &self,
        namespace: &str,
        name: &str,
        update: &MetadataUpdate,
    ) -> Result<(Vec<String>, Option<String>), NodeError> {
        let path = format!("/v1/pods/{namespace}/{name}/metadata");
        let body = self
            .call_expecting("POST", &path, Some(serde_json::to_vec(update)?), 200)
            .await?;
        #[derive(serde::Deserialize)]
        struct Answer {
            containers: Vec<String>,
            restart: Option<String>,
        }
        let a: Answer = serde_json::from_slice(&body)?;
        Ok((a.containers, a.restart))
    }

    /// Tells the launch gate pod `uid`'s spec and readiness.
    pub async fn report(&self, uid: &str, report: &PodReport) -> Result<(), NodeError> {
        let path = format!("/v1/readiness/{uid}");
        self.call_expecting("PUT", &path, Some(serde_json::to_vec(report)?), 204)
            .await?;
        Ok(())
    }

    /// Tells the launch gate pod `uid` left the node.
    pub async fn forget(&self, uid: &str) -> Result<(), NodeError> {
        self.call_expecting("DELETE", &format!("/v1/readiness/{uid}"), None, 204)
            .await?;
        Ok(())
    }

    /// Pod `uid`'s sandboxes and containers as the runtime reported them.
    pub async fn views_of(&self, uid: &str) -> Result<Vec<PodView>, NodeError> {
        Ok(self
            .get(&format!("/v1/book/{uid}"))
            .await?
            .unwrap_or_default())
    }

    /// The change feed: at once when it is not at `seen`, else when it
    /// moves or after `wait`.
    pub async fn changes(
        &self,
        seen: Option<&Changes>,
        wait: Duration,
    ) -> Result<Changes, NodeError> {
        let mut path = format!("/v1/changes?wait={}", wait.as_secs());
        if let Some(s) = seen {
            path.push_str(&format!("&boot={}&generation={}", s.boot, s.generation));
        }
        self.get(&path).await?.ok_or_else(|| NodeError::Refused {
            status: 404,
            message: "no change feed (an older agent?)".into(),
        })
    }

    /// The binary the agent runs.
    pub async fn version(&self) -> Result<crate::admin::AgentVersion, NodeError> {
        self.get("/v1/version")
            .await?
            .ok_or_else(|| NodeError::Refused {
                status: 404,
                message: "no version endpoint (an older agent?)".into(),
            })
    }

    /// Asks the agent to drain and exit, so its service manager starts the
    /// (new) binary.
    pub async fn exit(&self) -> Result<(), NodeError> {
        self.call_expecting("POST", "/v1/exit", None, 202).await?;
        Ok(())
    }
}

fn refused(status: u16, body: &Bytes) -> NodeError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    NodeError::Refused { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::pulls::PullSpec;
    use std::time::Instant;

    #[tokio::test]
    async fn the_change_feed_answers_at_once_when_behind_and_moves_with_a_submission() {
        let state = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(state.path()).unwrap();
        let (node, _, _) = crate::testing::node_without_runtime(state.path(), &store);
        let c = &node.client;
        let first = c.changes(None, Duration::from_secs(30)).await.unwrap();
        // At the position seen and nothing moving: held for the wait.
        let t = Instant::now();
        let same = c
            .changes(Some(&first), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(same, first);
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
        // Another boot seen: answered at once.
        let other = Changes {
            boot: "elsewhere".into(),
            generation: first.generation,
        };
        let t = Instant::now();
        c.changes(Some(&other), Duration::from_secs(30))
            .await
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        // A submission moves it, waking a waiter.
        let waiter = {
            let c = c.clone();
            let first = first.clone();
            tokio::spawn(async move { c.changes(Some(&first), Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut spec = PullSpec::new("reg.test/app:1");
        spec.key = Some("k1".into());
        let id = c.submit_pull(&spec).await.unwrap();
        assert_eq!(c.submit_pull(&spec).await.unwrap(), id, "keyed: same id");
        let moved = waiter.await.unwrap().unwrap();
        assert_eq!(moved.boot, first.boot);
        assert!(moved.generation > first.generation);
        assert!(c.pull(&id).await.unwrap().is_some());
        assert!(c.pull("pull-unknown").await.unwrap().is_none());
        // A refused request is not transient; an absent agent is.
        spec.key = Some("not a key".into());
        let refused = c.submit_pull(&spec).await.unwrap_err();
        assert!(!refused.transient(), "{refused}");
        let absent = NodeClient::new(&state.path().join("nobody.sock"));
        assert!(absent.pull(&id).await.unwrap_err().transient());
    }

    #[tokio::test]
    async fn pod_reports_reach_the_launch_gate_and_the_book_is_readable() {
        use crate::priority::Readiness as _;
        let state = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(state.path()).unwrap();
        let (node, _, _) = crate::testing::node_without_runtime(state.path(), &store);
        let report: PodReport = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "app", "priority": "10", "probed": true, "preStopExec": null}],
            "statuses": {"app": {"ready": true, "containerId": "abc"}}
        }))
        .unwrap();
        assert!(!node.readiness.knows_specs());
        node.client.report("uid-1", &report).await.unwrap();
        assert!(node.readiness.knows_specs());
        assert_eq!(
            node.readiness.spec_containers("uid-1").unwrap()[0].priority,
            Some("10".into())
        );
        assert_eq!(
            node.readiness.instance_ready("uid-1", "app", "abc"),
            Some(true)
        );
        node.client.forget("uid-1").await.unwrap();
        assert_eq!(node.readiness.spec_containers("uid-1"), None);
        assert!(node.client.views_of("uid-1").await.unwrap().is_empty());
        let v = node.client.version().await.unwrap();
        assert_eq!(v.binary_sha256.len(), 64);
    }
}
