//! What the pod webhook costs a pod creation, on one real single-node
//! cluster with keelson-controller installed: the time of the API call
//! that creates a pod (POST → stored object returned), interleaved call by
//! call for three kinds of pod:
//!
//! 1. `excluded`: in a namespace labelled `control-plane` (no webhook
//!    called, as without Keelson);
//! 2. `unconcerned`: a plain pod elsewhere (the `Ignore` registration
//!    calls the webhook, which changes nothing);
//! 3. `injected`: a pod a SidecarSet selects (`mpod.kb.io`, injection and
//!    stamps).
//!
//! The pods are bound to a node that does not exist, so no kubelet work
//! interferes. `cargo run -p keelson-integration --bin bench-pod-webhook
//! [N]` (after `cargo build --workspace --bins`; N defaults to 100).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{Cluster, Options};
use keelson_integration::stats::summarize;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

fn pod(name: &str, app: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": "nowhere", "containers": [
            {"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]},
    }))?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100);
    let cluster = std::thread::spawn(|| Cluster::start_with(&Options::default()))
        .join()
        .map_err(|_| anyhow::anyhow!("cluster start panicked"))??;
    eprintln!("{}", cluster.startup_summary());
    cluster.kubectl(&["create", "namespace", "bench-excluded"])?;
    cluster.kubectl(&[
        "label",
        "namespace",
        "bench-excluded",
        "control-plane=bench",
    ])?;
    cluster.kubectl(&["create", "namespace", "bench-plain"])?;
    cluster.apply_stdin(&format!(
        r#"
apiVersion: apps.kruise.io/v1beta1
kind: SidecarSet
metadata: {{name: bench-sidecar}}
spec:
  selector: {{matchLabels: {{app: injected}}}}
  containers:
  - {{name: log, image: {BUSYBOX}, command: ["sleep", "3600"]}}
  volumes:
  - {{name: logs, emptyDir: {{}}}}
"#
    ))?;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(cluster.kubeconfig())?,
        &Default::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    let excluded: Api<Pod> = Api::namespaced(client.clone(), "bench-excluded");
    let plain: Api<Pod> = Api::namespaced(client.clone(), "bench-plain");
    let kinds = [
        ("excluded (no webhook)", &excluded, "plain"),
        ("unconcerned (Ignore webhook, no change)", &plain, "plain"),
        ("injected (SidecarSet)", &plain, "injected"),
    ];
    // Warm-up: connections, the webhook's TLS session, caches.
    for (i, (_, api, app)) in kinds.iter().enumerate() {
        for j in 0..5 {
            api.create(&PostParams::default(), &pod(&format!("warm-{i}-{j}"), app)?)
                .await?;
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![vec![]; kinds.len()];
    for round in 0..n {
        for (k, (_, api, app)) in kinds.iter().enumerate() {
            let p = pod(&format!("p{k}-{round}"), app)?;
            let t = Instant::now();
            let stored = api.create(&PostParams::default(), &p).await?;
            samples[k].push(t.elapsed());
            if app == &"injected" {
                let n = stored.spec.map(|s| s.containers.len()).unwrap_or(0);
                anyhow::ensure!(n == 2, "the SidecarSet did not inject (containers: {n})");
            }
        }
    }
    println!("pod creation, {n} per kind, interleaved (µs):");
    let base = summarize(&mut samples[0].clone());
    for (k, (label, _, _)) in kinds.iter().enumerate() {
        let s = summarize(&mut samples[k]);
        println!(
            "  {label:<42} p50 {:>8.0}  p99 {:>8.0}  mean {:>8.0}  (p50 {:+.1} ms vs excluded)",
            s.p50,
            s.p99,
            s.mean,
            (s.p50 - base.p50) / 1000.0
        );
    }
    for api in [&excluded, &plain] {
        api.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await?;
    }
    cluster.kubectl(&["delete", "sidecarset", "bench-sidecar"])?;
    Ok(())
}
