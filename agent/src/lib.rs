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

/// Runs the agent until SIGTERM or SIGINT: opens the state, the socket
/// and the runtime connection, installs the node features, serves, then
/// drains in-flight calls.
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
    let store = store::Store::open(&config.state_dir)?;
    let store_opened = started.elapsed();
    // The CRI is served on this thread; the rest runs on the node thread.
    let node_thread = node_thread::NodeThread::start().context("starting the node thread")?;
    let (hooks, features) = {
        let (config, store, runtime) = (config.clone(), store.clone(), runtime.clone());
        node_thread
            .spawn(async move { node::install(&config, &store, &runtime).await })
            .await
            .context("installing the node features")??
    };
    let features_installed = started.elapsed();
    let admin = listener::bind(&config.admin_socket, &listener::SocketAccess::default())
        .with_context(|| format!("admin socket {}", config.admin_socket.display()))?;
    let mut admin_listening = listener::Listening::Bound(admin);
    let admin_std = admin_listening.take().context("admin listener")?;
    let exit = Arc::new(tokio::sync::Notify::new());
    let metrics = metrics::Metrics::new();
    let admin_task = {
        let (pulls, restarts) = (features.pulls.clone(), features.restarts.clone());
        let (readiness, book) = (features.readiness.clone(), features.book.clone());
        let (exit, metrics) = (exit.clone(), metrics.clone());
        let cluster_side_of = config.cluster.as_ref().map(|c| c.node_name.clone());
        // Built there, so the listener's I/O and the feed's task stay on
        // the node thread.
        node_thread.spawn(async move {
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
        })
    };
    // Cluster mode in this process: the cluster side drives the node
    // features through the admin API, as the DaemonSet pod does.
    let cluster_task = config.cluster.clone().map(|c| {
        node_thread.spawn(cluster::run(
            c,
            cluster::node::NodeClient::new(&config.admin_socket),
        ))
    });
    let stop = async move {
        tokio::select! {
            () = stop => {}
            () = exit.notified() => {}
        }
    };

    let mut listening = listener::open(
        &config.listen,
        &listener::SocketAccess {
            group: config.socket_group.clone(),
        },
    )?;
    let std_listener = listening.take().context("taking listener")?;
    let listener =
        tokio::net::UnixListener::from_std(std_listener).context("registering listener")?;

    let upstream = Upstream::new(&runtime);
    if let Err(err) = upstream.warm_up().await {
        tracing::warn!(error = %err, "runtime not reachable yet; calls will retry the connection");
    }
    let proxy = Arc::new(Proxy::new(upstream, hooks).with_observer(metrics));
    tracing::info!(
        listen = %config.listen.display(),
        activated = listening.is_activated(),
        runtime = %runtime.display(),
        startup_us = started.elapsed().as_micros() as u64,
        store_open_us = store_opened.as_micros() as u64,
        features_us = (features_installed - store_opened).as_micros() as u64,
        "serving CRI"
    );

    let drained = serve(listener, proxy.clone(), stop, config.shutdown_timeout).await;
    match drained {
        Drained::Clean => tracing::info!(hook_faults = proxy.hooks().faults(), "stopped cleanly"),
        Drained::TimedOut { connections } => {
            tracing::warn!(connections, "grace period over; abandoning in-flight calls")
        }
    }
    admin_task.abort();
    if let Some(t) = cluster_task {
        t.abort();
    }
    drop(admin_listening);
    drop(listening);
    Ok(())
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
