//! Test helpers: a CRI runtime stand-in whose every call gets the gRPC
//! status a closure picks (0 answers an empty message), counting calls.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Serves `socket` until the handle is aborted; `status(n)` is the gRPC
/// status of the n-th call (1-based). Returns the call counter.
pub fn fake_runtime(
    socket: &Path,
    status: impl Fn(usize) -> u32 + Send + Sync + 'static,
) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let status = Arc::new(status);
    let counter = calls.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (calls, status) = (counter.clone(), status.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((_req, mut send))) = conn.accept().await {
                    let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
                    let code = status(n);
                    let mut resp = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/grpc");
                    if code != 0 {
                        // Trailers only.
                        resp = resp.header("grpc-status", code.to_string());
                        let _ = send.send_response(resp.body(()).unwrap(), true);
                        continue;
                    }
                    let Ok(mut body) = send.send_response(resp.body(()).unwrap(), false) else {
                        continue;
                    };
                    // One empty message, then status OK.
                    let _ = body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), false);
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let _ = body.send_trailers(trailers);
                }
            });
        }
    });
    (calls, task)
}
