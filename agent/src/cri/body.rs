//! The one body type that flows through the proxy in both directions: a
//! peer's stream passed on untouched, a buffered message with trailers, or a
//! buffered head followed by the rest of a stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Body of a request sent upstream or a response sent to the caller.
#[derive(Debug)]
pub enum ProxyBody {
    /// A peer's body, forwarded frame by frame (data and trailers).
    Stream(Incoming),
    /// Fully buffered data, then optional trailers.
    Buffered {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// Buffered bytes already read from a stream, then the rest of it.
    Chain { head: Option<Bytes>, rest: Incoming },
}

impl ProxyBody {
    /// No data and no trailers.
    pub fn empty() -> Self {
        Self::Buffered {
            data: None,
            trailers: None,
        }
    }

    /// Data followed by trailers.
    pub fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self::Buffered {
            data: (!data.is_empty()).then_some(data),
            trailers,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Stream(inner) => Pin::new(inner).poll_frame(cx),
            ProxyBody::Buffered { data, trailers } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            ProxyBody::Chain { head, rest } => {
                if let Some(h) = head.take() {
                    return Poll::Ready(Some(Ok(Frame::data(h))));
                }
                Pin::new(rest).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Stream(inner) => inner.is_end_stream(),
            ProxyBody::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            ProxyBody::Chain { head, rest } => head.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Stream(inner) => inner.size_hint(),
            ProxyBody::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Chain { head, rest } => {
                let extra = head.as_ref().map_or(0, |h| h.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(u) = inner.upper() {
                    hint.set_upper(u + extra);
                }
                hint
            }
        }
    }
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
    /// The body is larger than the limit: what was read, and the rest.
    TooLarge(ProxyBody),
}

/// Reads `body` to its end unless it grows past `limit` bytes, in which case
/// the bytes read so far and the unread rest come back as one body so the
/// caller can still forward it untouched.
pub async fn collect_limited(mut body: Incoming, limit: usize) -> Result<Limited, hyper::Error> {
    use http_body_util::BodyExt;
    let mut buf = BytesMut::new();
    let mut first: Option<Bytes> = None;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(d) => {
                // Most unary bodies arrive as one DATA frame: avoid a copy then.
                if first.is_none() && buf.is_empty() {
                    first = Some(d);
                } else {
                    if let Some(f) = first.take() {
                        buf.extend_from_slice(&f);
                    }
                    buf.extend_from_slice(&d);
                }
                let len = first.as_ref().map_or(buf.len(), |f| f.len());
                if len > limit {
                    let head = first.take().unwrap_or_else(|| buf.split().freeze());
                    return Ok(Limited::TooLarge(ProxyBody::Chain {
                        head: Some(head),
                        rest: body,
                    }));
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    let data = first.unwrap_or_else(|| buf.freeze());
    Ok(Limited::Complete(Collected { data, trailers }))
}
