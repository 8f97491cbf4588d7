//! The node features' one connection to the container runtime: the pod
//! book's event follower and resync, the sidecar terminator, the pull and
//! restart engines all send their calls over it as HTTP/2 streams.
//!
//! Kubelet's calls never use it: the proxy gives each caller connection a
//! runtime connection of its own, so nothing here can stall kubelet.
//!
//! The connection is made on first use and again after it breaks (the
//! runtime restarted): a call made while the runtime is away fails with
//! `Unavailable`, and each feature's own retry decides when to try again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// A cheap handle on the shared connection (clone it freely).
#[derive(Clone, Debug)]
pub struct RuntimeConn {
    path: Arc<PathBuf>,
    channel: Channel,
}

impl RuntimeConn {
    /// A connection to the runtime socket at `path`, not made yet. Call it
    /// inside a tokio runtime: the connection's task runs there.
    pub fn new(path: &Path) -> Self {
        let socket = path.to_path_buf();
        // The URI is never dialled: every connection is the unix socket.
        let channel = Endpoint::from_static("http://runtime.sock").connect_with_connector_lazy(
            tower::service_fn(move |_: http::Uri| {
                let socket = socket.clone();
                async move {
                    tokio::net::UnixStream::connect(socket)
                        .await
                        .map(TokioIo::new)
                }
            }),
        );
        Self {
            path: Arc::new(path.to_path_buf()),
            channel,
        }
    }

    /// The channel to build a client on.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The runtime socket.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A runtime that answers every call with an empty OK message and
    /// counts the connections it accepted; aborting it closes them all.
    fn runtime(socket: &Path) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                conns.spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(stream).await else {
                        return;
                    };
                    while let Some(Ok((_req, mut send))) = conn.accept().await {
                        let resp = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let Ok(mut body) = send.send_response(resp, false) else {
                            continue;
                        };
                        let _ = body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), false);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let _ = body.send_trailers(trailers);
                    }
                });
            }
        });
        (accepted, task)
    }

    async fn version(conn: RuntimeConn) -> Result<(), tonic::Status> {
        cri_proto::runtime_service_client::RuntimeServiceClient::new(conn.channel())
            .version(cri_proto::VersionRequest::default())
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn every_user_shares_one_connection_and_it_comes_back_after_a_break() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("runtime.sock");
        let (accepted, server) = runtime(&socket);
        let conn = RuntimeConn::new(&socket);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            0,
            "not made before first use"
        );
        let calls: Vec<_> = (0..8)
            .map(|_| tokio::spawn(version(conn.clone())))
            .collect();
        for c in calls {
            c.await.unwrap().unwrap();
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "eight callers, one connection"
        );

        // The runtime goes away: a call fails, and does not hang.
        server.abort();
        let _ = server.await;
        std::fs::remove_file(&socket).unwrap();
        let down = tokio::time::timeout(Duration::from_secs(5), version(conn.clone()))
            .await
            .expect("a call to a runtime that is gone fails at once");
        assert!(down.is_err());

        // It comes back on the same socket: a later call reconnects.
        let (accepted, _server) = runtime(&socket);
        let mut answered = false;
        for _ in 0..100 {
            if version(conn.clone()).await.is_ok() {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answered, "reconnected after the runtime came back");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(conn.path(), socket.as_path());
    }
}
