use keelson_integration::{agent::Agent, containerd::Containerd, image_cache, kubelet::*};
use std::time::Duration;

#[tokio::test]
async fn smoke() -> anyhow::Result<()> {
    let ctrd = Containerd::start(&image_cache())?;
    let agent = Agent::start(&ctrd.socket(), &[])?;
    let mut k = Kubelet::connect(&agent.socket(), &ctrd.dir().join("pods")).await?;
    let pod = k
        .run_pod(PodSpec::new(
            "smoke",
            vec![ContainerSpec::shell("main", "echo hello; exit 3")],
        ))
        .await?;
    println!("{pod:?}");
    let st = k
        .wait_exited(pod.id("main").unwrap(), Duration::from_secs(20))
        .await?;
    println!("{st:?}");
    println!("{}", k.log_of(&pod, "main", 0)?);
    k.remove_pod(&pod).await?;
    Ok(())
}
