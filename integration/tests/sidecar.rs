//! Job sidecar terminator through the agent, with a kubelet-like driver
//! (restart policies applied, PLEG-style resync every 100 ms to keep the
//! tests short).

mod common;

use std::time::Duration;

use common::*;
use cri_proto as cri;
use keelson_integration::kubelet::{
    ContainerSpec, Kubelet, PodSpec, RestartPolicy, Snapshot, SyncedPod,
};

const RELIST: Duration = Duration::from_millis(100);
const EXITED: i32 = cri::ContainerState::ContainerExited as i32;
const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;

/// A sidecar that exits non-zero on SIGTERM, at once.
fn sidecar(name: &str) -> ContainerSpec {
    ContainerSpec::shell(name, "trap 'exit 143' TERM; sleep 600 & wait")
        .env("KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "true")
}

fn job(name: &str, main: &str, policy: &str) -> PodSpec {
    let mut spec = PodSpec::new(
        name,
        vec![
            ContainerSpec::shell("main", main),
            sidecar("proxy"),
            sidecar("logger"),
        ],
    )
    .annotate("keelson.io/restart-policy", policy);
    spec.grace_period_seconds = 2;
    spec
}

fn exited(s: &Snapshot, names: &[&str]) -> bool {
    names
        .iter()
        .all(|n| s.get(*n).is_some_and(|(_, st, _)| *st == EXITED))
}

async fn exit_code(k: &mut Kubelet, s: &Snapshot, name: &str) -> (i32, String) {
    let st = k.status(&s[name].0).await.unwrap();
    (st.exit_code, st.reason)
}

async fn run_job(k: &mut Kubelet, spec: PodSpec, policy: RestartPolicy) -> (SyncedPod, Snapshot) {
    let mut pod = k.start_pod(spec, policy).await.unwrap();
    let snap = k
        .keep_synced(&mut pod, RELIST, Duration::from_secs(30), |s| {
            exited(s, &["main", "proxy", "logger"])
        })
        .await
        .unwrap();
    (pod, snap)
}

#[tokio::test]
async fn sidecars_stop_when_the_main_succeeds_and_report_success() {
    let node = Node::start();
    let mut via = node.via_agent().await;
    let mut direct = node.direct().await;
    let (pod, snap) = run_job(
        &mut via,
        job("job-ok", "sleep 1; exit 0", "Never"),
        RestartPolicy::Never,
    )
    .await;
    assert_eq!(
        exit_code(&mut via, &snap, "main").await,
        (0, "Completed".into())
    );
    for name in ["proxy", "logger"] {
        assert_eq!(
            exit_code(&mut via, &snap, name).await,
            (0, "Completed".into()),
            "{name} through the agent"
        );
        let (real, _) = exit_code(&mut direct, &snap, name).await;
        assert_ne!(
            real, 0,
            "{name} really exited non-zero (SIGTERM); the agent normalises it"
        );
    }
    via.remove_synced(&pod).await.unwrap();
}

#[tokio::test]
async fn never_policy_stops_sidecars_after_a_failed_main_but_on_failure_keeps_them() {
    let node = Node::start();
    let mut via = node.via_agent().await;
    let (pod, snap) = run_job(
        &mut via,
        job("job-never-fail", "sleep 0.5; exit 1", "Never"),
        RestartPolicy::Never,
    )
    .await;
    assert_eq!(
        exit_code(&mut via, &snap, "main").await.0,
        1,
        "the main's failure is kept"
    );
    assert_eq!(exit_code(&mut via, &snap, "proxy").await.0, 0);
    via.remove_synced(&pod).await.unwrap();

    let mut pod = via
        .start_pod(
            job("job-onfailure", "sleep 0.3; exit 1", "OnFailure"),
            RestartPolicy::OnFailure,
        )
        .await
        .unwrap();
    // The main fails and is restarted (OnFailure); its sidecars keep running.
    let snap = via
        .keep_synced(&mut pod, RELIST, Duration::from_secs(30), |s| {
            s.get("main").is_some_and(|(_, _, attempt)| *attempt >= 2)
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for name in ["proxy", "logger"] {
        let st = via.status(&snap[name].0).await.unwrap();
        assert_eq!(
            st.state, RUNNING,
            "{name} still runs under OnFailure after failed mains"
        );
    }
    via.remove_synced(&pod).await.unwrap();
}

/// The main is done before kubelet has started the sidecars after it: a
/// stop sent to a sidecar that is only created does nothing in
/// containerd, so each is stopped once it runs (a CI flake before).
#[tokio::test]
async fn sidecars_started_after_the_main_exited_are_stopped_too() {
    let node = Node::start();
    let mut via = node.via_agent().await;
    for round in 0..3 {
        let (pod, snap) = run_job(
            &mut via,
            job(&format!("job-instant-{round}"), "exit 1", "Never"),
            RestartPolicy::Never,
        )
        .await;
        for name in ["proxy", "logger"] {
            assert_eq!(exit_code(&mut via, &snap, name).await.0, 0, "{name}");
        }
        via.remove_synced(&pod).await.unwrap();
    }
}

#[tokio::test]
async fn a_sidecar_that_exits_by_itself_keeps_its_code() {
    let node = Node::start();
    let mut via = node.via_agent().await;
    let mut spec = PodSpec::new(
        "job-crash",
        vec![
            ContainerSpec::shell("main", "sleep 2; exit 0"),
            ContainerSpec::shell("proxy", "sleep 0.3; exit 5")
                .env("KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "true"),
            sidecar("logger"),
        ],
    )
    .annotate("keelson.io/restart-policy", "Never");
    spec.grace_period_seconds = 2;
    let (pod, snap) = run_job(&mut via, spec, RestartPolicy::Never).await;
    assert_eq!(
        exit_code(&mut via, &snap, "proxy").await.0,
        5,
        "crashed by itself"
    );
    assert_eq!(
        exit_code(&mut via, &snap, "logger").await.0,
        0,
        "stopped by the agent"
    );
    via.remove_synced(&pod).await.unwrap();
}

#[tokio::test]
async fn normalisation_survives_an_agent_sigkill() {
    let mut node = Node::start();
    let mut via = node.via_agent().await;
    let (pod, snap) = run_job(
        &mut via,
        job("job-kill", "sleep 0.5; exit 0", "Never"),
        RestartPolicy::Never,
    )
    .await;
    let runtime = node.containerd.socket();
    node.agent.kill_and_restart(&runtime, &[]).unwrap();
    let mut again = node.via_agent().await;
    for name in ["proxy", "logger"] {
        assert_eq!(
            exit_code(&mut again, &snap, name).await,
            (0, "Completed".into()),
            "{name} after the agent was killed"
        );
    }
    again.remove_synced(&pod).await.unwrap();
}
