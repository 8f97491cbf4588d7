//! The pod book kept current from the runtime's events: states applied
//! as they come, and the runtime's lists re-read (retried until it
//! answers) after every gap in the feed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cri_proto as cri;

use super::{PodBook, State, container_from, sandbox_from};
use crate::backoff::{Backoff, Retry};
use crate::events::{RuntimeEvent, received};
use crate::runtime_conn::RuntimeConn;

/// Applies runtime events to the book until the feed closes; re-reads the
/// runtime's lists after every gap.
pub async fn follow_events(
    book: Arc<PodBook>,
    mut rx: tokio::sync::broadcast::Receiver<RuntimeEvent>,
    runtime: RuntimeConn,
) {
    while let Some(event) = received(rx.recv().await) {
        match event {
            RuntimeEvent::Started { container_id } => book.set_state(&container_id, State::Running),
            RuntimeEvent::Exited {
                container_id,
                exit_code,
            } => book.set_state(&container_id, State::Exited(exit_code)),
            RuntimeEvent::OutOfMemory { .. } => {}
            RuntimeEvent::Gap => resync_until_read(&book, &runtime).await,
        }
    }
}

/// How the re-read after a gap is retried. A containerd that has just
/// come back answers "server is not initialized yet" for a moment, and an
/// exit missed in the gap is known only from the re-read (a Job's main
/// exiting while containerd restarted left its sidecar running for good).
pub const RESYNC_RETRY: Backoff = Backoff {
    base: Duration::from_millis(200),
    max: Duration::from_secs(5),
    attempts: None,
};

/// Re-reads the runtime's lists into the book, retrying until it works.
async fn resync_until_read(book: &PodBook, runtime: &RuntimeConn) {
    let mut retry = Retry::new(RESYNC_RETRY);
    while let Err(e) = resync_from_runtime(book, runtime).await {
        let delay = retry.failed().unwrap_or(RESYNC_RETRY.max);
        tracing::warn!(
            error = %e,
            attempt = retry.failures(),
            retry_in_ms = delay.as_millis() as u64,
            "re-reading runtime state failed; retrying"
        );
        tokio::time::sleep(delay).await;
    }
}

/// Lists sandboxes and containers from the runtime and resyncs the book.
pub async fn resync_from_runtime(book: &PodBook, runtime: &RuntimeConn) -> Result<(), String> {
    let mut client = cri::runtime_service_client::RuntimeServiceClient::new(runtime.channel());
    // What kubelet adds from here on may be missing from the lists.
    let listed_after = book.mark();
    let sandboxes = client
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner()
        .items;
    let containers = client
        .list_containers(cri::ListContainersRequest::default())
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner()
        .containers;
    // Objects the book does not know (created before the agent started, or
    // lost in a crash) are learned from the runtime.
    for s in &sandboxes {
        if book.pod(&s.id).is_none() {
            let config = cri::PodSandboxConfig {
                metadata: s.metadata.clone(),
                annotations: s.annotations.clone(),
                ..Default::default()
            };
            book.add_sandbox(sandbox_from(s.id.clone(), &config))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let mut unknown: Vec<&cri::Container> = containers
        .iter()
        .filter(|c| book.container(&c.id).is_none())
        .collect();
    unknown.sort_by_key(|c| c.created_at);
    for c in unknown {
        let status = client
            .container_status(cri::ContainerStatusRequest {
                container_id: c.id.clone(),
                verbose: true,
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        let config = cri::ContainerConfig {
            metadata: c.metadata.clone(),
            envs: envs_from_verbose_info(&status.info),
            annotations: c.annotations.clone(),
            ..Default::default()
        };
        let pod_annotations = book
            .pod(&c.pod_sandbox_id)
            .map(|p| p.sandbox.annotations)
            .unwrap_or_default();
        book.add_container(container_from(
            c.id.clone(),
            c.pod_sandbox_id.clone(),
            &config,
            &pod_annotations,
        ))
        .await
        .map_err(|e| e.to_string())?;
    }
    book.resync(&sandboxes, &containers, listed_after)
        .await
        .map_err(|e| e.to_string())?;
    // Lists carry no exit codes: ask for the ones the book lacks.
    for c in &containers {
        if book.container(&c.id).map(|(_, s)| s) == Some(State::Exited(-1)) {
            let status = client
                .container_status(cri::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await
                .ok()
                .and_then(|r| r.into_inner().status);
            if let Some(s) = status {
                book.set_state(&c.id, State::Exited(s.exit_code));
            }
        }
    }
    Ok(())
}

/// The env a container was created with, from containerd's verbose status
/// (`info` → JSON with the CRI config). Other runtimes: none.
pub fn envs_from_verbose_info(info: &HashMap<String, String>) -> Vec<cri::KeyValue> {
    let Some(json) = info.get("info") else {
        return vec![];
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return vec![];
    };
    v["config"]["envs"]
        .as_array()
        .map(|envs| {
            envs.iter()
                .filter_map(|e| {
                    Some(cri::KeyValue {
                        key: e["key"].as_str()?.to_string(),
                        value: e["value"].as_str().unwrap_or_default().as_bytes().to_vec(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn a_failed_re_read_after_a_gap_is_retried_until_it_works() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let book = PodBook::open(&store).unwrap();
        let socket = dir.path().join("runtime.sock");
        // containerd just restarted: the first two calls are refused
        // (gRPC UNKNOWN, "server is not initialized yet"), then it answers.
        let (calls, server) = crate::testing::fake_runtime(&socket, |n| if n <= 2 { 2 } else { 0 });
        let (tx, rx) = tokio::sync::broadcast::channel(8);
        let follower = tokio::spawn(follow_events(book.clone(), rx, RuntimeConn::new(&socket)));
        tx.send(RuntimeEvent::Gap).unwrap();
        // Two refused ListPodSandbox calls, then ListPodSandbox and
        // ListContainers answered: the book was re-read.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while calls.load(std::sync::atomic::Ordering::Relaxed) < 4 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "re-read not retried: {} runtime calls",
                calls.load(std::sync::atomic::Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        follower.abort();
        server.abort();
    }

    #[test]
    fn env_from_containerd_verbose_info() {
        let info = HashMap::from([(
            "info".to_string(),
            r#"{"config":{"envs":[{"key":"KRUISE_CONTAINER_PRIORITY","value":"2"},{"key":"A"}]}}"#
                .to_string(),
        )]);
        let envs = envs_from_verbose_info(&info);
        assert_eq!(envs.len(), 2);
        assert_eq!(
            (envs[0].key.as_str(), envs[0].value.as_slice()),
            ("KRUISE_CONTAINER_PRIORITY", &b"2"[..])
        );
        assert!(
            envs_from_verbose_info(&HashMap::from([("info".to_string(), "junk".to_string())]))
                .is_empty()
        );
    }
}
