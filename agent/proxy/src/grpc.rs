//! gRPC-over-HTTP/2 framing: length-prefixed messages, status codes and the
//! trailers-only replies the proxy builds when it answers on its own.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

/// Length of the gRPC message prefix: one flag byte and a big-endian u32.
pub const FRAME_HEADER_LEN: usize = 5;

/// gRPC status codes the proxy produces itself (numbers from the gRPC spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// A gRPC status: code number as sent on the wire plus its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Numeric code as in `grpc-status` (kept as a number so codes from a
    /// peer that this enum does not list survive untouched).
    pub code: u16,
    /// Human-readable text, as in `grpc-message` (decoded).
    pub message: String,
}

impl Status {
    /// A status with one of the well-known codes.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code: code as u16,
            message: message.into(),
        }
    }

    /// Reads `grpc-status` / `grpc-message` from a trailer (or trailers-only
    /// header) map. `None` when there is no `grpc-status`.
    pub fn from_headers(map: &HeaderMap) -> Option<Self> {
        let code = map.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
        let message = map
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .map(percent_decode)
            .unwrap_or_default();
        Some(Self { code, message })
    }

    /// Writes this status into a header or trailer map.
    pub fn write_to(&self, map: &mut HeaderMap) {
        map.insert("grpc-status", HeaderValue::from(self.code));
        if self.message.is_empty() {
            return;
        }
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&self.message)) {
            map.insert("grpc-message", v);
        }
    }
}

/// Prefixes an uncompressed message with the gRPC frame header.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(FRAME_HEADER_LEN + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// Why a buffered body is not exactly one uncompressed gRPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("body is shorter than its gRPC frame header says")]
    Truncated,
    #[error("body holds more than one gRPC message")]
    Trailing,
    #[error("message is compressed")]
    Compressed,
    #[error("body holds no gRPC message")]
    Empty,
}

/// The declared payload length of the frame starting at `buf`, if the header
/// is complete.
pub fn declared_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < FRAME_HEADER_LEN {
        return None;
    }
    Some(u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize)
}

/// Extracts the single message of a unary call from its buffered body.
pub fn single_message(body: &Bytes) -> Result<Bytes, FrameError> {
    if body.is_empty() {
        return Err(FrameError::Empty);
    }
    let len = declared_len(body).ok_or(FrameError::Truncated)?;
    if body[0] != 0 {
        return Err(FrameError::Compressed);
    }
    let end = FRAME_HEADER_LEN + len;
    match body.len().cmp(&end) {
        std::cmp::Ordering::Less => Err(FrameError::Truncated),
        std::cmp::Ordering::Greater => Err(FrameError::Trailing),
        std::cmp::Ordering::Equal => Ok(body.slice(FRAME_HEADER_LEN..end)),
    }
}

/// Whether a request's content type is gRPC (`application/grpc[+proto|;…]`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Response headers of a successful gRPC reply.
pub fn reply_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h
}

/// A trailers-only response carrying `status` (no message, no body).
pub fn trailers_only<B>(status: &Status, body: B) -> Response<B> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    *resp.headers_mut() = reply_headers();
    status.write_to(resp.headers_mut());
    resp
}

/// Percent-encodes a grpc-message value as the gRPC spec asks (everything
/// outside printable ASCII, and `%`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`percent_encode`]; malformed escapes are kept literally.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let f = frame(b"hello");
        assert_eq!(&f[..5], &[0, 0, 0, 0, 5]);
        assert_eq!(single_message(&f).unwrap(), Bytes::from_static(b"hello"));
    }

    #[test]
    fn single_message_rejects_bad_bodies() {
        assert_eq!(single_message(&Bytes::new()), Err(FrameError::Empty));
        assert_eq!(
            single_message(&Bytes::from_static(&[0, 0, 0])),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            single_message(&Bytes::from_static(&[0, 0, 0, 0, 3, 1])),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            single_message(&Bytes::from_static(&[0, 0, 0, 0, 1, 1, 2])),
            Err(FrameError::Trailing)
        );
        assert_eq!(
            single_message(&Bytes::from_static(&[1, 0, 0, 0, 1, 1])),
            Err(FrameError::Compressed)
        );
        let empty_msg = single_message(&Bytes::from_static(&[0, 0, 0, 0, 0])).unwrap();
        assert!(empty_msg.is_empty());
    }

    #[test]
    fn status_survives_headers() {
        let s = Status::new(Code::NotFound, "no such container \"x\"\n100% gone é");
        let mut h = HeaderMap::new();
        s.write_to(&mut h);
        assert_eq!(Status::from_headers(&h), Some(s));
        let odd = Status {
            code: 99,
            message: String::new(),
        };
        let mut h = HeaderMap::new();
        odd.write_to(&mut h);
        assert_eq!(Status::from_headers(&h), Some(odd));
    }

    #[test]
    fn percent_decode_keeps_malformed() {
        assert_eq!(percent_decode("a%zzb%4"), "a%zzb%4");
        assert_eq!(percent_decode("%41%"), "A%");
    }
}
