//! Keelson's node agent as a library: the node features, their state and
//! the cluster side around the CRI proxy core (the `keelson-cri-proxy`
//! crate, re-exported as [`cri`]), socket handling ([`listener`]),
//! settings ([`config`]) and the assembly that runs them ([`run`]). Node
//! features plug in as [`cri::Hook`]s.

pub mod admin;
pub mod backoff;
pub mod cluster;
pub mod config;
pub mod ctl;
/// The CRI proxy core (its own crate: no Kubernetes, no storage).
pub use keelson_cri_proxy as cri;
pub mod envdeps;
pub mod events;
pub mod images;
pub mod install;
pub mod kruise;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod node_thread;
pub mod pods;
pub mod priority;
pub mod readiness;
pub mod restart;
pub mod runtime_conn;
pub mod sidecar;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;

use anyhow::Context;

use config::Config;
use cri::server::{Drained, serve};
use cri::{Proxy, Upstream};

/// Runs the agent until SIGTERM or SIGINT: opens the socket and the
/// runtime connection and serves at once, while the node thread opens the
/// state and builds the node features; their hooks are installed into the
/// running proxy (calls on hooked methods wait for them, every other call
/// is forwarded from the start). Then drains in-flight calls.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let stop = stop_signal();
    let runtime = config.resolve_runtime()?;
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
    // Root-only: the journal holds unfinished pulls' secrets.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| {
                format!("making state dir {} root-only", config.state_dir.display())
            })?;
    }
    let mut listening = listener::open(
        &config.listen,
        &listener::SocketAccess {
            group: config.socket_group.clone(),
        },
    )?;
    let std_listener = listening.take().context("taking listener")?;
    let listener =
        tokio::net::UnixListener::from_std(std_listener).context("registering listener")?;
    // The socket is ours (a second agent on it has stopped above, before
    // touching the state). The CRI is served on this thread; the rest
    // runs on the node thread, starting with what takes longest: the
    // state (sled's recovery) and the features loaded from it.
    let node_thread = node_thread::NodeThread::start().context("starting the node thread")?;
    let starting = {
        let (config, runtime) = (config.clone(), runtime.clone());
        node_thread.spawn(async move {
            let at = std::time::Instant::now();
            let store = store::Store::open(&config.state_dir)?;
            let store_opened = at.elapsed();
            let (hooks, features) = node::install(&config, &store, &runtime)
                .await
                .context("installing the node features")?;
            anyhow::Ok((hooks, features, store_opened, at.elapsed() - store_opened))
        })
    };

    let upstream = Upstream::new(&runtime);
    if let Err(err) = upstream.warm_up().await {
        tracing::warn!(error = %err, "runtime not reachable yet; calls will retry the connection");
    }
    let metrics = metrics::Metrics::new();
    let proxy =
        Arc::new(Proxy::starting(upstream, node::HOOKED_METHODS).with_observer(metrics.clone()));
    tracing::info!(
        listen = %config.listen.display(),
        activated = listening.is_activated(),
        runtime = %runtime.display(),
        startup_us = started.elapsed().as_micros() as u64,
        "serving CRI"
    );

    let exit = Arc::new(tokio::sync::Notify::new());
    let stop = {
        let exit = exit.clone();
        async move {
            tokio::select! {
                () = stop => {}
                () = exit.notified() => {}
            }
        }
    };
    let serving = serve(listener, proxy.clone(), stop, config.shutdown_timeout);
    tokio::pin!(serving);
    let mut failed = None;
    let mut background = vec![];
    let mut features = None;
    let drained = tokio::select! {
        drained = &mut serving => drained,
        started_up = starting => {
            match started_up.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok((hooks, f, store_opened, loaded)) => {
                    match proxy.install_hooks(hooks) {
                        Ok(unheld) if unheld.is_empty() => {}
                        Ok(unheld) => tracing::error!(
                            methods = ?unheld,
                            "hooked methods missing from the held list: their calls went unhooked until now"
                        ),
                        Err(e) => tracing::error!(error = %e, "installing the hooks"),
                    }
                    match beside_the_proxy(&config, &node_thread, &f, exit.clone(), metrics) {
                        Ok(tasks) => {
                            background = tasks;
                            tracing::info!(
                                ready_us = started.elapsed().as_micros() as u64,
                                store_open_us = store_opened.as_micros() as u64,
                                features_us = loaded.as_micros() as u64,
                                "node features ready"
                            );
                        }
                        Err(e) => failed = Some(e),
                    }
                    features = Some(f);
                }
                Err(e) => {
                    let _ = proxy.hooks_failed(format!("{e:#}"));
                    failed = Some(e);
                }
            }
            if failed.is_some() {
                exit.notify_one();
            }
            serving.await
        }
    };
    match drained {
        Drained::Clean if failed.is_some() => {
            tracing::info!("stopped: start-up failed")
        }
        Drained::Clean => tracing::info!(
            hook_faults = proxy.hooks().map_or(0, |h| h.faults()),
            "stopped cleanly"
        ),
        Drained::TimedOut { connections } => {
            tracing::warn!(connections, "grace period over; abandoning in-flight calls")
        }
    }
    for t in background {
        t.abort();
    }
    drop(features);
    drop(listening);
    failed.map_or(Ok(()), Err)
}

/// Starts what serves beside the proxy once the features exist: the admin
/// API and, in cluster mode, the in-process cluster side. Both run on the
/// node thread.
fn beside_the_proxy(
    config: &Config,
    node_thread: &node_thread::NodeThread,
    features: &node::Features,
    exit: Arc<tokio::sync::Notify>,
    metrics: Arc<metrics::Metrics>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let admin = listener::bind(&config.admin_socket, &listener::SocketAccess::default())
        .with_context(|| format!("admin socket {}", config.admin_socket.display()))?;
    let mut admin_listening = listener::Listening::Bound(admin);
    let admin_std = admin_listening.take().context("admin listener")?;
    let (pulls, restarts) = (features.pulls.clone(), features.restarts.clone());
    let (readiness, book) = (features.readiness.clone(), features.book.clone());
    let cluster_side_of = config.cluster.as_ref().map(|c| c.node_name.clone());
    // Built there, so the listener's I/O and the feed's task stay on the
    // node thread. The task keeps the listening socket (removed when it
    // ends).
    let admin_task = node_thread.spawn(async move {
        let _listening = admin_listening;
        let feed = Arc::new(admin::feed::Feed::start(&pulls, &restarts, book.clone()));
        let services = admin::Services {
            pulls,
            restarts,
            readiness,
            book,
            feed,
            exit,
            cluster_side_of,
            metrics,
        };
        match tokio::net::UnixListener::from_std(admin_std) {
            Ok(l) => admin::serve(l, services).await,
            Err(e) => tracing::error!(error = %e, "registering the admin listener failed"),
        }
    });
    let mut tasks = vec![admin_task];
    // Cluster mode in this process: the cluster side drives the node
    // features through the admin API, as the DaemonSet pod does.
    if let Some(c) = config.cluster.clone() {
        tasks.push(node_thread.spawn(cluster::run(
            c,
            cluster::node::NodeClient::new(&config.admin_socket),
        )));
    }
    Ok(tasks)
}

/// Wall-clock time in microseconds since the Unix epoch (for log fields
/// that benchmarks correlate with the runtime's timestamps).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Installs the SIGTERM/SIGINT handlers now (so a signal that arrives
/// during start-up is not fatal) and returns a future that resolves on the
/// first of them.
pub fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "stopping");
    }
}
