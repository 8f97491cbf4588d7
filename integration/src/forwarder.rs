//! The floor of what any process between kubelet and the runtime costs: a
//! minimal HTTP/2 forwarder on one current-thread runtime, nothing else —
//! no hooks, no logging, no decoding. Each accepted connection gets its
//! own connection to the runtime; requests and replies (trailers
//! included) are passed through as streams. `bench-proxy` runs it as a
//! separate process (`bench-proxy --serve-forwarder LISTEN UPSTREAM`) next
//! to the agent and measures both against the runtime direct.

use std::path::Path;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{UnixListener, UnixStream};

/// Serves `listen`, forwarding every call to the runtime at `upstream`,
/// until the process ends.
pub async fn serve(listen: &Path, upstream: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(listen);
    let listener = UnixListener::bind(listen)?;
    loop {
        let (downstream, _) = listener.accept().await?;
        let upstream = upstream.to_path_buf();
        tokio::spawn(async move {
            let Ok(conn) = UnixStream::connect(&upstream).await else {
                return;
            };
            let Ok((sender, connection)) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(conn))
                    .await
            else {
                return;
            };
            tokio::spawn(connection);
            let service = service_fn(move |req: Request<Incoming>| {
                let mut sender = sender.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    let path = parts
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string();
                    parts.uri = format!("http://localhost{path}")
                        .parse()
                        .unwrap_or(parts.uri);
                    let reply: Response<Incoming> = sender
                        .send_request(Request::from_parts(parts, body))
                        .await?;
                    Ok::<_, hyper::Error>(reply)
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(downstream), service)
                .await;
        });
    }
}
