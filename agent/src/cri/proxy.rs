//! Per-call forwarding: the opaque fast path and the hooked path.

use std::convert::Infallible;
use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http::{HeaderMap, Request, Response, Uri};
use hyper::body::Incoming;

use super::body::{Collected, Limited, ProxyBody, collect_limited};
use super::grpc::{self, Code, Status};
use super::hook::{After, Before, Call, Chain, HookSet, Outcome, Reply, append_fields};
use super::upstream::Upstream;

/// Largest request or reply the hooked path buffers (CRI messages are capped
/// at 16 MiB by kubelet). Larger bodies bypass the hooks and stream.
pub const DEFAULT_BUFFER_LIMIT: usize = 16 << 20 | grpc::FRAME_HEADER_LEN;

/// Forwards calls from the agent's socket to the runtime.
pub struct Proxy {
    upstream: Upstream,
    hooks: HookSet,
    buffer_limit: usize,
}

impl Proxy {
    /// A proxy to `upstream` running `hooks`.
    pub fn new(upstream: Upstream, hooks: HookSet) -> Self {
        Self {
            upstream,
            hooks,
            buffer_limit: DEFAULT_BUFFER_LIMIT,
        }
    }

    /// The runtime side.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The registered hooks (and their fault count).
    pub fn hooks(&self) -> &HookSet {
        &self.hooks
    }

    /// Handles one call from the caller. Never fails at the HTTP level: any
    /// problem of the proxy's own becomes a gRPC status.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let resp = match self.hooks.chain(req.uri().path()) {
            Some(chain) if grpc::is_grpc(req.headers()) => {
                let chain = chain.clone();
                self.hooked(req, &chain).await
            }
            _ => {
                let (parts, body) = req.into_parts();
                self.forward(parts, ProxyBody::Stream(body)).await
            }
        };
        Ok(resp)
    }

    /// The opaque path: headers and body go upstream as they are, and the
    /// runtime's headers, body and trailers come back as they are.
    async fn forward(
        &self,
        mut parts: http::request::Parts,
        body: ProxyBody,
    ) -> Response<ProxyBody> {
        parts.uri = upstream_uri(&parts.uri);
        match self.upstream.send(Request::from_parts(parts, body)).await {
            Ok(resp) => resp.map(ProxyBody::Stream),
            Err(err) => unavailable(&err),
        }
    }

    async fn hooked(&self, req: Request<Incoming>, chain: &Chain) -> Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        let method: Arc<str> = parts.uri.path().into();
        let collected = match collect_limited(body, self.buffer_limit).await {
            Ok(Limited::Complete(c)) => c,
            Ok(Limited::TooLarge(body)) => {
                tracing::debug!(%method, "request larger than the hook buffer; forwarding without hooks");
                return self.forward(parts, body).await;
            }
            Err(err) => {
                let status = Status::new(Code::Cancelled, format!("reading request: {err}"));
                return grpc::trailers_only(&status, ProxyBody::empty());
            }
        };
        let message = match grpc::single_message(&collected.data) {
            Ok(m) => m,
            Err(why) => {
                tracing::debug!(%method, %why, "request is not one plain gRPC message; forwarding without hooks");
                return self.forward(parts, restore(collected)).await;
            }
        };

        let mut call = Call::new(method.clone(), parts.headers.clone(), message);
        let mut rewritten = false;
        for hook in &chain.before {
            let decided = self
                .hooks
                .guard(hook.as_ref(), "before", &method, hook.before(&call))
                .await;
            match decided {
                None | Some(Before::Pass) => {}
                Some(Before::Rewrite(bytes)) => {
                    call = Call::new(method.clone(), parts.headers.clone(), bytes);
                    rewritten = true;
                }
                Some(Before::Answer(reply)) => return answer(reply, None),
            }
        }

        let body = if rewritten {
            ProxyBody::buffered(grpc::frame(call.message()), collected.trailers)
        } else {
            restore(collected)
        };
        let resp = self.forward(parts, body).await;
        if chain.after.is_empty() {
            return resp;
        }
        self.after(resp, &call, chain).await
    }

    /// Runs the after-hooks on the runtime's answer.
    async fn after(
        &self,
        resp: Response<ProxyBody>,
        call: &Call,
        chain: &Chain,
    ) -> Response<ProxyBody> {
        let (parts, body) = resp.into_parts();
        let ProxyBody::Stream(incoming) = body else {
            // Our own error reply (runtime unreachable): nothing to look at.
            return Response::from_parts(parts, body);
        };
        let collected = match collect_limited(incoming, self.buffer_limit).await {
            Ok(Limited::Complete(c)) => c,
            Ok(Limited::TooLarge(body)) => return Response::from_parts(parts, body),
            Err(err) => {
                let status =
                    Status::new(Code::Unavailable, format!("reading runtime reply: {err}"));
                return grpc::trailers_only(&status, ProxyBody::empty());
            }
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
                Err(_) => {
                    return Response::from_parts(parts, restore(collected));
                }
            }
        };
        let mut outcome = Outcome { status, message };
        let mut changed = false;
        for hook in &chain.after {
            let decided = self
                .hooks
                .guard(
                    hook.as_ref(),
                    "after",
                    call.method(),
                    hook.after(call, &outcome),
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
            return Response::from_parts(parts, restore(collected));
        }
        let reply = match outcome.message {
            Some(m) if outcome.status.code == Code::Ok as u16 => Reply::Message(m),
            _ => Reply::Status(outcome.status),
        };
        answer(reply, Some(parts.headers))
    }
}

/// Builds the caller's response for a reply the proxy (or a hook) made.
/// `headers` are the runtime's response headers to keep, if any.
fn answer(reply: Reply, headers: Option<HeaderMap>) -> Response<ProxyBody> {
    let mut headers = headers.unwrap_or_else(grpc::reply_headers);
    headers.remove("grpc-status");
    headers.remove("grpc-message");
    match reply {
        Reply::Message(m) => {
            let mut trailers = HeaderMap::new();
            Status::new(Code::Ok, "").write_to(&mut trailers);
            let mut resp = Response::new(ProxyBody::buffered(grpc::frame(&m), Some(trailers)));
            *resp.headers_mut() = headers;
            resp
        }
        Reply::Status(s) => {
            let mut resp = grpc::trailers_only(&s, ProxyBody::empty());
            for (k, v) in headers.iter() {
                if !resp.headers().contains_key(k) {
                    resp.headers_mut().insert(k.clone(), v.clone());
                }
            }
            resp
        }
    }
}

fn restore(c: Collected) -> ProxyBody {
    ProxyBody::buffered(c.data, c.trailers)
}

fn unavailable(err: &dyn std::error::Error) -> Response<ProxyBody> {
    tracing::warn!(error = %err, "runtime unreachable");
    let status = Status::new(Code::Unavailable, format!("keelson-agent: {err}"));
    grpc::trailers_only(&status, ProxyBody::empty())
}

/// The URI sent upstream: the caller's path on `http://<authority>`,
/// keeping the caller's authority when it has one (kubelet sends
/// `localhost`).
fn upstream_uri(uri: &Uri) -> Uri {
    let mut parts = uri.clone().into_parts();
    if parts.scheme.is_none() {
        parts.scheme = Some(Scheme::HTTP);
    }
    if parts.authority.is_none() {
        parts.authority = Some(Authority::from_static("localhost"));
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("http://localhost/"))
}
