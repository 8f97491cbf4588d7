//! Pod lifecycles through the agent give the same results as straight to
//! containerd: exit codes, reasons, logs, ExecSync, and byte-identical
//! answers to read-only calls on the same objects.

mod common;

use common::*;
use cri_proto as cri;
use keelson_integration::client::raw_call;
use keelson_integration::kubelet::{ContainerSpec, Kubelet, PodSpec, log_messages};
use prost::Message;

#[derive(Debug, PartialEq)]
struct Outcome {
    created: Vec<(String, bool, Option<String>)>,
    exits: Vec<(String, i32, String)>,
    logs: Vec<Vec<String>>,
    exec: (Vec<u8>, Vec<u8>, i32),
    exec_fail: String,
    running_state: i32,
}

fn job(name: &str) -> PodSpec {
    PodSpec::new(
        name,
        vec![
            ContainerSpec::shell("ok", "echo out; echo err >&2; exit 0").env("GREETING", "hi"),
            ContainerSpec::shell("fails", "echo \"$GREETING\"; exit 7").env("GREETING", "bye"),
            ContainerSpec::shell("runs", "echo ready; exec sleep 600"),
        ],
    )
}

async fn run(k: &mut Kubelet, spec: PodSpec) -> (Outcome, keelson_integration::kubelet::Pod) {
    let pod = k.run_pod(spec).await.expect("run pod");
    let created = pod
        .containers
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.id.is_some(),
                c.error.as_ref().map(|e| e.message().to_string()),
            )
        })
        .collect();
    let mut exits = vec![];
    let mut logs = vec![];
    for name in ["ok", "fails"] {
        let st = k.wait_exited(pod.id(name).unwrap(), WAIT).await.unwrap();
        exits.push((name.to_string(), st.exit_code, st.reason));
        // stdout and stderr are separate pipes: their interleaving is racy.
        let mut lines = log_messages(&k.log_of(&pod, name, 0).unwrap());
        lines.sort();
        logs.push(lines);
    }
    let runs = pod.id("runs").unwrap().to_string();
    let exec = k
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: runs.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo in; echo oops >&2; exit 3".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let exec_fail = k
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: runs.clone(),
            cmd: vec!["/no/such/binary".into()],
            timeout: 10,
        })
        .await
        .map(|r| format!("exit {}", r.into_inner().exit_code))
        .unwrap_or_else(|e| {
            format!(
                "{:?}: {}",
                e.code(),
                keelson_integration::mask_ids(e.message())
            )
        });
    let running_state = k.status(&runs).await.unwrap().state;
    (
        Outcome {
            created,
            exits,
            logs,
            exec: (exec.stdout, exec.stderr, exec.exit_code),
            exec_fail,
            running_state,
        },
        pod,
    )
}

/// Asks the agent and containerd the same question; the answers must
/// decode to equal messages (after `normalize`, which sorts lists the
/// runtime returns in map order) and have the same size.
async fn same<M: Message + Default + PartialEq + std::fmt::Debug>(
    agent: &std::path::Path,
    direct: &std::path::Path,
    method: &str,
    req: impl Message,
    normalize: fn(&mut M),
) {
    let path = if method.starts_with('/') {
        method.to_string()
    } else {
        format!("/runtime.v1.RuntimeService/{method}")
    };
    let req = req.encode_to_vec();
    let a = raw_call(agent, &path, &req).await.unwrap();
    let d = raw_call(direct, &path, &req).await.unwrap();
    assert_eq!((a.code, &a.message), (0, &String::new()), "{path}");
    assert_eq!(
        (a.code, &a.message, a.body.len()),
        (d.code, &d.message, d.body.len()),
        "{path}"
    );
    let (mut ma, mut md) = (
        M::decode(&a.body[..]).unwrap(),
        M::decode(&d.body[..]).unwrap(),
    );
    normalize(&mut ma);
    normalize(&mut md);
    assert!(ma == md, "{path}: answers differ");
}

#[tokio::test]
async fn pod_lifecycle_through_the_agent_matches_direct() {
    let node = Node::start();
    let mut via = node.via_agent().await;
    let mut direct = node.direct().await;
    let (a, pod_a) = run(&mut via, job("job-via-agent")).await;
    let (b, pod_b) = run(&mut direct, job("job-direct")).await;
    assert_eq!(a, b);
    assert_eq!(
        a.exits,
        vec![
            ("ok".into(), 0, "Completed".into()),
            ("fails".into(), 7, "Error".into())
        ]
    );
    assert_eq!(
        a.logs,
        vec![
            vec!["err".to_string(), "out".to_string()],
            vec!["bye".to_string()]
        ]
    );
    assert_eq!(a.exec, (b"in\n".to_vec(), b"oops\n".to_vec(), 3));
    assert_eq!(
        a.running_state,
        cri::ContainerState::ContainerRunning as i32
    );

    // The same read-only question about the same object gets the same answer
    // (compared decoded: Go encodes protobuf maps in random order).
    let (sa, sd) = (node.agent.socket(), node.containerd.socket());
    let cid = pod_a.id("ok").unwrap().to_string();
    same::<cri::VersionResponse>(
        &sa,
        &sd,
        "Version",
        cri::VersionRequest {
            version: "v1".into(),
        },
        |_| {},
    )
    .await;
    same::<cri::ContainerStatusResponse>(
        &sa,
        &sd,
        "ContainerStatus",
        cri::ContainerStatusRequest {
            container_id: cid.clone(),
            verbose: true,
        },
        |_| {},
    )
    .await;
    same::<cri::PodSandboxStatusResponse>(
        &sa,
        &sd,
        "PodSandboxStatus",
        cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_a.sandbox_id.clone(),
            verbose: false,
        },
        |_| {},
    )
    .await;
    same::<cri::ListContainersResponse>(
        &sa,
        &sd,
        "ListContainers",
        cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod_b.sandbox_id.clone(),
                ..Default::default()
            }),
        },
        |r| r.containers.sort_by(|a, b| a.id.cmp(&b.id)),
    )
    .await;
    same::<cri::ListPodSandboxResponse>(
        &sa,
        &sd,
        "ListPodSandbox",
        cri::ListPodSandboxRequest::default(),
        |r| r.items.sort_by(|a, b| a.id.cmp(&b.id)),
    )
    .await;
    same::<cri::ListImagesResponse>(
        &sa,
        &sd,
        "/runtime.v1.ImageService/ListImages",
        cri::ListImagesRequest::default(),
        |r| r.images.sort_by(|a, b| a.id.cmp(&b.id)),
    )
    .await;
    same::<cri::ImageStatusResponse>(
        &sa,
        &sd,
        "/runtime.v1.ImageService/ImageStatus",
        cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: keelson_integration::images::BUSYBOX.into(),
                ..Default::default()
            }),
            verbose: false,
        },
        |_| {},
    )
    .await;

    // Stop and remove through the agent, check through containerd.
    via.remove_pod(&pod_a).await.unwrap();
    direct.remove_pod(&pod_b).await.unwrap();
    let left = direct
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn isolated_network_pod_through_the_agent() {
    let node = Node::start();
    let net = match keelson_integration::cni::Bridge::install(&node.containerd) {
        Ok(n) => n,
        Err(e) => panic!("CNI bridge set-up failed: {e:#}"),
    };
    let mut via = node.via_agent().await;
    net.wait_ready(&mut via).await.expect("CNI network ready");
    let mut spec = PodSpec::new(
        "isolated",
        vec![ContainerSpec::shell(
            "main",
            "ip -4 -o addr show eth0; exec sleep 600",
        )],
    );
    spec.host_network = false;
    let pod = via.run_pod(spec).await.unwrap();
    assert!(
        pod.containers[0].error.is_none(),
        "{:?}",
        pod.containers[0].error
    );
    let status = via
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.sandbox_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let ip = status.network.unwrap().ip;
    assert!(
        net.contains(&ip),
        "pod ip {ip:?} from the test bridge's range"
    );
    let seen = tokio::time::timeout(WAIT, async {
        loop {
            let log = via.log_of(&pod, "main", 0).unwrap_or_default();
            if log.contains(&ip) {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("container saw its address");
    assert!(seen.contains("eth0"));
    via.remove_pod(&pod).await.unwrap();
}
