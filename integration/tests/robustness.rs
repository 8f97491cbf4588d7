//! Misbehaving and unusual callers against the agent in front of a real
//! containerd: garbage, truncated frames, oversized messages and stalled
//! connections do not take the agent down or block others; Python's grpcio
//! works through the agent although it sends an `:authority` HTTP/2 libraries
//! refuse.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use common::*;
use cri_proto as cri;
use keelson_integration::client::raw_call;

#[tokio::test]
async fn garbage_does_not_take_the_agent_down() {
    let node = Node::start();
    let sock = node.agent.socket();
    let mut stalled = vec![];
    for _ in 0..20 {
        stalled.push(UnixStream::connect(&sock).unwrap());
    }
    let mut junk = UnixStream::connect(&sock).unwrap();
    junk.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all")
        .unwrap();
    let mut trunc = UnixStream::connect(&sock).unwrap();
    trunc
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03")
        .unwrap();
    // A gRPC message claiming 12 bytes and sending 3, to a real method.
    let a = raw_call(&sock, "/runtime.v1.RuntimeService/Version", &[0x0a, 0x02])
        .await
        .unwrap();
    let d = raw_call(
        &node.containerd.socket(),
        "/runtime.v1.RuntimeService/Version",
        &[0x0a, 0x02],
    )
    .await
    .unwrap();
    assert_eq!(
        (a.code, &a.message),
        (d.code, &d.message),
        "a malformed message is judged by the runtime"
    );
    // Oversized: containerd refuses > 16 MiB; the agent passes its verdict on.
    let big = vec![b'x'; 17 << 20];
    let mut req = vec![0x0a];
    prost::encoding::encode_varint(big.len() as u64, &mut req);
    req.extend_from_slice(&big);
    let a = raw_call(&sock, "/runtime.v1.RuntimeService/Version", &req)
        .await
        .unwrap();
    let d = raw_call(
        &node.containerd.socket(),
        "/runtime.v1.RuntimeService/Version",
        &req,
    )
    .await
    .unwrap();
    assert_eq!((a.code, &a.message), (d.code, &d.message));
    assert_eq!(a.code, 8, "RESOURCE_EXHAUSTED: {}", a.message);

    // Meanwhile others are served, promptly.
    let mut via = node.via_agent().await;
    let v = tokio::time::timeout(
        Duration::from_secs(5),
        via.runtime.version(cri::VersionRequest::default()),
    )
    .await
    .expect("served while callers stall")
    .unwrap()
    .into_inner();
    assert_eq!(v.runtime_name, "containerd");
    drop(stalled);
    assert!(
        node.agent
            .pid()
            .is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists()),
        "agent alive"
    );
}

fn grpcio(sock: &std::path::Path, authority: Option<&str>) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/grpcio_version.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(sock);
    if let Some(a) = authority {
        cmd.arg(a);
    }
    let out = cmd.output().expect("python3");
    assert!(
        out.status.success(),
        "grpcio client failed (is the grpcio package installed? .ci/run installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn python_grpcio_clients_work_through_the_agent() {
    let node = Node::start();
    let direct = grpcio(&node.containerd.socket(), None);
    assert!(direct.starts_with("ok"), "direct: {direct}");
    // grpcio sends the percent-encoded socket path as `:authority`, which
    // the HTTP/2 stack refuses unless the agent repairs it.
    for _ in 0..3 {
        let via = grpcio(&node.agent.socket(), None);
        assert_eq!(
            via, direct,
            "grpcio through the agent, its default authority"
        );
    }
    let via = grpcio(&node.agent.socket(), Some("localhost"));
    assert_eq!(via, direct, "grpcio through the agent, authority localhost");
}
