//! Accepting callers on the agent's socket: one HTTP/2 connection task per
//! caller (with a runtime connection of its own), one task per call, and a
//! graceful stop that finishes in-flight calls.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, watch};

use super::authority::AuthorityRepair;
use super::proxy::Proxy;
use super::window;

/// How the serve loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every in-flight call finished.
    Clean,
    /// Calls were still running when the grace period ran out.
    TimedOut { connections: usize },
}

/// Counts open caller connections and wakes the drain when the last closes.
#[derive(Default)]
struct Connections {
    open: AtomicUsize,
    idle: Notify,
}

struct ConnectionGuard(Arc<Connections>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Serves `proxy` on `listener` until `stop` resolves, then stops
/// accepting, tells callers to go away (HTTP/2 GOAWAY, graceful: calls
/// already sent still complete) and waits up to `grace` for them.
pub async fn serve(
    listener: UnixListener,
    proxy: Arc<Proxy>,
    stop: impl Future<Output = ()>,
    grace: Duration,
) -> Drained {
    let conns = Arc::new(Connections::default());
    let (stopping_tx, stopping) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                conns.open.fetch_add(1, Ordering::AcqRel);
                let guard = ConnectionGuard(conns.clone());
                tokio::spawn(connection(stream, proxy.clone(), stopping.clone(), guard));
            }
        }
    }
    drop(listener);
    let open = conns.open.load(Ordering::Acquire);
    tracing::info!(
        connections = open,
        "stopped accepting; draining in-flight calls"
    );
    let _ = stopping_tx.send(true);
    let drained = async {
        loop {
            let idle = conns.idle.notified();
            if conns.open.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    };
    match tokio::time::timeout(grace, drained).await {
        Ok(()) => Drained::Clean,
        Err(_) => Drained::TimedOut {
            connections: conns.open.load(Ordering::Acquire),
        },
    }
}

/// Serves one caller connection: accepts its calls until it closes or the
/// agent stops (then GOAWAY, and the calls already sent finish).
async fn connection(
    stream: UnixStream,
    proxy: Arc<Proxy>,
    mut stopping: watch::Receiver<bool>,
    _guard: ConnectionGuard,
) {
    let handshake = h2::server::Builder::new()
        .initial_window_size(window::STREAM)
        .initial_connection_window_size(window::CONNECTION)
        .max_frame_size(window::FRAME)
        .max_header_list_size(window::HEADER_LIST)
        .max_concurrent_streams(window::MAX_STREAMS)
        .max_send_buffer_size(window::SEND_BUFFER)
        .handshake::<_, Bytes>(AuthorityRepair::new(stream));
    // A caller that connects and never speaks must not hold a task forever.
    let mut conn = match tokio::time::timeout(Duration::from_secs(10), handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "caller handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("caller sent no HTTP/2 preface within 10 s; closing");
            return;
        }
    };
    let upstream = proxy.connection_upstream();
    let mut shutting_down = *stopping.borrow();
    if shutting_down {
        conn.graceful_shutdown();
    }
    loop {
        tokio::select! {
            biased;
            changed = stopping.changed(), if !shutting_down => {
                if changed.is_err() || *stopping.borrow() {
                    shutting_down = true;
                    conn.graceful_shutdown();
                }
            }
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    tokio::spawn(proxy.clone().serve(upstream.clone(), req, respond));
                }
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "caller connection error");
                    return;
                }
                None => return,
            }
        }
    }
}
