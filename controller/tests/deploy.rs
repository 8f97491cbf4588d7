//! `deploy/` renders with `kubectl kustomize` (Debian's kubernetes-client
//! has it; `integration/scripts/setup-debian` installs it) and holds what
//! it promises: every generated CRD, the controller's two replicas, the
//! agent DaemonSet (an installer and the cluster side, unprivileged, off the
//! CRI path) with its host paths, and an agent role that
//! writes nothing but status.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn rendered() -> Vec<Value> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&deploy)
        .output()
        .expect(
            "kubectl not found: install Debian's kubernetes-client (integration/scripts/setup-debian does)",
        );
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/ failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_saphyr::from_multiple::<Value>(&text).unwrap()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/"))
}

#[test]
fn renders_every_crd_and_the_workloads() {
    let docs = rendered();
    for crd in keelson_api::crds() {
        let name = crd.metadata.name.unwrap();
        find(&docs, "CustomResourceDefinition", &name);
    }
    let controller = find(&docs, "Deployment", "keelson-controller");
    assert_eq!(controller["spec"]["replicas"], 2);
    assert_eq!(controller["metadata"]["namespace"], "keelson-system");

    // The agent DaemonSet is off the CRI path: an installer and the
    // cluster side, neither privileged, neither touching the runtime.
    let agent = find(&docs, "DaemonSet", "keelson-agent");
    let pod = &agent["spec"]["template"]["spec"];
    let install = &pod["initContainers"][0];
    assert_eq!(install["name"], "install");
    assert_eq!(install["args"][0], "install");
    let cluster = &pod["containers"][0];
    assert_eq!(cluster["name"], "cluster");
    assert_eq!(cluster["args"][0], "cluster");
    for c in [install, cluster] {
        assert_ne!(c["securityContext"]["privileged"], true, "{c}");
    }
    let host_paths: Vec<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(
        host_paths,
        ["/run/keelson", "/usr/local/bin", "/etc/systemd/system"],
        "the admin socket's directory and where the installer writes; never the runtime's socket"
    );
    find(&docs, "Service", "keelson-webhook");
    find(
        &docs,
        "MutatingWebhookConfiguration",
        "keelson-mutating-webhook-configuration",
    );
}

#[test]
fn the_kustomization_lists_every_generated_crd() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    for entry in std::fs::read_dir(dir.join("crds")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            kustomization.contains(&format!("- crds/{name}")),
            "deploy/kustomization.yaml does not list crds/{name}"
        );
    }
}

/// The agent writes status and events, and patches pods (only ever the
/// `apps.kruise.io/runtime-containers-meta` annotation, which RBAC cannot
/// narrow further: OpenKruise's daemon has the same pod patch right).
#[test]
fn the_agent_writes_only_status() {
    let docs = rendered();
    let role = find(&docs, "ClusterRole", "keelson-agent");
    let writes = [
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "*",
    ];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    for rule in role["rules"].as_array().unwrap() {
        let resources = strings(&rule["resources"]);
        let verbs = strings(&rule["verbs"]);
        assert!(
            !resources.iter().any(|r| r == "*") && !verbs.iter().any(|v| v == "*"),
            "{rule}"
        );
        assert!(
            !resources.iter().any(|r| r == "secrets"),
            "no cluster-wide secrets: {rule}"
        );
        let written: Vec<&String> = verbs
            .iter()
            .filter(|v| writes.contains(&v.as_str()))
            .collect();
        if written.is_empty() {
            continue;
        }
        for r in &resources {
            let pods_patch = r == "pods" && written.iter().all(|v| *v == "patch");
            assert!(
                r.ends_with("/status") || r == "events" || pods_patch,
                "the agent may write only status, events and pod patches: {rule}"
            );
        }
    }
}

#[test]
fn every_webhook_calls_the_service_at_a_path_the_controller_serves() {
    let docs = rendered();
    let mutating = find(
        &docs,
        "MutatingWebhookConfiguration",
        keelson_controller::webhook::ca_bundle::MUTATING,
    );
    find(
        &docs,
        "ValidatingWebhookConfiguration",
        keelson_controller::webhook::ca_bundle::VALIDATING,
    );
    let hooks = mutating["webhooks"].as_array().unwrap();
    let names: Vec<&str> = hooks.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"mcontainerrecreaterequest.kb.io"),
        "{names:?}"
    );
    for h in hooks {
        let svc = &h["clientConfig"]["service"];
        assert_eq!(svc["name"], "keelson-webhook", "{h}");
        assert_eq!(svc["namespace"], "keelson-system", "{h}");
        let path = svc["path"].as_str().unwrap();
        assert!(
            keelson_controller::webhook::PATHS.contains(&path),
            "{path} is not served"
        );
        assert_eq!(h["sideEffects"], "None", "{h}");
    }
    let service = find(&docs, "Service", "keelson-webhook");
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
}

#[test]
fn the_pod_webhook_is_scoped_and_its_complement_ignored() {
    use keelson_controller::webhook::scope;
    let docs = rendered();
    let mutating = find(
        &docs,
        "MutatingWebhookConfiguration",
        keelson_controller::webhook::ca_bundle::MUTATING,
    );
    let hook = |name: &str| {
        mutating["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("no webhook {name}"))
            .clone()
    };
    let (scoped, unscoped) = (hook(scope::SCOPED), hook(scope::UNSCOPED));
    let no_sets = scope::expression(std::iter::empty(), false);
    assert_eq!(scoped["failurePolicy"], "Fail");
    assert_eq!(scoped["matchConditions"][0]["expression"], no_sets.as_str());
    assert_eq!(unscoped["failurePolicy"], "Ignore");
    assert_eq!(
        unscoped["matchConditions"][0]["expression"],
        scope::negation(&no_sets).as_str()
    );
    for h in [&scoped, &unscoped] {
        assert_eq!(h["matchConditions"][0]["name"], scope::CONDITION);
        assert_eq!(h["clientConfig"]["service"]["path"], "/mutate-pod");
        assert_eq!(
            h["namespaceSelector"]["matchExpressions"][0],
            serde_json::json!({"key": "control-plane", "operator": "DoesNotExist"})
        );
    }
    let ns = find(&docs, "Namespace", "keelson-system");
    assert!(ns["metadata"]["labels"]["control-plane"].is_string());
}
