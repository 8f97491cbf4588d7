//! On the real single-node cluster (`keelson_integration::kube`): the node
//! comes up Ready with kubelet talking to keelson-agent, pods run and
//! stream logs and exec through it, and every CRD in `deploy/crds/` is
//! accepted by the real apiserver, which stores OpenKruise's example
//! manifests (applied server-side, as users do) with nothing pruned.

use std::time::Duration;

use keelson_integration::kube;
use serde_json::Value;

fn cluster() -> kube::Turn {
    kube::shared_in(module_path!()).expect("test cluster")
}

/// Whether every field of `want` is in `got` with the same value (arrays
/// element by element): what the server kept of a manifest.
fn subset(want: &Value, got: &Value, path: &str, missing: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                match g.get(k) {
                    Some(gv) => subset(v, gv, &format!("{path}/{k}"), missing),
                    // OpenKruise's types drop zero values (`omitempty`),
                    // and so do its webhooks' patches: false, 0 and "" read
                    // the same as absent.
                    None if matches!(v, Value::Bool(false)) || v == 0 || v == "" => {}
                    None => missing.push(format!("{path}/{k}")),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                subset(wv, gv, &format!("{path}/{i}"), missing);
            }
        }
        (w, g) if w == g => {}
        // Quantities and numbers may come back in their canonical form.
        (w, g) if w.to_string().trim_matches('"') == g.to_string().trim_matches('"') => {}
        (w, g) => missing.push(format!("{path}: sent {w}, stored {g}")),
    }
}

#[test]
fn a_pod_runs_through_the_agent_with_logs_and_exec() {
    let c = cluster();
    let ns = c.namespace("smoke").unwrap();
    c.apply_stdin(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: hello
  namespace: {ns}
spec:
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "echo hello from the real kubelet; exec sleep 3600"]
  terminationGracePeriodSeconds: 1
"#,
        ns = ns.name,
        image = keelson_integration::images::BUSYBOX,
    ))
    .unwrap();
    c.wait_pod_ready(&ns.name, "hello", Duration::from_secs(90))
        .unwrap();
    let logs = c.kubectl(&["-n", &ns.name, "logs", "hello"]).unwrap();
    assert_eq!(logs.trim(), "hello from the real kubelet");
    let uname = c
        .kubectl(&["-n", &ns.name, "exec", "hello", "--", "uname", "-s"])
        .unwrap();
    assert_eq!(uname.trim(), "Linux");
    // kubelet has no other runtime endpoint than the agent's socket.
    let agent_socket = c.agent_guard().as_ref().unwrap().socket();
    assert_eq!(c.cri_socket().as_ref(), Some(&agent_socket));
    let via_agent = c
        .crictl(&agent_socket, &["pods", "--name", "hello", "-q"])
        .unwrap();
    assert_eq!(via_agent.lines().count(), 1, "{via_agent}");
}

#[test]
fn every_crd_is_established_and_examples_are_stored_unpruned() {
    let c = cluster();
    let crds = c.get_json(&["crd"]).unwrap();
    let items = crds["items"].as_array().unwrap();
    let shipped = std::fs::read_dir(kube::install::deploy_dir().join("crds"))
        .unwrap()
        .count();
    let ours: Vec<&Value> = items
        .iter()
        .filter(|crd| {
            let g = crd["spec"]["group"].as_str().unwrap_or_default();
            g.ends_with("kruise.io")
        })
        .collect();
    assert_eq!(ours.len(), shipped, "every CRD in deploy/crds is installed");
    for crd in &ours {
        let name = crd["metadata"]["name"].as_str().unwrap();
        let conds = crd["status"]["conditions"].as_array().unwrap();
        for t in ["Established", "NamesAccepted"] {
            assert!(
                conds
                    .iter()
                    .any(|x| x["type"] == t && x["status"] == "True"),
                "{name}: {t} not True: {conds:?}"
            );
        }
        assert!(
            !conds
                .iter()
                .any(|x| x["type"] == "NonStructuralSchema" && x["status"] == "True"),
            "{name}: schema not structural: {conds:?}"
        );
    }

    let ns = c.namespace("examples").unwrap();
    let examples =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/api/tests/examples");
    // The ContainerRecreateRequest example names a pod the webhook must
    // find; the ImagePullJob example goes through its webhooks.
    c.apply_stdin(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: pod-name
  namespace: {ns}
spec:
  containers:
  - {{name: app, image: {image}, command: ["sleep", "3600"]}}
  - {{name: sidecar, image: {image}, command: ["sleep", "3600"]}}
  terminationGracePeriodSeconds: 1
"#,
        ns = ns.name,
        image = keelson_integration::images::BUSYBOX,
    ))
    .unwrap();
    c.wait_pod_running(&ns.name, "pod-name", Duration::from_secs(90))
        .unwrap();
    let mut problems = vec![];
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut manifest: Value = serde_saphyr::from_str(&text).unwrap();
        let kind = manifest["kind"].as_str().unwrap().to_string();
        if manifest["metadata"].get("namespace").is_some() {
            manifest["metadata"]["namespace"] = Value::String(ns.name.clone());
        }
        let namespaced = kind != "ResourceDistribution";
        let mut args = vec![
            "apply",
            "--server-side",
            "--field-manager=example",
            "-f",
            "-",
        ];
        if namespaced {
            args.extend(["-n", &ns.name]);
        }
        let (ok, out, err) = c
            .kubectl_result(&args, Some(&manifest.to_string()))
            .unwrap();
        assert!(ok, "{}: {err}{out}", path.display());
        let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
        let name = name.as_str();
        let group = manifest["apiVersion"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let resource = format!("{}.{group}", kind.to_lowercase());
        let stored = if namespaced {
            c.get_json(&["-n", &ns.name, &resource, name]).unwrap()
        } else {
            c.get_json(&[&resource, name]).unwrap()
        };
        let mut missing = vec![];
        // The version stored may differ; compare the spec the user wrote.
        // SidecarSet v1alpha1 → v1beta1 turns `namespace` into a namespace
        // selector on `kubernetes.io/metadata.name` (OpenKruise's
        // conversion; the read-back is v1beta1).
        if kind == "SidecarSet"
            && let Some(ns) = manifest["spec"]
                .as_object_mut()
                .and_then(|s| s.remove("namespace"))
        {
            manifest["spec"]["namespaceSelector"] =
                serde_json::json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});
        }
        subset(
            &manifest["spec"],
            &stored["spec"],
            &format!("{kind} spec"),
            &mut missing,
        );
        problems.extend(missing);
        if !namespaced {
            let _ = c.kubectl(&["delete", &resource, name, "--wait=false"]);
        }
    }
    assert!(problems.is_empty(), "pruned or changed: {problems:#?}");
}
