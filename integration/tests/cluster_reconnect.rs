//! The agent's cluster mode against an API server that comes late, goes
//! away and comes back: the node side serves throughout, the agent
//! connects once the server is there, notices the loss, and reconnects
//! (its backoff starting afresh after a good connection).
//!
//! No kube-apiserver exists on this machine; the stand-in below answers
//! only what the agent asks at start-up (its NodeImage: none; lists: empty)
//! and holds watches open, which is all this test needs.

use std::convert::Infallible;
use std::fs;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use keelson_integration::agent::Agent;
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, Infallible>;

fn json(code: u16, v: serde_json::Value) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

async fn answer(req: hyper::Request<Incoming>) -> Result<hyper::Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    if query.contains("watch=true") {
        // A watch that stays open with nothing to say.
        let quiet = futures_util::stream::pending::<Result<Frame<Bytes>, Infallible>>();
        return Ok(hyper::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(StreamBody::new(quiet).boxed())
            .unwrap());
    }
    if path.starts_with("/apis/apps.kruise.io/v1alpha1/nodeimages/") {
        return Ok(json(
            404,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": "nodeimages not found"}),
        ));
    }
    let api_version = if path.starts_with("/api/v1/") {
        "v1"
    } else {
        "apps.kruise.io/v1alpha1"
    };
    Ok(json(
        200,
        serde_json::json!({"kind": "List", "apiVersion": api_version,
            "metadata": {"resourceVersion": "1"}, "items": []}),
    ))
}

/// The stand-in API server on `port`; dropping it closes every connection.
struct FakeApiServer {
    accept: JoinHandle<()>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl FakeApiServer {
    async fn start(port: u16) -> FakeApiServer {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the port is free again");
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                        .await;
                });
                held.lock().unwrap().push(conn);
            }
        });
        FakeApiServer {
            accept,
            connections,
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

async fn wait_for(agent: &Agent, needle: &str, times: usize, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if count(&agent.log_text(), needle) >= times {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_connects_late_and_reconnects_after_the_api_server_returns() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime.sock");
    let _runtime = UnixListener::bind(&runtime).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = dir.path().join("kubeconfig");
    fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'http://127.0.0.1:{port}'}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let agent = Agent::start(
        &runtime,
        &[
            "--node-name",
            "node-a",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    )
    .unwrap();
    const DOWN: &str = "API server not usable";
    const IN_SYNC: &str = "cluster mode: in sync with the API server";
    assert!(
        wait_for(&agent, DOWN, 1, Duration::from_secs(10)).await,
        "{}",
        agent.log_text()
    );
    assert_eq!(count(&agent.log_text(), IN_SYNC), 0);

    // The API server arrives: the agent connects without a restart.
    let server = FakeApiServer::start(port).await;
    assert!(
        wait_for(&agent, IN_SYNC, 1, Duration::from_secs(20)).await,
        "{}",
        agent.log_text()
    );
    // Stay connected a while (backoffs would have grown meanwhile).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let downs = count(&agent.log_text(), DOWN);

    // It goes away: the agent notices and keeps the node side serving.
    drop(server);
    assert!(
        wait_for(&agent, DOWN, downs + 1, Duration::from_secs(20)).await,
        "{}",
        agent.log_text()
    );
    assert!(
        std::os::unix::net::UnixStream::connect(agent.socket()).is_ok(),
        "the CRI socket still serves"
    );

    // The backoff started afresh after the good connection.
    let log = agent.log_text();
    let lost = log
        .lines()
        .filter(|l| l.contains(DOWN))
        .nth(downs)
        .unwrap_or_default()
        .to_string();
    assert!(
        lost.contains("retry_in_ms=500") || lost.contains("\"retry_in_ms\":500"),
        "{lost}"
    );

    // It comes back: the agent reconnects.
    let _server = FakeApiServer::start(port).await;
    assert!(
        wait_for(&agent, IN_SYNC, 2, Duration::from_secs(40)).await,
        "{}",
        agent.log_text()
    );
    assert!(agent.pid().is_some(), "no crash");
}
