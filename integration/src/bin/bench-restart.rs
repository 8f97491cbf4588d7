//! Benchmark: an in-place container restart through the agent vs what a
//! non-in-place update costs on the node (printed, not asserted).
//!
//! - in place: a restart request for the pod's container, from accepted to
//!   the recreated container running (the agent's own record: accepted →
//!   Completed with `minStartedSeconds` 0). The container is recreated by a
//!   kubelet-like pod worker relisting every `--relist-ms` (kubelet's PLEG:
//!   1000 ms), so kubelet's reaction time is included.
//! - pod recreate: StopPodSandbox + RemovePodSandbox, then RunPodSandbox +
//!   CreateContainer + StartContainer for a pod of the same shape, back to
//!   back through the agent with no kubelet delay at all (the node-side
//!   lower bound of deleting and recreating the pod).
//!
//! Pods use the isolated CNI bridge (not the host network) when the CNI
//! plugins are installed, as real pods do. Rounds alternate the two.
//!
//! Run: `cargo run --release -p keelson-integration --bin bench-restart`
//! (after `cargo build --release -p keelson-agent`); `--rounds N`
//! (default 10), `--relist-ms MS` (default 1000), `--keep-log PATH` (agent
//! debug log kept there, per-request times printed).

use std::time::{Duration, Instant};

use anyhow::Context;
use keelson_agent::admin::client::{call, fetch};
use keelson_agent::restart::spec::{Phase, RestartStatus};
use keelson_integration::agent::Agent;
use keelson_integration::containerd::Containerd;
use keelson_integration::image_cache;
use keelson_integration::kubelet::{ContainerSpec, Kubelet, PodSpec, RestartPolicy};
use keelson_integration::pod_worker::PodWorker;
use keelson_integration::stats::summarize;

fn main() -> anyhow::Result<()> {
    let mut rounds = 10;
    let mut keep_log: Option<std::path::PathBuf> = None;
    let mut relist = Duration::from_millis(1000);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().context("--rounds needs a value")?.parse()?,
            "--relist-ms" => {
                relist = Duration::from_millis(
                    args.next().context("--relist-ms needs a value")?.parse()?,
                )
            }
            "--keep-log" => keep_log = Some(args.next().context("--keep-log needs a path")?.into()),
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(rounds, relist, keep_log))
}

fn app(name: &str) -> ContainerSpec {
    ContainerSpec::shell(name, "trap 'exit 0' TERM; while true; do sleep 0.1; done")
}

fn pod(name: &str, cni: bool) -> PodSpec {
    let mut spec = PodSpec::new(name, vec![app("app")]);
    spec.host_network = !cni;
    spec
}

async fn run(
    rounds: usize,
    relist: Duration,
    keep_log: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let ctrd = Containerd::start(&image_cache())?;
    let bridge = keelson_integration::cni::Bridge::install(&ctrd).ok();
    let cni = bridge.is_some();
    let agent = if keep_log.is_some() {
        Agent::start(&ctrd.socket(), &["--log-level", "keelson_agent=debug"])?
    } else {
        Agent::start(&ctrd.socket(), &[])?
    };
    let admin = agent.admin_socket();

    let k = Kubelet::connect(&agent.socket(), ctrd.pod_env()).await?;
    let mut k = k;
    let synced = k
        .start_pod(pod("inplace", cni), RestartPolicy::Always)
        .await?;
    let worker = PodWorker::spawn(k, synced, relist);
    worker
        .wait_for(Duration::from_secs(30), |s| {
            s.get("app").is_some_and(|(_, st, _)| *st == 1)
        })
        .await?;
    let mut driver = Kubelet::connect(&agent.socket(), ctrd.pod_env()).await?;
    let mut current = driver.run_pod(pod("recreate-0", cni)).await?;

    let mut in_place = vec![];
    let mut recreate = vec![];
    for round in 0..rounds {
        for restart_turn in [round % 2 == 0, round % 2 == 1] {
            if restart_turn {
                let body = serde_json::json!({
                    "pod": {"namespace": worker.namespace, "name": worker.name},
                    "containers": [{"name": "app"}],
                    "strategy": {"terminationGracePeriodSeconds": 5},
                });
                let (code, reply) = call(
                    &admin,
                    "POST",
                    "/v1/restarts",
                    Some(body.to_string().into_bytes()),
                )
                .await?;
                anyhow::ensure!(code == 202, "{}", String::from_utf8_lossy(&reply));
                let id = serde_json::from_slice::<serde_json::Value>(&reply)?["id"]
                    .as_str()
                    .context("id")?
                    .to_string();
                let done = loop {
                    let s: RestartStatus =
                        fetch(&admin, "GET", &format!("/v1/restarts/{id}"), 200).await?;
                    if s.phase == Phase::Completed {
                        break s;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                anyhow::ensure!(
                    done.container_recreate_states[0].phase == Phase::Succeeded,
                    "{done:?}"
                );
                let took = done.completion_unix_ms.context("completion")? - done.accepted_unix_ms;
                if keep_log.is_some() {
                    println!("{id}: {took} ms");
                }
                in_place.push(Duration::from_millis(took));
            } else {
                let t = Instant::now();
                driver.remove_pod(&current).await?;
                current = driver
                    .run_pod(pod(&format!("recreate-{}", round + 1), cni))
                    .await?;
                anyhow::ensure!(
                    current.containers.iter().all(|c| c.error.is_none()),
                    "{:?}",
                    current.containers
                );
                recreate.push(t.elapsed());
            }
        }
    }
    driver.remove_pod(&current).await?;
    let (_k, synced) = worker.stop().await?;
    let mut k = Kubelet::connect(&agent.socket(), ctrd.pod_env()).await?;
    k.remove_synced(&synced).await?;

    let a = summarize(&mut in_place);
    let b = summarize(&mut recreate);
    println!(
        "\nin-place restart vs pod recreate, {rounds} rounds, {} network, pod worker relist {} ms",
        if cni { "CNI bridge" } else { "host" },
        relist.as_millis()
    );
    println!("| | p50 | p99 (max) | mean |");
    println!("|---|---|---|---|");
    for (name, s) in [
        ("in place: accepted → recreated container running", a),
        ("pod recreate: stop+remove sandbox, run+create+start", b),
    ] {
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.0} ms |",
            s.p50 / 1e3,
            s.p99 / 1e3,
            s.mean / 1e3
        );
    }
    println!("ratio in-place/recreate (p50): {:.2}", a.p50 / b.p50);
    if let Some(path) = keep_log {
        std::fs::copy(agent.log(), &path)?;
        println!("agent log (debug) kept at {}", path.display());
    }
    drop(bridge);
    Ok(())
}
