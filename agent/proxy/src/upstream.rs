//! A connection to the container runtime: one multiplexed HTTP/2
//! connection over its unix socket, re-established when the runtime
//! restarts. The proxy keeps one per caller connection.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use h2::client::{self, SendRequest};
use tokio::net::UnixStream;

use super::window;

/// Why a call could not be handed to the runtime.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to runtime at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP/2 handshake with runtime at {path} failed: {source}")]
    Handshake {
        path: PathBuf,
        #[source]
        source: h2::Error,
    },
    #[error("runtime connection failed: {0}")]
    Send(#[source] h2::Error),
}

/// The runtime endpoint and its current connection.
pub struct Upstream {
    path: PathBuf,
    current: Mutex<Option<SendRequest<Bytes>>>,
    connecting: tokio::sync::Mutex<()>,
}

impl Upstream {
    /// An endpoint at the unix socket `path`; connects on first use.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// The runtime's socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A sender ready for a new stream to the runtime. A connection found
    /// gone is replaced once (nothing was sent on it). The caller sends its
    /// request head with [`SendRequest::send_request`] once this resolves,
    /// so that the head is not held in the future while it waits.
    pub async fn ready(&self) -> Result<SendRequest<Bytes>, UpstreamError> {
        // The common case, a live connection, inline; connecting and
        // reconnecting boxed, so that their state is not part of every
        // call's future (see `proxy::tests::call_futures_stay_small`).
        let ready = match self.cached() {
            Some(sender) => Some(sender.ready().await),
            None => None,
        };
        match ready {
            Some(Ok(sender)) => Ok(sender),
            Some(Err(err)) => {
                tracing::debug!(error = %err, "runtime connection unusable; reconnecting");
                self.forget();
                Box::pin(self.ready_sender()).await
            }
            None => Box::pin(self.ready_sender()).await,
        }
    }

    /// A sender on the current connection (made if there is none), ready
    /// for a new stream.
    async fn ready_sender(&self) -> Result<SendRequest<Bytes>, UpstreamError> {
        let sender = self.sender().await?;
        sender.ready().await.map_err(UpstreamError::Send)
    }

    /// Opens the connection now (used at start-up to report a bad endpoint
    /// early; failure is not fatal, calls reconnect).
    pub async fn warm_up(&self) -> Result<(), UpstreamError> {
        self.sender().await.map(|_| ())
    }

    fn cached(&self) -> Option<SendRequest<Bytes>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn forget(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    async fn sender(&self) -> Result<SendRequest<Bytes>, UpstreamError> {
        if let Some(s) = self.cached() {
            return Ok(s);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(s) = self.cached() {
            return Ok(s);
        }
        let sender = self.connect().await?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    async fn connect(&self) -> Result<SendRequest<Bytes>, UpstreamError> {
        let stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| UpstreamError::Connect {
                    path: self.path.clone(),
                    source,
                })?;
        let (sender, conn) = client::Builder::new()
            .initial_window_size(window::STREAM)
            .initial_connection_window_size(window::CONNECTION)
            .max_frame_size(window::FRAME)
            .max_header_list_size(window::HEADER_LIST)
            .max_send_buffer_size(window::SEND_BUFFER)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|source| UpstreamError::Handshake {
                path: self.path.clone(),
                source,
            })?;
        let path = self.path.clone();
        tokio::spawn(async move {
            match conn.await {
                Ok(()) => tracing::debug!(runtime = %path.display(), "runtime connection closed"),
                Err(err) => {
                    tracing::warn!(runtime = %path.display(), error = %err, "runtime connection closed")
                }
            }
        });
        tracing::info!(runtime = %self.path.display(), "connected to runtime");
        Ok(sender)
    }
}
