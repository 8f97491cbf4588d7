//! Pod start latency with the real kubelet: two single-node clusters side
//! by side, one whose kubelet talks to keelson-agent (in cluster mode, in
//! front of containerd) and one whose kubelet talks to containerd
//! directly. Pods are created one after another, alternating between the
//! clusters (and which goes first), each timed from `kubectl apply` to
//! `kubectl wait --for=condition=Ready` returning (a watch, so kubectl's
//! own cost is the same on both sides).
//!
//! `cargo run --release -p keelson-integration --bin bench-kube-pods [N]`
//! (after `cargo build --release -p keelson-agent`; N defaults to 30).

use std::time::{Duration, Instant};

use anyhow::bail;
use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{Cluster, Options};
use keelson_integration::stats::summarize;

fn start_pod(c: &Cluster, name: &str) -> anyhow::Result<Duration> {
    let manifest = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"bench"}},
"spec":{{"terminationGracePeriodSeconds":0,"containers":[{{"name":"main","image":"{BUSYBOX}","command":["sleep","3600"]}}]}}}}"#
    );
    let t = Instant::now();
    c.apply_stdin(&manifest)?;
    let (ok, out, err) = c.kubectl_result(
        &[
            "-n",
            "bench",
            "wait",
            "--for=condition=Ready",
            &format!("pod/{name}"),
            "--timeout=120s",
        ],
        None,
    )?;
    let took = t.elapsed();
    if !ok {
        bail!("pod {name} not Ready: {err}{out}");
    }
    Ok(took)
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(30);
    let opts = |agent| Options {
        controller: false,
        agent,
        ..Options::default()
    };
    println!("starting two clusters (kubelet → agent, kubelet → containerd) …");
    let via = Cluster::start_with(&opts(true))?;
    let direct = Cluster::start_with(&opts(false))?;
    for c in [&via, &direct] {
        c.kubectl(&["create", "namespace", "bench"])?;
        // Warm-up: the first pod pays for image unpacking.
        start_pod(c, "warm-up")?;
    }
    let (mut a, mut d) = (vec![], vec![]);
    for i in 0..n {
        let name = format!("p{i}");
        if i % 2 == 0 {
            a.push(start_pod(&via, &name)?);
            d.push(start_pod(&direct, &name)?);
        } else {
            d.push(start_pod(&direct, &name)?);
            a.push(start_pod(&via, &name)?);
        }
    }
    let (sa, sd) = (summarize(&mut a), summarize(&mut d));
    println!("pod start, apply → Ready, {n} pods each, interleaved:");
    println!("| | p50 | p99 | mean |");
    println!("|---|---|---|---|");
    println!(
        "| kubelet → containerd | {:.0} ms | {:.0} ms | {:.0} ms |",
        sd.p50 / 1e3,
        sd.p99 / 1e3,
        sd.mean / 1e3
    );
    println!(
        "| kubelet → keelson-agent → containerd | {:.0} ms | {:.0} ms | {:.0} ms |",
        sa.p50 / 1e3,
        sa.p99 / 1e3,
        sa.mean / 1e3
    );
    println!(
        "ratio agent/direct: p50 {:.3}, p99 {:.3}",
        sa.p50 / sd.p50,
        sa.p99 / sd.p99
    );
    Ok(())
}
