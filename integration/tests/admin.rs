//! `keelson-agent ctl` against a running agent: pulls through the admin
//! API from a real registry, listing, status, JSON output, a refused bad
//! reference, and the socket's root-only mode.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use base64::Engine;
use common::*;
use keelson_integration::agent::binary;
use keelson_integration::images::BUSYBOX;
use keelson_integration::registry::{Credentials, Registry};

fn ctl(node: &Node, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary().unwrap())
        .arg("ctl")
        .arg("--admin-socket")
        .arg(node.agent.admin_socket())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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
