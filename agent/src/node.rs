//! Assembly of the node features on the proxy: the pod book and its event
//! feed, the launch gate, the sidecar terminator, the pull engine and the
//! restart engine. Everything here works
//! from CRI data and local config alone (standalone mode).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::cri::HookSet;
use crate::cri::methods::runtime as m;
use crate::events::RuntimeEvents;
use crate::images::credentials::Credentials;
use crate::images::provider;
use crate::images::pulls::{EngineConfig, PullEngine};
use crate::pods::{self, PodBook, PodBookHook};
use crate::priority::LaunchGate;
use crate::readiness::PodReadiness;
use crate::restart::engine::{EngineConfig as RestartConfig, RestartEngine};
use crate::runtime_conn::RuntimeConn;
use crate::sidecar::SidecarTerminator;
use crate::store::Store;

/// Every method the hooks [`install`] builds take. The proxy serves before
/// they exist and holds calls on these until they are installed; the
/// agent logs an error if the hooks take a method missing here (and a
/// test below checks that none is).
pub const HOOKED_METHODS: &[&str] = &[
    m::RunPodSandbox,
    m::CreateContainer,
    m::StartContainer,
    m::ContainerStatus,
    m::RemoveContainer,
    m::RemovePodSandbox,
];

/// How often finished pulls and restarts past their TTL are forgotten.
const GC_EVERY: Duration = Duration::from_secs(60);

/// How often runtimes without an event service are polled.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Background parts of the features; dropping it stops them.
pub struct Features {
    pub book: Arc<PodBook>,
    pub pulls: Arc<PullEngine>,
    pub restarts: Arc<RestartEngine>,
    /// Pod specs and readiness as the cluster side reports them.
    pub readiness: Arc<PodReadiness>,
    _events: RuntimeEvents,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Features {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Builds the hooks for the proxy and starts what runs beside it.
pub async fn install(
    config: &Config,
    store: &Store,
    runtime: &Path,
) -> anyhow::Result<(HookSet, Features)> {
    // Maps earlier versions' in-process cluster mode kept (CRR uid →
    // restart id, NodeImage round → pull id): the ids now follow from the
    // requests' keys, and the cluster side keeps no state here.
    for legacy in ["cluster.crr-restarts", "cluster.nodeimage-rounds"] {
        if store.drop_table(legacy)? {
            tracing::info!(table = legacy, "dropped a table earlier versions kept");
        }
    }
    let book = PodBook::open(store)?;
    // One connection to the runtime for every feature below.
    let runtime = RuntimeConn::new(runtime);
    let events = RuntimeEvents::start(&runtime, POLL_EVERY);
    let terminator = SidecarTerminator::new(
        book.clone(),
        store,
        config.default_restart_policy,
        runtime.clone(),
    )?;
    let tasks = vec![
        // The first gap event (subscription live) triggers a full resync.
        tokio::spawn(pods::follow_events(
            book.clone(),
            events.subscribe(),
            runtime.clone(),
        )),
        tokio::spawn(terminator.clone().run()),
    ];

    let providers = match &config.credential_providers {
        Some((file, bin)) => provider::load(file, bin)?,
        None => vec![],
    };
    let credentials = Arc::new(Credentials::new(
        providers,
        config.credential_provider_timeout,
        store,
    )?);
    let pulls = PullEngine::start(
        EngineConfig {
            runtime: runtime.clone(),
            parallelism: config.pull_parallelism,
            backoff_base: Duration::from_secs(1),
            ttl: config.pull_status_ttl,
        },
        credentials,
        store,
    )?;
    // Until a cluster side reports pods (this process's cluster mode, or
    // the DaemonSet pod through the admin API), running counts as ready.
    let pod_readiness = Arc::new(PodReadiness::new(book.clone()));
    if config.cluster.is_some() {
        pod_readiness.attach();
    }
    let readiness: Arc<dyn crate::priority::Readiness> = pod_readiness.clone();
    terminator.use_specs(pod_readiness.clone());
    let restarts = RestartEngine::start(
        RestartConfig {
            runtime,
            pods_at_once: config.restart_parallelism,
            default_ttl: config.restart_status_ttl,
        },
        book.clone(),
        events.sender(),
        readiness.clone(),
        store,
    )?;
    let mut tasks = tasks;
    let (gc_pulls, gc_restarts) = (pulls.clone(), restarts.clone());
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(GC_EVERY).await;
            if let Err(e) = gc_pulls.collect_garbage().await {
                tracing::warn!(error = %e, "collecting finished pulls failed");
            }
            if let Err(e) = gc_restarts.collect_garbage().await {
                tracing::warn!(error = %e, "collecting finished restarts failed");
            }
        }
    }));

    let mut hooks = HookSet::new();
    hooks.register(Arc::new(PodBookHook::new(book.clone())));
    hooks.register(Arc::new(LaunchGate::new(
        book.clone(),
        config.launch_hold,
        readiness,
    )));
    hooks.register(terminator.hook());
    Ok((
        hooks,
        Features {
            book,
            pulls,
            restarts,
            readiness: pod_readiness,
            _events: events,
            tasks,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    /// The proxy holds calls on [`HOOKED_METHODS`] while the features
    /// load; a method the hooks take that the list lacks would go
    /// unhooked during every start.
    #[tokio::test(flavor = "current_thread")]
    async fn the_held_list_names_every_hooked_method() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::merge(Settings::default(), Settings::default()).unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let (hooks, _features) = install(&config, &store, &dir.path().join("runtime.sock"))
            .await
            .unwrap();
        let mut taken: Vec<&str> = hooks.methods().collect();
        taken.sort_unstable();
        let mut held = HOOKED_METHODS.to_vec();
        held.sort_unstable();
        assert_eq!(taken, held, "the hooks take exactly the held methods");
    }
}
