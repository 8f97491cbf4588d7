//! What the restart engine asks of the runtime, over CRI on the runtime's
//! own socket: find a pod's ready sandbox, see its containers' newest
//! instances, and stop one instance after its preStop hook, as kubelet
//! does (hook within the grace period, then StopContainer with what is
//! left, never less than kubelet's 2 s).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cri::runtime_service_client::RuntimeServiceClient;
use cri_proto as cri;
use tonic::transport::Channel;

use super::plan::{Observed, Seen};
use super::spec::{MIN_GRACE_AFTER_PRESTOP_SECONDS, PodIdentity, PodRef};
use crate::kruise::kubelet as keys;
use crate::runtime_conn::RuntimeConn;

/// Kubelet's container annotation with the restart count.
const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// Slack on top of the stop timeout for the runtime's answer.
const STOP_SLACK: Duration = Duration::from_secs(30);

/// A CRI runtime client.
pub type Client = RuntimeServiceClient<Channel>;

/// A client on the features' shared runtime connection.
pub fn client(runtime: &RuntimeConn) -> Client {
    RuntimeServiceClient::new(runtime.channel())
}

fn ready_filter(labels: HashMap<String, String>, id: Option<String>) -> cri::PodSandboxFilter {
    cri::PodSandboxFilter {
        id: id.unwrap_or_default(),
        state: Some(cri::PodSandboxStateValue {
            state: cri::PodSandboxState::SandboxReady as i32,
        }),
        label_selector: labels,
    }
}

/// The pod `pod` names, from its newest ready sandbox; `None` if it has
/// none.
pub async fn resolve(rt: &mut Client, pod: &PodRef) -> Result<Option<PodIdentity>, String> {
    let mut labels = HashMap::new();
    if let (Some(ns), Some(name)) = (&pod.namespace, &pod.name) {
        labels.insert(keys::POD_NAMESPACE.to_string(), ns.clone());
        labels.insert(keys::POD_NAME.to_string(), name.clone());
    }
    if let Some(uid) = &pod.uid {
        labels.insert(keys::POD_UID.to_string(), uid.clone());
    }
    let items = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(ready_filter(labels, pod.sandbox_id.clone())),
        })
        .await
        .map_err(|s| format!("ListPodSandbox: {}", s.message()))?
        .into_inner()
        .items;
    Ok(items
        .into_iter()
        .max_by_key(|s| s.created_at)
        .and_then(|s| {
            let m = s.metadata?;
            Some(PodIdentity {
                namespace: m.namespace,
                name: m.name,
                uid: m.uid,
            })
        }))
}

/// The pod with `uid` now: whether it has a ready sandbox, and the newest
/// instance of each container in `names`.
pub async fn observe(rt: &mut Client, uid: &str, names: &[String]) -> Result<Observed, String> {
    let by_uid = HashMap::from([(keys::POD_UID.to_string(), uid.to_string())]);
    let sandboxes: Vec<String> = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(ready_filter(by_uid.clone(), None)),
        })
        .await
        .map_err(|s| format!("ListPodSandbox: {}", s.message()))?
        .into_inner()
        .items
        .into_iter()
        .map(|s| s.id)
        .collect();
    if sandboxes.is_empty() {
        return Ok(Observed::default());
    }
    let listed = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: by_uid,
                ..Default::default()
            }),
        })
        .await
        .map_err(|s| format!("ListContainers: {}", s.message()))?
        .into_inner()
        .containers;
    let mut newest: HashMap<String, cri::Container> = HashMap::new();
    for c in listed {
        let Some(name) = c.metadata.as_ref().map(|m| m.name.clone()) else {
            continue;
        };
        if !names.contains(&name) || !sandboxes.contains(&c.pod_sandbox_id) {
            continue;
        }
        if newest
            .get(&name)
            .is_none_or(|n| c.created_at > n.created_at)
        {
            newest.insert(name, c);
        }
    }
    let mut containers = HashMap::new();
    for (name, c) in newest {
        let running = c.state == cri::ContainerState::ContainerRunning as i32;
        let restart_count = c
            .annotations
            .get(RESTART_COUNT)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| c.metadata.as_ref().map_or(0, |m| m.attempt as i32));
        let grace_period_seconds = c
            .annotations
            .get(keys::POD_GRACE_PERIOD)
            .and_then(|v| v.parse().ok());
        let started_unix_ms = if running {
            rt.container_status(cri::ContainerStatusRequest {
                container_id: c.id.clone(),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().status)
            .map(|s| (s.started_at.max(0) / 1_000_000) as u64)
        } else {
            None
        };
        containers.insert(
            name,
            Seen {
                id: c.id,
                running,
                restart_count,
                started_unix_ms,
                ready: None,
                grace_period_seconds,
            },
        );
    }
    Ok(Observed {
        pod_present: true,
        containers,
    })
}

/// Runs `pre_stop` in the container (bounded by `grace`), then stops it
/// with the grace that is left. A failing or hanging hook does not stop
/// the stop (as in kubelet); a failing StopContainer is the error.
pub async fn stop(
    rt: &mut Client,
    container_id: &str,
    pre_stop: Option<&[String]>,
    grace: Duration,
) -> Result<(), StopError> {
    let began = Instant::now();
    if let Some(cmd) = pre_stop {
        let call = rt.exec_sync(cri::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd: cmd.to_vec(),
            timeout: grace.as_secs() as i64,
        });
        match tokio::time::timeout(grace + Duration::from_secs(2), call).await {
            Ok(Ok(r)) if r.get_ref().exit_code == 0 => {
                tracing::info!(container = %container_id, "preStop hook ran");
            }
            Ok(Ok(r)) => {
                tracing::warn!(container = %container_id, exit_code = r.get_ref().exit_code, "preStop hook failed; stopping anyway")
            }
            Ok(Err(s)) => {
                tracing::warn!(container = %container_id, error = %s.message(), "preStop hook failed; stopping anyway")
            }
            Err(_) => {
                tracing::warn!(container = %container_id, grace_s = grace.as_secs(), "preStop hook still running after the grace period; stopping anyway")
            }
        }
    }
    let left = grace
        .saturating_sub(began.elapsed())
        .max(Duration::from_secs(MIN_GRACE_AFTER_PRESTOP_SECONDS as u64));
    let mut req = tonic::Request::new(cri::StopContainerRequest {
        container_id: container_id.to_string(),
        timeout: left.as_secs() as i64,
    });
    req.set_timeout(left + STOP_SLACK);
    rt.stop_container(req).await.map(|_| ()).map_err(|s| {
        let message = s.message().to_string();
        if on_the_way(&s) {
            StopError::OnTheWay(message)
        } else {
            StopError::Refused(message)
        }
    })
}

/// Why a stop failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopError {
    /// The call did not get an answer from the runtime (connection
    /// lost, runtime restarting): whether the container stopped is
    /// unknown, so the caller observes again and retries.
    #[error("{0}")]
    OnTheWay(String),
    /// The runtime answered with a failure.
    #[error("{0}")]
    Refused(String),
}

/// True when `status` came from the transport, not from the runtime.
pub fn on_the_way(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => true,
        tonic::Code::Unknown => status.message().contains("transport error"),
        _ => false,
    }
}

#[cfg(test)]
mod stop_error_tests {
    use super::on_the_way;

    #[test]
    fn transport_failures_are_told_from_runtime_refusals() {
        assert!(on_the_way(&tonic::Status::unavailable(
            "connection refused"
        )));
        assert!(on_the_way(&tonic::Status::unknown("transport error")));
        assert!(on_the_way(&tonic::Status::cancelled("h2 reset")));
        assert!(!on_the_way(&tonic::Status::unknown("runc kill failed")));
        assert!(!on_the_way(&tonic::Status::not_found("no such container")));
    }
}
