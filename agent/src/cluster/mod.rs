//! Cluster mode: with `--node-name` (and `--kubeconfig`, or in-cluster
//! credentials) the agent also follows this node's NodeImage and writes its
//! status ([`nodeimage`] is the mapping, [`nodeimage_sync`] the API side).
//! The API server being away (at start-up or later) only delays this: the
//! node features keep working standalone, and the agent reconnects with
//! backoff. This node's active ContainerRecreateRequests become restarts
//! ([`crr`] is the mapping, [`crr_sync`] the API side). A watch on this
//! node's pods feeds container readiness to the launch gate
//! ([`readiness`]) and the node's half of in-place updates ([`inplace`]).

pub mod crr;
pub mod crr_sync;
pub mod inplace;
pub mod nodeimage;
pub mod nodeimage_sync;
pub mod readiness;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::runtime::watcher;
use kube::{Api, Client, Config};

use crate::images::pulls::PullEngine;
use crate::restart::engine::RestartEngine;
use crate::store::Store;
use keelson_api::apps::v1alpha1::containerrecreaterequest::ContainerRecreateRequest;

/// How to reach the API server.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_name: String,
    /// `None`: in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest between two status writes while nothing signals a change.
const RESYNC: Duration = Duration::from_secs(30);

async fn connect(c: &ClusterConfig) -> Result<Client, String> {
    let config = match &c.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => Config::incluster().map_err(|e| format!("in-cluster config: {e}"))?,
    };
    Client::try_from(config).map_err(|e| e.to_string())
}

/// Follows this node's NodeImage and ContainerRecreateRequests until the
/// task is dropped.
pub async fn run(
    c: ClusterConfig,
    pulls: Arc<PullEngine>,
    restarts: Arc<RestartEngine>,
    readiness: Arc<readiness::PodReadiness>,
    store: Store,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut synced = false;
        let result = follow(&c, &pulls, &restarts, &readiness, &store, &mut synced).await;
        if synced {
            // It worked for a while: a later loss starts the backoff afresh.
            backoff = Duration::from_millis(500);
        }
        match result {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(e) => {
                tracing::warn!(node = %c.node_name, error = %e, retry_in_ms = backoff.as_millis() as u64, "cluster mode: API server not usable; node features go on standalone");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Aborts the task when dropped (a task that lives as long as one
/// [`follow`] round).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hands every change of the pod book (a container created, started or
/// exited) to the in-place sync, which reports new instances of pods being
/// updated at once. Armed before each pass, so no change is missed.
async fn report_started(in_place: Arc<inplace::InPlaceSync>, book: Arc<crate::pods::PodBook>) {
    loop {
        let changed = book.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        in_place.on_book_change().await;
        changed.await;
    }
}

async fn follow(
    c: &ClusterConfig,
    pulls: &Arc<PullEngine>,
    restarts: &Arc<RestartEngine>,
    readiness: &Arc<readiness::PodReadiness>,
    store: &Store,
    synced: &mut bool,
) -> Result<(), String> {
    let client = connect(c).await?;
    // The version the cluster stores NodeImages in, told by discovery.
    let node_images = nodeimage_sync::NodeImages::discover(client.clone())
        .await
        .map_err(|e| format!("discovering the NodeImage version: {e}"))?;
    let image_api = node_images.api();
    let images = nodeimage_sync::NodeImageSync::new(
        client.clone(),
        node_images,
        &c.node_name,
        pulls.clone(),
        store,
    )
    .map_err(|e| e.to_string())?;
    let crrs = crr_sync::CrrSync::new(client.clone(), &c.node_name, restarts.clone(), store)
        .map_err(|e| e.to_string())?;
    let by_name = watcher::Config::default().fields(&format!("metadata.name={}", c.node_name));
    let mut image_events = watcher(image_api, by_name).boxed();
    let in_place = Arc::new(inplace::InPlaceSync::new(
        client.clone(),
        restarts.clone(),
        readiness.book(),
    ));
    let _reporting = AbortOnDrop(tokio::spawn(report_started(
        in_place.clone(),
        readiness.book(),
    )));
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(client.clone());
    let on_node = watcher::Config::default().fields(&format!("spec.nodeName={}", c.node_name));
    let mut pod_events = watcher(pods, on_node).boxed();
    let requests: Api<ContainerRecreateRequest> = Api::all(client);
    let by_node = watcher::Config::default().labels(&crrs.selector());
    // This node's active requests, kept by the watch: a round reads them
    // from the store, not from a LIST.
    let (crr_store, crr_writer) = kube::runtime::reflector::store();
    let mut crr_events = kube::runtime::reflector(crr_writer, watcher(requests, by_node)).boxed();
    let mut pull_changes = pulls.changes();
    let mut restart_changes = restarts.changes();
    tracing::info!(node = %c.node_name, "cluster mode: following this node's NodeImage and ContainerRecreateRequests");
    loop {
        images.sync_once().await.map_err(|e| e.to_string())?;
        crrs.sync_once(&crr_store.state())
            .await
            .map_err(|e| e.to_string())?;
        if !*synced {
            *synced = true;
            tracing::info!(node = %c.node_name, "cluster mode: in sync with the API server");
        }
        tokio::select! {
            ev = image_events.next() => match ev {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("watching NodeImage: {e}")),
                None => return Err("NodeImage watch ended".into()),
            },
            ev = pod_events.next() => match ev {
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                    readiness.update(&p);
                    in_place.on_pod(&p).await;
                }
                Some(Ok(watcher::Event::Delete(p))) => {
                    readiness.remove(&p);
                    in_place.remove(&p);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("watching pods: {e}")),
                None => return Err("pod watch ended".into()),
            },
            ev = crr_events.next() => match ev {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("watching ContainerRecreateRequests: {e}")),
                None => return Err("ContainerRecreateRequest watch ended".into()),
            },
            r = pull_changes.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                // Let a burst of updates settle into one write.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            r = restart_changes.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}
