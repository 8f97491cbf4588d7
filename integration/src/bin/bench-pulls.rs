//! Benchmark: image pulls through the agent's pull engine vs the same pulls
//! sent straight to containerd, side by side in one run (printed, not
//! asserted), and the cost of the credential provider cache.
//!
//! - pulls: `--images N` distinct images (no shared layer, `--size` bytes
//!   each) in a local registry on 127.0.0.1. Each round removes them from
//!   containerd and pulls all N, once with N CRI `PullImage` calls at most
//!   `--parallelism P` at a time (what a careful client does itself), once
//!   by posting N pulls to the agent's admin API (started with
//!   `--pull-parallelism P`) until the agent records the last one
//!   finished. Rounds
//!   alternate which target goes first. Reported: wall time per round
//!   (median over rounds) and the throughput ratio direct/agent.
//! - credentials: `Credentials::lookup` for an image a provider plugin
//!   answers for: the cached path (µs per lookup) and the plugin path
//!   (cache duration 0: one exec per lookup).
//!
//! Run: `cargo run --release -p keelson-integration --bin bench-pulls`
//! (after `cargo build --release -p keelson-agent`). Options: `--images N`
//! (default 16), `--size BYTES` (default 2 MiB), `--parallelism P`
//! (default 4), `--rounds R` (default 5), `--lookups L` (default 20000).

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cri_proto as cri;
use keelson_agent::admin::client::{call, fetch};
use keelson_agent::images::credentials::Credentials;
use keelson_agent::images::provider;
use keelson_agent::images::pulls::{Phase, PullPolicy, PullSpec, PullStatus};
use keelson_agent::images::secrets::Keyring;
use keelson_agent::store::Store;
use keelson_integration::agent::Agent;
use keelson_integration::client::{Images, clients};
use keelson_integration::containerd::Containerd;
use keelson_integration::image_cache;
use keelson_integration::images::build_distinct;
use keelson_integration::registry::Registry;
use keelson_integration::stats::summarize;

struct Options {
    images: usize,
    size: usize,
    parallelism: usize,
    rounds: usize,
    lookups: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        images: 16,
        size: 2 << 20,
        parallelism: 4,
        rounds: 5,
        lookups: 20_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--images" => o.images = value("--images")?.parse()?,
            "--size" => o.size = value("--size")?.parse()?,
            "--parallelism" => o.parallelism = value("--parallelism")?.parse()?,
            "--rounds" => o.rounds = value("--rounds")?.parse()?,
            "--lookups" => o.lookups = value("--lookups")?.parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    anyhow::ensure!(o.images > 0 && o.parallelism > 0 && o.rounds > 0);
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(o))
}

async fn run(o: Options) -> anyhow::Result<()> {
    let ctrd = Containerd::start(&image_cache())?;
    let registry = Registry::start(None)?;
    let work = tempfile::tempdir()?;
    println!(
        "building {} distinct images of {} KiB…",
        o.images,
        o.size / 1024
    );
    let layouts = build_distinct(work.path(), o.images, o.size)?;
    let mut refs = vec![];
    for (i, layout) in layouts.iter().enumerate() {
        refs.push(registry.push(layout, &format!("distinct:{i}"), &format!("bench/img{i}:1"))?);
    }
    let parallelism = o.parallelism.to_string();
    let agent = Agent::start(&ctrd.socket(), &["--pull-parallelism", &parallelism])?;
    let (_, mut images) = clients(&ctrd.socket()).await?;

    let mut direct = vec![];
    let mut via_agent = vec![];
    for round in 0..o.rounds {
        for agent_turn in [round % 2 == 1, round % 2 == 0] {
            remove_all(&mut images, &refs).await?;
            if agent_turn {
                via_agent.push(pull_via_agent(&agent.admin_socket(), &refs).await?);
            } else {
                direct.push(pull_direct(&images, &refs, o.parallelism).await?);
            }
        }
    }
    remove_all(&mut images, &refs).await?;
    let d = summarize(&mut direct);
    let a = summarize(&mut via_agent);
    println!(
        "\npulls: {} distinct images of {} KiB, parallelism {}, {} rounds",
        o.images,
        o.size / 1024,
        o.parallelism,
        o.rounds
    );
    println!("| target | median | p99 (max) | images/s |");
    println!("|---|---|---|---|");
    for (name, s) in [("direct to containerd", d), ("via agent", a)] {
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.1} |",
            s.p50 / 1e3,
            s.p99 / 1e3,
            o.images as f64 / (s.p50 / 1e6)
        );
    }
    println!(
        "throughput ratio agent/direct: {:.3} (target ≥ 0.95)",
        d.p50 / a.p50
    );

    credential_cache(o.lookups).await
}

/// Removes every image in `refs` (absent ones are fine) and checks that
/// containerd no longer has them.
async fn remove_all(images: &mut Images, refs: &[String]) -> anyhow::Result<()> {
    for r in refs {
        images
            .remove_image(cri::RemoveImageRequest {
                image: Some(cri::ImageSpec {
                    image: r.clone(),
                    ..Default::default()
                }),
            })
            .await?;
    }
    let left = images
        .list_images(cri::ListImagesRequest::default())
        .await?
        .into_inner()
        .images
        .into_iter()
        .filter(|i| i.repo_tags.iter().any(|t| refs.contains(t)))
        .count();
    anyhow::ensure!(left == 0, "{left} images still present after removal");
    Ok(())
}

/// Pulls every ref straight from containerd, at most `parallelism` at once.
async fn pull_direct(
    images: &Images,
    refs: &[String],
    parallelism: usize,
) -> anyhow::Result<Duration> {
    let slots = Arc::new(tokio::sync::Semaphore::new(parallelism));
    let started = Instant::now();
    let mut tasks = vec![];
    for r in refs {
        let mut client = images.clone();
        let slots = slots.clone();
        let image = r.clone();
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire().await?;
            client
                .pull_image(cri::PullImageRequest {
                    image: Some(cri::ImageSpec {
                        image,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}

/// Posts one pull per ref to the agent and waits until all are finished.
/// The time is from the first post to the last completion the agent
/// recorded, so how often this polls does not count (and polls are
/// sparse, to leave the CPUs to the pulls).
async fn pull_via_agent(admin: &Path, refs: &[String]) -> anyhow::Result<Duration> {
    let started = std::time::SystemTime::now();
    let mut ids = HashSet::new();
    for r in refs {
        let mut spec = PullSpec::new(r);
        spec.policy = PullPolicy::Always;
        let (code, body) =
            call(admin, "POST", "/v1/pulls", Some(serde_json::to_vec(&spec)?)).await?;
        anyhow::ensure!(code == 202, "POST /v1/pulls: {code}");
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        ids.insert(v["id"].as_str().context("no id")?.to_string());
    }
    loop {
        let all: Vec<PullStatus> = fetch(admin, "GET", "/v1/pulls", 200).await?;
        let mine: Vec<&PullStatus> = all.iter().filter(|s| ids.contains(&s.id)).collect();
        if let Some(f) = mine.iter().find(|s| s.phase == Phase::Failed) {
            anyhow::bail!("pull {} failed: {}", f.image, f.message);
        }
        if mine.iter().all(|s| s.phase == Phase::Succeeded) {
            let last = mine.iter().filter_map(|s| s.completed_unix_ms).max();
            let last =
                std::time::UNIX_EPOCH + Duration::from_millis(last.context("no completion time")?);
            return Ok(last.duration_since(started)?);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lookup cost with a cached answer and with a plugin exec per lookup.
async fn credential_cache(lookups: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for (name, duration) in [
        ("cached", "\"cacheDuration\":\"1h\","),
        ("uncached", "\"cacheDuration\":\"0s\","),
    ] {
        let plugin = dir.path().join(name);
        std::fs::write(
            &plugin,
            format!(
                "#!/bin/sh\ncat > /dev/null\necho '{{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":\"CredentialProviderResponse\",\"cacheKeyType\":\"Registry\",{duration}\"auth\":{{\"{name}.example\":{{\"username\":\"u\",\"password\":\"p\"}}}}}}'\n"
            ),
        )?;
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::write(
        dir.path().join("config.yaml"),
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n  - name: cached\n    matchImages: [\"cached.example\"]\n    defaultCacheDuration: 1h\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n  - name: uncached\n    matchImages: [\"uncached.example\"]\n    defaultCacheDuration: 1h\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n",
    )?;
    let providers = provider::load(&dir.path().join("config.yaml"), dir.path())?;
    let state = tempfile::tempdir()?;
    let store = Store::open(state.path())?;
    let creds = Credentials::new(providers, Duration::from_secs(10), &store)?;
    let none = Keyring::default();
    let first = creds.lookup("cached.example/app:1", &none).await;
    anyhow::ensure!(
        first.errors.is_empty() && first.candidates.len() == 1,
        "plugin answered {first:?}"
    );
    let mut hits = Vec::with_capacity(lookups);
    for i in 0..lookups {
        let image = format!("cached.example/app{}:1", i % 100);
        let t = Instant::now();
        let l = creds.lookup(&image, &none).await;
        hits.push(t.elapsed());
        anyhow::ensure!(l.candidates.len() == 1);
    }
    let mut misses = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let l = creds.lookup("uncached.example/app:1", &none).await;
        misses.push(t.elapsed());
        anyhow::ensure!(l.candidates.len() == 1, "{l:?}");
    }
    let h = summarize(&mut hits);
    let m = summarize(&mut misses);
    println!("\ncredential provider lookup");
    println!("| path | n | p50 | p99 |");
    println!("|---|---|---|---|");
    println!(
        "| cache hit (sled) | {} | {:.1} µs | {:.1} µs |",
        h.n, h.p50, h.p99
    );
    println!(
        "| plugin exec (cacheDuration 0) | {} | {:.0} µs | {:.0} µs |",
        m.n, m.p50, m.p99
    );
    Ok(())
}
