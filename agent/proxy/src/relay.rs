//! Moving HTTP/2 stream bodies: relaying one stream into another with flow
//! control respected end to end, reading a body into memory with a limit,
//! and writing a buffered body.

use std::future::poll_fn;

use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;

/// Why relaying a body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The sending peer reset its stream or its connection failed.
    #[error("reading: {0}")]
    Recv(#[source] h2::Error),
    /// The receiving peer reset its stream or its connection failed.
    #[error("writing: {0}")]
    Send(#[source] h2::Error),
}

impl RelayError {
    /// The reset reason to pass on to the other side.
    pub fn reason(&self) -> Reason {
        let e = match self {
            RelayError::Recv(e) | RelayError::Send(e) => e,
        };
        e.reason().unwrap_or(Reason::CANCEL)
    }
}

/// Relays `recv` (data, then trailers) into `send`, taking capacity from
/// the receiving peer before each write and giving window back to the
/// sending peer only after, so at most one window of data is in flight.
/// If the sending side fails, the receiving side is reset with its reason.
pub async fn relay(mut recv: RecvStream, mut send: SendStream<Bytes>) -> Result<(), RelayError> {
    let result = relay_inner(&mut recv, &mut send).await;
    if let Err(RelayError::Recv(e)) = &result {
        send.send_reset(e.reason().unwrap_or(Reason::CANCEL));
    }
    result
}

async fn relay_inner(
    recv: &mut RecvStream,
    send: &mut SendStream<Bytes>,
) -> Result<(), RelayError> {
    loop {
        // Watch the receiving peer too: a caller that gives up on a quiet
        // stream (no data for a while) must not keep it open upstream.
        let next = tokio::select! {
            biased;
            reset = poll_fn(|cx| send.poll_reset(cx)) => {
                return Err(RelayError::Send(reset.map(h2::Error::from).unwrap_or_else(|e| e)));
            }
            next = recv.data() => next,
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(RelayError::Recv)?;
        let len = chunk.len();
        let last = recv.is_end_stream();
        write(send, chunk, last).await?;
        let _ = recv.flow_control().release_capacity(len);
        if last {
            return Ok(());
        }
    }
    match recv.trailers().await.map_err(RelayError::Recv)? {
        Some(t) => send.send_trailers(t).map_err(RelayError::Send),
        None => send.send_data(Bytes::new(), true).map_err(RelayError::Send),
    }
}

/// Writes `data` within the peer's flow-control window, waiting for
/// capacity as needed.
pub async fn write(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), RelayError> {
    if data.is_empty() {
        return send.send_data(data, end).map_err(RelayError::Send);
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let mut cap = send.capacity();
        if cap == 0 {
            cap = match poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(RelayError::Send(e)),
                None => return Err(RelayError::Send(h2::Error::from(Reason::STREAM_CLOSED))),
            };
            if cap == 0 {
                continue;
            }
        }
        let piece = data.split_to(cap.min(data.len()));
        send.send_data(piece, end && data.is_empty())
            .map_err(RelayError::Send)?;
    }
    Ok(())
}

/// A body read to its end.
#[derive(Debug)]
pub struct Collected {
    pub data: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// The outcome of reading a body with a size limit.
#[derive(Debug)]
pub enum Limited {
    /// The whole body fit.
    Complete(Collected),
    /// Larger than the limit: what was read so far; the rest is still in
    /// the stream.
    TooLarge(Bytes),
}

/// Reads `recv` to its end unless it grows past `limit` bytes.
pub async fn collect(recv: &mut RecvStream, limit: usize) -> Result<Limited, h2::Error> {
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        // Most unary bodies arrive in one DATA frame: keep it without a copy.
        if first.is_none() && buf.is_empty() {
            first = Some(chunk);
        } else {
            if let Some(f) = first.take() {
                buf.extend_from_slice(&f);
            }
            buf.extend_from_slice(&chunk);
        }
        let len = first.as_ref().map_or(buf.len(), Bytes::len);
        if len > limit {
            return Ok(Limited::TooLarge(first.unwrap_or_else(|| buf.freeze())));
        }
    }
    let trailers = recv.trailers().await?;
    Ok(Limited::Complete(Collected {
        data: first.unwrap_or_else(|| buf.freeze()),
        trailers,
    }))
}

/// Sends a buffered body: data (if any), then trailers or end of stream.
pub async fn send_buffered(
    send: &mut SendStream<Bytes>,
    data: Bytes,
    trailers: Option<HeaderMap>,
) -> Result<(), RelayError> {
    match trailers {
        Some(t) => {
            if !data.is_empty() {
                write(send, data, false).await?;
            }
            send.send_trailers(t).map_err(RelayError::Send)
        }
        None => write(send, data, true).await,
    }
}
