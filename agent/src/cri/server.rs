//! Accepting callers on the agent's socket: one HTTP/2 connection task per
//! caller, and a graceful stop that finishes in-flight calls.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::UnixListener;

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

/// Serves `proxy` on `listener` until `stop` resolves, then stops
/// accepting, tells callers to go away (HTTP/2 GOAWAY) and waits up to
/// `grace` for in-flight calls.
pub async fn serve(
    listener: UnixListener,
    proxy: Arc<Proxy>,
    stop: impl Future<Output = ()>,
    grace: Duration,
) -> Drained {
    let graceful = GracefulShutdown::new();
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(window::STREAM)
        .initial_connection_window_size(window::CONNECTION)
        .max_frame_size(window::FRAME)
        .adaptive_window(false)
        .max_header_list_size(1 << 20)
        .max_concurrent_streams(1024);
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
                let proxy = proxy.clone();
                let service = service_fn(move |req| proxy.clone().handle(req));
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(err) = conn.await {
                        tracing::debug!(error = %err, "caller connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        connections = open,
        "stopped accepting; draining in-flight calls"
    );
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => Drained::Clean,
        Err(_) => Drained::TimedOut { connections: open },
    }
}
