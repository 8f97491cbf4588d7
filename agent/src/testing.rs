//! Test helpers: a CRI runtime stand-in whose every call gets the gRPC
//! status a closure picks (0 answers an empty message), counting calls.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Serves `socket` until the handle is aborted; `status(n)` is the gRPC
/// status of the n-th call (1-based). Returns the call counter.
pub fn fake_runtime(
    socket: &Path,
    status: impl Fn(usize) -> u32 + Send + Sync + 'static,
) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let status = Arc::new(status);
    let counter = calls.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (calls, status) = (counter.clone(), status.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((_req, mut send))) = conn.accept().await {
                    let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
                    let code = status(n);
                    let mut resp = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/grpc");
                    if code != 0 {
                        // Trailers only.
                        resp = resp.header("grpc-status", code.to_string());
                        let _ = send.send_response(resp.body(()).unwrap(), true);
                        continue;
                    }
                    let Ok(mut body) = send.send_response(resp.body(()).unwrap(), false) else {
                        continue;
                    };
                    // One empty message, then status OK.
                    let _ = body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), false);
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let _ = body.send_trailers(trailers);
                }
            });
        }
    });
    (calls, task)
}

/// The admin API serving real engines on a socket in a temporary
/// directory: the node as the cluster side's unit tests reach it.
pub struct AdminNode {
    pub client: crate::cluster::node::NodeClient,
    pub readiness: Arc<crate::readiness::PodReadiness>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for AdminNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `pulls` and `restarts` (with the book `restarts` reads) over the
/// admin API.
pub fn admin_node(
    pulls: Arc<crate::images::pulls::PullEngine>,
    restarts: Arc<crate::restart::engine::RestartEngine>,
    book: Arc<crate::pods::PodBook>,
) -> AdminNode {
    admin_node_of(pulls, restarts, book, None)
}

/// [`admin_node`] of an agent that runs the cluster side of
/// `cluster_side_of` in its own process.
pub fn admin_node_of(
    pulls: Arc<crate::images::pulls::PullEngine>,
    restarts: Arc<crate::restart::engine::RestartEngine>,
    book: Arc<crate::pods::PodBook>,
    cluster_side_of: Option<String>,
) -> AdminNode {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let readiness = Arc::new(crate::readiness::PodReadiness::new(book.clone()));
    let feed = Arc::new(crate::admin::feed::Feed::start(
        &pulls,
        &restarts,
        book.clone(),
    ));
    let task = tokio::spawn(crate::admin::serve(
        listener,
        crate::admin::Services {
            pulls,
            restarts,
            readiness: readiness.clone(),
            book,
            feed,
            exit: Arc::new(tokio::sync::Notify::new()),
            cluster_side_of,
            metrics: crate::metrics::Metrics::new(),
        },
    ));
    AdminNode {
        client: crate::cluster::node::NodeClient::new(&socket),
        readiness,
        task,
        _dir: dir,
    }
}

/// [`admin_node`] over engines whose runtime socket (`state/no-runtime.sock`)
/// answers nothing: requests are taken and journaled, none runs.
pub fn node_without_runtime(
    state: &Path,
    store: &crate::store::Store,
) -> (
    AdminNode,
    Arc<crate::images::pulls::PullEngine>,
    Arc<crate::restart::engine::RestartEngine>,
) {
    use std::time::Duration;
    let runtime = crate::runtime_conn::RuntimeConn::new(&state.join("no-runtime.sock"));
    let creds = Arc::new(
        crate::images::credentials::Credentials::new(vec![], Duration::from_secs(5), store)
            .unwrap(),
    );
    let pulls = crate::images::pulls::PullEngine::start(
        crate::images::pulls::EngineConfig {
            runtime: runtime.clone(),
            parallelism: 1,
            backoff_base: Duration::from_secs(60),
            ttl: Duration::from_secs(60),
        },
        creds,
        store,
    )
    .unwrap();
    let book = crate::pods::PodBook::open(store).unwrap();
    let restarts = crate::restart::engine::RestartEngine::start(
        crate::restart::engine::EngineConfig {
            runtime,
            pods_at_once: 1,
            default_ttl: Duration::from_secs(60),
        },
        book.clone(),
        tokio::sync::broadcast::channel(4).0,
        Arc::new(crate::priority::RunningIsReady),
        store,
    )
    .unwrap();
    (
        admin_node(pulls.clone(), restarts.clone(), book),
        pulls,
        restarts,
    )
}
