//! The node as `deploy/` ships it, on the real single-node cluster: the
//! CRI proxy a host process under its service manager (the activator
//! standing in for systemd: it holds the socket and starts the installed
//! binary again whenever it exits), kubelet on its socket, and the agent
//! DaemonSet applied with kubectl. Its pod never sits on the CRI path:
//! its init container installs its binary and units on the "host" and
//! moves the running agent onto them; its container is the cluster side,
//! driving the host agent through the admin socket with the pod's
//! credentials. Shown here, in order, on one cluster:
//!
//! 1. the first rollout replaced the provisioned binary and the host agent
//!    runs the DaemonSet's; a ContainerRecreateRequest is carried out
//!    through the pod's cluster side;
//! 2. a new image rolled out: the host agent is replaced by the new binary
//!    while kubelet and a prober keep calling the CRI — no failed call
//!    (kubelet's own error counters, and the prober's), no pod restarted;
//! 3. the DaemonSet pod killed: the CRI path and the host agent are
//!    untouched, and the cluster side resumes in the next pod;
//! 4. the node rebooted (everything killed at once, containerd, the host
//!    agent's service manager and kubelet started again): the node comes
//!    back Ready through the agent, its pods run again, and the DaemonSet
//!    pod's cluster side carries out a CRR.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster, Options};
use serde_json::Value;

fn sha256(path: &Path) -> String {
    keelson_agent::install::digest_of(path).unwrap()
}

/// The host agent's pid and the digest of the binary it runs.
fn host_agent(c: &Cluster) -> (u32, String) {
    let pid = c.activated().unwrap().pid().expect("host agent running");
    (pid, sha256(Path::new(&format!("/proc/{pid}/exe"))))
}

fn agent_pods(c: &Cluster) -> keelson_integration::Result<Vec<Value>> {
    let list = c.get_json(&[
        "-n",
        "keelson-system",
        "pods",
        "-l",
        "app.kubernetes.io/name=keelson-agent",
    ])?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// The DaemonSet's pod (the newest, when two overlap).
fn agent_pod(c: &Cluster) -> Value {
    c.wait_for("agent DaemonSet pod Ready", Duration::from_secs(180), |c| {
        let pods = agent_pods(c)?;
        Ok(pods
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .find(|p| kube::condition(p, "Ready")))
    })
    .unwrap()
}

/// What the pod's installer printed: its last line, JSON.
fn install_report(c: &Cluster, pod: &Value) -> Value {
    let name = kube::name_of(pod);
    let log = c
        .kubectl(&["-n", "keelson-system", "logs", &name, "-c", "install"])
        .unwrap();
    let last = log
        .lines()
        .rev()
        .find(|l| l.starts_with('{') && l.contains("written"));
    serde_json::from_str(last.unwrap_or_else(|| panic!("no install report in:\n{log}"))).unwrap()
}

/// Every pod's uid and its containers' ids and restart counts in `ns`.
fn fingerprint(c: &Cluster, ns: &str) -> BTreeMap<String, String> {
    let pods = c.get_json(&["-n", ns, "pods"]).unwrap();
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let containers: Vec<String> = p["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| format!("{}={}#{}", s["name"], s["containerID"], s["restartCount"]))
                .collect();
            (
                kube::name_of(p),
                format!("{} {}", p["metadata"]["uid"], containers.join(",")),
            )
        })
        .collect()
}

/// Calls the CRI through the agent's socket (as kubelet does) until
/// stopped; counts calls and failures.
struct Prober {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(c: &Arc<Cluster>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(vec![]));
        let socket: PathBuf = c.cri_socket().unwrap();
        let thread = {
            let (c, stop, calls, failures) =
                (c.clone(), stop.clone(), calls.clone(), failures.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for args in [&["version"][..], &["pods", "-q"][..]] {
                        calls.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = c.crictl(&socket, args) {
                            failures.lock().unwrap().push(format!("{args:?}: {e:#}"));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Self {
            stop,
            calls,
            failures,
            thread: Some(thread),
        }
    }

    /// Stops; (calls, failures).
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (
            self.calls.load(Ordering::Relaxed),
            self.failures.lock().unwrap().clone(),
        )
    }
}

/// Restarts container `app` of `ns/target` with a CRR; waits for it.
fn recreate(c: &Cluster, ns: &str, name: &str) -> Value {
    let manifest = format!(
        r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ContainerRecreateRequest
metadata: {{name: {name}, namespace: {ns}}}
spec:
  podName: target
  containers: [{{name: app}}]
  strategy: {{failurePolicy: Fail, minStartedSeconds: 1}}
  activeDeadlineSeconds: 120
"#
    );
    // Its webhook may be coming back (after the reboot, the controller's
    // pods restart too): accepted once it answers.
    c.wait_for("the CRR accepted", Duration::from_secs(120), |c| {
        let (ok, _, err) = c.kubectl_result(&["apply", "-f", "-"], Some(&manifest))?;
        if !ok && !err.contains("no endpoints available") && !err.contains("connection refused") {
            anyhow::bail!("kubectl apply: {err}");
        }
        Ok(ok.then_some(()))
    })
    .unwrap();
    c.wait_for("CRR Completed", Duration::from_secs(120), |c| {
        let crr = c.get_json(&["-n", ns, "crr", name])?;
        Ok((crr["status"]["phase"] == "Completed").then_some(crr))
    })
    .unwrap()
}

/// A copy of the agent binary that differs (an extra ELF section), as a
/// new release would.
fn new_release(dir: &Path) -> PathBuf {
    let marker = dir.join("marker");
    std::fs::write(&marker, b"keelson upgrade test\n").unwrap();
    let out = dir.join("keelson-agent");
    let status = std::process::Command::new("objcopy")
        .arg("--add-section")
        .arg(format!(".keelson_release={}", marker.display()))
        .arg(keelson_integration::agent::binary().unwrap())
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "objcopy");
    out
}

#[test]
fn the_daemonset_installs_upgrades_survives_its_pod_and_a_reboot_off_the_cri_path() {
    let c = Arc::new(
        Cluster::start_with(&Options {
            agent_daemonset: true,
            ..Options::default()
        })
        .unwrap(),
    );
    eprintln!("cluster up: {}", c.startup_summary());
    let installed = c.host_root().join("usr/local/bin/keelson-agent");

    // 1. The first rollout moved the host agent onto the image's binary.
    let pod = agent_pod(&c);
    let report = install_report(&c, &pod);
    eprintln!("first install: {report}");
    assert_eq!(report["restartedAgent"], true, "{report}");
    let written: Vec<&str> = report["written"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(written.len(), 3, "binary and two units: {written:?}");
    for unit in ["keelson-agent.socket", "keelson-agent.service"] {
        let text =
            std::fs::read_to_string(c.host_root().join("etc/systemd/system").join(unit)).unwrap();
        assert!(text.contains("[Install]"), "{unit}");
    }
    let (pid1, running) = host_agent(&c);
    assert_eq!(
        running,
        sha256(&installed),
        "the host agent runs the installed binary"
    );

    let ns = c.namespace("ds-split").unwrap();
    c.apply_stdin(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: target, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: app, image: {BUSYBOX}, command: ["sleep", "3600"]}}
"#,
        ns = ns.name
    ))
    .unwrap();
    c.wait_pod_ready(&ns.name, "target", Duration::from_secs(90))
        .unwrap();
    let crr = recreate(&c, &ns.name, "first");
    assert_eq!(
        crr["status"]["containerRecreateStates"][0]["phase"], "Succeeded",
        "{}",
        crr["status"]
    );
    assert!(
        !c.agent_log().contains("cluster mode: following"),
        "the host agent runs no cluster side of its own"
    );

    // 2. A new release rolled out: the host agent replaced, nothing failed.
    let work = tempfile::tempdir().unwrap();
    let v2 = new_release(work.path());
    let image = "localhost/keelson/agent:v2";
    let tar =
        keelson_integration::images::build_program(&work.path().join("cache"), &v2, image).unwrap();
    keelson_integration::images::import(&c.runtime().unwrap().socket(), &tar).unwrap();
    let pods_before = fingerprint(&c, &ns.name);
    let errors_before = c.kubelet_cri_errors().unwrap();
    let prober = Prober::start(&c);
    let t = Instant::now();
    c.kubectl(&[
        "-n",
        "keelson-system",
        "set",
        "image",
        "daemonset/keelson-agent",
        &format!("install={image}"),
        &format!("cluster={image}"),
    ])
    .unwrap();
    c.rolled_out("daemonset/keelson-agent").unwrap();
    let rollout = t.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let (calls, failures) = prober.finish();
    let kubelet_failed = kube::kubectl::grown(&errors_before, &c.kubelet_cri_errors().unwrap());
    let pod = agent_pod(&c);
    let report = install_report(&c, &pod);
    let (pid2, running) = host_agent(&c);
    eprintln!(
        "upgrade: rollout {rollout:?}; host agent pid {pid1} -> {pid2}; prober {calls} CRI calls, {} failed; kubelet CRI errors {kubelet_failed:?}; install {report}",
        failures.len()
    );
    assert_eq!(report["restartedAgent"], true, "{report}");
    assert_ne!(pid1, pid2, "a new host agent process");
    assert_eq!(running, sha256(&installed), "it runs the new binary");
    assert!(failures.is_empty(), "CRI calls failed: {failures:#?}");
    assert!(
        kubelet_failed.is_empty(),
        "kubelet CRI calls failed: {kubelet_failed:?}"
    );
    assert_eq!(fingerprint(&c, &ns.name), pods_before, "no pod restarted");
    recreate(&c, &ns.name, "after-upgrade");

    // 3. The pod killed: the CRI path and the host agent untouched, the
    // cluster side back in the next pod.
    let old = kube::name_of(&pod);
    let errors_before = c.kubelet_cri_errors().unwrap();
    let prober = Prober::start(&c);
    c.kubectl(&[
        "-n",
        "keelson-system",
        "delete",
        "pod",
        &old,
        "--grace-period=0",
        "--force",
    ])
    .unwrap();
    let next = c
        .wait_for("a new agent pod Ready", Duration::from_secs(180), |c| {
            let pods = agent_pods(c)?;
            Ok(pods
                .into_iter()
                .find(|p| kube::name_of(p) != old && kube::condition(p, "Ready")))
        })
        .unwrap();
    let crr = recreate(&c, &ns.name, "after-kill");
    let (calls, failures) = prober.finish();
    let kubelet_failed = kube::kubectl::grown(&errors_before, &c.kubelet_cri_errors().unwrap());
    let (pid3, _) = host_agent(&c);
    let report = install_report(&c, &next);
    eprintln!(
        "pod killed: prober {calls} CRI calls, {} failed; kubelet CRI errors {kubelet_failed:?}; host agent pid {pid2} -> {pid3}; install {report}",
        failures.len()
    );
    assert_eq!(pid3, pid2, "the host agent was not touched");
    assert_eq!(report["restartedAgent"], false, "same binary: {report}");
    assert!(failures.is_empty(), "CRI calls failed: {failures:#?}");
    assert!(
        kubelet_failed.is_empty(),
        "kubelet CRI calls failed: {kubelet_failed:?}"
    );
    assert_eq!(
        crr["status"]["containerRecreateStates"][0]["phase"],
        "Succeeded"
    );

    // 4. A reboot: everything killed at once, then containerd, the host
    // agent (its service manager) and kubelet booted again. The node comes
    // back Ready through the agent, with its pods running in new sandboxes,
    // and the DaemonSet pod's cluster side works again.
    let container_of = |p: &Value| p["status"]["containerStatuses"][0]["containerID"].clone();
    let before = c.get_json(&["-n", &ns.name, "pod", "target"]).unwrap();
    let t = Instant::now();
    c.reboot().unwrap();
    let node_back = t.elapsed();
    let after = c
        .wait_for(
            "the pod running again after the reboot",
            Duration::from_secs(180),
            |c| {
                let p = c.get_json(&["-n", &ns.name, "pod", "target"])?;
                Ok(
                    (kube::condition(&p, "Ready") && container_of(&p) != container_of(&before))
                        .then_some(p),
                )
            },
        )
        .unwrap();
    let pods_back = t.elapsed();
    assert_eq!(
        after["metadata"]["uid"], before["metadata"]["uid"],
        "the same pod"
    );
    let (pid4, running) = host_agent(&c);
    assert_ne!(pid4, pid3, "a host agent of the new boot");
    assert_eq!(running, sha256(&installed), "on the installed binary");
    let crr = recreate(&c, &ns.name, "after-reboot");
    eprintln!(
        "reboot: node Ready {node_back:?}, pod running again {pods_back:?}, CRR after it {}",
        crr["status"]["containerRecreateStates"][0]["phase"]
    );
    assert_eq!(
        crr["status"]["containerRecreateStates"][0]["phase"],
        "Succeeded"
    );
}
