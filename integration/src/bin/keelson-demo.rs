//! Try Keelson on a real single-node Kubernetes on this machine: etcd,
//! kube-apiserver, controller-manager, scheduler and a kubelet whose
//! container runtime is keelson-agent in front of a private containerd;
//! keelson-controller installed from `deploy/` with OpenKruise's
//! end-to-end feature gates. Applies a few OpenKruise examples (launch
//! priority, a Job with a sidecar, a ContainerRecreateRequest, an
//! ImagePullJob from a local registry), prints what `kubectl get` says,
//! then keeps running until Ctrl-C (or `--no-hold`) and removes everything.
//!
//! Run: `bash integration/scripts/demo` (installs, builds, runs).

use std::time::Duration;

use anyhow::Context;
use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{Cluster, NODE, Options};
use keelson_integration::registry::Registry;

/// OpenKruise's own end-to-end setting, with the controller making its own
/// webhook certificates (AllAlpha would turn on EnableExternalCerts, which
/// waits for cert-manager's).
const GATES: &str = "AllAlpha=true,AllBeta=true,TemplateNoDefaults=false,EnableExternalCerts=false";

fn main() -> anyhow::Result<()> {
    let hold = !std::env::args().any(|a| a == "--no-hold");
    println!("starting a single-node Kubernetes with Keelson on the CRI path …");
    let cluster = Cluster::start_with(&Options {
        feature_gates: GATES.into(),
        ..Options::default()
    })?;
    println!("up: {}", cluster.startup_summary());
    println!("controller feature gates: {GATES}");
    let result = demo(&cluster, hold);
    println!("stopping the cluster and removing everything it started …");
    drop(cluster);
    result
}

fn show(c: &Cluster, title: &str, args: &[&str]) {
    println!("\n$ kubectl {}    # {title}", args.join(" "));
    match c.kubectl(args) {
        Ok(out) => print!("{out}"),
        Err(e) => println!("{e:#}"),
    }
}

fn demo(c: &Cluster, hold: bool) -> anyhow::Result<()> {
    let kubectl = c.bins.kube("kubectl");
    show(
        c,
        "the node runs its pods through keelson-agent",
        &["get", "nodes", "-o", "wide"],
    );
    show(
        c,
        "Keelson's controller, installed from deploy/",
        &["-n", "keelson-system", "get", "deploy,pods"],
    );

    c.kubectl(&["create", "namespace", "demo"])?;
    let registry = Registry::start(None)?;
    let image = registry.push(
        &c.runtime()?.images().layout("busybox"),
        BUSYBOX,
        "demo/app:v1",
    )?;
    c.apply_stdin(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: launch-order
  namespace: demo
  annotations:
    apps.kruise.io/container-launch-priority: Ordered
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: first, image: {BUSYBOX}, command: ["sleep", "3600"]}}
  - {{name: second, image: {BUSYBOX}, command: ["sleep", "3600"]}}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: with-sidecar
  namespace: demo
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 3
      containers:
      - {{name: main, image: {BUSYBOX}, command: ["sh", "-c", "sleep 3; echo work done"]}}
      - name: sidecar
        image: {BUSYBOX}
        command: ["sleep", "3600"]
        env: [{{name: KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT, value: "true"}}]
"#
    ))?;
    c.wait_for("pod launch-order Running", Duration::from_secs(90), |c| {
        let p = c.get_json(&["-n", "demo", "pod", "launch-order"])?;
        Ok((p["status"]["phase"] == "Running").then_some(()))
    })?;
    c.apply_stdin(
        r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ContainerRecreateRequest
metadata:
  name: restart-second
  namespace: demo
spec:
  podName: launch-order
  containers:
  - name: second
  strategy:
    failurePolicy: Fail
    minStartedSeconds: 1
  ttlSecondsAfterFinished: 1800
"#,
    )?;
    println!("\n(waiting for the node's NodeImage, made once the node has been Ready 30 s …)");
    c.wait_for("NodeImage", Duration::from_secs(120), |c| {
        Ok(c.get_json(&["nodeimage", NODE]).ok().map(|_| ()))
    })?;
    c.apply_stdin(&format!(
        r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ImagePullJob
metadata:
  name: prefetch
  namespace: demo
spec:
  image: {image}
  completionPolicy:
    type: Always
"#
    ))?;
    let done = c.wait_for("the examples to finish", Duration::from_secs(120), |c| {
        let job = c.get_json(&["-n", "demo", "job", "with-sidecar"])?;
        let crr = c.get_json(&["-n", "demo", "crr", "restart-second"])?;
        let pull = c.get_json(&["-n", "demo", "imagepulljob", "prefetch"])?;
        let finished = job["status"]["succeeded"] == 1
            && crr["status"]["phase"] == "Completed"
            && pull["status"].get("completionTime").is_some();
        Ok(finished.then_some(()))
    });
    if let Err(e) = done {
        println!("not everything finished: {e:#}");
    }
    show(
        c,
        "launch priority, the Job's pod Succeeded, restart counts",
        &["-n", "demo", "get", "pods"],
    );
    show(
        c,
        "the Job with a sidecar completed",
        &["-n", "demo", "get", "jobs"],
    );
    show(
        c,
        "the in-place restart",
        &["-n", "demo", "get", "containerrecreaterequests"],
    );
    show(
        c,
        "the image pulled on the node",
        &["-n", "demo", "get", "imagepulljobs"],
    );

    println!("\nPoint kubectl at it from another shell:");
    println!("  export KUBECONFIG={}", c.kubeconfig().display());
    println!("  {} get pods -A", kubectl.display());
    println!("Component logs: {}", c.log_dir().display());
    if hold {
        println!("\nrunning; press Ctrl-C to stop the cluster and clean up");
        wait_for_ctrl_c().context("waiting for Ctrl-C")?;
    }
    drop(registry);
    Ok(())
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_ctrl_c() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    Ok(())
}
