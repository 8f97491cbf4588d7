//! Leader election on the real cluster (the controller runs as a
//! Deployment of two replicas): the leading replica's process is paused
//! (SIGSTOP) past the lease; the other takes over; the paused one, resumed,
//! steps down without sending a single write (its reconcilers' client is
//! fenced by the renew deadline, checked at every request) and does not
//! take the Lease back.

use std::time::{Duration, Instant};

use keelson_integration::kube::{self, Cluster};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const NS: &str = "keelson-system";

fn lease(c: &Cluster) -> Value {
    c.get_json(&["-n", NS, "lease", "keelson-controller"])
        .unwrap()
}

fn holder(l: &Value) -> String {
    l["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The host pid of the controller process of pod `name` (its environment
/// carries `POD_NAME=<name>`).
fn controller_pid(name: &str) -> Option<i32> {
    let want = format!("POD_NAME={name}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if !String::from_utf8_lossy(argv0).ends_with("keelson-controller") {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

fn metric(c: &Cluster, pod: &str, name: &str) -> f64 {
    let text = c
        .kubectl(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{NS}/pods/{pod}:8080/proxy/metrics"),
        ])
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {pod}'s metrics:\n{text}"))
}

const SENT: &str = "keelson_controller_reconciler_writes_total{result=\"sent\"}";
const REFUSED: &str = "keelson_controller_reconciler_writes_total{result=\"refused\"}";

/// Resumes the process when dropped (a failed assertion must not leave
/// the replica paused for the other tests' cluster teardown).
struct Paused(i32);

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

#[test]
fn a_paused_leader_is_replaced_and_steps_down_without_writing() {
    let c = kube::shared().expect("test cluster");
    c.wait_for("NodeImage of the node", Duration::from_secs(120), |c| {
        Ok(c.get_json(&["nodeimage", kube::NODE]).ok().map(|_| ()))
    })
    .unwrap();
    let first = c
        .wait_for("a leader", Duration::from_secs(60), |c| {
            let l = lease(c);
            let h = holder(&l);
            Ok((!h.is_empty() && controller_pid(&h).is_some()).then_some(l))
        })
        .unwrap();
    let old = holder(&first);
    let transitions = first["spec"]["leaseTransitions"].as_i64().unwrap_or(0);
    let pid = controller_pid(&old).unwrap();
    // The cluster is quiet: the leader's reconcilers write nothing now.
    let sent_before = metric(&c, &old, SENT);
    assert_eq!(metric(&c, &old, "keelson_controller_leader"), 1.0);

    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let paused_at = Instant::now();
    let paused = Paused(pid);
    // Work for the reconcilers while it sleeps: the node's labels go to
    // its NodeImage (the new leader's job; the paused one sees the event
    // when it wakes).
    c.kubectl(&["label", "node", kube::NODE, "keelson-test/leader=moved"])
        .unwrap();
    let taken = c
        .wait_for(
            "the other replica takes over",
            Duration::from_secs(40),
            |c| {
                let l = lease(c);
                Ok((!holder(&l).is_empty() && holder(&l) != old).then_some(l))
            },
        )
        .unwrap();
    let taken_after = paused_at.elapsed();
    let new = holder(&taken);
    assert_eq!(
        taken["spec"]["leaseTransitions"].as_i64(),
        Some(transitions + 1),
        "{taken}"
    );
    assert!(
        taken_after >= Duration::from_secs(14),
        "taken over after {taken_after:?}: before the lease ran out"
    );
    c.wait_for(
        "the new leader copies the node label",
        Duration::from_secs(30),
        |c| {
            let ni = c.get_json(&["nodeimage", kube::NODE])?;
            Ok((ni["metadata"]["labels"]["keelson-test/leader"] == "moved").then_some(()))
        },
    )
    .unwrap();
    // One more change for the resumed replica to react to at once.
    c.kubectl(&[
        "label",
        "node",
        kube::NODE,
        "keelson-test/leader=again",
        "--overwrite",
    ])
    .unwrap();
    drop(paused);
    eprintln!(
        "leader {old} paused for {:?}; {new} took over after {taken_after:?}",
        paused_at.elapsed()
    );

    let logs = c
        .wait_for(
            "the resumed replica steps down",
            Duration::from_secs(30),
            |c| {
                let logs = c.kubectl(&["-n", NS, "logs", &old])?;
                Ok(logs.contains("no longer leading").then_some(logs))
            },
        )
        .unwrap();
    assert_eq!(metric(&c, &old, "keelson_controller_leader"), 0.0);
    let sent_after = metric(&c, &old, SENT);
    let refused = metric(&c, &old, REFUSED);
    eprintln!(
        "resumed replica: writes sent before pause {sent_before}, after {sent_after}; refused by the fence {refused}"
    );
    assert_eq!(
        sent_after, sent_before,
        "the resumed replica wrote after losing the lease; its log:\n{logs}"
    );
    // And it did not take the Lease back.
    std::thread::sleep(Duration::from_secs(5));
    let now = lease(&c);
    assert_eq!(holder(&now), new, "{now}");
    assert_eq!(
        now["spec"]["leaseTransitions"].as_i64(),
        Some(transitions + 1),
        "{now}"
    );
    c.wait_for(
        "the new leader copies the second label",
        Duration::from_secs(30),
        |c| {
            let ni = c.get_json(&["nodeimage", kube::NODE])?;
            Ok((ni["metadata"]["labels"]["keelson-test/leader"] == "again").then_some(()))
        },
    )
    .unwrap();
    let _ = c.kubectl(&["label", "node", kube::NODE, "keelson-test/leader-"]);
}
