//! Set-up shared by the end-to-end tests.

#![allow(dead_code)]

use std::time::Duration;

use keelson_integration::agent::Agent;
use keelson_integration::containerd::Containerd;
use keelson_integration::image_cache;
use keelson_integration::kubelet::{ContainerSpec, Kubelet, PodSpec};

/// A real containerd with the agent in front of it.
pub struct Node {
    pub agent: Agent,
    pub containerd: Containerd,
}

impl Node {
    pub fn start() -> Node {
        let containerd = Containerd::start(&image_cache()).expect("start containerd");
        let agent = Agent::start(&containerd.socket(), &[]).expect("start agent");
        Node { agent, containerd }
    }

    /// A driver talking to the agent.
    pub async fn via_agent(&self) -> Kubelet {
        Kubelet::connect(&self.agent.socket(), self.containerd.pod_env())
            .await
            .expect("connect to agent")
    }

    /// A driver talking to containerd directly.
    pub async fn direct(&self) -> Kubelet {
        Kubelet::connect(&self.containerd.socket(), self.containerd.pod_env())
            .await
            .expect("connect to containerd")
    }
}

/// A node (containerd + the agent in cluster mode as `node-a`) and the
/// stand-in API server it talks to; the kubeconfig lives in the temp dir.
pub async fn cluster_node() -> (
    Node,
    keelson_integration::api_stand_in::ApiStandIn,
    tempfile::TempDir,
) {
    let api = keelson_integration::api_stand_in::ApiStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    api.write_kubeconfig(&kubeconfig(&dir)).unwrap();
    let containerd = Containerd::start(&image_cache()).expect("start containerd");
    let agent = Agent::start(
        &containerd.socket(),
        &[
            "--node-name",
            "node-a",
            "--kubeconfig",
            kubeconfig(&dir).to_str().unwrap(),
        ],
    )
    .expect("start agent");
    (Node { agent, containerd }, api, dir)
}

/// The kubeconfig [`cluster_node`] wrote.
pub fn kubeconfig(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("kubeconfig")
}

/// Now as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A pod with one long-running container.
pub fn sleeper(name: &str) -> PodSpec {
    PodSpec::new(
        name,
        vec![ContainerSpec::shell("main", "echo ready; exec sleep 600")],
    )
}

pub const WAIT: Duration = Duration::from_secs(30);

/// Runs `keelson-agent ctl ARGS` against the node's agent: (success,
/// stdout, stderr). Blocks its thread: tests that need background tasks
/// meanwhile run on a multi-thread runtime.
pub fn ctl(node: &Node, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(keelson_integration::agent::binary().unwrap())
        .arg("ctl")
        .arg("--admin-socket")
        .arg(node.agent.admin_socket())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
