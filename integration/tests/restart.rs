//! Agent restarts under socket activation: the socket is owned by the
//! service manager (`keelson_integration::activated`: `systemd-socket-activate`
//! and a restart loop standing in for systemd's `Restart=always`), so a
//! caller that keeps calling through SIGTERM restarts sees no failed call.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use cri_proto as cri;
use keelson_integration::activated::ActivatedAgent;
use keelson_integration::client::{clients, transparently};
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_under_socket_activation_fail_no_call() {
    let node = Node::start();
    let mut via = node.via_agent().await;
    let pod = via.run_pod(sleeper("restart")).await.unwrap();
    let cid = pod.id("main").unwrap().to_string();

    let mut agent = ActivatedAgent::start(&node.containerd.socket(), &[]).unwrap();
    let sock = agent.socket();

    let running = Arc::new(AtomicBool::new(true));
    let (ok, failed, retried) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let driver = {
        let (running, ok, failed, retried, errors, sock, cid) = (
            running.clone(),
            ok.clone(),
            failed.clone(),
            retried.clone(),
            errors.clone(),
            sock.clone(),
            cid.clone(),
        );
        tokio::spawn(async move {
            let (rt, _) = clients(&sock).await.unwrap();
            while running.load(Ordering::Relaxed) {
                // Kubelet's gRPC client retries calls that never left it
                // (GOAWAY before the request was written); so does this one.
                let results = [
                    transparently(|| {
                        let mut rt = rt.clone();
                        async move { rt.version(cri::VersionRequest::default()).await.map(|_| ()) }
                    })
                    .await,
                    transparently(|| {
                        let mut rt = rt.clone();
                        async move {
                            rt.list_containers(cri::ListContainersRequest::default())
                                .await
                                .map(|_| ())
                        }
                    })
                    .await,
                    transparently(|| {
                        let mut rt = rt.clone();
                        let id = cid.clone();
                        async move {
                            rt.container_status(cri::ContainerStatusRequest {
                                container_id: id,
                                verbose: false,
                            })
                            .await
                            .map(|_| ())
                        }
                    })
                    .await,
                ];
                for (r, n) in results {
                    retried.fetch_add(n as u64, Ordering::Relaxed);
                    match r {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            errors.lock().unwrap().push(format!("{e:?}"));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }
        })
    };

    let mut restarts = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let before = ok.load(Ordering::Relaxed);
        agent.restart(Signal::SIGTERM).unwrap();
        restarts += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            ok.load(Ordering::Relaxed) > before,
            "calls kept succeeding around the restart"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, Ordering::Relaxed);
    driver.await.unwrap();

    let exited = agent.shut_down();
    let log_text = agent.log_text();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let retried = retried.load(Ordering::Relaxed);
    println!("restarts={restarts} ok={ok} failed={failed} transparent_retries={retried}");
    assert_eq!(
        failed,
        0,
        "failed calls: {:?}\nagent log:\n{log_text}",
        errors.lock().unwrap()
    );
    assert!(ok > 100, "the driver kept calling ({ok})");
    assert_eq!(
        log_text.matches("agent exited: 0").count(),
        restarts + 1,
        "each agent exited 0 on SIGTERM:\n{log_text}"
    );
    assert!(exited, "activator exited after the stop file");
    via.remove_pod(&pod).await.unwrap();
}
