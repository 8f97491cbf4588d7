//! In-place restarts against a real containerd: the agent stops containers
//! (ContainerRecreateRequest semantics), a kubelet-like pod worker
//! recreates them (restartPolicy Always), the agent sees the new instances.

mod common;

use std::time::{Duration, Instant};

use common::*;
use cri_proto as cri;
use keelson_agent::admin::client::{call, fetch};
use keelson_agent::restart::spec::{Phase, RestartStatus};
use keelson_integration::kubelet::{ContainerSpec, PodSpec, RestartPolicy, Snapshot};
use keelson_integration::pod_worker::PodWorker;
use serde_json::json;

/// Relist period of the test pod workers (kubelet's PLEG: 1 s; shorter
/// here to keep the suite quick).
const RELIST: Duration = Duration::from_millis(100);

/// A container that exits promptly on SIGTERM and says when it started.
fn prompt(name: &str) -> ContainerSpec {
    ContainerSpec::shell(
        name,
        "echo started; trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done",
    )
}

async fn start(node: &Node, spec: PodSpec) -> PodWorker {
    let names: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
    let mut k = node.via_agent().await;
    let pod = k.start_pod(spec, RestartPolicy::Always).await.unwrap();
    let w = PodWorker::spawn(k, pod, RELIST);
    w.wait_for(WAIT, |s| {
        names.iter().all(|n| {
            s.get(n)
                .is_some_and(|(_, st, _)| *st == cri::ContainerState::ContainerRunning as i32)
        })
    })
    .await
    .unwrap();
    w
}

/// The pod after the worker has relisted a few times (the agent may see
/// a new instance before the worker's last relist does).
async fn settled(w: &PodWorker) -> Snapshot {
    tokio::time::sleep(RELIST * 4).await;
    w.snapshot()
}

fn attempt(s: &Snapshot, name: &str) -> u32 {
    s[name].2
}

async fn submit(node: &Node, body: serde_json::Value) -> Result<String, String> {
    let (code, reply) = call(
        &node.agent.admin_socket(),
        "POST",
        "/v1/restarts",
        Some(body.to_string().into_bytes()),
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    if code == 202 {
        Ok(v["id"].as_str().unwrap().to_string())
    } else {
        Err(format!("{code}: {}", v["error"]))
    }
}

async fn status(node: &Node, id: &str) -> RestartStatus {
    fetch(
        &node.agent.admin_socket(),
        "GET",
        &format!("/v1/restarts/{id}"),
        200,
    )
    .await
    .unwrap()
}

async fn done(node: &Node, id: &str, timeout: Duration) -> RestartStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(node, id).await;
        if s.phase == Phase::Completed {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "restart {id} not done: {s:#?}\nagent log:\n{}",
            node.agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn phases(s: &RestartStatus) -> Vec<(String, Phase, bool)> {
    s.container_recreate_states
        .iter()
        .map(|c| (c.name.clone(), c.phase, c.is_killed))
        .collect()
}

fn pod_ref(w: &PodWorker) -> serde_json::Value {
    json!({"namespace": w.namespace, "name": w.name})
}

async fn started_at(node: &Node, id: &str) -> i64 {
    let mut k = node.direct().await;
    k.status(id).await.unwrap().started_at
}

#[tokio::test]
async fn single_then_ordered_restarts() {
    let node = Node::start();
    let w = start(
        &node,
        PodSpec::new("ordered", vec![prompt("a"), prompt("b"), prompt("c")]),
    )
    .await;

    let id = submit(
        &node,
        json!({"pod": pod_ref(&w), "containers": [{"name": "a"}]}),
    )
    .await
    .unwrap();
    let s = done(&node, &id, WAIT).await;
    assert_eq!(phases(&s), vec![("a".into(), Phase::Succeeded, true)]);
    assert_eq!(s.message, "1 of 1 containers recreated");
    let snap = settled(&w).await;
    assert_eq!(
        (
            attempt(&snap, "a"),
            attempt(&snap, "b"),
            attempt(&snap, "c")
        ),
        (1, 0, 0)
    );

    let id = submit(
        &node,
        json!({"pod": pod_ref(&w), "containers": [{"name": "b"}, {"name": "c"}],
               "strategy": {"orderedRecreate": true, "minStartedSeconds": 1}}),
    )
    .await
    .unwrap();
    let s = done(&node, &id, WAIT).await;
    assert_eq!(
        phases(&s),
        vec![
            ("b".into(), Phase::Succeeded, true),
            ("c".into(), Phase::Succeeded, true)
        ]
    );
    let snap = settled(&w).await;
    assert_eq!((attempt(&snap, "b"), attempt(&snap, "c")), (1, 1));
    // c was stopped only after the new b had run for minStartedSeconds.
    let b_started = started_at(&node, &snap["b"].0).await;
    let c_started = started_at(&node, &snap["c"].0).await;
    assert!(
        c_started - b_started >= 1_000_000_000,
        "b started {b_started}, c {c_started}"
    );
    w.stop().await.unwrap();
}

#[tokio::test]
async fn already_recreated_counts_unless_forced() {
    let node = Node::start();
    let w = start(&node, PodSpec::new("force", vec![prompt("a")])).await;
    let old = w.snapshot()["a"].0.clone();
    // Something else restarts the container after the request was made
    // (the request carries the instance it saw).
    let mut k = node.direct().await;
    k.runtime
        .stop_container(cri::StopContainerRequest {
            container_id: old.clone(),
            timeout: 5,
        })
        .await
        .unwrap();
    w.wait_for(WAIT, |s| {
        s["a"].0 != old && s["a"].1 == cri::ContainerState::ContainerRunning as i32
    })
    .await
    .unwrap();
    let context = json!({"containerID": format!("containerd://{old}"), "restartCount": 0});

    let id = submit(
        &node,
        json!({"pod": pod_ref(&w), "containers": [{"name": "a", "statusContext": context}]}),
    )
    .await
    .unwrap();
    let s = done(&node, &id, WAIT).await;
    assert_eq!(phases(&s), vec![("a".into(), Phase::Succeeded, false)]);
    assert_eq!(attempt(&settled(&w).await, "a"), 1, "not stopped again");

    let id = submit(
        &node,
        json!({"pod": pod_ref(&w), "containers": [{"name": "a", "statusContext": context}],
               "strategy": {"forceRecreate": true}}),
    )
    .await
    .unwrap();
    let s = done(&node, &id, WAIT).await;
    assert_eq!(phases(&s), vec![("a".into(), Phase::Succeeded, true)]);
    assert_eq!(
        attempt(&settled(&w).await, "a"),
        2,
        "forced: stopped once more"
    );
    w.stop().await.unwrap();
}

#[tokio::test]
async fn failure_policy_fail_stops_ignore_goes_on() {
    let node = Node::start();
    let mut spec = PodSpec::new("stubborn", vec![prompt("a"), prompt("b")]);
    spec.runtime_handler = "unstoppable".into();
    let w = start(&node, spec).await;
    let a = w.snapshot()["a"].0.clone();
    node.containerd.refuse_kill(&a, true).unwrap();

    let id = submit(
        &node,
        json!({"pod": pod_ref(&w), "containers": [{"name": "a"}, {"name": "b"}],
               "strategy": {"terminationGracePeriodSeconds": 2}}),
    )
    .await
    .unwrap();
    let s = done(&node, &id, WAIT).await;
    assert_eq!(
        phases(&s),
        vec![
            ("a".into(), Phase::Failed, true),
            ("b".into(), Phase::Pending, false)
        ]
    );
    let msg = &s.container_recreate_states[0].message;
    assert!(msg.starts_with("kill container error:"), "{msg}");
    assert!(s.message.starts_with("container a failed"), "{}", s.message);
    assert_eq!(attempt(&settled(&w).await, "b"), 0, "Fail: b untouched");

    let id = submit(
        &node,
        json!({"pod": pod_ref(&w), "containers": [{"name": "a"}, {"name": "b"}],
               "strategy": {"failurePolicy": "Ignore", "terminationGracePeriodSeconds": 2}}),
    )
    .await
    .unwrap();
    let s = done(&node, &id, WAIT).await;
    assert_eq!(
        phases(&s),
        vec![
            ("a".into(), Phase::Failed, true),
            ("b".into(), Phase::Succeeded, true)
        ]
    );
    assert!(s.message.contains("failed: a"), "{}", s.message);
    assert_eq!(attempt(&settled(&w).await, "b"), 1, "Ignore: b recreated");
    node.containerd.refuse_kill(&a, false).unwrap();
    w.stop().await.unwrap();
}

#[tokio::test]
async fn the_deadline_fails_what_is_unfinished() {
    let node = Node::start();
    let w = start(&node, PodSpec::new("deadline", vec![prompt("a")])).await;
    let began = Instant::now();
    // Recreated at once, but it would need 60 s of running to count.
    let id = submit(
        &node,
        json!({"pod": pod_ref(&w), "containers": [{"name": "a"}],
               "strategy": {"minStartedSeconds": 60}, "activeDeadlineSeconds": 2}),
    )
    .await
    .unwrap();
    let s = done(&node, &id, WAIT).await;
    assert!(began.elapsed() >= Duration::from_secs(2));
    assert_eq!(s.message, "activeDeadlineSeconds exceeded");
    assert_eq!(phases(&s), vec![("a".into(), Phase::Failed, true)]);
    assert_eq!(
        s.container_recreate_states[0].message,
        "activeDeadlineSeconds exceeded"
    );
    w.stop().await.unwrap();
}

#[tokio::test]
async fn pre_stop_runs_and_a_hanging_one_is_bounded_by_the_grace() {
    let node = Node::start();
    let w = start(
        &node,
        PodSpec::new("prestop", vec![prompt("a"), prompt("b")]),
    )
    .await;
    let hook = json!({"exec": {"command": ["/bin/sh", "-c", "echo prestop-ran > /proc/1/fd/1"]}});
    let id = submit(
        &node,
        json!({"pod": pod_ref(&w), "containers": [{"name": "a", "preStop": hook}]}),
    )
    .await
    .unwrap();
    done(&node, &id, WAIT).await;
    let (k, pod) = w.stop().await.unwrap();
    let log = std::fs::read_to_string(k.pod_log_dir(&pod.spec).join("a").join("0.log")).unwrap();
    let ran = log.find("prestop-ran").expect("preStop output in the log");
    let term = log.find("got-term").expect("then SIGTERM");
    assert!(ran < term, "{log}");
    let w = PodWorker::spawn(k, pod, RELIST);

    let hangs = json!({"exec": {"command": ["/bin/sh", "-c", "sleep 600"]}});
    let began = Instant::now();
    let id = submit(
        &node,
        json!({"pod": pod_ref(&w), "containers": [{"name": "b", "preStop": hangs}],
               "strategy": {"terminationGracePeriodSeconds": 3}}),
    )
    .await
    .unwrap();
    let s = done(&node, &id, WAIT).await;
    assert_eq!(phases(&s), vec![("b".into(), Phase::Succeeded, true)]);
    // 3 s grace for the hook, then kubelet's 2 s floor for the stop.
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "took {:?}",
        began.elapsed()
    );
    w.stop().await.unwrap();
}

#[tokio::test]
async fn queued_requests_on_one_pod_run_in_turn_and_many_pods_at_once() {
    let node = Node::start();
    let w = start(&node, PodSpec::new("queue", vec![prompt("a"), prompt("b")])).await;
    let first = submit(
        &node,
        json!({"pod": pod_ref(&w), "containers": [{"name": "a"}]}),
    )
    .await
    .unwrap();
    let second = submit(
        &node,
        json!({"pod": pod_ref(&w), "containers": [{"name": "b"}]}),
    )
    .await
    .unwrap();
    let s2 = done(&node, &second, WAIT).await;
    let s1 = done(&node, &first, WAIT).await;
    assert_eq!(phases(&s1), vec![("a".into(), Phase::Succeeded, true)]);
    assert_eq!(phases(&s2), vec![("b".into(), Phase::Succeeded, true)]);
    assert!(
        s2.started_unix_ms.unwrap() >= s1.completion_unix_ms.unwrap(),
        "{s1:?}\n{s2:?}"
    );
    w.stop().await.unwrap();

    // 20 pods, one request each, all at once.
    let mut workers = vec![];
    for i in 0..20 {
        workers.push(start(&node, PodSpec::new(&format!("many-{i}"), vec![prompt("a")])).await);
    }
    let mut ids = vec![];
    for w in &workers {
        ids.push(
            submit(
                &node,
                json!({"pod": pod_ref(w), "containers": [{"name": "a"}]}),
            )
            .await
            .unwrap(),
        );
    }
    for id in &ids {
        let s = done(&node, id, Duration::from_secs(60)).await;
        assert_eq!(phases(&s), vec![("a".into(), Phase::Succeeded, true)]);
    }
    for w in workers {
        assert_eq!(attempt(&settled(&w).await, "a"), 1);
        w.stop().await.unwrap();
    }
}

#[tokio::test]
async fn sigkill_between_two_ordered_stops_is_exactly_once() {
    let mut node = Node::start();
    let w = start(&node, PodSpec::new("crash", vec![prompt("a"), prompt("b")])).await;
    let id = submit(
        &node,
        json!({"pod": pod_ref(&w), "containers": [{"name": "a"}, {"name": "b"}],
               "strategy": {"orderedRecreate": true, "minStartedSeconds": 3}}),
    )
    .await
    .unwrap();
    // a has been stopped and recreated; b waits for a's 3 s.
    w.wait_for(WAIT, |s| {
        s["a"].2 == 1 && s["a"].1 == cri::ContainerState::ContainerRunning as i32
    })
    .await
    .unwrap();
    let mid = status(&node, &id).await;
    assert_eq!(
        mid.container_recreate_states[1].phase,
        Phase::Pending,
        "{mid:?}"
    );
    let runtime = node.containerd.socket();
    node.agent.kill_and_restart(&runtime, &[]).unwrap();

    let s = done(&node, &id, WAIT).await;
    assert_eq!(
        phases(&s),
        vec![
            ("a".into(), Phase::Succeeded, true),
            ("b".into(), Phase::Succeeded, true)
        ]
    );
    let snap = settled(&w).await;
    assert_eq!((attempt(&snap, "a"), attempt(&snap, "b")), (1, 1));
    let stops: Vec<String> = node
        .agent
        .log_text()
        .lines()
        .filter(|l| l.contains("stopping container for restart"))
        .map(str::to_string)
        .collect();
    assert_eq!(stops.len(), 2, "one stop per container: {stops:#?}");
    assert!(
        node.agent
            .log_text()
            .contains("resuming unfinished restart")
    );
    w.stop().await.unwrap();
}

/// A request's `key` is its identity: submitted again after the agent
/// was killed (-9) — what a ContainerRecreateRequest sync does when it
/// crashed before noting the id — it answers with the first request's id
/// and restarts nothing again, `forceRecreate` or not; another key is
/// another restart.
#[tokio::test]
async fn a_keyed_request_submitted_again_after_a_crash_restarts_once() {
    let mut node = Node::start();
    let w = start(&node, PodSpec::new("keyed", vec![prompt("a")])).await;
    let body = |key: &str| {
        json!({"key": key, "pod": pod_ref(&w), "containers": [{"name": "a"}],
               "strategy": {"forceRecreate": true}})
    };
    let id = submit(&node, body("crr/1d2c")).await.unwrap();
    assert_eq!(
        submit(&node, body("crr/1d2c")).await.unwrap(),
        id,
        "same key, same request"
    );
    let s = done(&node, &id, WAIT).await;
    assert_eq!(phases(&s), vec![("a".into(), Phase::Succeeded, true)]);
    let runtime = node.containerd.socket();
    node.agent.kill_and_restart(&runtime, &[]).unwrap();
    assert_eq!(submit(&node, body("crr/1d2c")).await.unwrap(), id);
    assert_eq!(status(&node, &id).await.phase, Phase::Completed);
    let snap = settled(&w).await;
    assert_eq!(attempt(&snap, "a"), 1, "restarted once");
    let other = submit(&node, body("crr/9f00")).await.unwrap();
    assert_ne!(other, id);
    done(&node, &other, WAIT).await;
    assert_eq!(attempt(&settled(&w).await, "a"), 2, "another key restarts");
    let bad = submit(&node, body("no spaces")).await.unwrap_err();
    assert!(bad.starts_with("400") && bad.contains("key"), "{bad}");
    w.stop().await.unwrap();
}

// ctl blocks its thread; the pod worker needs another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_annotation_change_restarts_only_the_containers_reading_it() {
    let node = Node::start();
    let app = ContainerSpec::shell(
        "app",
        "echo version=$VERSION; trap 'exit 0' TERM; while true; do sleep 0.1; done",
    )
    .env_from("VERSION", "metadata.annotations['app.io/version']");
    let spec = PodSpec::new("envpod", vec![app, prompt("side")]).annotate("app.io/version", "v1");
    let w = start(&node, spec).await;

    let ctl = |args: &[&str]| ctl(&node, args);
    // An unrelated key restarts nothing.
    let (ok, out, err) = ctl(&["set-metadata", "default/envpod", "--annotation", "other=x"]);
    assert!(ok && out.contains("nothing restarted"), "{out}\n{err}");

    // The API server's pod gets the new value (new containers read it),
    // and the agent is told.
    w.annotate("app.io/version", Some("v2"));
    let (ok, out, err) = ctl(&[
        "set-metadata",
        "default/envpod",
        "--annotation",
        "app.io/version=v2",
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("Completed") && out.contains("app"), "{out}");
    let snap = settled(&w).await;
    assert_eq!((attempt(&snap, "app"), attempt(&snap, "side")), (1, 0));
    // The same change again: app already runs with v2.
    let (ok, out, _) = ctl(&[
        "-o",
        "json",
        "set-metadata",
        "default/envpod",
        "--annotation",
        "app.io/version=v2",
    ]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["restart"], serde_json::Value::Null, "{out}");
    let (k, pod) = w.stop().await.unwrap();
    let log = std::fs::read_to_string(k.pod_log_dir(&pod.spec).join("app").join("1.log")).unwrap();
    assert!(log.contains("version=v2"), "{log}");
}

// ctl blocks its thread; the pod worker needs another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_restart_reports_and_refuses_bad_requests() {
    let node = Node::start();
    let w = start(&node, PodSpec::new("ctlpod", vec![prompt("a")])).await;
    let run = |args: &[&str]| ctl(&node, args);
    let (ok, out, err) = run(&["restart", "default/ctlpod", "-c", "a", "--grace", "5"]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("Completed") && out.contains("Succeeded"),
        "{out}"
    );
    assert!(err.contains("Completed after"), "progress on stderr: {err}");
    let (ok, out, _) = run(&["-o", "json", "restarts"]);
    assert!(ok);
    let all: Vec<RestartStatus> = serde_json::from_str(&out).unwrap();
    assert_eq!(all.len(), 1);
    let (ok, out, _) = run(&["-o", "json", "restart-status", &all[0].id]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<RestartStatus>(&out).unwrap(), all[0]);

    for (args, want) in [
        (vec!["restart", "default/nope", "-c", "a"], "no ready pod"),
        (
            vec!["restart", "default/ctlpod", "-c", "zz"],
            "no container named \"zz\"",
        ),
        (vec!["restart", "ctlpod", "-c", "a"], "NAMESPACE/NAME"),
        (
            vec!["restart", "default/ctlpod", "-c", "a,a"],
            "named twice",
        ),
        (
            vec!["restart-status", "restart-nope"],
            "no restart restart-nope",
        ),
    ] {
        let (ok, _, err) = run(&args);
        assert!(!ok && err.contains(want), "{args:?}: {err}");
    }
    w.stop().await.unwrap();
}
