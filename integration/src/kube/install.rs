//! Keelson installed on the test cluster as a user installs it: the
//! controller from `deploy/` (`kubectl apply -k` of an overlay that names
//! the image the harness built offline, points the controller at the API
//! server, since there is no kube-proxy for the `kubernetes` Service, and
//! leaves out the agent DaemonSet: a pod cannot sit on the CRI path of the
//! kubelet that must start it), and the agent as a host process in cluster
//! mode with its ServiceAccount's token.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The controller image the overlay names.
pub const CONTROLLER_IMAGE: &str = "localhost/keelson/controller:test";
/// The agent image the overlay names (when it keeps the DaemonSet).
pub const AGENT_IMAGE: &str = "localhost/keelson/agent:test";

/// The agent DaemonSet as the test overlay keeps it: its host paths moved
/// under the test's own directories.
#[derive(Debug, Clone)]
pub struct AgentDaemonSet {
    /// Stands for the host's `/` (`usr/local/bin`, `etc/systemd/system`).
    pub host_root: PathBuf,
    /// The host agent's admin socket (its directory stands for
    /// `/run/keelson`).
    pub admin_socket: PathBuf,
}

/// The feature gates whose permissions ship apart from the base, and
/// their directory under `deploy/rbac/optional/`.
pub const OPTIONAL_RBAC: [(&str, &str); 2] = [
    ("ResourceDistributionGate", "resource-distribution"),
    (
        "DeletionProtectionForCRDCascadingGate",
        "crd-cascading-deletion",
    ),
];

/// `deploy/` of this checkout.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
}

/// Writes the test overlay into `dir` and returns its directory: the
/// shipped base, with the controller image, the API server address for
/// in-cluster clients (`host`, `port`) and `feature_gates` (the
/// controller's `--feature-gates` value) set, the optional roles of the
/// gates it turns on ([`OPTIONAL_RBAC`]) added, and no agent DaemonSet.
pub fn write_overlay(
    dir: &Path,
    host: &str,
    port: u16,
    feature_gates: &str,
    agent: Option<&AgentDaemonSet>,
) -> crate::Result<PathBuf> {
    let overlay = dir.join("overlay");
    fs::create_dir_all(&overlay)?;
    // kustomize takes only relative paths to a base.
    let base = fs::canonicalize(deploy_dir())?;
    let here = fs::canonicalize(&overlay)?;
    let up = "../".repeat(here.components().count() - 1);
    let base = PathBuf::from(up).join(base.strip_prefix("/")?);
    // The roles of the gates that need more than the base grants
    // (deploy/rbac/optional/), as a user enabling them adds them.
    let mut resources = vec![base.display().to_string()];
    for (gate, dir) in OPTIONAL_RBAC {
        if feature_gates.contains(&format!("{gate}=true")) {
            resources.push(base.join("rbac/optional").join(dir).display().to_string());
        }
    }
    let (name, tag) = CONTROLLER_IMAGE
        .rsplit_once(':')
        .unwrap_or((CONTROLLER_IMAGE, "latest"));
    let (agent_name, agent_tag) = AGENT_IMAGE
        .rsplit_once(':')
        .unwrap_or((AGENT_IMAGE, "latest"));
    let agent_patch = match agent {
        None => serde_json::json!({
            "$patch": "delete",
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "keelson-agent", "namespace": "keelson-system"},
        }),
        Some(a) => agent_daemonset_patch(a, host, port)?,
    };
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        "images": [
            {"name": "keelson/controller", "newName": name, "newTag": tag},
            {"name": "keelson/agent", "newName": agent_name, "newTag": agent_tag},
        ],
        "patches": [
            {"patch": serde_json::to_string(&agent_patch)?},
            {"patch": serde_json::to_string(&serde_json::json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "keelson-controller", "namespace": "keelson-system"},
                "spec": {"template": {"spec": {"containers": [{
                    "name": "controller",
                    "env": [
                        {"name": "KUBERNETES_SERVICE_HOST", "value": host},
                        {"name": "KUBERNETES_SERVICE_PORT", "value": port.to_string()},
                    ],
                }]}}},
            }))?},
            {"target": {"kind": "Deployment", "name": "keelson-controller"},
             "patch": serde_json::to_string(&serde_json::json!([
                {"op": "replace", "path": "/spec/template/spec/containers/0/args",
                 "value": ["--logging-format=json", format!("--feature-gates={feature_gates}")]},
             ]))?},
        ],
    });
    fs::write(
        overlay.join("kustomization.yaml"),
        serde_json::to_vec_pretty(&kustomization)?,
    )?;
    Ok(overlay)
}

/// The strategic-merge patch that points the DaemonSet's host paths at
/// the test's directories, its admin socket at the host agent's, and its
/// in-cluster clients at the API server (no kube-proxy here).
fn agent_daemonset_patch(
    a: &AgentDaemonSet,
    host: &str,
    port: u16,
) -> crate::Result<serde_json::Value> {
    let run_dir = a
        .admin_socket
        .parent()
        .context("admin socket without a directory")?;
    let socket_name = a
        .admin_socket
        .file_name()
        .context("admin socket without a name")?
        .to_string_lossy();
    let in_pod = format!("--admin-socket=/run/keelson/{socket_name}");
    let path = |p: &str| a.host_root.join(p).display().to_string();
    Ok(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "keelson-agent", "namespace": "keelson-system"},
        "spec": {"template": {"spec": {
            "initContainers": [{
                "name": "install",
                "args": ["install", "--root=/host", in_pod, "--wait-seconds=60"],
            }],
            "containers": [{
                "name": "cluster",
                "args": ["cluster", in_pod, "--logging-format=json"],
                "env": [
                    {"name": "KUBERNETES_SERVICE_HOST", "value": host},
                    {"name": "KUBERNETES_SERVICE_PORT", "value": port.to_string()},
                ],
            }],
            "volumes": [
                {"name": "run-keelson", "hostPath": {"path": run_dir.display().to_string(), "type": "Directory"}},
                {"name": "host-bin", "hostPath": {"path": path("usr/local/bin"), "type": "DirectoryOrCreate"}},
                {"name": "host-units", "hostPath": {"path": path("etc/systemd/system"), "type": "DirectoryOrCreate"}},
            ],
        }}},
    }))
}
