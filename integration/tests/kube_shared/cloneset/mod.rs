//! CloneSet on the real single-node cluster, manifests applied with
//! kubectl: the shipped webhooks default and validate it, keelson-controller
//! creates its pods and revisions, and updates go in place through kubelet
//! and the agent — an annotation read by env restarts only that container
//! (same pod UID and IP, restartCount + 1, the new value in its env), an
//! image change (a retag with the same image ID, OpenKruise's #369) too,
//! and a change that cannot be made in place recreates the pods — with
//! `maxUnavailable` held at every sample taken during the rollout; the new
//! image of an in-place update is pre-downloaded by an ImagePullJob.
//!
//! One test binary, one cluster: [`update`] (in place, recreate, grace
//! period, pre-download), [`scaling`] (scale, chosen deletes, partition,
//! pause, the plugin), [`claims`] (volume claims, `disablePVCReuse`),
//! [`lifecycle`] (hooks with `markPodNotReady`) and [`webhook`] (refused
//! manifests).

mod claims;
mod lifecycle;
mod scaling;
mod update;
mod webhook;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster};
use serde_json::{Value, json};

fn cluster() -> kube::Turn {
    kube::shared_in(module_path!()).expect("test cluster")
}

const LIMIT: Duration = Duration::from_secs(120);

fn cloneset(ns: &str, name: &str, replicas: u32, strategy: &str, config: &str) -> String {
    format!(
        r#"
apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{app-config: {config}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {BUSYBOX}
        imagePullPolicy: IfNotPresent
        command: ["sleep", "3600"]
        env:
        - name: APP_CONFIG
          valueFrom: {{fieldRef: {{fieldPath: "metadata.annotations['app-config']"}}}}
  updateStrategy:
{strategy}
"#
    )
}

fn pods(c: &Cluster, ns: &str, app: &str) -> Vec<Value> {
    c.pods(ns, app).unwrap()
}

fn ready(p: &Value) -> bool {
    kube::live_and_ready(p)
}

fn status(c: &Cluster, ns: &str, name: &str) -> Value {
    c.get_json(&["-n", ns, "cloneset", name]).unwrap()["status"].clone()
}

/// Waits until the CloneSet has `n` pods, all updated and ready, with
/// currentRevision = updateRevision; returns its status.
fn converged(c: &Cluster, ns: &str, name: &str, n: i64) -> Value {
    c.wait_for(&format!("CloneSet {ns}/{name} converged"), LIMIT, |c| {
        let cs = c.get_json(&["-n", ns, "cloneset", name])?;
        let s = &cs["status"];
        let done = s["observedGeneration"] == cs["metadata"]["generation"]
            && s["replicas"] == n
            && s["readyReplicas"] == n
            && s["updatedReplicas"] == n
            && s["updatedReadyReplicas"] == n
            && s["currentRevision"] == s["updateRevision"];
        let ready_pods = pods(c, ns, name).iter().filter(|p| ready(p)).count() as i64;
        Ok((done && ready_pods == n).then(|| s.clone()))
    })
    .unwrap()
}

/// Per pod name: (uid, IP, main's restartCount).
fn identities(c: &Cluster, ns: &str, app: &str) -> BTreeMap<String, (String, String, i64)> {
    pods(c, ns, app)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                (
                    p["metadata"]["uid"].as_str().unwrap().to_string(),
                    p["status"]["podIP"].as_str().unwrap_or("").to_string(),
                    p["status"]["containerStatuses"][0]["restartCount"]
                        .as_i64()
                        .unwrap_or(-1),
                ),
            )
        })
        .collect()
}

/// Samples the pods every 100 ms until the CloneSet converges at `n`,
/// asserting at every sample that at most `max_unavailable` of the `n`
/// wanted pods are missing or not ready and at most `n + max_surge` pods
/// exist. Returns the number of samples.
fn roll_within_bounds(
    c: &Cluster,
    ns: &str,
    name: &str,
    n: usize,
    max_unavailable: usize,
    max_surge: usize,
) -> usize {
    let deadline = Instant::now() + LIMIT;
    let mut samples = 0;
    loop {
        let all = pods(c, ns, name);
        let live = all
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .count();
        let ready_n = all.iter().filter(|p| ready(p)).count();
        let unavailable = n.saturating_sub(ready_n);
        assert!(
            unavailable <= max_unavailable,
            "sample {samples}: {unavailable} of {n} pods unavailable (max {max_unavailable}): {:?}",
            all.iter()
                .map(|p| (p["metadata"]["name"].clone(), ready(p)))
                .collect::<Vec<_>>()
        );
        assert!(
            live <= n + max_surge,
            "sample {samples}: {live} pods (max {})",
            n + max_surge
        );
        samples += 1;
        let cs = c.get_json(&["-n", ns, "cloneset", name]).unwrap();
        let s = cs["status"].clone();
        if s["observedGeneration"] == cs["metadata"]["generation"]
            && s["updatedReadyReplicas"] == n as i64
            && s["readyReplicas"] == n as i64
            && s["replicas"] == n as i64
            && s["currentRevision"] == s["updateRevision"]
            && ready_n == n
            && live == n
        {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not finish: {s}\n{}",
            c.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main_env(c: &Cluster, ns: &str, pod: &str) -> BTreeMap<String, String> {
    let socket = c.cri_socket().expect("agent socket");
    let ids = c
        .crictl(
            &socket,
            &[
                "ps",
                "-q",
                "--name",
                "^main$",
                "--label",
                &format!("io.kubernetes.pod.name={pod}"),
                "--label",
                &format!("io.kubernetes.pod.namespace={ns}"),
            ],
        )
        .unwrap();
    let id = ids
        .lines()
        .next()
        .expect("main container")
        .trim()
        .to_string();
    let info: Value = serde_json::from_str(&c.crictl(&socket, &["inspect", &id]).unwrap()).unwrap();
    info["info"]["config"]["envs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["key"].as_str().unwrap_or("").to_string(),
                e["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn patch(c: &Cluster, ns: &str, name: &str, p: &Value) {
    c.kubectl(&[
        "-n",
        ns,
        "patch",
        "cloneset",
        name,
        "--type",
        "merge",
        "-p",
        &p.to_string(),
    ])
    .unwrap();
}

fn pod_names(c: &Cluster, ns: &str, app: &str) -> Vec<String> {
    identities(c, ns, app).into_keys().collect()
}

fn label_of(p: &Value, key: &str) -> String {
    p["metadata"]["labels"][key]
        .as_str()
        .unwrap_or("")
        .to_string()
}
