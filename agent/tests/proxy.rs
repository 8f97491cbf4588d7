//! The proxy core against a fake runtime: opaque forwarding, hook outcomes,
//! unknown fields, errors, streaming, garbage and graceful stop.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;

use bytes::{BufMut, Bytes, BytesMut};
use cri_proto as cri;
use keelson_agent::cri::grpc::{self, Code, Status};
use keelson_agent::cri::methods::runtime as m;
use keelson_agent::cri::server::Drained;
use keelson_agent::cri::{
    After, Before, Call, Hook, HookError, HookFuture, HookSet, Interest, Outcome, Reply,
};
use prost::Message;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `message` with a varint field `number` appended that no CRI message has.
fn with_unknown_field(message: &[u8], number: u32, value: u64) -> Bytes {
    let mut b = BytesMut::from(message);
    prost::encoding::encode_key(number, prost::encoding::WireType::Varint, &mut b);
    prost::encoding::encode_varint(value, &mut b);
    b.freeze()
}

/// Hook that decodes a request to look and passes.
struct Looker(&'static str, AtomicUsize);
impl Hook for Looker {
    fn name(&self) -> &str {
        "looker"
    }
    fn interest(&self) -> Interest {
        Interest {
            before: vec![self.0],
            after: vec![self.0],
        }
    }
    fn before<'a>(&'a self, call: &'a Call) -> HookFuture<'a, Before> {
        Box::pin(async move {
            let v: cri::VersionRequest = call.decode()?;
            assert_eq!(v.version, "0.1.0");
            self.1.fetch_add(1, Ordering::SeqCst);
            Ok(Before::Pass)
        })
    }
}

#[tokio::test]
async fn no_hooks_is_byte_for_byte_and_unknown_methods_pass() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let mut proxy = RunningProxy::start(dir.path(), &rt.socket, HookSet::new()).await;
    let body = grpc::frame(b"\x0a\x03abc");
    let got = call(
        &proxy.socket,
        "/runtime.v1.RuntimeService/NoSuchMethod",
        &[("x-meta", "kept"), ("grpc-timeout", "5S")],
        body.clone(),
    )
    .await;
    let seen = rt.calls();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/runtime.v1.RuntimeService/NoSuchMethod");
    assert_eq!(seen[0].headers["x-meta"], "kept");
    assert_eq!(seen[0].headers["grpc-timeout"], "5S");
    assert_eq!(seen[0].body, body);
    assert_eq!(got.body, body, "reply bytes unchanged");
    assert_eq!(got.headers["x-fake"], "1", "response metadata kept");
    let trailers = got.trailers.as_ref().unwrap();
    assert_eq!(trailers["x-trailer"], "t", "trailers kept");
    assert_eq!(got.status(), (0, String::new()));
    assert_eq!(proxy.stop().await, Drained::Clean);
}

#[tokio::test]
async fn unknown_fields_survive_a_hooked_method_both_ways() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let looker = Arc::new(Looker(m::Version, AtomicUsize::new(0)));
    let mut hooks = HookSet::new();
    hooks.register(looker.clone());
    let proxy = RunningProxy::start(dir.path(), &rt.socket, hooks).await;

    let req = with_unknown_field(
        &cri::VersionRequest {
            version: "0.1.0".into(),
        }
        .encode_to_vec(),
        999,
        42,
    );
    let reply = with_unknown_field(
        &cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        777,
        7,
    );
    rt.set(Answer::Message(reply.clone()));
    let got = call(&proxy.socket, m::Version, &[], grpc::frame(&req)).await;
    assert_eq!(looker.1.load(Ordering::SeqCst), 1, "the hook ran");
    assert_eq!(
        rt.calls()[0].body,
        grpc::frame(&req),
        "request bytes incl. field 999 reached the runtime"
    );
    assert_eq!(
        got.body,
        grpc::frame(&reply),
        "reply bytes incl. field 777 reached the caller"
    );
    // prost itself would have dropped them:
    let reencoded = cri::VersionRequest::decode(req.clone())
        .unwrap()
        .encode_to_vec();
    assert_ne!(reencoded, req.to_vec());
}

/// Holds Version calls until released.
struct Delay(Arc<Notify>);
impl Hook for Delay {
    fn name(&self) -> &str {
        "delay"
    }
    fn interest(&self) -> Interest {
        Interest {
            before: vec![m::Version],
            after: vec![],
        }
    }
    fn before<'a>(&'a self, _call: &'a Call) -> HookFuture<'a, Before> {
        Box::pin(async move {
            self.0.notified().await;
            Ok(Before::Pass)
        })
    }
}

#[tokio::test]
async fn a_delaying_hook_holds_the_call_until_it_passes() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let gate = Arc::new(Notify::new());
    let mut hooks = HookSet::new();
    hooks.register(Arc::new(Delay(gate.clone())));
    let proxy = RunningProxy::start(dir.path(), &rt.socket, hooks).await;
    let sock = proxy.socket.clone();
    let pending = tokio::spawn(async move { call(&sock, m::Version, &[], grpc::frame(b"")).await });
    // Other methods are not held meanwhile.
    let other = call(&proxy.socket, m::Status, &[], grpc::frame(b"")).await;
    assert_eq!(other.status().0, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        rt.calls().iter().all(|c| c.path != m::Version),
        "held call has not reached the runtime"
    );
    assert!(!pending.is_finished());
    gate.notify_one();
    let got = pending.await.unwrap();
    assert_eq!(got.status().0, 0);
    assert!(rt.calls().iter().any(|c| c.path == m::Version));
}

/// Answers Status itself; rejects StartContainer with a precondition error.
struct Answerer;
impl Hook for Answerer {
    fn name(&self) -> &str {
        "answerer"
    }
    fn interest(&self) -> Interest {
        Interest {
            before: vec![m::Status, m::StartContainer],
            after: vec![],
        }
    }
    fn before<'a>(&'a self, call: &'a Call) -> HookFuture<'a, Before> {
        Box::pin(async move {
            Ok(Before::Answer(if call.method() == m::Status {
                Reply::Message(Bytes::from_static(b"\x12\x00"))
            } else {
                Reply::Status(Status::new(
                    Code::FailedPrecondition,
                    "waiting for sidecar \"a\" to run",
                ))
            }))
        })
    }
}

#[tokio::test]
async fn an_answering_hook_keeps_the_call_from_the_runtime() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let mut hooks = HookSet::new();
    hooks.register(Arc::new(Answerer));
    let proxy = RunningProxy::start(dir.path(), &rt.socket, hooks).await;
    let got = call(&proxy.socket, m::Status, &[], grpc::frame(b"")).await;
    assert_eq!(got.body, grpc::frame(b"\x12\x00"));
    assert_eq!(got.status().0, 0);
    let got = call(
        &proxy.socket,
        m::StartContainer,
        &[],
        grpc::frame(b"\x0a\x01x"),
    )
    .await;
    assert_eq!(
        got.status(),
        (
            Code::FailedPrecondition as u16,
            "waiting for sidecar \"a\" to run".into()
        )
    );
    assert!(rt.calls().is_empty(), "runtime saw nothing");
}

#[tokio::test]
async fn calls_on_hooked_methods_wait_for_hooks_installed_after_the_start() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let proxy =
        RunningProxy::starting(dir.path(), &rt.socket, &[m::Status, m::StartContainer]).await;
    // A method no hook will take is forwarded before the hooks exist.
    let version = call(&proxy.socket, m::Version, &[], grpc::frame(b"v")).await;
    assert_eq!((version.status().0, version.body), (0, grpc::frame(b"v")));
    let sock = proxy.socket.clone();
    let held = tokio::spawn(async move { call(&sock, m::Status, &[], grpc::frame(b"")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!held.is_finished(), "Status waits for its hooks");
    assert!(rt.calls().iter().all(|c| c.path != m::Status));

    let mut hooks = HookSet::new();
    hooks.register(Arc::new(Answerer));
    let unheld = proxy.proxy.install_hooks(hooks).unwrap();
    assert!(unheld.is_empty(), "{unheld:?}");
    // Released into the hook, which answers it itself.
    let got = held.await.unwrap();
    assert_eq!((got.status().0, got.body), (0, grpc::frame(b"\x12\x00")));
    assert!(
        rt.calls().iter().all(|c| c.path != m::Status),
        "the hook answered"
    );
    assert_eq!(proxy.proxy.hooks().map(|h| h.methods().count()), Some(2));
}

#[tokio::test]
async fn held_calls_are_unavailable_when_the_hooks_never_come() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let proxy = RunningProxy::starting(dir.path(), &rt.socket, &[m::StartContainer]).await;
    let sock = proxy.socket.clone();
    let held =
        tokio::spawn(async move { call(&sock, m::StartContainer, &[], grpc::frame(b"")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.proxy.hooks_failed("state dir locked").unwrap();
    let (code, message) = held.await.unwrap().status();
    assert_eq!(code, Code::Unavailable as u16);
    assert!(
        message.contains("node features did not start: state dir locked"),
        "{message}"
    );
    assert!(rt.calls().is_empty(), "the runtime saw nothing");
    // Methods that were never held still pass.
    let version = call(&proxy.socket, m::Version, &[], grpc::frame(b"")).await;
    assert_eq!(version.status().0, 0);
}

/// Rewrites ContainerStatus replies to exit code 0 / reason Completed by
/// appending fields, and StopContainer requests to a 2 s timeout.
struct Rewriter;
impl Hook for Rewriter {
    fn name(&self) -> &str {
        "rewriter"
    }
    fn interest(&self) -> Interest {
        Interest {
            before: vec![m::StopContainer],
            after: vec![m::ContainerStatus],
        }
    }
    fn before<'a>(&'a self, call: &'a Call) -> HookFuture<'a, Before> {
        Box::pin(async move {
            let mut req: cri::StopContainerRequest = call.decode()?;
            req.timeout = 2;
            Ok(Before::Rewrite(req.encode_to_vec().into()))
        })
    }
    fn after<'a>(&'a self, _call: &'a Call, outcome: &'a Outcome) -> HookFuture<'a, After> {
        Box::pin(async move {
            if outcome.decode::<cri::ContainerStatusResponse>()?.is_none() {
                return Ok(After::Keep);
            }
            // status { exit_code: 0 (written explicitly), reason: "Completed" }
            Ok(After::Append(
                keelson_agent::sidecar::completed_status_fields(),
            ))
        })
    }
}

#[tokio::test]
async fn a_rewriting_hook_changes_only_what_it_appends() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let mut hooks = HookSet::new();
    hooks.register(Arc::new(Rewriter));
    let proxy = RunningProxy::start(dir.path(), &rt.socket, hooks).await;

    let runtime_reply = cri::ContainerStatusResponse {
        status: Some(cri::ContainerStatus {
            id: "c1".into(),
            exit_code: 143,
            reason: "Error".into(),
            state: cri::ContainerState::ContainerExited as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let reply_bytes = with_unknown_field(&runtime_reply.encode_to_vec(), 555, 1);
    rt.set(Answer::Message(reply_bytes.clone()));
    let req = cri::ContainerStatusRequest {
        container_id: "c1".into(),
        verbose: false,
    }
    .encode_to_vec();
    let got = call(&proxy.socket, m::ContainerStatus, &[], grpc::frame(&req)).await;
    let msg = grpc::single_message(&got.body).unwrap();
    assert!(
        msg.starts_with(&reply_bytes),
        "original bytes (incl. unknown field) kept"
    );
    let decoded = cri::ContainerStatusResponse::decode(msg)
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        (decoded.exit_code, decoded.reason.as_str()),
        (0, "Completed")
    );
    assert_eq!(decoded.id, "c1");
    assert_eq!(decoded.state, cri::ContainerState::ContainerExited as i32);

    rt.set(Answer::Echo);
    let stop = cri::StopContainerRequest {
        container_id: "c1".into(),
        timeout: 30,
    }
    .encode_to_vec();
    call(&proxy.socket, m::StopContainer, &[], grpc::frame(&stop)).await;
    let seen = rt.calls().pop().unwrap();
    let sent =
        cri::StopContainerRequest::decode(grpc::single_message(&seen.body).unwrap()).unwrap();
    assert_eq!(sent.timeout, 2, "request rewritten before forwarding");
}

/// Fails on Version, panics on Status.
struct Broken;
impl Hook for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn interest(&self) -> Interest {
        Interest {
            before: vec![m::Version, m::Status],
            after: vec![m::Version],
        }
    }
    fn before<'a>(&'a self, call: &'a Call) -> HookFuture<'a, Before> {
        Box::pin(async move {
            if call.method() == m::Status {
                panic!("hook bug");
            }
            Err(HookError::Internal("state store unavailable".into()))
        })
    }
    fn after<'a>(&'a self, _call: &'a Call, _o: &'a Outcome) -> HookFuture<'a, After> {
        Box::pin(async { Err(HookError::Internal("after failed".into())) })
    }
}

#[tokio::test]
async fn a_failing_hook_lets_the_call_through_and_is_counted() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let mut hooks = HookSet::new();
    hooks.register(Arc::new(Broken));
    let proxy = RunningProxy::start(dir.path(), &rt.socket, hooks).await;
    let body = grpc::frame(b"\x0a\x050.1.0");
    let got = call(&proxy.socket, m::Version, &[], body.clone()).await;
    assert_eq!(got.body, body, "echoed unchanged");
    assert_eq!(got.trailers.as_ref().unwrap()["x-trailer"], "t");
    let got = call(&proxy.socket, m::Status, &[], body.clone()).await;
    assert_eq!(got.body, body);
    assert_eq!(rt.calls().len(), 2);
    assert_eq!(
        proxy.proxy.hooks().map_or(0, |h| h.faults()),
        3,
        "before+after on Version, before on Status"
    );
}

#[tokio::test]
async fn runtime_errors_come_back_verbatim_with_and_without_hooks() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let mut hooks = HookSet::new();
    hooks.register(Arc::new(Looker(m::Version, AtomicUsize::new(0))));
    let proxy = RunningProxy::start(dir.path(), &rt.socket, hooks).await;
    rt.set(Answer::Error(
        5,
        "an error occurred when try to find container \"nope\": not found",
    ));
    for path in [m::ContainerStatus, m::Version] {
        let req = cri::VersionRequest {
            version: "0.1.0".into(),
        }
        .encode_to_vec();
        let got = call(&proxy.socket, path, &[], grpc::frame(&req)).await;
        assert_eq!(
            got.status(),
            (
                5,
                "an error occurred when try to find container \"nope\": not found".into()
            ),
            "{path}"
        );
        assert!(got.body.is_empty());
    }
}

#[tokio::test]
async fn server_streams_are_streamed() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let proxy = RunningProxy::start(dir.path(), &rt.socket, HookSet::new()).await;
    let (tx, rx) = mpsc::channel(4);
    rt.set(Answer::Stream(Arc::new(std::sync::Mutex::new(Some(rx)))));
    let mut send = connect(&proxy.socket).await;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{}", m::GetContainerEvents))
        .header("content-type", "application/grpc")
        .body(http_body_util::Full::new(grpc::frame(b"")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let mut body = resp.into_body();
    use http_body_util::BodyExt;
    tx.send(Bytes::from_static(b"one")).await.unwrap();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(
        first,
        grpc::frame(b"one"),
        "first event arrives before the stream ends"
    );
    tx.send(Bytes::from_static(b"two")).await.unwrap();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(second, grpc::frame(b"two"));
    drop(tx);
    let trailers = body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_trailers()
        .unwrap();
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test]
async fn garbage_and_stalled_callers_do_not_hurt_others() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let mut hooks = HookSet::new();
    hooks.register(Arc::new(Looker(m::Version, AtomicUsize::new(0))));
    let proxy = RunningProxy::start(dir.path(), &rt.socket, hooks).await;

    // Not HTTP/2 at all.
    let mut junk = tokio::net::UnixStream::connect(&proxy.socket)
        .await
        .unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xfe garbage")
        .await
        .unwrap();
    // A valid preface, then a truncated frame header.
    let mut trunc = tokio::net::UnixStream::connect(&proxy.socket)
        .await
        .unwrap();
    trunc
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04")
        .await
        .unwrap();
    // Connects and says nothing.
    let _stalled = tokio::net::UnixStream::connect(&proxy.socket)
        .await
        .unwrap();
    // A gRPC body that claims more than it sends, on a hooked method.
    let got = call(
        &proxy.socket,
        m::Version,
        &[],
        Bytes::from_static(b"\x00\x00\x00\x00\x09abc"),
    )
    .await;
    assert_eq!(
        rt.calls().last().unwrap().body,
        Bytes::from_static(b"\x00\x00\x00\x00\x09abc")
    );
    assert_eq!(
        got.status().0,
        0,
        "malformed body forwarded for the runtime to judge"
    );

    // An oversized message on a hooked method bypasses the hook and streams.
    let big = vec![7u8; 17 << 20];
    let mut framed = BytesMut::new();
    framed.put_u8(0);
    framed.put_u32(big.len() as u32);
    framed.put_slice(&big);
    let framed = framed.freeze();
    let got = call(&proxy.socket, m::Version, &[], framed.clone()).await;
    assert_eq!(got.body.len(), framed.len());
    assert_eq!(rt.calls().last().unwrap().body, framed);

    // Others are still served promptly.
    let ok = tokio::time::timeout(
        Duration::from_secs(5),
        call(&proxy.socket, m::Status, &[], grpc::frame(b"")),
    )
    .await;
    assert_eq!(ok.expect("served while a caller stalls").status().0, 0);
}

#[tokio::test]
async fn runtime_down_is_unavailable_and_reconnects() {
    let dir = tmp();
    let rt_dir = tmp();
    let missing = rt_dir.path().join("fake-runtime.sock");
    let proxy = RunningProxy::start(dir.path(), &missing, HookSet::new()).await;
    let got = call(&proxy.socket, m::Version, &[], grpc::frame(b"")).await;
    assert_eq!(got.status().0, Code::Unavailable as u16);
    let rt = FakeRuntime::start(rt_dir.path()).await;
    let got = call(&proxy.socket, m::Version, &[], grpc::frame(b"x")).await;
    assert_eq!(got.status().0, 0);
    assert_eq!(rt.calls().len(), 1);
}

#[tokio::test]
async fn stopping_finishes_in_flight_calls() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let gate = Arc::new(Notify::new());
    let mut hooks = HookSet::new();
    hooks.register(Arc::new(Delay(gate.clone())));
    let mut proxy = RunningProxy::start(dir.path(), &rt.socket, hooks).await;
    let sock = proxy.socket.clone();
    let in_flight =
        tokio::spawn(async move { call(&sock, m::Version, &[], grpc::frame(b"v")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopping = tokio::spawn(async move { proxy.stop().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!stopping.is_finished(), "waits for the in-flight call");
    gate.notify_one();
    let got = in_flight.await.unwrap();
    assert_eq!(got.status().0, 0);
    assert_eq!(got.body, grpc::frame(b"v"));
    assert_eq!(stopping.await.unwrap(), Drained::Clean);
}

/// Holds Version forever; records when its wait is abandoned.
struct Forever(Arc<std::sync::atomic::AtomicBool>);
struct SetOnDrop(Arc<std::sync::atomic::AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
impl Hook for Forever {
    fn name(&self) -> &str {
        "forever"
    }
    fn interest(&self) -> Interest {
        Interest {
            before: vec![m::Version],
            after: vec![],
        }
    }
    fn before<'a>(&'a self, _call: &'a Call) -> HookFuture<'a, Before> {
        let guard = SetOnDrop(self.0.clone());
        Box::pin(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(Before::Pass)
        })
    }
}

#[tokio::test]
async fn a_caller_that_gives_up_releases_a_held_call() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut hooks = HookSet::new();
    hooks.register(Arc::new(Forever(dropped.clone())));
    let proxy = RunningProxy::start(dir.path(), &rt.socket, hooks).await;
    let sock = proxy.socket.clone();
    // The caller's deadline passes: its call future is dropped, which resets
    // the HTTP/2 stream (RST_STREAM CANCEL), as grpc-go does on a timeout.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        call(&sock, m::Version, &[], grpc::frame(b"")),
    )
    .await;
    assert!(gave_up.is_err(), "the call is held");
    let released = async {
        while !dropped.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), released)
        .await
        .expect("the hook's wait is dropped once the caller resets");
    assert!(
        rt.calls().is_empty(),
        "the runtime never saw the abandoned call"
    );
}

/// Wants replies only for `/runtime.v1.RuntimeService/Status`.
struct Picky(AtomicUsize);
impl Hook for Picky {
    fn name(&self) -> &str {
        "picky"
    }
    fn interest(&self) -> Interest {
        Interest {
            before: vec![],
            after: vec![m::Version, m::Status],
        }
    }
    fn wants_reply(&self, call: &Call) -> bool {
        call.method() == m::Status
    }
    fn after<'a>(&'a self, _call: &'a Call, _o: &'a Outcome) -> HookFuture<'a, After> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(After::Keep) })
    }
}

#[tokio::test]
async fn replies_no_hook_wants_are_relayed_without_after_hooks() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let picky = Arc::new(Picky(AtomicUsize::new(0)));
    let mut hooks = HookSet::new();
    hooks.register(picky.clone());
    let proxy = RunningProxy::start(dir.path(), &rt.socket, hooks).await;
    let got = call(&proxy.socket, m::Version, &[], grpc::frame(b"v")).await;
    assert_eq!(
        got.trailers.as_ref().unwrap()["x-trailer"],
        "t",
        "relayed as is"
    );
    assert_eq!(picky.0.load(Ordering::SeqCst), 0);
    call(&proxy.socket, m::Status, &[], grpc::frame(b"s")).await;
    assert_eq!(picky.0.load(Ordering::SeqCst), 1);
}

/// Counts the calls it sees before the runtime, while switched on.
struct Switchable {
    on: std::sync::atomic::AtomicBool,
    seen: AtomicUsize,
}
impl Hook for Switchable {
    fn name(&self) -> &str {
        "switchable"
    }
    fn interest(&self) -> Interest {
        Interest {
            before: vec![m::Version],
            after: vec![m::Version],
        }
    }
    fn engaged(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }
    fn before<'a>(&'a self, _call: &'a Call) -> HookFuture<'a, Before> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(Before::Pass) })
    }
}

#[tokio::test]
async fn a_disengaged_hook_leaves_its_method_on_the_opaque_path() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let hook = Arc::new(Switchable {
        on: false.into(),
        seen: AtomicUsize::new(0),
    });
    let mut hooks = HookSet::new();
    hooks.register(hook.clone());
    let proxy = RunningProxy::start(dir.path(), &rt.socket, hooks).await;
    let body = grpc::frame(b"\x0a\x01v");
    let got = call(&proxy.socket, m::Version, &[], body.clone()).await;
    assert_eq!(hook.seen.load(Ordering::SeqCst), 0, "not shown to the hook");
    assert_eq!(got.trailers.as_ref().unwrap()["x-trailer"], "t");
    assert_eq!(rt.calls().last().unwrap().body, body, "relayed as is");
    hook.on.store(true, Ordering::SeqCst);
    call(&proxy.socket, m::Version, &[], grpc::frame(b"v")).await;
    assert_eq!(hook.seen.load(Ordering::SeqCst), 1, "engaged again: seen");
}

/// Callers that stop reading big replies hold only their own connection's
/// flow-control windows: each caller connection has a runtime connection
/// of its own, so five stalled 6 MiB replies (more than one HTTP/2
/// connection window) do not stall a call on another connection — as with
/// the runtime called directly, where each caller has its own connection.
#[tokio::test]
async fn callers_that_stop_reading_do_not_stall_other_connections() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    rt.set(Answer::Message(Bytes::from(vec![7u8; 6 << 20])));
    let proxy = RunningProxy::start(dir.path(), &rt.socket, HookSet::new()).await;
    let mut stalled = vec![];
    for _ in 0..5 {
        let mut send = connect(&proxy.socket).await;
        let req = Request::builder()
            .method("POST")
            .uri(format!("http://localhost{}", m::ListContainers))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::Full::new(grpc::frame(b"")))
            .unwrap();
        // The reply's head arrives; its body is never read.
        let resp = send.send_request(req).await.unwrap();
        stalled.push((send, resp));
    }
    // Let the stalled replies fill every window they can.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = tokio::time::timeout(
        Duration::from_secs(20),
        call(&proxy.socket, m::ListContainers, &[], grpc::frame(b"")),
    )
    .await
    .expect("a call on another connection completes while others stall");
    assert_eq!(other.body.len(), grpc::FRAME_HEADER_LEN + (6 << 20));
    drop(stalled);
}

/// A caller connection's runtime connection goes with it: fifty callers
/// that connect, call and leave leave no descriptors behind (the test
/// process holds the proxy, the fake runtime and the callers).
#[tokio::test]
async fn a_callers_runtime_connection_closes_with_it() {
    let dir = tmp();
    let rt = FakeRuntime::start(dir.path()).await;
    let proxy = RunningProxy::start(dir.path(), &rt.socket, HookSet::new()).await;
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    // The first caller takes the connection opened at start-up.
    call(&proxy.socket, m::Version, &[], grpc::frame(b"v")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = fds();
    for _ in 0..50 {
        call(&proxy.socket, m::Version, &[], grpc::frame(b"v")).await;
    }
    let mut after = fds();
    for _ in 0..50 {
        if after <= before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = fds();
    }
    assert!(
        after <= before + 2,
        "{before} descriptors before, {after} after"
    );
    assert_eq!(rt.calls().len(), 51);
}
