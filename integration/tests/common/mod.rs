//! Set-up shared by the end-to-end tests.

#![allow(dead_code)]

use std::time::Duration;

use cri_proto as cri;
use keelson_integration::agent::Agent;
use keelson_integration::api_stand_in::{ApiStandIn, PODS};
use keelson_integration::containerd::Containerd;
use keelson_integration::image_cache;
use keelson_integration::kubelet::{ContainerSpec, Kubelet, PodSpec, RestartPolicy};
use keelson_integration::pod_worker::PodWorker;
use serde_json::{Value, json};

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

/// Writes the pod as kubelet's status manager would: each container's
/// current instance, restart count, and ready = running.
pub fn publish_pod(api: &ApiStandIn, w: &PodWorker) {
    let snap = w.snapshot();
    let mut statuses: Vec<Value> = snap
        .iter()
        .map(|(name, (id, state, attempt))| {
            let running = *state == cri::ContainerState::ContainerRunning as i32;
            serde_json::json!({"name": name, "image": "busybox", "imageID": "x", "ready": running,
                "restartCount": attempt, "containerID": format!("containerd://{id}"),
                "state": if running { json!({"running": {"startedAt": now_rfc3339()}}) } else { json!({"waiting": {}}) }})
        })
        .collect();
    statuses.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let previous = api.get(PODS, &w.namespace, &w.name);
    // Unchanged instances keep their status (and start time).
    let key = |list: &Value| -> Vec<(Value, Value, Value)> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["containerID"].clone(),
                    c["ready"].clone(),
                    c["restartCount"].clone(),
                )
            })
            .collect()
    };
    if previous
        .as_ref()
        .is_some_and(|p| key(&p["status"]["containerStatuses"]) == key(&json!(statuses)))
    {
        return;
    }
    // Conditions (and the spec) stay as the API server has them.
    let mut pod = previous.unwrap_or_else(|| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": w.name, "namespace": w.namespace, "uid": w.uid},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "busybox"}]},
            "status": {"phase": "Running"}})
    });
    pod["status"]["containerStatuses"] = json!(statuses);
    api.put(PODS, pod);
}

/// Pod web-0 with container app (ends promptly on SIGTERM), kept in sync
/// by a kubelet-like pod worker, and published to the stand-in.
pub async fn web_pod(node: &Node, api: &ApiStandIn) -> PodWorker {
    let mut k = node.via_agent().await;
    let spec = PodSpec::new(
        "web-0",
        vec![ContainerSpec::shell(
            "app",
            "trap 'exit 0' TERM; while true; do sleep 0.1; done",
        )],
    );
    let pod = k.start_pod(spec, RestartPolicy::Always).await.unwrap();
    let w = PodWorker::spawn(k, pod, Duration::from_millis(100));
    w.wait_for(WAIT, |s| {
        s.get("app")
            .is_some_and(|(_, st, _)| *st == cri::ContainerState::ContainerRunning as i32)
    })
    .await
    .unwrap();
    publish_pod(api, &w);
    w
}

/// A request to recreate app, as the webhook stores it (labels, and the
/// statusContext of the instance running now).
pub fn recreate_app(w: &PodWorker, strategy: Value) -> Value {
    let (id, _, attempt) = w.snapshot()["app"].clone();
    json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequest",
        "metadata": {"name": "restart-app", "namespace": w.namespace, "uid": "crr-uid-1",
            "creationTimestamp": now_rfc3339(),
            "labels": {"crr.apps.kruise.io/node-name": "node-a", "crr.apps.kruise.io/active": "true",
                "crr.apps.kruise.io/pod-uid": w.uid, "crr.apps.kruise.io/pod-name": w.name}},
        "spec": {"podName": w.name,
            "containers": [{"name": "app", "statusContext":
                {"containerID": format!("containerd://{id}"), "restartCount": attempt}}],
            "strategy": strategy}})
}
