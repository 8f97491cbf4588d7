//! Set-up shared by the end-to-end tests.

#![allow(dead_code)]

use std::time::Duration;

use keelson_integration::agent::Agent;
use keelson_integration::containerd::Containerd;
use keelson_integration::image_cache;
use keelson_integration::kubelet::{ContainerSpec, Kubelet, PodSpec};

/// Waits (up to 90 s) until `check` finds what it wants; on a timeout
/// fails naming `what`, with what `explain` says (logs, requests).
pub async fn until<T>(
    what: &str,
    explain: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen\n{}",
            explain()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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
