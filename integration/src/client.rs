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
