//! An Advanced StatefulSet in-place rollout on the real cluster with
//! `Parallel`, `maxUnavailable: 2` and a reserved ordinal, while every
//! keelson-controller replica is killed with SIGKILL mid-rollout: the
//! rollout finishes, at most 2 pods are unavailable at every sample, the
//! reserved ordinal never gets a pod, and each pod is updated exactly once
//! in place (same UID, one container restart). Its own test binary (its
//! own cluster): the kills would disturb other tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(180);

fn pods(c: &Cluster, ns: &str) -> Vec<Value> {
    c.pods(ns, "crash").unwrap()
}

fn name(p: &Value) -> String {
    kube::name_of(p)
}

fn ready(p: &Value) -> bool {
    kube::live_and_ready(p)
}

fn restarts(p: &Value) -> i64 {
    p["status"]["containerStatuses"][0]["restartCount"]
        .as_i64()
        .unwrap_or(-1)
}

#[test]
fn a_parallel_in_place_rollout_survives_sigkill_of_the_controller_within_bounds() {
    let c = kube::shared().expect("test cluster");
    let guard = c.namespace("asts-crash").unwrap();
    let ns = guard.name.as_str();
    c.apply_stdin(&format!(
        r#"apiVersion: apps.kruise.io/v1beta1
kind: StatefulSet
metadata: {{name: crash, namespace: {ns}}}
spec:
  replicas: 4
  reserveOrdinals: [1]
  podManagementPolicy: Parallel
  serviceName: crash
  selector: {{matchLabels: {{app: crash}}}}
  template:
    metadata: {{labels: {{app: crash}}}}
    spec:
      terminationGracePeriodSeconds: 1
      readinessGates: [{{conditionType: InPlaceUpdateReady}}]
      containers:
      - name: main
        image: {BUSYBOX}
        imagePullPolicy: IfNotPresent
        command: ["sleep", "3600"]
  updateStrategy:
    rollingUpdate: {{podUpdatePolicy: InPlaceIfPossible, maxUnavailable: 2}}
"#
    ))
    .unwrap();
    c.wait_for("4 pods Ready", LIMIT, |c| {
        let now = pods(c, ns);
        Ok((now.len() == 4 && now.iter().all(ready)).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.diagnostics()));
    let mut names: Vec<String> = pods(&c, ns).iter().map(name).collect();
    names.sort();
    assert_eq!(
        names,
        ["crash-0", "crash-2", "crash-3", "crash-4"],
        "ordinal 1 reserved"
    );
    let uids: BTreeMap<String, String> = pods(&c, ns)
        .iter()
        .map(|p| {
            (
                name(p),
                p["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let retag = "localhost/keelson/busybox:asts-crash";
    c.tag_image(BUSYBOX, retag).unwrap();
    c.kubectl(&[
        "-n",
        ns,
        "patch",
        "asts",
        "crash",
        "--type=json",
        "-p",
        &format!(r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{retag}"}}]"#),
    ])
    .unwrap();
    let deadline = Instant::now() + LIMIT;
    let (mut killed, mut samples) = (false, 0);
    loop {
        let now = pods(&c, ns);
        let unavailable = now.iter().filter(|p| !ready(p)).count();
        assert!(
            unavailable <= 2,
            "sample {samples}: {unavailable} unavailable, maxUnavailable 2"
        );
        for p in &now {
            assert_ne!(name(p), "crash-1", "the reserved ordinal stays empty");
            assert_eq!(
                Some(p["metadata"]["uid"].as_str().unwrap_or_default()),
                uids.get(&name(p)).map(String::as_str),
                "{} kept in place",
                name(p)
            );
            assert!(restarts(p) <= 1, "{} updated more than once", name(p));
        }
        samples += 1;
        let restarted = now.iter().filter(|p| restarts(p) == 1).count();
        if !killed && restarted >= 1 {
            assert!(c.kill_controllers().unwrap() >= 1);
            killed = true;
        }
        let s = c.get_json(&["-n", ns, "asts", "crash"]).unwrap()["status"].clone();
        if killed
            && s["updatedReplicas"] == 4
            && s["currentRevision"] == s["updateRevision"]
            && now.len() == 4
            && now.iter().all(|p| ready(p) && restarts(p) == 1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not finish after the kill: {s}\n{}",
            c.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "parallel in-place rollout through a controller SIGKILL: {samples} samples within bounds"
    );
}
