//! Try Keelson on this machine: starts a private containerd (its own root,
//! state and sockets under a temp dir) and the agent in front of it, runs a
//! pod through the agent the way kubelet would, shows what the runtime
//! reports through the agent, then waits for Ctrl-C (or `--no-hold`) and
//! removes everything it started.
//!
//! Run: `bash integration/scripts/demo` (installs packages, builds, runs).

use std::time::Duration;

use anyhow::Context;
use cri_proto as cri;
use keelson_integration::agent::Agent;
use keelson_integration::containerd::Containerd;
use keelson_integration::image_cache;
use keelson_integration::kubelet::{ContainerSpec, Kubelet, PodSpec, log_messages};

fn main() -> anyhow::Result<()> {
    let hold = !std::env::args().any(|a| a == "--no-hold");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(demo(hold))
}

async fn demo(hold: bool) -> anyhow::Result<()> {
    println!("starting a private containerd (images built offline on first run)...");
    let ctrd = Containerd::start(&image_cache())?;
    let agent = Agent::start(&ctrd.socket(), &[])?;
    println!("containerd: {}", ctrd.socket().display());
    println!(
        "agent:      {}  (kubelet would use unix://{})",
        agent.socket().display(),
        agent.socket().display()
    );

    let mut k = Kubelet::connect(&agent.socket(), ctrd.pod_env()).await?;
    let v = k
        .runtime
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await?
        .into_inner();
    println!(
        "\nVersion through the agent: {} {} (CRI {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    );

    let spec = PodSpec::new(
        "hello-keelson",
        vec![ContainerSpec::shell(
            "hello",
            "echo \"hello from $(hostname) through keelson-agent\"; exec sleep 3600",
        )],
    );
    let pod = k.run_pod(spec).await.context("running the demo pod")?;
    if let Some(err) = &pod.containers[0].error {
        anyhow::bail!("container failed to start: {err}");
    }
    let id = pod.id("hello").context("container id")?.to_string();
    let status = k.status(&id).await?;
    println!("\npod sandbox {}", &pod.sandbox_id[..12]);
    println!(
        "container {} {:?} image={}",
        &id[..12],
        cri::ContainerState::try_from(status.state)
            .unwrap_or(cri::ContainerState::ContainerUnknown),
        status.image.map(|i| i.image).unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for line in log_messages(&k.log_of(&pod, "hello", 0)?) {
        println!("log: {line}");
    }
    let exec = k
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["uname".into(), "-sr".into()],
            timeout: 5,
        })
        .await?
        .into_inner();
    print!("exec uname -sr: {}", String::from_utf8_lossy(&exec.stdout));
    let listed = k
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await?
        .into_inner();
    println!(
        "containers listed through the agent: {}",
        listed.containers.len()
    );

    if hold {
        println!("\nrunning; press Ctrl-C to stop and clean up");
        tokio::signal::ctrl_c().await?;
    }
    println!("cleaning up");
    k.remove_pod(&pod).await?;
    drop(agent);
    drop(ctrd);
    Ok(())
}
