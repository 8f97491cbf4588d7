//! The agent's runtime event feed against a real containerd: starts and
//! exits (with exit codes) arrive from containerd's event service, the feed
//! survives a containerd restart (announcing the gap), and the CRI polling
//! fallback reports the same.

mod common;

use std::time::Duration;

use common::*;
use keelson_agent::events::{RuntimeEvent, RuntimeEvents, received};
use keelson_agent::runtime_conn::RuntimeConn;
use keelson_integration::kubelet::{ContainerSpec, PodSpec};
use tokio::sync::broadcast::Receiver;

/// Waits for an event matching `want`, skipping others.
async fn expect(
    rx: &mut Receiver<RuntimeEvent>,
    what: &str,
    want: impl Fn(&RuntimeEvent) -> bool,
) -> RuntimeEvent {
    let wait = async {
        loop {
            match received(rx.recv().await) {
                Some(e) if want(&e) => return e,
                Some(_) => continue,
                None => panic!("event feed closed while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .unwrap_or_else(|_| panic!("no {what} within 15 s"))
}

async fn start_and_exit(node: &Node, feed: &RuntimeEvents, name: &str, code: i32) {
    let mut rx = feed.subscribe();
    let mut k = node.direct().await;
    let pod = k
        .run_pod(PodSpec::new(
            name,
            vec![ContainerSpec::shell(
                "main",
                &format!("sleep 0.3; exit {code}"),
            )],
        ))
        .await
        .unwrap();
    let id = pod.id("main").unwrap().to_string();
    expect(
        &mut rx,
        "start",
        |e| matches!(e, RuntimeEvent::Started { container_id } if *container_id == id),
    )
    .await;
    let exited = expect(
        &mut rx,
        "exit",
        |e| matches!(e, RuntimeEvent::Exited { container_id, .. } if *container_id == id),
    )
    .await;
    assert_eq!(
        exited,
        RuntimeEvent::Exited {
            container_id: id,
            exit_code: code
        }
    );
    k.remove_pod(&pod).await.unwrap();
}

#[tokio::test]
async fn containerd_events_arrive_and_survive_a_runtime_restart() {
    let node = Node::start();
    let feed = RuntimeEvents::start(
        &RuntimeConn::new(&node.containerd.socket()),
        Duration::from_secs(1),
    );
    let mut rx = feed.subscribe();
    expect(&mut rx, "initial gap (subscribed)", |e| {
        *e == RuntimeEvent::Gap
    })
    .await;
    start_and_exit(&node, &feed, "events-1", 3).await;

    node.containerd.restart().unwrap();
    expect(&mut rx, "gap after the restart", |e| {
        *e == RuntimeEvent::Gap
    })
    .await;
    start_and_exit(&node, &feed, "events-2", 0).await;
}

#[tokio::test]
async fn cri_polling_reports_the_same() {
    let node = Node::start();
    let feed = RuntimeEvents::start_polling(
        &RuntimeConn::new(&node.containerd.socket()),
        Duration::from_millis(100),
    );
    start_and_exit(&node, &feed, "polled", 7).await;
}
