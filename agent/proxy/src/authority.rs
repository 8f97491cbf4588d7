//! Repair of `:authority` values the HTTP/2 stack would refuse.
//!
//! Python's grpcio (and grpc-core clients generally) dialing
//! `unix:///path` send the socket path, percent-encoded, as `:authority`
//! (`unix:%2Frun%2F...`). That is not a valid URI authority, and the h2
//! crate resets every such stream with PROTOCOL_ERROR. containerd (Go)
//! accepts it, so a transparent proxy must too.
//!
//! [`AuthorityRepair`] sits between the caller's socket and the HTTP/2
//! server. It reads frames until the caller's first header block: if its
//! `:authority` is valid (kubelet, crictl, tonic, grpc-go), the connection
//! switches to plain pass-through for good and costs nothing more. If not,
//! every header block on the connection is decoded and re-encoded with
//! `:authority: localhost` (the value kubelet sends), so the HPACK state
//! the server sees stays consistent.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Largest frame payload we emit (the HTTP/2 minimum every peer accepts).
const MAX_OUT_FRAME: usize = 16_384;
/// Largest header block we are willing to buffer (matches the server's
/// header list limit).
const MAX_BLOCK: usize = 1 << 20;
/// The authority put in place of an invalid one.
const REPLACEMENT: &[u8] = b"localhost";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Still before the first header block.
    Watching,
    /// First block was fine: bytes flow through untouched.
    PassThrough,
    /// Every header block is re-encoded.
    Rewriting,
}

/// A header block being gathered from HEADERS + CONTINUATION frames.
struct Block {
    stream_id: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: BytesMut,
    /// The frames as received, for passing on unchanged.
    raw: BytesMut,
}

/// The caller's side of a connection, with `:authority` repair on reads.
pub struct AuthorityRepair<S> {
    inner: S,
    mode: Mode,
    preface_seen: bool,
    input: BytesMut,
    output: BytesMut,
    block: Option<Block>,
    decoder: fluke_hpack::Decoder<'static>,
    encoder: fluke_hpack::Encoder<'static>,
    broken: bool,
}

impl<S> AuthorityRepair<S> {
    /// Wraps the caller's stream.
    pub fn new(inner: S) -> Self {
        let mut decoder = fluke_hpack::Decoder::new();
        // The server advertises the default 4096-byte table; the caller's
        // encoder may not use more.
        decoder.set_max_allowed_table_size(4096);
        Self {
            inner,
            mode: Mode::Watching,
            preface_seen: false,
            input: BytesMut::new(),
            output: BytesMut::new(),
            block: None,
            decoder,
            encoder: fluke_hpack::Encoder::new(),
            broken: false,
        }
    }

    /// Moves complete frames from `input` to `output`, repairing header
    /// blocks as the mode requires.
    fn process(&mut self) -> io::Result<()> {
        if !self.preface_seen {
            if self.input.len() < PREFACE.len() {
                return Ok(());
            }
            if &self.input[..PREFACE.len()] != PREFACE {
                // Not HTTP/2: let the server reject it.
                self.mode = Mode::PassThrough;
                self.output.extend_from_slice(&self.input.split());
                return Ok(());
            }
            self.output
                .extend_from_slice(&self.input.split_to(PREFACE.len()));
            self.preface_seen = true;
        }
        while self.mode != Mode::PassThrough && self.input.len() >= FRAME_HEADER {
            let len = (usize::from(self.input[0]) << 16)
                | (usize::from(self.input[1]) << 8)
                | usize::from(self.input[2]);
            if self.input.len() < FRAME_HEADER + len {
                return Ok(());
            }
            let frame = self.input.split_to(FRAME_HEADER + len);
            let kind = frame[3];
            let flags = frame[4];
            let stream_id =
                u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
            match (kind, self.block.is_some()) {
                (HEADERS, false) => {
                    let payload = &frame[FRAME_HEADER..];
                    let mut at = 0;
                    let mut pad = 0;
                    if flags & PADDED != 0 {
                        pad = usize::from(*payload.first().ok_or_else(bad)?);
                        at = 1;
                    }
                    let mut priority = None;
                    if flags & PRIORITY != 0 {
                        let p = payload.get(at..at + 5).ok_or_else(bad)?;
                        priority = Some([p[0], p[1], p[2], p[3], p[4]]);
                        at += 5;
                    }
                    let end = payload
                        .len()
                        .checked_sub(pad)
                        .filter(|e| *e >= at)
                        .ok_or_else(bad)?;
                    let block = Block {
                        stream_id,
                        flags,
                        priority,
                        fragment: BytesMut::from(&payload[at..end]),
                        raw: frame.clone(),
                    };
                    self.block = Some(block);
                    if flags & END_HEADERS != 0 {
                        self.finish_block()?;
                    }
                }
                (CONTINUATION, true) => {
                    let block = self.block.as_mut().ok_or_else(bad)?;
                    if stream_id != block.stream_id {
                        return Err(bad());
                    }
                    block.fragment.extend_from_slice(&frame[FRAME_HEADER..]);
                    block.raw.extend_from_slice(&frame);
                    if block.fragment.len() > MAX_BLOCK {
                        return Err(bad());
                    }
                    if flags & END_HEADERS != 0 {
                        self.finish_block()?;
                    }
                }
                // Anything else in the middle of a header block is a
                // protocol error; pass it on for the server to say so.
                _ => self.output.extend_from_slice(&frame),
            }
        }
        if self.mode == Mode::PassThrough && !self.input.is_empty() {
            let rest = self.input.split();
            self.output.extend_from_slice(&rest);
        }
        Ok(())
    }

    /// Decodes a complete header block and emits it, repaired if needed.
    fn finish_block(&mut self) -> io::Result<()> {
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        let decoder = &mut self.decoder;
        let fragment = &block.fragment;
        // The HPACK decoder can panic on some malformed input; treat that
        // like a decoding error (the connection is closed either way).
        let decoded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decoder.decode(fragment)));
        let headers = match decoded {
            Ok(Ok(h)) => h,
            _ => return Err(bad()),
        };
        let invalid = headers.iter().any(|(n, v)| {
            n == b":authority" && http::uri::Authority::try_from(v.as_slice()).is_err()
        });
        if self.mode == Mode::Watching && !invalid {
            self.mode = Mode::PassThrough;
            self.output.extend_from_slice(&block.raw);
            return Ok(());
        }
        if self.mode == Mode::Watching {
            tracing::debug!("caller sends an invalid :authority; repairing its header blocks");
            self.mode = Mode::Rewriting;
        }
        let repaired = headers.iter().map(|(n, v)| {
            if n == b":authority" && http::uri::Authority::try_from(v.as_slice()).is_err() {
                (n.as_slice(), REPLACEMENT)
            } else {
                (n.as_slice(), v.as_slice())
            }
        });
        let mut encoded = BytesMut::new();
        if let Some(p) = block.priority {
            encoded.put_slice(&p);
        }
        encoded.put_slice(&self.encoder.encode(repaired));
        self.emit_block(
            block.stream_id,
            block.flags,
            block.priority.is_some(),
            encoded,
        );
        Ok(())
    }

    /// Writes a header block as HEADERS (+ CONTINUATION) frames.
    fn emit_block(&mut self, stream_id: u32, flags: u8, priority: bool, mut payload: BytesMut) {
        // Padding is dropped; END_STREAM and PRIORITY are kept.
        let keep = flags & (0x1 | if priority { PRIORITY } else { 0 });
        let mut kind = HEADERS;
        let mut first = true;
        loop {
            let n = payload.len().min(MAX_OUT_FRAME);
            let chunk = payload.split_to(n);
            let last = payload.is_empty();
            let f = if first { keep } else { 0 } | if last { END_HEADERS } else { 0 };
            self.output.put_u8((n >> 16) as u8);
            self.output.put_u16((n & 0xffff) as u16);
            self.output.put_u8(kind);
            self.output.put_u8(f);
            self.output.put_u32(stream_id);
            self.output.put_slice(&chunk);
            if last {
                break;
            }
            kind = CONTINUATION;
            first = false;
        }
    }
}

fn bad() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP/2 header frames")
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRepair<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        loop {
            if !me.output.is_empty() {
                let n = me.output.len().min(buf.remaining());
                buf.put_slice(&me.output[..n]);
                me.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if me.broken {
                return Poll::Ready(Err(bad()));
            }
            if me.mode == Mode::PassThrough {
                return Pin::new(&mut me.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut me.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let filled = rb.filled();
                    if filled.is_empty() {
                        // End of stream: hand over whatever is left.
                        let rest = me.input.split();
                        me.output.extend_from_slice(&rest);
                        if me.output.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    me.input.extend_from_slice(filled);
                    if let Err(e) = me.process() {
                        me.broken = true;
                        if me.output.is_empty() {
                            return Poll::Ready(Err(e));
                        }
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRepair<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Found by fuzzing (`fuzz/fuzz_targets/cri_authority.rs`): a HEADERS
    /// block whose HPACK size update is truncated makes fluke-hpack panic;
    /// the caller's stream ends with an error instead, and the process
    /// (and every other connection) goes on.
    #[tokio::test]
    async fn a_block_that_panics_the_hpack_decoder_is_a_malformed_stream() {
        let mut input = PREFACE.to_vec();
        input.extend_from_slice(&[
            0x00, 0x00, 0x08, 0x01, 0xf7, 0x8f, 0x28, 0xd0, 0x00, 0x01, 0x21, 0x00, 0x00, 0x00,
            0x25, 0x3f, 0x80, 0x15, 0x28, 0xd0, 0x00, 0x01, 0x00, 0x15, 0x08,
        ]);
        let mut repaired = AuthorityRepair::new(&input[..]);
        let mut out = Vec::new();
        let result = repaired.read_to_end(&mut out).await;
        assert!(result.is_err(), "{result:?}");
        assert!(out.starts_with(PREFACE));
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![
            (payload.len() >> 16) as u8,
            (payload.len() >> 8) as u8,
            payload.len() as u8,
            kind,
            flags,
        ];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    async fn pass(input: Vec<u8>) -> Vec<u8> {
        let mut r = AuthorityRepair::new(&input[..]);
        let mut out = vec![];
        r.read_to_end(&mut out).await.unwrap();
        out
    }

    fn block(enc: &mut fluke_hpack::Encoder<'_>, authority: &[u8]) -> Vec<u8> {
        enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/runtime.v1.RuntimeService/Version"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
        ])
    }

    fn decode_all(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut dec = fluke_hpack::Decoder::new();
        let mut rest = &bytes[PREFACE.len()..];
        let mut blocks = vec![];
        while rest.len() >= FRAME_HEADER {
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            if rest[3] == HEADERS {
                blocks.push(dec.decode(&rest[FRAME_HEADER..FRAME_HEADER + len]).unwrap());
            }
            rest = &rest[FRAME_HEADER + len..];
        }
        blocks
    }

    #[tokio::test]
    async fn valid_authority_passes_byte_for_byte() {
        let mut enc = fluke_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &block(&mut enc, b"localhost"),
        ));
        input.extend(frame(0x0, 0x1, 1, b"\0\0\0\0\0"));
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            3,
            &block(&mut enc, b"unix:%2Fbad"),
        ));
        assert_eq!(
            pass(input.clone()).await,
            input,
            "after a good first block nothing is touched"
        );
    }

    #[tokio::test]
    async fn invalid_authority_is_replaced_in_every_block() {
        let mut enc = fluke_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS | 0x1,
            1,
            &block(&mut enc, b"unix:%2Frun%2Fkeelson%2Fcri.sock"),
        ));
        // Second block relies on the caller's dynamic table from the first.
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            3,
            &block(&mut enc, b"unix:%2Frun%2Fkeelson%2Fcri.sock"),
        ));
        let out = pass(input).await;
        let blocks = decode_all(&out);
        assert_eq!(blocks.len(), 2);
        for b in &blocks {
            let auth = b.iter().find(|(n, _)| n == b":authority").unwrap();
            assert_eq!(auth.1, b"localhost");
            assert!(
                b.iter()
                    .any(|(n, v)| n == b":path" && v == b"/runtime.v1.RuntimeService/Version")
            );
        }
        assert_eq!(out[PREFACE.len() + 4], END_HEADERS | 0x1, "END_STREAM kept");
    }

    #[tokio::test]
    async fn continuation_and_padding_are_handled() {
        let mut enc = fluke_hpack::Encoder::new();
        let b = block(&mut enc, b"unix:%2Fx");
        let (a, c) = b.split_at(b.len() / 2);
        let mut padded = vec![3u8];
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED, 1, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, c));
        let out = pass(input).await;
        let blocks = decode_all(&out);
        assert_eq!(blocks.len(), 1);
        assert!(
            blocks[0]
                .iter()
                .any(|(n, v)| n == b":authority" && v == b"localhost")
        );
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0x3f, 0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        let mut r = AuthorityRepair::new(&input[..]);
        let mut out = vec![];
        assert!(r.read_to_end(&mut out).await.is_err());
        let input = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        assert_eq!(
            pass(input.clone()).await,
            input,
            "non-HTTP/2 passes for the server to refuse"
        );
    }
}
