//! The connection to the container runtime: one multiplexed HTTP/2
//! connection over its unix socket, re-established when the runtime
//! restarts.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::UnixStream;

use super::body::ProxyBody;
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
        source: hyper::Error,
    },
    #[error("runtime connection failed: {0}")]
    Send(#[source] hyper::Error),
}

/// The runtime endpoint and its current connection.
pub struct Upstream {
    path: PathBuf,
    current: Mutex<Option<SendRequest<ProxyBody>>>,
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

    /// Sends `req` to the runtime. A request that never left because the
    /// connection had just closed is retried once on a new connection.
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = self.sender().await?;
        match sender.try_send_request(req).await {
            Ok(resp) => Ok(resp),
            Err(mut err) => match err.take_message() {
                Some(req) => {
                    self.forget(&sender);
                    let mut sender = self.sender().await?;
                    sender.send_request(req).await.map_err(UpstreamError::Send)
                }
                None => Err(UpstreamError::Send(err.into_error())),
            },
        }
    }

    /// Opens the connection now (used at start-up to report a bad endpoint
    /// early; failure is not fatal, calls reconnect).
    pub async fn warm_up(&self) -> Result<(), UpstreamError> {
        self.sender().await.map(|_| ())
    }

    fn cached(&self) -> Option<SendRequest<ProxyBody>> {
        let guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    fn forget(&self, dead: &SendRequest<ProxyBody>) {
        let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if guard
            .as_ref()
            .is_some_and(|s| s.is_closed() || dead.is_closed())
        {
            *guard = None;
        }
    }

    async fn sender(&self) -> Result<SendRequest<ProxyBody>, UpstreamError> {
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

    async fn connect(&self) -> Result<SendRequest<ProxyBody>, UpstreamError> {
        let stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| UpstreamError::Connect {
                    path: self.path.clone(),
                    source,
                })?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(window::STREAM)
            .initial_connection_window_size(window::CONNECTION)
            .max_frame_size(window::FRAME)
            .adaptive_window(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake {
                path: self.path.clone(),
                source,
            })?;
        let path = self.path.clone();
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::warn!(runtime = %path.display(), error = %err, "runtime connection closed");
            } else {
                tracing::debug!(runtime = %path.display(), "runtime connection closed");
            }
        });
        tracing::info!(runtime = %self.path.display(), "connected to runtime");
        Ok(sender)
    }
}
