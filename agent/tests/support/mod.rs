//! A fake runtime (raw HTTP/2 on a unix socket) and a raw gRPC caller, so
//! tests can see and control every byte, header and trailer on both sides
//! of the proxy.

#![allow(dead_code)]

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keelson_agent::cri::server::{Drained, serve};
use keelson_agent::cri::{HookSet, Proxy, Upstream};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// What the fake runtime saw of one call.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How the fake runtime answers.
#[derive(Clone)]
pub enum Answer {
    /// Echo the request body, add header `x-fake: 1` and trailer `x-trailer: t`.
    Echo,
    /// Reply with these message bytes (framed) and status OK.
    Message(Bytes),
    /// Trailers-only error.
    Error(u16, &'static str),
    /// Stream: each message is sent when the test pushes it into the channel.
    Stream(Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>),
}

pub struct FakeRuntime {
    pub socket: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub answer: Arc<Mutex<Answer>>,
    _task: tokio::task::JoinHandle<()>,
}

impl FakeRuntime {
    pub async fn start(dir: &Path) -> Self {
        let socket = dir.join("fake-runtime.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new(Answer::Echo));
        let (s, a) = (seen.clone(), answer.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, a) = (s.clone(), a.clone());
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| handle(req, s.clone(), a.clone()));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            socket,
            seen,
            answer,
            _task: task,
        }
    }

    pub fn set(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    pub fn calls(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type RespBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn handle(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    answer: Arc<Mutex<Answer>>,
) -> Result<Response<RespBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        path: parts.uri.path().to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let answer = answer.lock().unwrap().clone();
    let ok_trailers = |extra: bool| {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        if extra {
            t.insert("x-trailer", HeaderValue::from_static("t"));
        }
        t
    };
    let mut resp = match answer {
        Answer::Echo => {
            let frames = vec![
                Ok(Frame::data(body)),
                Ok(Frame::trailers(ok_trailers(true))),
            ];
            let mut r = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
            r.headers_mut()
                .insert("x-fake", HeaderValue::from_static("1"));
            r
        }
        Answer::Message(m) => {
            let frames = vec![
                Ok(Frame::data(keelson_agent::cri::grpc::frame(&m))),
                Ok(Frame::trailers(ok_trailers(false))),
            ];
            Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        }
        Answer::Error(code, msg) => {
            let mut r = Response::new(http_body_util::Empty::new().boxed());
            r.headers_mut()
                .insert("grpc-status", HeaderValue::from(code));
            r.headers_mut()
                .insert("grpc-message", HeaderValue::from_static(msg));
            r
        }
        Answer::Stream(rx) => {
            let rx = rx.lock().unwrap().take().expect("stream answer used once");
            let s = futures_util::stream::unfold((rx, false), |(mut rx, done)| async move {
                if done {
                    return None;
                }
                match rx.recv().await {
                    Some(m) => Some((
                        Ok(Frame::data(keelson_agent::cri::grpc::frame(&m))),
                        (rx, false),
                    )),
                    None => {
                        let mut t = HeaderMap::new();
                        t.insert("grpc-status", HeaderValue::from_static("0"));
                        Some((Ok(Frame::trailers(t)), (rx, true)))
                    }
                }
            });
            Response::new(StreamBody::new(s).boxed())
        }
    };
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    Ok(resp)
}

/// A proxy serving on a socket in `dir`, in this process.
pub struct RunningProxy {
    pub socket: PathBuf,
    pub proxy: Arc<Proxy>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Drained>>,
}

impl RunningProxy {
    pub async fn start(dir: &Path, runtime: &Path, hooks: HookSet) -> Self {
        Self::serving(dir, Proxy::new(Upstream::new(runtime), hooks))
    }

    /// A proxy whose hooks come later ([`Proxy::install_hooks`]), holding
    /// calls on `held` until then.
    pub async fn starting(dir: &Path, runtime: &Path, held: &[&'static str]) -> Self {
        Self::serving(dir, Proxy::starting(Upstream::new(runtime), held))
    }

    fn serving(dir: &Path, proxy: Proxy) -> Self {
        let socket = dir.join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let proxy = Arc::new(proxy);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(
            listener,
            proxy.clone(),
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(5),
        ));
        Self {
            socket,
            proxy,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(&mut self) -> Drained {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }
}

/// What a caller got back.
#[derive(Debug)]
pub struct Got {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Got {
    /// grpc-status from trailers or (trailers-only) headers.
    pub fn status(&self) -> (u16, String) {
        let s = self
            .trailers
            .as_ref()
            .and_then(keelson_agent::cri::grpc::Status::from_headers)
            .or_else(|| keelson_agent::cri::grpc::Status::from_headers(&self.headers))
            .expect("grpc-status present");
        (s.code, s.message)
    }
}

/// An HTTP/2 connection to a CRI socket.
pub async fn connect(
    socket: &Path,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>> {
    let stream = UnixStream::connect(socket).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// One gRPC call with a raw body and extra metadata.
pub async fn call(socket: &Path, path: &str, meta: &[(&str, &str)], body: Bytes) -> Got {
    let mut send = connect(socket).await;
    let mut req = Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in meta {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(http_body_util::Full::new(body)).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Got {
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}
