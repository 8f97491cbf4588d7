//! CRI clients over a unix socket (tonic channels), as kubelet dials them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cri_proto::image_service_client::ImageServiceClient;
use cri_proto::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Runtime service client type.
pub type Runtime = RuntimeServiceClient<Channel>;
/// Image service client type.
pub type Images = ImageServiceClient<Channel>;

/// Largest message kubelet accepts/sends on the CRI (16 MiB).
pub const MAX_MESSAGE: usize = 16 << 20;

/// A channel to the CRI server at `path` (authority `localhost`, as kubelet).
pub async fn channel(path: &Path) -> crate::Result<Channel> {
    let path: PathBuf = path.into();
    let shown = path.display().to_string();
    Endpoint::try_from("http://localhost")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .with_context(|| format!("connecting to {shown}"))
}

/// Runtime and image clients sharing one connection.
pub async fn clients(path: &Path) -> crate::Result<(Runtime, Images)> {
    let ch = channel(path).await?;
    Ok((
        RuntimeServiceClient::new(ch.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        ImageServiceClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    ))
}

/// A reply to a raw gRPC call: status, and the message bytes if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    pub code: u16,
    pub message: String,
    pub body: Vec<u8>,
}

/// Calls `path` with an already-encoded request message over a fresh
/// HTTP/2 connection (authority `localhost`), returning the raw reply.
/// Used to call methods no generated client knows and to compare bytes.
pub async fn raw_call(socket: &Path, path: &str, request: &[u8]) -> crate::Result<RawReply> {
    use http_body_util::BodyExt;
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await?;
    let conn = tokio::spawn(conn);
    let mut body = Vec::with_capacity(request.len() + 5);
    body.push(0);
    body.extend_from_slice(&(request.len() as u32).to_be_bytes());
    body.extend_from_slice(request);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    let resp = send.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    conn.abort();
    let pick = |k: &str| {
        trailers
            .get(k)
            .or_else(|| parts.headers.get(k))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let code = pick("grpc-status")
        .context("reply without grpc-status")?
        .parse()?;
    let message = pick("grpc-message").unwrap_or_default();
    let body = if data.len() >= 5 {
        data[5..].to_vec()
    } else {
        vec![]
    };
    Ok(RawReply {
        code,
        message,
        body,
    })
}

/// Whether a failed call provably was not processed by the server: the
/// connection was going away before the request was written, or the server
/// refused the stream (REFUSED_STREAM, or a graceful GOAWAY (NO_ERROR)
/// whose last stream id is below it: HTTP/2 guarantees such streams were
/// not processed). grpc-go, and so kubelet, retries these transparently;
/// tonic does not, so drivers that mimic kubelet use [`transparently`].
pub fn never_sent(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if let Some(h) = err.downcast_ref::<h2::Error>() {
            let refused = h.reason() == Some(h2::Reason::REFUSED_STREAM);
            let graceful_goaway =
                h.is_go_away() && h.is_remote() && h.reason() == Some(h2::Reason::NO_ERROR);
            if refused || graceful_goaway {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// Runs `call`, retrying while it fails without having been processed, as
/// grpc-go's transparent retry does. grpc-go sends the retry on a fresh
/// connection at once; tonic's channel may hand out the dying one for a
/// moment more, so retries are spaced by 5 ms (bounded: 1 s in all).
/// Returns the result and the number of transparent retries.
pub async fn transparently<T, F, Fut>(mut call: F) -> (Result<T, tonic::Status>, u32)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut retries = 0;
    loop {
        match call().await {
            Err(e) if retries < 200 && never_sent(&e) => {
                retries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            other => return (other, retries),
        }
    }
}
