//! A CloneSet rollout on the real cluster while the node agent and then
//! every keelson-controller replica are killed with SIGKILL: the rollout
//! finishes, `maxUnavailable` holds at every sample, and no pod is updated
//! twice (each container restarted exactly once, no pod recreated). Its
//! own test binary (its own cluster): the kills would disturb other tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(180);

fn pods(c: &Cluster, ns: &str) -> Vec<Value> {
    c.get_json(&["-n", ns, "pods", "-l", "app=crash"]).unwrap()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Per live pod: (uid, restartCount of main).
fn identities(c: &Cluster, ns: &str) -> BTreeMap<String, (String, i64)> {
    pods(c, ns)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                (
                    p["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    p["status"]["containerStatuses"][0]["restartCount"]
                        .as_i64()
                        .unwrap_or(-1),
                ),
            )
        })
        .collect()
}

#[test]
fn a_rollout_survives_sigkill_of_the_agent_and_the_controller() {
    let c = kube::shared().expect("test cluster");
    let guard = c.namespace("cloneset-crash").unwrap();
    let ns = guard.name.as_str();
    let n = 4usize;
    c.apply_stdin(&format!(
        r#"
apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata: {{name: crash, namespace: {ns}}}
spec:
  replicas: {n}
  selector: {{matchLabels: {{app: crash}}}}
  template:
    metadata:
      labels: {{app: crash}}
      annotations: {{app-config: v1}}
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
  updateStrategy: {{type: InPlaceIfPossible, maxUnavailable: 1}}
"#
    ))
    .unwrap();
    let converged = |c: &Cluster| -> bool {
        let cs = c.get_json(&["-n", ns, "cloneset", "crash"]).unwrap();
        let s = &cs["status"];
        s["observedGeneration"] == cs["metadata"]["generation"]
            && s["updatedReadyReplicas"] == n as i64
            && s["readyReplicas"] == n as i64
            && s["replicas"] == n as i64
            && s["currentRevision"] == s["updateRevision"]
    };
    c.wait_for("CloneSet converged", LIMIT, |c| {
        Ok(converged(c).then_some(()))
    })
    .unwrap();
    let before = identities(&c, ns);
    assert_eq!(before.len(), n);
    c.kubectl(&[
        "-n",
        ns,
        "patch",
        "cloneset",
        "crash",
        "--type",
        "merge",
        "-p",
        &json!({"spec": {"template": {"metadata": {"annotations": {"app-config": "v2"}}}}})
            .to_string(),
    ])
    .unwrap();

    let deadline = Instant::now() + LIMIT;
    let (mut killed_agent, mut killed_controller, mut samples) = (false, false, 0);
    loop {
        let all = pods(&c, ns);
        let ready = all.iter().filter(|p| kube::condition(p, "Ready")).count();
        assert!(
            n - ready.min(n) <= 1,
            "sample {samples}: {} of {n} pods unavailable",
            n - ready
        );
        assert!(all.len() <= n, "sample {samples}: {} pods", all.len());
        samples += 1;
        let restarted = identities(&c, ns).values().filter(|(_, r)| *r > 0).count();
        if !killed_agent && restarted >= 1 {
            let pid = c
                .agent_guard()
                .as_ref()
                .unwrap()
                .restart(Signal::SIGKILL)
                .unwrap();
            eprintln!("agent SIGKILLed after {restarted} pod(s) restarted; now pid {pid}");
            killed_agent = true;
        } else if killed_agent && !killed_controller && restarted >= 2 {
            c.kill_controllers().unwrap();
            killed_controller = true;
        }
        if killed_controller && converged(&c) && ready == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not finish after the kills\n{}",
            c.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = identities(&c, ns);
    for (name, (uid, restarts)) in &before {
        let (uid2, restarts2) = after
            .get(name)
            .unwrap_or_else(|| panic!("{name} was recreated: {after:?}"));
        assert_eq!(uid, uid2);
        assert_eq!(*restarts2, restarts + 1, "{name} updated exactly once");
    }
    eprintln!("rollout finished through both kills; {samples} samples within bounds");
}
