//! Container launch priority through the agent, with a kubelet-like driver
//! (sequential create + start in spec order, PLEG-style resync every 1 s).

mod common;

use std::time::Duration;

use common::*;
use cri_proto as cri;
use keelson_integration::kubelet::{
    ContainerSpec, Kubelet, PodSpec, RestartPolicy, SyncedPod, all_running,
};

/// Kubelet's PLEG relist period.
const RELIST: Duration = Duration::from_secs(1);

fn long(name: &str) -> ContainerSpec {
    ContainerSpec::shell(name, "exec sleep 600")
}

/// Spec order main, sidecar; the stamp says the sidecar starts first.
fn main_after_sidecar(name: &str) -> PodSpec {
    PodSpec::new(
        name,
        vec![
            long("main"),
            long("sidecar").env("KRUISE_CONTAINER_PRIORITY", "1"),
        ],
    )
    .annotate(
        "keelson.io/container-priorities",
        r#"{"main":0,"sidecar":1}"#,
    )
}

/// Runs the pod until all `names` run; returns their start times.
async fn run_all(
    k: &mut Kubelet,
    spec: PodSpec,
    names: &[&str],
) -> (SyncedPod, Vec<(String, i64)>) {
    let mut pod = k.start_pod(spec, RestartPolicy::Always).await.unwrap();
    let snap = k
        .keep_synced(&mut pod, RELIST, Duration::from_secs(40), |s| {
            all_running(s, names)
        })
        .await
        .unwrap();
    let mut started = vec![];
    for n in names {
        let st = k.status(&snap[*n].0).await.unwrap();
        started.push((n.to_string(), st.started_at));
    }
    started.sort_by_key(|(_, t)| *t);
    (pod, started)
}

fn order(started: &[(String, i64)]) -> Vec<&str> {
    started.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn stamped_priorities_override_spec_order() {
    let node = Node::start();
    let mut k = node.via_agent().await;
    let spec = main_after_sidecar("two-level");
    let (pod, started) = run_all(&mut k, spec, &["main", "sidecar"]).await;
    assert_eq!(order(&started), ["sidecar", "main"]);
    let refused = pod.errors("main");
    assert!(!refused.is_empty(), "the first start of main was refused");
    assert_eq!(refused[0].code(), tonic::Code::FailedPrecondition);
    assert!(
        refused[0].message().contains("\"sidecar\"")
            && refused[0].message().contains("not created yet"),
        "{}",
        refused[0].message()
    );
    k.remove_synced(&pod).await.unwrap();
}

#[tokio::test]
async fn three_levels_in_both_spec_orders() {
    let node = Node::start();
    let mut k = node.via_agent().await;
    let stamp = r#"{"low":-1,"mid":0,"high":1}"#;
    for (name, names) in [
        ("three-reverse", ["low", "mid", "high"]),
        ("three-forward", ["high", "mid", "low"]),
    ] {
        let containers = names
            .iter()
            .map(|n| {
                let p = match *n {
                    "low" => "-1",
                    "mid" => "0",
                    _ => "1",
                };
                long(n).env("KRUISE_CONTAINER_PRIORITY", p)
            })
            .collect();
        let spec =
            PodSpec::new(name, containers).annotate("keelson.io/container-priorities", stamp);
        let (pod, started) = run_all(&mut k, spec, &names).await;
        assert_eq!(order(&started), ["high", "mid", "low"], "{name}");
        k.remove_synced(&pod).await.unwrap();
    }
}

#[tokio::test]
async fn env_priorities_in_spec_order_start_at_once() {
    let node = Node::start();
    let mut k = node.via_agent().await;
    let spec = PodSpec::new(
        "env-forward",
        vec![
            long("sidecar").env("KRUISE_CONTAINER_PRIORITY", "10"),
            long("main"),
        ],
    );
    let (pod, started) = run_all(&mut k, spec, &["sidecar", "main"]).await;
    assert_eq!(order(&started), ["sidecar", "main"]);
    assert!(
        pod.history.iter().all(|r| r.error.is_none()),
        "no refusal needed: {:?}",
        pod.history
    );
    assert_eq!(pod.history.len(), 2);
    k.remove_synced(&pod).await.unwrap();
}

#[tokio::test]
async fn ordered_starts_in_spec_order_and_equal_priorities_are_untouched() {
    let node = Node::start();
    let mut k = node.via_agent().await;
    let spec = PodSpec::new("ordered", vec![long("a"), long("b"), long("c")])
        .annotate("apps.kruise.io/container-launch-priority", "Ordered");
    let (pod, started) = run_all(&mut k, spec, &["a", "b", "c"]).await;
    assert_eq!(order(&started), ["a", "b", "c"]);
    k.remove_synced(&pod).await.unwrap();

    let spec = PodSpec::new(
        "equal",
        vec![
            long("x").env("KRUISE_CONTAINER_PRIORITY", "3"),
            long("y").env("KRUISE_CONTAINER_PRIORITY", "3"),
        ],
    );
    let (pod, _) = run_all(&mut k, spec, &["x", "y"]).await;
    assert!(pod.history.iter().all(|r| r.error.is_none()));
    k.remove_synced(&pod).await.unwrap();
}

#[tokio::test]
async fn bad_values_count_as_zero_and_never_stick_a_pod() {
    let node = Node::start();
    let mut k = node.via_agent().await;
    let spec = PodSpec::new(
        "bad-values",
        vec![
            long("a").env("KRUISE_CONTAINER_PRIORITY", "very-high"),
            long("b").env("KRUISE_CONTAINER_PRIORITY", "99999999999"),
        ],
    )
    .annotate("keelson.io/container-priorities", "{broken json");
    let (pod, _) = run_all(&mut k, spec, &["a", "b"]).await;
    assert!(
        pod.history.iter().all(|r| r.error.is_none()),
        "{:?}",
        pod.history
    );
    let log = node.agent.log_text();
    assert!(
        log.contains("bad launch priority") && log.contains("malformed priority stamp"),
        "logged:\n{log}"
    );
    k.remove_synced(&pod).await.unwrap();
}

#[tokio::test]
async fn a_higher_priority_container_that_never_starts_is_reported_and_contained() {
    let node = Node::start();
    let mut k = node.via_agent().await;
    let broken = ContainerSpec {
        image: "localhost/keelson/absent:none".into(),
        ..long("sidecar")
    };
    let spec = PodSpec::new("stuck", vec![long("main"), broken]).annotate(
        "keelson.io/container-priorities",
        r#"{"main":0,"sidecar":1}"#,
    );
    let mut pod = k.start_pod(spec, RestartPolicy::Always).await.unwrap();
    // Another pod on the node is not affected.
    let mut other = node.via_agent().await;
    let (free, _) = run_all(
        &mut other,
        PodSpec::new("free", vec![long("solo")]),
        &["solo"],
    )
    .await;
    // A few more syncs: main keeps being refused at once, never held.
    let t = std::time::Instant::now();
    for _ in 0..3 {
        k.sync(&mut pod).await.unwrap();
    }
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "refusals are immediate, not holds"
    );
    let errors = pod.errors("main");
    assert_eq!(errors.len(), 4);
    assert!(
        errors.iter().all(|e| e.message().contains("\"sidecar\"")),
        "{errors:?}"
    );
    let snap = k.snapshot(&pod).await.unwrap();
    assert_ne!(snap["main"].1, cri::ContainerState::ContainerRunning as i32);
    k.remove_synced(&pod).await.unwrap();
    other.remove_synced(&free).await.unwrap();
}

#[tokio::test]
async fn a_start_arriving_while_the_higher_one_is_starting_is_held_then_released() {
    let node = Node::start();
    let mut k = node.via_agent().await;
    let spec = main_after_sidecar("held");
    let (sandbox, ids) = k.create_unstarted(&spec).await.unwrap();
    // Two callers: the sidecar's start is on its way when main's arrives.
    let mut other = k.runtime.clone();
    let sidecar_id = ids["sidecar"].clone();
    let first = tokio::spawn(async move {
        other
            .start_container(cri::StartContainerRequest {
                container_id: sidecar_id,
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    k.runtime
        .start_container(cri::StartContainerRequest {
            container_id: ids["main"].clone(),
        })
        .await
        .expect("main is held, then released once the sidecar runs");
    first.await.unwrap().unwrap();
    let sidecar = k.status(&ids["sidecar"]).await.unwrap();
    let main = k.status(&ids["main"]).await.unwrap();
    assert!(
        main.started_at > sidecar.started_at,
        "main started after the sidecar"
    );
    let log = node.agent.log_text();
    assert!(
        log.contains("launch gate holding start") && log.contains("launch gate released"),
        "{log}"
    );
    k.remove_sandbox(&sandbox).await.unwrap();
}
