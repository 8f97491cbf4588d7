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
