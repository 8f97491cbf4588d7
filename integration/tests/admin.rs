//! `keelson-agent ctl` against a running agent: pulls through the admin
//! API from a real registry, listing, status, JSON output, a refused bad
//! reference, and the socket's root-only mode.

mod common;

use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use common::*;
use keelson_integration::images::BUSYBOX;
use keelson_integration::registry::{Credentials, Registry};

#[tokio::test]
async fn ctl_pulls_through_the_admin_api() {
    let node = Node::start();
    let mode = std::fs::metadata(node.agent.admin_socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "admin socket is root-only");
    let registry = Registry::start(Some(Credentials {
        username: "keelson".into(),
        password: "s3cret".into(),
    }))
    .unwrap();
    let image = registry
        .push(
            &node.containerd.images().layout("busybox"),
            BUSYBOX,
            "ctl/busybox:1",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("keelson:s3cret");
    std::fs::write(
        &secret,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();

    let (ok, out, err) = ctl(
        &node,
        &["pull", &image, "--secret", secret.to_str().unwrap()],
    );
    assert!(ok, "stdout {out}\nstderr {err}");
    assert!(
        out.contains("Succeeded") && out.contains("sha256:"),
        "{out}"
    );
    assert!(
        err.contains("Pulling") || err.contains("Succeeded"),
        "progress on stderr: {err}"
    );
    assert!(!out.contains("s3cret") && !err.contains("s3cret"));

    let (ok, out, _) = ctl(&node, &["-o", "json", "pulls"]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["phase"], "Succeeded");
    // `-o` after the subcommand, as kubectl users type it.
    let (ok, after, err) = ctl(&node, &["pulls", "-o", "json"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&after).unwrap(),
        list
    );

    let (ok, out, _) = ctl(&node, &["-o", "json", "pull-status", &id]);
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["image"], image);
    assert_eq!(status["attempts"], 1);

    let (ok, _, err) = ctl(&node, &["pull", "Bad Ref::x"]);
    assert!(!ok);
    assert!(err.contains("invalid image reference"), "{err}");
    let (ok, _, err) = ctl(&node, &["pull-status", "pull-nope"]);
    assert!(!ok && err.contains("no pull pull-nope"), "{err}");

    // The metrics: CRI calls through the proxy by method (a kubelet-like
    // client's calls), the pull by phase.
    let mut kubelet = node.via_agent().await;
    let pod = kubelet.run_pod(sleeper("metrics")).await.unwrap();
    kubelet.remove_pod(&pod).await.unwrap();
    let (ok, text, err) = ctl(&node, &["metrics"]);
    assert!(ok, "{err}");
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    for method in ["RunPodSandbox", "CreateContainer", "StartContainer"] {
        let n = value(&format!(
            "keelson_agent_cri_call_duration_seconds_count{{method=\"/runtime.v1.RuntimeService/{method}\"}}"
        ));
        assert!(n >= 1.0, "{method}: {n} calls counted");
    }
    assert_eq!(value("keelson_agent_pulls{phase=\"Succeeded\"}"), 1.0);
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("keelson_agent_hook_faults_total{")),
        "no hook failed: {text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test]
async fn sigkill_mid_queue_loses_nothing_and_repeats_no_finished_pull() {
    let mut node = Node::start();
    let registry = Registry::start(None).unwrap();
    let layout = node.containerd.images().layout("busybox");
    let repos: Vec<String> = (0..6).map(|i| format!("queue{i}/busybox")).collect();
    for r in &repos {
        registry.push(&layout, BUSYBOX, &format!("{r}:1")).unwrap();
    }
    // One pull at a time, so most of them are still queued when the agent dies.
    let runtime = node.containerd.socket();
    node.agent
        .kill_and_restart(&runtime, &["--pull-parallelism", "1"])
        .unwrap();
    let mut ids = vec![];
    for r in &repos {
        let (ok, out, err) = ctl(
            &node,
            &["pull", &format!("{}/{r}:1", registry.host()), "--no-wait"],
        );
        assert!(ok, "{err}");
        ids.push(out.trim().to_string());
    }
    node.agent
        .kill_and_restart(&runtime, &["--pull-parallelism", "1"])
        .unwrap();
    let mut finished = 0;
    for id in &ids {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (ok, out, err) = ctl(&node, &["-o", "json", "pull-status", id]);
            assert!(ok, "pull {id} survived the kill: {err}");
            let s: serde_json::Value = serde_json::from_str(&out).unwrap();
            if s["phase"] == "Succeeded" {
                finished += 1;
                break;
            }
            assert_ne!(s["phase"], "Failed", "{out}");
            assert!(
                std::time::Instant::now() < deadline,
                "pull {id} did not finish: {out}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    assert_eq!(finished, repos.len(), "every accepted pull finished");
    // A pull that had finished before the kill is not pulled again: each
    // repository's manifest was resolved by one pull, except at most the
    // one the kill cut short, which may run again. (containerd already
    // holds the blobs, so a pull shows up as manifest HEAD/GET requests.)
    let log = registry.log_text();
    let per_repo: Vec<usize> = repos
        .iter()
        .map(|r| {
            log.lines()
                .filter(|l| {
                    l.starts_with("127.0.0.1 - -")
                        && l.contains(&format!("/v2/{r}/manifests/"))
                        && (l.contains("\"GET ") || l.contains("\"HEAD "))
                })
                .count()
        })
        .collect();
    let once = *per_repo.iter().min().unwrap();
    assert!(
        once > 0,
        "{per_repo:?}\n{}",
        log.lines()
            .filter(|l| l.contains("manifests"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        per_repo.iter().filter(|n| **n > once).count() <= 1,
        "at most the interrupted pull repeats: {per_repo:?}"
    );
}

/// A "registry" that accepts connections and never answers: a pull from it
/// stays in flight until cancelled or timed out.
struct SilentRegistry {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentRegistry {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = vec![];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentRegistry {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn phase_of(node: &Node, id: &str) -> serde_json::Value {
    let (ok, out, err) = ctl(node, &["-o", "json", "pull-status", id]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn ctl_cancel_stops_waiting_and_running_pulls_for_good() {
    let mut node = Node::start();
    let silent = SilentRegistry::start();
    let registry = Registry::start(None).unwrap();
    let image = registry
        .push(
            &node.containerd.images().layout("busybox"),
            BUSYBOX,
            "cancel/busybox:1",
        )
        .unwrap();
    let runtime = node.containerd.socket();
    node.agent
        .kill_and_restart(&runtime, &["--pull-parallelism", "1"])
        .unwrap();

    // The hanging pull takes the only slot; the next one waits behind it.
    let stuck = format!("{}/stuck/busybox:1", silent.addr);
    let (ok, out, err) = ctl(&node, &["pull", &stuck, "--no-wait"]);
    assert!(ok, "{err}");
    let running = out.trim().to_string();
    let (ok, out, err) = ctl(&node, &["pull", &image, "--no-wait"]);
    assert!(ok, "{err}");
    let waiting = out.trim().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while phase_of(&node, &running)["phase"] != "Pulling" {
        assert!(
            std::time::Instant::now() < deadline,
            "never started pulling"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(phase_of(&node, &waiting)["phase"], "Waiting");

    let (ok, out, err) = ctl(&node, &["cancel", &waiting]);
    assert!(ok, "{err}");
    assert!(out.contains("Failed") && out.contains("cancelled"), "{out}");
    let (ok, out, err) = ctl(&node, &["-o", "json", "cancel", &running]);
    assert!(ok, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["phase"], "Failed");
    assert_eq!(s["message"], "cancelled");
    assert!(s["completedUnixMs"].as_u64().is_some(), "{out}");

    // The slot is free again: a new pull gets it and finishes.
    let (ok, out, err) = ctl(&node, &["pull", &image]);
    assert!(ok, "{out}\n{err}");
    // Cancelled pulls stay cancelled across a crash: nothing resumes them.
    node.agent
        .kill_and_restart(&runtime, &["--pull-parallelism", "1"])
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    for id in [&running, &waiting] {
        let s = phase_of(&node, id);
        assert_eq!(s["phase"], "Failed", "{s}");
        assert_eq!(s["message"], "cancelled", "{s}");
    }
    let (ok, _, err) = ctl(&node, &["cancel", "pull-nope"]);
    assert!(!ok && err.contains("pull-nope"), "{err}");
}
