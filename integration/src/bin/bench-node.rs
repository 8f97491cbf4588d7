//! Benchmark: how fast the node features react, measured against a real
//! containerd through the agent (printed, not asserted).
//!
//! - launch gate: a higher-priority container starts while the
//!   lower-priority one's StartContainer is held; latency from the higher
//!   one running (containerd's `started_at`) to the gate releasing the
//!   held call to containerd (the agent's log, same clock).
//! - sidecar stop: latency from the last main container's exit
//!   (containerd's `finished_at`) to the agent issuing StopContainer for
//!   the sidecar (the agent's log).
//!
//! Run: `cargo run --release -p keelson-integration --bin bench-node`
//! (after `cargo build --release -p keelson-agent`); `--rounds N`
//! (default 20).

use std::time::Duration;

use anyhow::Context;
use cri_proto as cri;
use keelson_integration::agent::Agent;
use keelson_integration::containerd::Containerd;
use keelson_integration::image_cache;
use keelson_integration::kubelet::{ContainerSpec, Kubelet, PodSpec, RestartPolicy};
use keelson_integration::stats::summarize;

fn main() -> anyhow::Result<()> {
    let mut rounds = 20;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().context("--rounds needs a value")?.parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(rounds))
}

/// `unix_us` of the agent's JSON log line with `message`, for `pod`.
fn log_time(agent: &Agent, message: &str, pod: &str) -> Option<i64> {
    agent.log_text().lines().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        let pod_field = v["pod"].as_str()?;
        (v["message"].as_str()?.starts_with(message) && pod_field.ends_with(pod))
            .then(|| v["unix_us"].as_i64())?
    })
}

async fn run(rounds: usize) -> anyhow::Result<()> {
    let ctrd = Containerd::start(&image_cache())?;
    let agent = Agent::start(&ctrd.socket(), &["--logging-format", "json"])?;
    let mut k = Kubelet::connect(&agent.socket(), ctrd.pod_env()).await?;

    let mut gate = vec![];
    for i in 0..rounds {
        let name = format!("gate-{i}");
        let spec = PodSpec::new(
            &name,
            vec![
                ContainerSpec::shell("main", "exec sleep 600"),
                ContainerSpec::shell("sidecar", "exec sleep 600")
                    .env("KRUISE_CONTAINER_PRIORITY", "1"),
            ],
        )
        .annotate(
            "keelson.io/container-priorities",
            r#"{"main":0,"sidecar":1}"#,
        );
        let (sandbox, ids) = k.create_unstarted(&spec).await?;
        // The sidecar's start is on its way when main's arrives: main is held.
        let mut a = k.runtime.clone();
        let sidecar = ids["sidecar"].clone();
        let first = tokio::spawn(async move {
            a.start_container(cri::StartContainerRequest {
                container_id: sidecar,
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        k.runtime
            .start_container(cri::StartContainerRequest {
                container_id: ids["main"].clone(),
            })
            .await?;
        first.await??;
        let started = k.status(&ids["sidecar"]).await?.started_at / 1000;
        let released = log_time(&agent, "launch gate released", &name)
            .context("no gate release logged (was main held?)")?;
        gate.push(released - started);
        k.remove_sandbox(&sandbox).await?;
    }
    // Signed: containerd publishes the task start event (which releases
    // the gate) before it records started_at, so most values are < 0.
    gate.sort_unstable();
    let pick = |q: f64| gate[((gate.len() as f64 - 1.0) * q).round() as usize] as f64 / 1e3;
    println!(
        "launch gate: higher-priority started_at -> held start released to containerd, {} rounds: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target <= 100 ms per level)",
        gate.len(),
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );

    let mut stop = vec![];
    for i in 0..rounds {
        let name = format!("job-{i}");
        let mut spec = PodSpec::new(
            &name,
            vec![
                ContainerSpec::shell("main", "sleep 0.2; exit 0"),
                ContainerSpec::shell("sidecar", "trap 'exit 143' TERM; sleep 600 & wait")
                    .env("KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "true"),
            ],
        )
        .annotate("keelson.io/restart-policy", "Never");
        spec.grace_period_seconds = 2;
        let mut pod = k.start_pod(spec, RestartPolicy::Never).await?;
        let exited = |s: &keelson_integration::kubelet::Snapshot| {
            ["main", "sidecar"].iter().all(|n| {
                s.get(*n)
                    .is_some_and(|(_, st, _)| *st == cri::ContainerState::ContainerExited as i32)
            })
        };
        let snap = k
            .keep_synced(
                &mut pod,
                Duration::from_millis(100),
                Duration::from_secs(30),
                exited,
            )
            .await?;
        let finished = k.status(&snap["main"].0).await?.finished_at / 1000;
        let issued = log_time(&agent, "main containers done; stopping job sidecar", &name)
            .context("no sidecar stop logged")?;
        stop.push(Duration::from_micros((issued - finished).max(0) as u64));
        k.remove_synced(&pod).await?;
    }
    let s = summarize(&mut stop);
    println!(
        "sidecar stop: last main exit -> StopContainer issued, {} rounds: p50 {:.2} ms, p99 {:.2} ms (target <= 200 ms)",
        s.n,
        s.p50 / 1e3,
        s.p99 / 1e3
    );
    Ok(())
}
