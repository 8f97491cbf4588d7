//! Every rpc of runtime.v1 (v0.36.3), including the ones containerd 1.6 does
//! not implement and one no CRI version has, answers through the agent as
//! it does straight from containerd: same status code, same message, same
//! reply (decoded; lists sorted, volatile values such as stats and stream
//! URLs' tokens compared by shape).

mod common;

use common::*;
use cri_proto as cri;
use keelson_integration::client::{RawReply, raw_call};
use keelson_integration::images::BUSYBOX;
use keelson_integration::kubelet::{ContainerSpec, PodSpec};
use keelson_integration::mask_ids;
use prost::Message;

/// How two replies are compared.
enum Check {
    /// Same code, message and size; decoded equal after `norm`.
    Equal(fn(&[u8], &[u8]) -> bool),
    /// Same code and message (volatile bodies, e.g. stats): `shape` must
    /// hold for both bodies and agree.
    Shape(fn(&[u8]) -> String),
}

fn decoded<M: Message + Default + PartialEq>(a: &[u8], b: &[u8], norm: fn(&mut M)) -> bool {
    let (Ok(mut x), Ok(mut y)) = (M::decode(a), M::decode(b)) else {
        return false;
    };
    norm(&mut x);
    norm(&mut y);
    x == y
}

fn url_shape(url: &str) -> String {
    url.rsplit_once('/')
        .map(|(p, _)| p.to_string())
        .unwrap_or_default()
}

struct Case {
    path: String,
    request: Vec<u8>,
    check: Check,
}

fn rt(method: &str, req: impl Message, check: Check) -> Case {
    Case {
        path: format!("/runtime.v1.RuntimeService/{method}"),
        request: req.encode_to_vec(),
        check,
    }
}

fn img(method: &str, req: impl Message, check: Check) -> Case {
    Case {
        path: format!("/runtime.v1.ImageService/{method}"),
        request: req.encode_to_vec(),
        check,
    }
}

fn nothing(_: &[u8], _: &[u8]) -> bool {
    true
}

#[tokio::test]
async fn every_rpc_answers_as_containerd_does() {
    let node = Node::start();
    let mut via = node.via_agent().await;
    let pod = via.run_pod(sleeper("every-rpc")).await.unwrap();
    let sid = pod.sandbox_id.clone();
    let cid = pod.id("main").unwrap().to_string();
    let missing = "0".repeat(64);
    let bad_container = cri::CreateContainerRequest {
        pod_sandbox_id: sid.clone(),
        config: Some(via.container_config(
            &pod.spec,
            &ContainerSpec {
                image: "localhost/keelson/absent:none".into(),
                ..ContainerSpec::shell("bad", "true")
            },
            0,
        )),
        sandbox_config: Some(via.sandbox_config(&pod.spec)),
    };
    let cases = vec![
        rt(
            "Version",
            cri::VersionRequest {
                version: "v1".into(),
            },
            Check::Equal(|a, b| decoded::<cri::VersionResponse>(a, b, |_| {})),
        ),
        rt(
            "RunPodSandbox",
            cri::RunPodSandboxRequest::default(),
            Check::Equal(nothing),
        ),
        rt(
            "StopPodSandbox",
            cri::StopPodSandboxRequest {
                pod_sandbox_id: missing.clone(),
            },
            Check::Equal(nothing),
        ),
        rt(
            "RemovePodSandbox",
            cri::RemovePodSandboxRequest {
                pod_sandbox_id: missing.clone(),
            },
            Check::Equal(nothing),
        ),
        rt(
            "PodSandboxStatus",
            cri::PodSandboxStatusRequest {
                pod_sandbox_id: sid.clone(),
                verbose: true,
            },
            Check::Equal(|a, b| decoded::<cri::PodSandboxStatusResponse>(a, b, |_| {})),
        ),
        rt(
            "PodSandboxStatus",
            cri::PodSandboxStatusRequest {
                pod_sandbox_id: missing.clone(),
                verbose: false,
            },
            Check::Equal(nothing),
        ),
        rt(
            "ListPodSandbox",
            cri::ListPodSandboxRequest::default(),
            Check::Equal(|a, b| {
                decoded::<cri::ListPodSandboxResponse>(a, b, |r| {
                    r.items.sort_by(|x, y| x.id.cmp(&y.id))
                })
            }),
        ),
        rt(
            "StreamPodSandboxes",
            cri::StreamPodSandboxesRequest::default(),
            Check::Equal(nothing),
        ),
        rt(
            "CreateContainer",
            cri::CreateContainerRequest::default(),
            Check::Equal(nothing),
        ),
        rt("CreateContainer", bad_container, Check::Equal(nothing)),
        rt(
            "StartContainer",
            cri::StartContainerRequest {
                container_id: missing.clone(),
            },
            Check::Equal(nothing),
        ),
        rt(
            "StopContainer",
            cri::StopContainerRequest {
                container_id: missing.clone(),
                timeout: 1,
            },
            Check::Equal(nothing),
        ),
        rt(
            "RemoveContainer",
            cri::RemoveContainerRequest {
                container_id: missing.clone(),
            },
            Check::Equal(nothing),
        ),
        rt(
            "ListContainers",
            cri::ListContainersRequest::default(),
            Check::Equal(|a, b| {
                decoded::<cri::ListContainersResponse>(a, b, |r| {
                    r.containers.sort_by(|x, y| x.id.cmp(&y.id))
                })
            }),
        ),
        rt(
            "StreamContainers",
            cri::StreamContainersRequest::default(),
            Check::Equal(nothing),
        ),
        rt(
            "ContainerStatus",
            cri::ContainerStatusRequest {
                container_id: cid.clone(),
                verbose: false,
            },
            Check::Equal(|a, b| decoded::<cri::ContainerStatusResponse>(a, b, |_| {})),
        ),
        rt(
            "ContainerStatus",
            cri::ContainerStatusRequest {
                container_id: missing.clone(),
                verbose: false,
            },
            Check::Equal(nothing),
        ),
        rt(
            "UpdateContainerResources",
            cri::UpdateContainerResourcesRequest {
                container_id: cid.clone(),
                ..Default::default()
            },
            Check::Equal(nothing),
        ),
        rt(
            "ReopenContainerLog",
            cri::ReopenContainerLogRequest {
                container_id: cid.clone(),
            },
            Check::Equal(nothing),
        ),
        rt(
            "ExecSync",
            cri::ExecSyncRequest {
                container_id: cid.clone(),
                cmd: vec!["echo".into(), "hi".into()],
                timeout: 10,
            },
            Check::Equal(|a, b| decoded::<cri::ExecSyncResponse>(a, b, |_| {})),
        ),
        rt(
            "Exec",
            cri::ExecRequest {
                container_id: cid.clone(),
                cmd: vec!["true".into()],
                stdout: true,
                ..Default::default()
            },
            Check::Shape(|b| {
                url_shape(
                    &cri::ExecResponse::decode(b)
                        .map(|r| r.url)
                        .unwrap_or_default(),
                )
            }),
        ),
        rt(
            "Attach",
            cri::AttachRequest {
                container_id: cid.clone(),
                stdout: true,
                ..Default::default()
            },
            Check::Shape(|b| {
                url_shape(
                    &cri::AttachResponse::decode(b)
                        .map(|r| r.url)
                        .unwrap_or_default(),
                )
            }),
        ),
        rt(
            "PortForward",
            cri::PortForwardRequest {
                pod_sandbox_id: sid.clone(),
                port: vec![80],
            },
            Check::Shape(|b| {
                url_shape(
                    &cri::PortForwardResponse::decode(b)
                        .map(|r| r.url)
                        .unwrap_or_default(),
                )
            }),
        ),
        rt(
            "ContainerStats",
            cri::ContainerStatsRequest {
                container_id: cid.clone(),
            },
            Check::Shape(|b| {
                let s = cri::ContainerStatsResponse::decode(b)
                    .ok()
                    .and_then(|r| r.stats);
                format!("{:?}", s.and_then(|s| s.attributes).map(|a| a.id))
            }),
        ),
        rt(
            "ListContainerStats",
            cri::ListContainerStatsRequest::default(),
            Check::Shape(|b| {
                let mut ids: Vec<String> = cri::ListContainerStatsResponse::decode(b)
                    .map(|r| {
                        r.stats
                            .into_iter()
                            .filter_map(|s| s.attributes.map(|a| a.id))
                            .collect()
                    })
                    .unwrap_or_default();
                ids.sort();
                ids.join(",")
            }),
        ),
        rt(
            "StreamContainerStats",
            cri::StreamContainerStatsRequest::default(),
            Check::Equal(nothing),
        ),
        rt(
            "PodSandboxStats",
            cri::PodSandboxStatsRequest {
                pod_sandbox_id: sid.clone(),
            },
            Check::Shape(|b| {
                let s = cri::PodSandboxStatsResponse::decode(b)
                    .ok()
                    .and_then(|r| r.stats);
                format!("{:?}", s.and_then(|s| s.attributes).map(|a| a.id))
            }),
        ),
        rt(
            "ListPodSandboxStats",
            cri::ListPodSandboxStatsRequest::default(),
            Check::Shape(|b| {
                let mut ids: Vec<String> = cri::ListPodSandboxStatsResponse::decode(b)
                    .map(|r| {
                        r.stats
                            .into_iter()
                            .filter_map(|s| s.attributes.map(|a| a.id))
                            .collect()
                    })
                    .unwrap_or_default();
                ids.sort();
                ids.join(",")
            }),
        ),
        rt(
            "StreamPodSandboxStats",
            cri::StreamPodSandboxStatsRequest::default(),
            Check::Equal(nothing),
        ),
        rt(
            "UpdateRuntimeConfig",
            cri::UpdateRuntimeConfigRequest::default(),
            Check::Equal(nothing),
        ),
        rt(
            "Status",
            cri::StatusRequest { verbose: false },
            Check::Equal(|a, b| decoded::<cri::StatusResponse>(a, b, |_| {})),
        ),
        rt(
            "CheckpointContainer",
            cri::CheckpointContainerRequest {
                container_id: cid.clone(),
                ..Default::default()
            },
            Check::Equal(nothing),
        ),
        rt(
            "GetContainerEvents",
            cri::GetEventsRequest::default(),
            Check::Equal(nothing),
        ),
        rt(
            "ListMetricDescriptors",
            cri::ListMetricDescriptorsRequest::default(),
            Check::Equal(nothing),
        ),
        rt(
            "ListPodSandboxMetrics",
            cri::ListPodSandboxMetricsRequest::default(),
            Check::Equal(nothing),
        ),
        rt(
            "StreamPodSandboxMetrics",
            cri::StreamPodSandboxMetricsRequest::default(),
            Check::Equal(nothing),
        ),
        rt(
            "RuntimeConfig",
            cri::RuntimeConfigRequest::default(),
            Check::Equal(nothing),
        ),
        rt(
            "UpdatePodSandboxResources",
            cri::UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: sid.clone(),
                ..Default::default()
            },
            Check::Equal(nothing),
        ),
        rt(
            "NoSuchMethod",
            cri::VersionRequest::default(),
            Check::Equal(nothing),
        ),
        img(
            "ListImages",
            cri::ListImagesRequest::default(),
            Check::Equal(|a, b| {
                decoded::<cri::ListImagesResponse>(a, b, |r| {
                    r.images.sort_by(|x, y| x.id.cmp(&y.id))
                })
            }),
        ),
        img(
            "StreamImages",
            cri::StreamImagesRequest::default(),
            Check::Equal(nothing),
        ),
        img(
            "ImageStatus",
            cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: BUSYBOX.into(),
                    ..Default::default()
                }),
                verbose: true,
            },
            Check::Equal(|a, b| decoded::<cri::ImageStatusResponse>(a, b, |_| {})),
        ),
        img(
            "PullImage",
            cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: "127.0.0.1:1/keelson/none:x".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Check::Equal(nothing),
        ),
        img(
            "RemoveImage",
            cri::RemoveImageRequest {
                image: Some(cri::ImageSpec {
                    image: "localhost/keelson/absent:none".into(),
                    ..Default::default()
                }),
            },
            Check::Equal(nothing),
        ),
        img(
            "ImageFsInfo",
            cri::ImageFsInfoRequest::default(),
            Check::Shape(|b| {
                let r = cri::ImageFsInfoResponse::decode(b).unwrap_or_default();
                format!(
                    "{:?}",
                    r.image_filesystems
                        .iter()
                        .map(|f| f.fs_id.as_ref().map(|i| i.mountpoint.clone()))
                        .collect::<Vec<_>>()
                )
            }),
        ),
    ];

    let (sa, sd) = (node.agent.socket(), node.containerd.socket());
    let mut report = vec![];
    let mut failures = vec![];
    for case in &cases {
        let a = raw_call(&sa, &case.path, &case.request).await.unwrap();
        let d = raw_call(&sd, &case.path, &case.request).await.unwrap();
        report.push(format!("{:>4} {}", a.code, case.path));
        let same_status = |a: &RawReply, d: &RawReply| {
            a.code == d.code && mask_ids(&a.message) == mask_ids(&d.message)
        };
        let ok = same_status(&a, &d)
            && match &case.check {
                Check::Equal(f) => a.body.len() == d.body.len() && f(&a.body, &d.body),
                Check::Shape(f) => f(&a.body) == f(&d.body),
            };
        if !ok {
            failures.push(format!(
                "{}: agent {} {:?} / direct {} {:?}",
                case.path, a.code, a.message, d.code, d.message
            ));
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{failures:#?}");
    let implemented = cases
        .iter()
        .map(|c| &c.path)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(
        implemented, 42,
        "41 runtime.v1 rpcs plus one unknown method"
    );
    via.remove_pod(&pod).await.unwrap();
}

#[tokio::test]
async fn images_pull_list_remove_through_the_agent() {
    let node = Node::start();
    let registry = keelson_integration::registry::Registry::start(None).unwrap();
    let images = node.containerd.images();
    let reference = registry
        .push(&images.layout("busybox"), BUSYBOX, "keelson/busybox:pull")
        .unwrap();
    let mut via = node.via_agent().await;
    let mut direct = node.direct().await;
    let spec = || {
        Some(cri::ImageSpec {
            image: reference.clone(),
            ..Default::default()
        })
    };
    let pulled = via
        .images
        .pull_image(cri::PullImageRequest {
            image: spec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    assert!(pulled.starts_with("sha256:"), "{pulled}");
    let status_direct = direct
        .images
        .image_status(cri::ImageStatusRequest {
            image: spec(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status_direct.image.as_ref().map(|i| i.id.clone()),
        Some(pulled.clone())
    );
    assert!(status_direct.image.unwrap().repo_tags.contains(&reference));

    via.images
        .remove_image(cri::RemoveImageRequest { image: spec() })
        .await
        .unwrap();
    let gone = direct
        .images
        .image_status(cri::ImageStatusRequest {
            image: spec(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(gone.image.is_none(), "removed through the agent");
    let again = direct
        .images
        .pull_image(cri::PullImageRequest {
            image: spec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    assert_eq!(again, pulled, "direct pull gives the same image");
    let listed = |r: cri::ListImagesResponse| {
        let mut v: Vec<(String, Vec<String>)> =
            r.images.into_iter().map(|i| (i.id, i.repo_tags)).collect();
        v.sort();
        v
    };
    let a = listed(
        via.images
            .list_images(cri::ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner(),
    );
    let d = listed(
        direct
            .images
            .list_images(cri::ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(a, d);
    assert!(a.iter().any(|(_, tags)| tags.contains(&reference)));
}

#[tokio::test]
async fn registry_auth_errors_pass_through_unchanged() {
    let node = Node::start();
    let creds = keelson_integration::registry::Credentials {
        username: "keelson".into(),
        password: "s3cret".into(),
    };
    let registry = keelson_integration::registry::Registry::start(Some(creds.clone())).unwrap();
    let reference = registry
        .push(
            &node.containerd.images().layout("busybox"),
            BUSYBOX,
            "private/busybox:1",
        )
        .unwrap();
    let spec = Some(cri::ImageSpec {
        image: reference.clone(),
        ..Default::default()
    });
    let anonymous = cri::PullImageRequest {
        image: spec.clone(),
        ..Default::default()
    };
    let a = raw_call(
        &node.agent.socket(),
        "/runtime.v1.ImageService/PullImage",
        &anonymous.encode_to_vec(),
    )
    .await
    .unwrap();
    let d = raw_call(
        &node.containerd.socket(),
        "/runtime.v1.ImageService/PullImage",
        &anonymous.encode_to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(
        a.code, 2,
        "containerd reports 401 as UNKNOWN: {}",
        a.message
    );
    assert!(a.message.contains("401 Unauthorized"), "{}", a.message);
    assert_eq!((a.code, a.message), (d.code, d.message));

    let mut via = node.via_agent().await;
    let with_auth = cri::PullImageRequest {
        image: spec,
        auth: Some(cri::AuthConfig {
            username: creds.username,
            password: creds.password,
            ..Default::default()
        }),
        sandbox_config: None,
    };
    let pulled = via
        .images
        .pull_image(with_auth)
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    assert!(pulled.starts_with("sha256:"));
}

#[tokio::test]
async fn bad_container_in_a_pod_is_reported_like_kubelet_sees_it_direct() {
    let node = Node::start();
    let mut via = node.via_agent().await;
    let spec = PodSpec::new(
        "mixed",
        vec![
            ContainerSpec {
                image: "localhost/keelson/absent:none".into(),
                ..ContainerSpec::shell("missing-image", "true")
            },
            ContainerSpec::shell("fine", "exec sleep 600"),
        ],
    );
    let pod = via.run_pod(spec).await.unwrap();
    let err = pod.containers[0].error.as_ref().expect("creation fails");
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
    assert!(
        pod.containers[1].error.is_none(),
        "driver went on to the next container"
    );
    let st = via.status(pod.id("fine").unwrap()).await.unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
}
