//! Per-call forwarding: the opaque fast path and the hooked path.
//!
//! A call arrives as an HTTP/2 stream from the caller. Without hooks its
//! headers, data and trailers are relayed to a new stream on the runtime
//! connection and back, frame by frame, never decoded. With hooks, a unary
//! request is buffered (up to a limit), shown to the hooks and sent on with
//! its headers and data in one write; the reply is buffered only when an
//! after-hook wants it. Until the reply starts, a reset from the caller
//! (kubelet's deadline passed) abandons the call and resets the runtime's
//! stream.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::Either;
use h2::RecvStream;
use h2::SendStream;
use h2::server::SendResponse;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Request, Response, Uri};

use super::CallObserver;
use super::grpc::{self, Code, Status};
use super::hook::{After, Before, Call, Chain, HookSet, Outcome, Reply, append_fields};
use super::relay::{self, Collected, Limited, RelayError};
use super::slot::{AlreadyInstalled, HookSlot, Lookup};
use super::upstream::{Upstream, UpstreamError};

/// Largest request or reply the hooked path buffers (CRI messages are capped
/// at 16 MiB by kubelet). Larger bodies bypass the hooks and stream.
pub const DEFAULT_BUFFER_LIMIT: usize = (16 << 20) + grpc::FRAME_HEADER_LEN;

/// The hooked or held path's future (boxed: see [`Proxy::decide`]).
type Decided<'a> = Pin<Box<dyn Future<Output = Result<Ready, String>> + Send + 'a>>;

/// The rest of a request still being relayed to the runtime.
type Pending = Pin<Box<dyn Future<Output = Result<(), RelayError>> + Send>>;

/// What to send back once the call is decided.
enum Ready {
    /// Relay the runtime's reply as it streams in: its head, bytes of its
    /// body already read (if any), the rest of the body; and the rest of
    /// the request still to relay (if any).
    Relay(
        http::response::Parts,
        Option<Bytes>,
        RecvStream,
        Option<Pending>,
    ),
    /// Send a reply read whole, unchanged.
    Whole(http::response::Parts, Collected),
    /// Send a reply the proxy or a hook made (keeping the runtime's
    /// response headers when given).
    Answer(Reply, Option<HeaderMap>),
}

/// Forwards calls from the agent's socket to the runtime. Each caller
/// connection gets a runtime connection of its own
/// ([`Proxy::connection_upstream`]), as it would calling the runtime
/// directly: a caller that stops reading fills only its own connection's
/// flow-control windows, never those of kubelet's calls.
pub struct Proxy {
    /// The runtime's socket.
    runtime: std::path::PathBuf,
    /// The connection opened at start-up, for the first caller.
    spare: std::sync::Mutex<Option<Arc<Upstream>>>,
    hooks: HookSlot,
    buffer_limit: usize,
    /// Told about each call and hook fault (metrics), if set.
    observer: Option<Arc<dyn CallObserver>>,
}

impl Proxy {
    /// A proxy to `upstream` running `hooks`.
    pub fn new(upstream: Upstream, hooks: HookSet) -> Self {
        Self::with_slot(upstream, HookSlot::ready(hooks))
    }

    /// A proxy to `upstream` whose hooks come later
    /// ([`Proxy::install_hooks`]): until then calls on the `held` methods
    /// wait, and every other call is forwarded at once. `held` must name
    /// every method the hooks will take.
    pub fn starting(upstream: Upstream, held: &[&'static str]) -> Self {
        Self::with_slot(upstream, HookSlot::pending(held))
    }

    fn with_slot(upstream: Upstream, hooks: HookSlot) -> Self {
        Self {
            runtime: upstream.path().to_path_buf(),
            spare: std::sync::Mutex::new(Some(Arc::new(upstream))),
            hooks,
            buffer_limit: DEFAULT_BUFFER_LIMIT,
            observer: None,
        }
    }

    /// Installs the hooks of a proxy made with [`Proxy::starting`] and
    /// releases the calls held for them. Returns the methods the hooks
    /// take that were not held (calls on them until now went without
    /// hooks: a bug in the caller's list).
    pub fn install_hooks(&self, hooks: HookSet) -> Result<Vec<String>, AlreadyInstalled> {
        self.hooks.install(hooks)
    }

    /// Tells a proxy made with [`Proxy::starting`] that its hooks will not
    /// come: held calls are answered UNAVAILABLE with `why`.
    pub fn hooks_failed(&self, why: impl Into<String>) -> Result<(), AlreadyInstalled> {
        self.hooks.fail(why.into())
    }

    /// The same proxy, telling `observer` about every call it serves.
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn observer(&self) -> Option<&dyn CallObserver> {
        self.observer.as_deref()
    }

    /// The runtime connection for a new caller connection: the one opened
    /// at start-up for the first caller, a new one (connected on its first
    /// call) for each later caller.
    pub fn connection_upstream(&self) -> Arc<Upstream> {
        self.spare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| Arc::new(Upstream::new(&self.runtime)))
    }

    /// The registered hooks (and their fault count), once installed.
    pub fn hooks(&self) -> Option<&HookSet> {
        self.hooks.hooks()
    }

    /// Handles one call until its reply is complete.
    pub async fn serve(
        self: Arc<Self>,
        upstream: Arc<Upstream>,
        req: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
    ) {
        // The path is kept (a reference count, no copy) only when observed.
        let observed = self
            .observer()
            .map(|o| (o, req.uri().clone(), std::time::Instant::now()));
        let observe = |observed: Option<(&dyn CallObserver, Uri, std::time::Instant)>| {
            if let Some((o, uri, at)) = observed {
                o.call(uri.path(), at.elapsed());
            }
        };
        let ready = tokio::select! {
            biased;
            reset = poll_fn(|cx| respond.poll_reset(cx)) => {
                tracing::debug!(reason = ?reset.ok(), "caller reset the call before its reply");
                observe(observed);
                return;
            }
            ready = self.decide(&upstream, req) => ready,
        };
        let result = match ready {
            Ok(ready) => send(&mut respond, ready).await,
            Err(msg) => {
                let unavailable = Reply::Status(Status::new(Code::Unavailable, msg));
                send(&mut respond, Ready::Answer(unavailable, None)).await
            }
        };
        if let Err(err) = result {
            tracing::debug!(error = %err, "call ended early");
        }
        observe(observed);
    }

    /// Runs hooks and the runtime call up to the point where the reply can
    /// be sent. `Err` is a message for an UNAVAILABLE status.
    ///
    /// A plain function choosing a future, not an `async fn`: an async
    /// fn's arguments stay in its future for its whole life, so every
    /// async layer between the call's task and the runtime stream would
    /// carry the request head (240 bytes) once more.
    fn decide<'a>(
        &'a self,
        up: &'a Upstream,
        req: Request<RecvStream>,
    ) -> impl Future<Output = Result<Ready, String>> + Send + 'a {
        // Boxed: the hooked path's state (buffers, hook futures) stays out
        // of the un-hooked calls' futures, which every call moves several
        // times on its way into its task.
        match self.hooks.lookup(req.uri().path()) {
            Lookup::Hooked(set, chain) if grpc::is_grpc(req.headers()) => {
                Either::Left(Box::pin(self.hooked(up, req, set, chain)) as Decided<'a>)
            }
            Lookup::Held if grpc::is_grpc(req.headers()) => {
                Either::Left(Box::pin(self.held(up, req)) as Decided<'a>)
            }
            _ => Either::Right(self.forward(up, req)),
        }
    }

    /// A call on a method the hooks will take, before they are installed:
    /// wait for them, then go the way the call would have gone.
    async fn held(&self, up: &Upstream, req: Request<RecvStream>) -> Result<Ready, String> {
        let set = self
            .hooks
            .wait()
            .await
            .map_err(|why| format!("keelson-agent: node features did not start: {why}"))?;
        match set.chain(req.uri().path()) {
            Some(chain) => self.hooked(up, req, set, chain).await,
            None => self.forward(up, req).await,
        }
    }

    /// A call some hooks registered for: buffer the request, run the
    /// before-hooks, forward, run the after-hooks that want the reply.
    async fn hooked(
        &self,
        up: &Upstream,
        req: Request<RecvStream>,
        set: &HookSet,
        chain: &Chain,
    ) -> Result<Ready, String> {
        let (parts, mut body) = req.into_parts();
        let method: Arc<str> = parts.uri.path().into();
        let collected = match relay::collect(&mut body, self.buffer_limit).await {
            Ok(Limited::Complete(c)) => c,
            Ok(Limited::TooLarge(head)) => {
                tracing::debug!(%method, "request larger than the hook buffer; forwarding without hooks");
                return self.forward_parts(up, parts, Some(head), body).await;
            }
            Err(e) => return Err(format!("keelson-agent: reading request: {e}")),
        };
        let message = match grpc::single_message(&collected.data) {
            Ok(m) => m,
            Err(why) => {
                tracing::debug!(%method, %why, "request is not one plain gRPC message; forwarding without hooks");
                return self.forward_whole(up, &parts, collected, None).await;
            }
        };

        let mut call = Call::new(method.clone(), parts.headers.clone(), message);
        let mut rewritten = false;
        for hook in &chain.before {
            let decided = set
                .guard(
                    hook.as_ref(),
                    "before",
                    &method,
                    hook.before(&call),
                    self.observer(),
                )
                .await;
            match decided {
                None | Some(Before::Pass) => {}
                Some(Before::Rewrite(bytes)) => {
                    call = Call::new(method.clone(), parts.headers.clone(), bytes);
                    rewritten = true;
                }
                Some(Before::Answer(reply)) => return Ok(Ready::Answer(reply, None)),
            }
        }
        let collected = if rewritten {
            Collected {
                data: grpc::frame(call.message()),
                trailers: collected.trailers,
            }
        } else {
            collected
        };
        let wanted = chain.after.iter().any(|h| h.wants_reply(&call));
        let after = wanted.then_some((set, &call, chain));
        self.forward_whole(up, &parts, collected, after).await
    }

    /// The opaque path: relay everything.
    fn forward<'a>(
        &'a self,
        up: &'a Upstream,
        req: Request<RecvStream>,
    ) -> impl Future<Output = Result<Ready, String>> + Send + 'a {
        let (parts, body) = req.into_parts();
        self.forward_parts(up, parts, None, body)
    }

    /// Opens the runtime stream and relays the request (after `head`, bytes
    /// already read from it) while waiting for the reply's head.
    async fn forward_parts(
        &self,
        up: &Upstream,
        parts: http::request::Parts,
        head: Option<Bytes>,
        body: RecvStream,
    ) -> Result<Ready, String> {
        let eos = head.is_none() && body.is_end_stream();
        let (resp, mut up_send) = up
            .ready()
            .await
            .and_then(|mut s| {
                s.send_request(upstream_request(&parts), eos)
                    .map_err(UpstreamError::Send)
            })
            .map_err(|e| unreachable_runtime(&e))?;
        let mut pending: Option<Pending> = (!eos).then(|| {
            Box::pin(async move {
                if let Some(head) = head {
                    relay::write(&mut up_send, head, false).await?;
                }
                relay::relay(body, up_send).await
            }) as Pending
        });
        tokio::pin!(resp);
        let resp = loop {
            tokio::select! {
                biased;
                r = &mut resp => break r,
                done = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                    if let Err(e) = done {
                        tracing::debug!(error = %e, "request body not fully relayed");
                    }
                    pending = None;
                }
            }
        };
        let (parts, body) = resp
            .map_err(|e| format!("keelson-agent: runtime stream failed: {e}"))?
            .into_parts();
        Ok(Ready::Relay(parts, None, body, pending))
    }

    /// Sends a buffered request (headers and data in one write), then waits
    /// for the reply, running after-hooks on it when given.
    async fn forward_whole(
        &self,
        up: &Upstream,
        parts: &http::request::Parts,
        body: Collected,
        after: Option<(&HookSet, &Call, &Chain)>,
    ) -> Result<Ready, String> {
        let eos = body.data.is_empty() && body.trailers.is_none();
        let (resp, mut up_send) = up
            .ready()
            .await
            .and_then(|mut s| {
                s.send_request(upstream_request(parts), eos)
                    .map_err(UpstreamError::Send)
            })
            .map_err(|e| unreachable_runtime(&e))?;
        if !eos {
            relay::send_buffered(&mut up_send, body.data, body.trailers)
                .await
                .map_err(|e| format!("keelson-agent: sending request: {e}"))?;
        }
        let resp = resp
            .await
            .map_err(|e| format!("keelson-agent: runtime stream failed: {e}"))?;
        match after {
            None => {
                let (parts, body) = resp.into_parts();
                Ok(Ready::Relay(parts, None, body, None))
            }
            Some((set, call, chain)) => self.after(resp, set, call, chain).await,
        }
    }

    /// Runs the after-hooks on the runtime's reply.
    async fn after(
        &self,
        resp: Response<RecvStream>,
        set: &HookSet,
        call: &Call,
        chain: &Chain,
    ) -> Result<Ready, String> {
        let (parts, mut body) = resp.into_parts();
        let collected = match relay::collect(&mut body, self.buffer_limit).await {
            Ok(Limited::Complete(c)) => c,
            // Too big to look at: pass it on as it is.
            Ok(Limited::TooLarge(head)) => return Ok(Ready::Relay(parts, Some(head), body, None)),
            Err(e) => return Err(format!("keelson-agent: reading runtime reply: {e}")),
        };
        let status = collected
            .trailers
            .as_ref()
            .and_then(Status::from_headers)
            .or_else(|| Status::from_headers(&parts.headers))
            .unwrap_or_else(|| Status::new(Code::Unknown, "runtime reply carries no grpc-status"));
        let message = if collected.data.is_empty() {
            None
        } else {
            match grpc::single_message(&collected.data) {
                Ok(m) => Some(m),
                Err(_) => return Ok(Ready::Whole(parts, collected)),
            }
        };
        let mut outcome = Outcome { status, message };
        let mut changed = false;
        for hook in &chain.after {
            let decided = set
                .guard(
                    hook.as_ref(),
                    "after",
                    call.method(),
                    hook.after(call, &outcome),
                    self.observer(),
                )
                .await;
            match decided {
                None | Some(After::Keep) => {}
                Some(After::Append(extra)) => {
                    if let Some(m) = &outcome.message {
                        outcome.message = Some(append_fields(m, &extra));
                        changed = true;
                    }
                }
                Some(After::Replace(Reply::Message(m))) => {
                    outcome = Outcome {
                        status: Status::new(Code::Ok, ""),
                        message: Some(m),
                    };
                    changed = true;
                }
                Some(After::Replace(Reply::Status(s))) => {
                    outcome = Outcome {
                        status: s,
                        message: None,
                    };
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(Ready::Whole(parts, collected));
        }
        let reply = match outcome.message {
            Some(m) if outcome.status.code == Code::Ok as u16 => Reply::Message(m),
            _ => Reply::Status(outcome.status),
        };
        Ok(Ready::Answer(reply, Some(parts.headers)))
    }
}

/// Sends the decided reply to the caller: the head now, the body (if any)
/// by the returned future. A plain function for the reason given at
/// [`Proxy::decide`].
fn send(
    respond: &mut SendResponse<Bytes>,
    ready: Ready,
) -> impl Future<Output = Result<(), RelayError>> + Send + 'static {
    type Done = std::future::Ready<Result<(), RelayError>>;
    let done = |r: Result<(), RelayError>| Either::Right(Either::Right(std::future::ready(r)));
    let buffered = |send, data, trailers| -> Either<_, Either<_, Done>> {
        Either::Right(Either::Left(send_buffered(send, data, trailers)))
    };
    match ready {
        Ready::Relay(parts, head, body, pending) => {
            let eos = head.is_none() && body.is_end_stream();
            match respond.send_response(Response::from_parts(parts, ()), eos) {
                Err(e) => done(Err(RelayError::Send(e))),
                Ok(send) => Either::Left(relay_reply(send, head, body, pending, eos)),
            }
        }
        Ready::Whole(parts, body) => {
            let eos = body.data.is_empty() && body.trailers.is_none();
            match respond.send_response(Response::from_parts(parts, ()), eos) {
                Err(e) => done(Err(RelayError::Send(e))),
                Ok(_) if eos => done(Ok(())),
                Ok(send) => buffered(send, body.data, body.trailers),
            }
        }
        Ready::Answer(reply, headers) => {
            let mut headers = headers.unwrap_or_else(grpc::reply_headers);
            headers.remove("grpc-status");
            headers.remove("grpc-message");
            match reply {
                Reply::Message(m) => {
                    let mut resp = Response::new(());
                    *resp.headers_mut() = headers;
                    match respond.send_response(resp, false) {
                        Err(e) => done(Err(RelayError::Send(e))),
                        Ok(send) => {
                            let mut trailers = HeaderMap::new();
                            Status::new(Code::Ok, "").write_to(&mut trailers);
                            buffered(send, grpc::frame(&m), Some(trailers))
                        }
                    }
                }
                Reply::Status(s) => {
                    let mut resp = grpc::trailers_only(&s, ());
                    for (k, v) in headers.iter() {
                        if !resp.headers().contains_key(k) {
                            resp.headers_mut().insert(k.clone(), v.clone());
                        }
                    }
                    done(
                        respond
                            .send_response(resp, true)
                            .map(|_| ())
                            .map_err(RelayError::Send),
                    )
                }
            }
        }
    }
}

/// Relays the runtime's reply body (after `head`, bytes of it already
/// read) to the caller, and the rest of the request, if any, alongside.
async fn relay_reply(
    send: SendStream<Bytes>,
    head: Option<Bytes>,
    body: RecvStream,
    pending: Option<Pending>,
    eos: bool,
) -> Result<(), RelayError> {
    let reply = async move {
        if eos {
            return Ok(());
        }
        relay_body(send, head, body).await
    };
    match pending {
        None => reply.await,
        Some(p) => {
            let (req, reply) = tokio::join!(p, reply);
            if let Err(e) = req {
                tracing::debug!(error = %e, "request body not fully relayed");
            }
            reply
        }
    }
}

async fn relay_body(
    mut send: SendStream<Bytes>,
    head: Option<Bytes>,
    body: RecvStream,
) -> Result<(), RelayError> {
    if let Some(head) = head {
        relay::write(&mut send, head, false).await?;
    }
    relay::relay(body, send).await
}

async fn send_buffered(
    mut send: SendStream<Bytes>,
    data: Bytes,
    trailers: Option<HeaderMap>,
) -> Result<(), RelayError> {
    relay::send_buffered(&mut send, data, trailers).await
}

fn unreachable_runtime(err: &dyn std::error::Error) -> String {
    tracing::warn!(error = %err, "runtime unreachable");
    format!("keelson-agent: {err}")
}

/// The request head sent upstream: the caller's method, path and headers on
/// `http://<authority>` (the caller's authority; kubelet sends `localhost`).
fn upstream_request(parts: &http::request::Parts) -> Request<()> {
    let mut uri = parts.uri.clone().into_parts();
    if uri.scheme.is_none() {
        uri.scheme = Some(Scheme::HTTP);
    }
    if uri.authority.is_none() {
        uri.authority = Some(Authority::from_static("localhost"));
    }
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("http://localhost/"));
    *req.headers_mut() = parts.headers.clone();
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without making one.
    fn future_size<A, B, C, D, F: Future>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every call's future is built on the stack and moved (memcpy) several
    /// times on its way into its task's cell; at 4 KiB it touched ~17 KB of
    /// cold cache lines per call (`bench-proxy-instructions --cache-sim`,
    /// README Performance). The un-hooked path keeps it near 1.6 KiB in
    /// release builds by boxing what is rare (connecting, the hooked path)
    /// and by not stacking async layers that each keep the request head.
    /// The bound leaves room for unoptimised builds, not for a return of
    /// the handshake or the hook state into every call.
    #[test]
    fn call_futures_stay_small() {
        let serve = future_size(Proxy::serve);
        assert!(serve <= 2560, "a call's future is {serve} bytes");
        let ready = std::mem::size_of_val(&Upstream::new("/nowhere").ready());
        assert!(
            ready <= 256,
            "waiting for a runtime stream takes {ready} bytes"
        );
    }
}
