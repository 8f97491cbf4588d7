//! Container start/exit events from the runtime, for features that react
//! to them (launch gate, sidecar terminator, restarts).
//!
//! With containerd, events come from its own event service (namespace
//! `k8s.io`, task topics), not from polling: a container's exit reaches
//! subscribers within milliseconds. The subscription is re-established
//! after containerd restarts. Runtimes without that service (CRI-O,
//! cri-dockerd) are polled through CRI instead.
//!
//! Events can be missed: while resubscribing, or by a subscriber that fell
//! behind. Both are announced with [`RuntimeEvent::Gap`]; a subscriber then
//! re-reads the runtime's state.

use crate::runtime_conn::RuntimeConn;
use std::collections::HashMap;
use std::time::Duration;

use containerd_client::events::{TaskExit, TaskOom, TaskStart};
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::{PublishRequest, SubscribeRequest};
use prost::Message;
use tokio::sync::broadcast;

/// containerd's namespace for CRI (kubelet's) containers.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Capacity of the event fan-out; a subscriber further behind sees a gap.
const FAN_OUT: usize = 4096;

/// Something that happened to a container (or pod sandbox) in the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// The container's main process started.
    Started { container_id: String },
    /// The container's main process exited.
    Exited {
        container_id: String,
        exit_code: i32,
    },
    /// The container hit its memory limit.
    OutOfMemory { container_id: String },
    /// Events may have been missed since the last one: re-read state.
    Gap,
}

/// A running event feed; subscribe to receive events.
pub struct RuntimeEvents {
    tx: broadcast::Sender<RuntimeEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl RuntimeEvents {
    /// Starts following the runtime at `socket` (containerd's socket serves
    /// both CRI and its event service).
    pub fn start(runtime: &RuntimeConn, poll_every: Duration) -> Self {
        let (tx, _) = broadcast::channel(FAN_OUT);
        let task = tokio::spawn(follow(runtime.clone(), tx.clone(), poll_every));
        Self { tx, task }
    }

    /// Follows the runtime by polling CRI only (what runtimes without an
    /// event service get).
    pub fn start_polling(runtime: &RuntimeConn, poll_every: Duration) -> Self {
        let (tx, _) = broadcast::channel(FAN_OUT);
        let runtime = runtime.clone();
        let sender = tx.clone();
        let task = tokio::spawn(async move { poll_cri(&runtime, &sender, poll_every).await });
        Self { tx, task }
    }

    /// The fan-out itself, for components that subscribe later.
    pub fn sender(&self) -> broadcast::Sender<RuntimeEvent> {
        self.tx.clone()
    }

    /// A new subscriber (sees events from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<RuntimeEvent> {
        self.tx.subscribe()
    }
}

impl Drop for RuntimeEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Turns a receive result into an event, mapping "fell behind" to a gap.
pub fn received(r: Result<RuntimeEvent, broadcast::error::RecvError>) -> Option<RuntimeEvent> {
    match r {
        Ok(e) => Some(e),
        Err(broadcast::error::RecvError::Lagged(_)) => Some(RuntimeEvent::Gap),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

async fn follow(runtime: RuntimeConn, tx: broadcast::Sender<RuntimeEvent>, poll_every: Duration) {
    let socket = runtime.path();
    let mut backoff = Duration::from_millis(100);
    loop {
        match subscribe_containerd(&runtime, &tx).await {
            Ok(Ended::Stream) => {
                backoff = Duration::from_millis(100);
                tracing::warn!(runtime = %socket.display(), "runtime event stream ended; resubscribing");
            }
            Ok(Ended::Unsupported) => {
                tracing::info!(runtime = %socket.display(), "runtime has no containerd event service; polling CRI");
                poll_cri(&runtime, &tx, poll_every).await;
                return;
            }
            Err(err) => {
                tracing::warn!(runtime = %socket.display(), error = %err, retry_ms = backoff.as_millis() as u64, "cannot subscribe to runtime events");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

enum Ended {
    Stream,
    Unsupported,
}

/// Topic of the marker the agent publishes to learn that its subscription
/// is live (containerd sends a stream's headers only with its first event).
const MARKER_TOPIC: &str = "/keelson/subscribed";

async fn subscribe_containerd(
    runtime: &RuntimeConn,
    tx: &broadcast::Sender<RuntimeEvent>,
) -> Result<Ended, String> {
    let socket = runtime.path();
    let mut client = EventsClient::new(runtime.channel());
    let request = SubscribeRequest {
        filters: vec![
            format!("namespace=={CRI_NAMESPACE},topic~=\"^/tasks/\""),
            format!("namespace=={CRI_NAMESPACE},topic==\"{MARKER_TOPIC}\""),
        ],
    };
    // The subscription is only known to be live once something arrives on
    // it, so publish markers until one does; everything before is a gap.
    let subscribe = client.clone();
    let subscribing = async move {
        let mut subscribe = subscribe;
        subscribe.subscribe(request).await
    };
    tokio::pin!(subscribing);
    let mut stream = loop {
        tokio::select! {
            r = &mut subscribing => match r {
                Ok(r) => break r.into_inner(),
                Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(Ended::Unsupported),
                Err(s) => return Err(format!("{}: {}", s.code(), s.message())),
            },
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                if let Err(s) = publish_marker(&mut client).await {
                    if s.code() == tonic::Code::Unimplemented {
                        return Ok(Ended::Unsupported);
                    }
                    tracing::debug!(code = ?s.code(), message = s.message(), "publishing subscription marker failed");
                }
            }
        }
    };
    tracing::info!(runtime = %socket.display(), "following containerd task events");
    let _ = tx.send(RuntimeEvent::Gap);
    loop {
        match stream.message().await {
            Ok(Some(envelope)) => {
                let Some(any) = envelope.event else { continue };
                if let Some(event) = decode(&envelope.topic, &any.value) {
                    let _ = tx.send(event);
                }
            }
            Ok(None) => return Ok(Ended::Stream),
            Err(s) => return Err(format!("{}: {}", s.code(), s.message())),
        }
    }
}

async fn publish_marker(
    client: &mut EventsClient<tonic::transport::Channel>,
) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(PublishRequest {
        topic: MARKER_TOPIC.into(),
        event: Some(prost_types::Any {
            type_url: "keelson.io/events.Subscribed".into(),
            value: vec![],
        }),
    });
    req.metadata_mut().insert(
        "containerd-namespace",
        tonic::metadata::MetadataValue::from_static(CRI_NAMESPACE),
    );
    client.publish(req).await.map(|_| ())
}

/// Decodes a containerd task event (only the container's init process
/// counts; exec'd processes are ignored).
pub fn decode(topic: &str, payload: &[u8]) -> Option<RuntimeEvent> {
    match topic {
        "/tasks/start" => {
            let e = TaskStart::decode(payload).ok()?;
            Some(RuntimeEvent::Started {
                container_id: e.container_id,
            })
        }
        "/tasks/exit" => {
            let e = TaskExit::decode(payload).ok()?;
            let init = e.id.is_empty() || e.id == e.container_id;
            init.then_some(RuntimeEvent::Exited {
                container_id: e.container_id,
                exit_code: e.exit_status as i32,
            })
        }
        "/tasks/oom" => {
            let e = TaskOom::decode(payload).ok()?;
            Some(RuntimeEvent::OutOfMemory {
                container_id: e.container_id,
            })
        }
        _ => None,
    }
}

/// Polls ListContainers and reports state changes (for runtimes without
/// an event service).
async fn poll_cri(runtime: &RuntimeConn, tx: &broadcast::Sender<RuntimeEvent>, every: Duration) {
    use cri_proto::runtime_service_client::RuntimeServiceClient;
    let mut known: HashMap<String, i32> = HashMap::new();
    let mut client: Option<RuntimeServiceClient<tonic::transport::Channel>> = None;
    loop {
        if client.is_none() {
            client = Some(RuntimeServiceClient::new(runtime.channel()));
            let _ = tx.send(RuntimeEvent::Gap);
        }
        if let Some(c) = client.as_mut() {
            match c
                .list_containers(cri_proto::ListContainersRequest::default())
                .await
            {
                Ok(r) => {
                    let now: HashMap<String, i32> = r
                        .into_inner()
                        .containers
                        .into_iter()
                        .map(|c| (c.id, c.state))
                        .collect();
                    for (id, state) in &now {
                        if known.get(id) == Some(state) {
                            continue;
                        }
                        if *state == cri_proto::ContainerState::ContainerRunning as i32 {
                            let _ = tx.send(RuntimeEvent::Started {
                                container_id: id.clone(),
                            });
                        } else if *state == cri_proto::ContainerState::ContainerExited as i32 {
                            let code = c
                                .container_status(cri_proto::ContainerStatusRequest {
                                    container_id: id.clone(),
                                    verbose: false,
                                })
                                .await
                                .ok()
                                .and_then(|r| r.into_inner().status)
                                .map_or(-1, |s| s.exit_code);
                            let _ = tx.send(RuntimeEvent::Exited {
                                container_id: id.clone(),
                                exit_code: code,
                            });
                        }
                    }
                    known = now;
                }
                Err(s) => {
                    tracing::warn!(code = ?s.code(), message = s.message(), "polling runtime failed");
                    client = None;
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_init_exits_and_ignores_execs() {
        let exit = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 7,
            exit_status: 143,
            exited_at: None,
        };
        assert_eq!(
            decode("/tasks/exit", &exit.encode_to_vec()),
            Some(RuntimeEvent::Exited {
                container_id: "c1".into(),
                exit_code: 143
            })
        );
        let exec = TaskExit {
            id: "exec-1".into(),
            ..exit
        };
        assert_eq!(decode("/tasks/exit", &exec.encode_to_vec()), None);
        let start = TaskStart {
            container_id: "c2".into(),
            pid: 9,
        };
        assert_eq!(
            decode("/tasks/start", &start.encode_to_vec()),
            Some(RuntimeEvent::Started {
                container_id: "c2".into()
            })
        );
        assert_eq!(
            decode("/tasks/start", b"\xff\xff"),
            None,
            "garbage is ignored"
        );
        assert_eq!(decode("/containers/create", b""), None);
    }
}
