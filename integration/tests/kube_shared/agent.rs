//! keelson-agent as the real kubelet's runtime on the real single-node
//! cluster: crictl gets the same answers through it as from containerd, and
//! restarting the agent (SIGTERM, then SIGKILL) under socket activation
//! while kubelet runs pods restarts no pod and fails none of kubelet's CRI
//! calls on the graceful restarts (kubelet's own error counters).

use std::collections::BTreeMap;
use std::time::Duration;

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster};
use nix::sys::signal::Signal;
use serde_json::Value;

fn cluster() -> kube::Turn {
    kube::shared_in(module_path!()).expect("test cluster")
}

fn steady_pod(c: &Cluster, ns: &str, name: &str) -> Value {
    c.apply_stdin(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    command: ["sh", "-c", "echo line one; echo line two; exec sleep 3600"]
"#
    ))
    .unwrap();
    c.wait_pod_ready(ns, name, Duration::from_secs(90)).unwrap()
}

/// Every Ready pod's uid and its containers' ids and restart counts, in
/// `namespaces` (other tests' pods come and go meanwhile).
fn pod_fingerprint(c: &Cluster, namespaces: &[&str]) -> BTreeMap<String, String> {
    let pods = c.get_json(&["pods", "-A"]).unwrap();
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| kube::condition(p, "Ready"))
        .filter(|p| namespaces.iter().any(|n| p["metadata"]["namespace"] == *n))
        .map(|p| {
            let name = format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap_or_default(),
                p["metadata"]["name"].as_str().unwrap_or_default()
            );
            let containers: Vec<String> = p["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| format!("{}={}#{}", s["name"], s["containerID"], s["restartCount"]))
                .collect();
            (
                name,
                format!("{} {}", p["metadata"]["uid"], containers.join(",")),
            )
        })
        .collect()
}

#[test]
fn crictl_answers_the_same_through_the_agent() {
    let c = cluster();
    let ns = c.namespace("crictl").unwrap();
    let pod = steady_pod(&c, &ns.name, "seen");
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .split_once("://")
        .unwrap()
        .1
        .to_string();
    let agent = c.agent_guard().as_ref().unwrap().socket();
    let direct = c.runtime().unwrap().socket();
    let both = |args: &[&str]| {
        (
            c.crictl(&agent, args).unwrap(),
            c.crictl(&direct, args).unwrap(),
        )
    };
    for args in [
        vec!["version"],
        vec!["info"],
        vec!["pods", "-o", "json"],
        vec!["ps", "-a", "-o", "json"],
        vec!["images", "-o", "json"],
        vec!["inspect", &id],
        vec!["inspectp", pod_sandbox(&c, &direct, &id).as_str()],
        vec!["logs", &id],
        vec!["exec", &id, "echo", "through", "exec"],
    ] {
        let (via, straight) = both(&args);
        assert_eq!(
            via,
            straight,
            "crictl {} differs through the agent",
            args.join(" ")
        );
        assert!(
            !via.trim().is_empty(),
            "crictl {} printed nothing",
            args.join(" ")
        );
    }
    let logs = c.crictl(&agent, &["logs", &id]).unwrap();
    assert_eq!(logs, "line one\nline two\n");
}

/// The sandbox of container `id`.
fn pod_sandbox(c: &Cluster, socket: &std::path::Path, id: &str) -> String {
    let v: Value = serde_json::from_str(&c.crictl(socket, &["inspect", id]).unwrap()).unwrap();
    v["info"]["sandboxID"].as_str().unwrap().to_string()
}

#[test]
fn restarting_the_agent_restarts_no_pod_and_fails_no_kubelet_call() {
    let c = cluster();
    let ns = c.namespace("agent-restarts").unwrap();
    steady_pod(&c, &ns.name, "steady");
    // This test's pod and the controller's, which run through the agent too.
    let watched = [ns.name.as_str(), "keelson-system"];
    let pods_before = pod_fingerprint(&c, &watched);
    assert!(pods_before.len() >= 3, "{pods_before:#?}");
    let errors_before = c.kubelet_cri_errors().unwrap();

    for _ in 0..3 {
        let pid = c
            .agent_guard()
            .as_ref()
            .unwrap()
            .restart(Signal::SIGTERM)
            .unwrap();
        eprintln!("agent restarted after SIGTERM: pid {pid}");
        // kubelet keeps calling (PLEG relists every second, status syncs).
        std::thread::sleep(Duration::from_secs(3));
    }
    let after_term = c.kubelet_cri_errors().unwrap();
    let failed_on_term = kube::kubectl::grown(&errors_before, &after_term);

    let pid = c
        .agent_guard()
        .as_ref()
        .unwrap()
        .restart(Signal::SIGKILL)
        .unwrap();
    eprintln!("agent restarted after SIGKILL: pid {pid}");
    std::thread::sleep(Duration::from_secs(5));
    let failed_on_kill = kube::kubectl::grown(&after_term, &c.kubelet_cri_errors().unwrap());
    eprintln!("kubelet CRI errors: SIGTERM x3 {failed_on_term:?}; SIGKILL {failed_on_kill:?}");

    // The node still serves everything through the new agent.
    let out = c
        .kubectl(&["-n", &ns.name, "exec", "steady", "--", "echo", "still here"])
        .unwrap();
    assert_eq!(out.trim(), "still here");
    let pods_after = pod_fingerprint(&c, &watched);
    let changed: Vec<_> = pods_before
        .iter()
        .filter(|(k, v)| pods_after.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v} -> {:?}", pods_after.get(k)))
        .collect();
    assert!(
        changed.is_empty(),
        "pods restarted or recreated: {changed:#?}"
    );
    assert!(
        failed_on_term.is_empty(),
        "kubelet CRI calls failed across SIGTERM restarts: {failed_on_term:?}"
    );
}
