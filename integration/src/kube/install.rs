//! Keelson installed on the test cluster as a user installs it: the
//! controller from `deploy/` (`kubectl apply -k` of an overlay that names
//! the image the harness built offline, points the controller at the API
//! server, since there is no kube-proxy for the `kubernetes` Service, and
//! leaves out the agent DaemonSet: a pod cannot sit on the CRI path of the
//! kubelet that must start it), and the agent as a host process in cluster
//! mode with its ServiceAccount's token.

use std::fs;
use std::path::{Path, PathBuf};

/// The controller image the overlay names.
pub const CONTROLLER_IMAGE: &str = "localhost/keelson/controller:test";

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
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        "images": [{"name": "keelson/controller", "newName": name, "newTag": tag}],
        "patches": [
            {"patch": serde_json::to_string(&serde_json::json!({
                "$patch": "delete",
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "keelson-agent", "namespace": "keelson-system"},
            }))?},
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
