//! Cluster mode: with `--node-name` (and `--kubeconfig`, or in-cluster
//! credentials) the cluster side follows this node's NodeImage and writes
//! its status ([`nodeimage`] is the mapping, [`nodeimage_sync`] the API
//! side), turns this node's active ContainerRecreateRequests into restarts
//! ([`crr`], [`crr_sync`]), and watches this node's pods for the launch
//! gate's readiness ([`readiness`] makes the reports the host's
//! [`crate::readiness`] keeps) and the node's half of in-place updates
//! ([`inplace`]). It drives the node features only through the
//! host agent's admin API ([`node`]): inside the host agent, or as
//! `keelson-agent cluster` in the DaemonSet pod, where the cluster
//! credentials live (the host unit holds none). The API server or the
//! host agent being away (at start-up, during an upgrade) only delays
//! this: the node features keep working standalone, and the cluster side
//! reconnects with backoff.

pub mod crr;
pub mod crr_sync;
pub mod inplace;
pub mod node;
pub mod nodeimage;
pub mod nodeimage_sync;
pub mod readiness;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, Client, Config};

use crate::admin::feed::Changes;
use crate::readiness::PodReport;
use keelson_api::apps::v1alpha1::containerrecreaterequest::ContainerRecreateRequest;
use node::NodeClient;
use readiness::report_of;

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
/// How long one long-poll of the host agent's change feed is held.
const FEED_WAIT: Duration = Duration::from_secs(30);

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

/// How often the DaemonSet's cluster side asks the host agent whether it
/// runs the cluster side itself.
const HOST_CHECK: Duration = Duration::from_secs(15);

/// The node whose cluster side the host agent behind `node` runs in its
/// own process, if it says so (an agent not answering says nothing: the
/// cluster side then goes on, waiting for it as usual).
pub async fn host_runs_cluster_side(node: &NodeClient) -> Option<String> {
    node.version().await.ok()?.cluster_side_of
}

/// The DaemonSet pod's role: [`run`], but only while the host agent does
/// not run the cluster side in its own process (`node-name` in its
/// config). Two cluster sides on one node would both write its NodeImage
/// status and CRRs, so this side stays idle, saying why, until the host
/// agent's config changes.
pub async fn run_beside_host(c: ClusterConfig, node: NodeClient) {
    loop {
        if let Some(host) = host_runs_cluster_side(&node).await {
            tracing::error!(
                node = %c.node_name,
                host_follows = %host,
                socket = %node.socket().display(),
                "the host agent runs the cluster side itself (node-name in its config): \
                 this one stays idle; remove node-name and kubeconfig from the host agent's \
                 config to let the DaemonSet run it"
            );
            while host_runs_cluster_side(&node).await.is_some() {
                tokio::time::sleep(HOST_CHECK).await;
            }
            tracing::info!(node = %c.node_name, "the host agent no longer runs the cluster side: starting it here");
        }
        let host_took_over = async {
            loop {
                tokio::time::sleep(HOST_CHECK).await;
                if host_runs_cluster_side(&node).await.is_some() {
                    return;
                }
            }
        };
        tokio::select! {
            () = run(c.clone(), node.clone()) => return,
            () = host_took_over => {}
        }
    }
}

/// Follows this node's NodeImage, ContainerRecreateRequests and pods,
/// driving the host agent behind `node`, until the task is dropped.
pub async fn run(c: ClusterConfig, node: NodeClient) {
    let reports = Arc::new(Reports::new(node.clone()));
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut synced = false;
        let result = follow(&c, &node, &reports, &mut synced).await;
        if synced {
            // It worked for a while: a later loss starts the backoff afresh.
            backoff = Duration::from_millis(500);
        }
        match result {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(e) => {
                tracing::warn!(node = %c.node_name, error = %e, retry_in_ms = backoff.as_millis() as u64, "cluster mode: API server not usable (or the host agent's admin API); node features go on standalone");
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

/// The pod reports the host agent's launch gate has from this side, kept
/// so an agent that restarted (a new boot in its change feed: it keeps
/// them in memory only) gets them all again.
struct Reports {
    node: NodeClient,
    sent: Mutex<HashMap<String, PodReport>>,
    /// Pods seen in the watch's current initial listing.
    listing: Mutex<Option<HashSet<String>>>,
}

impl Reports {
    fn new(node: NodeClient) -> Self {
        Self {
            node,
            sent: Mutex::new(HashMap::new()),
            listing: Mutex::new(None),
        }
    }

    fn sent(&self) -> std::sync::MutexGuard<'_, HashMap<String, PodReport>> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends pod `pod`'s report when it differs from the one sent.
    async fn update(&self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(l) = self
            .listing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            l.insert(uid.clone());
        }
        let report = report_of(pod);
        if self.sent().get(&uid) == Some(&report) {
            return;
        }
        match self.node.report(&uid, &report).await {
            Ok(()) => {
                self.sent().insert(uid, report);
            }
            Err(e) => {
                // Sent again with the agent's next boot, or the pod's next event.
                tracing::debug!(pod_uid = %uid, error = %e, "reporting pod readiness failed");
                self.sent().remove(&uid);
            }
        }
    }

    async fn remove(&self, uid: &str) {
        self.sent().remove(uid);
        if let Err(e) = self.node.forget(uid).await {
            tracing::debug!(pod_uid = %uid, error = %e, "forgetting pod readiness failed");
        }
    }

    /// The watch lists afresh: pods missing from the listing are gone.
    fn listing_starts(&self) {
        *self.listing.lock().unwrap_or_else(|e| e.into_inner()) = Some(HashSet::new());
    }

    async fn listing_done(&self) {
        let Some(seen) = self
            .listing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let gone: Vec<String> = self
            .sent()
            .keys()
            .filter(|uid| !seen.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.remove(&uid).await;
        }
    }

    /// The agent restarted: everything again.
    async fn resend(&self) {
        let all: Vec<(String, PodReport)> = self.sent().drain().collect();
        for (uid, report) in all {
            match self.node.report(&uid, &report).await {
                Ok(()) => {
                    self.sent().insert(uid, report);
                }
                Err(e) => {
                    tracing::debug!(pod_uid = %uid, error = %e, "reporting pod readiness failed")
                }
            }
        }
    }
}

/// Long-polls the host agent's change feed: every move goes to the
/// in-place sync (new instances of pods being updated are reported at
/// once) and to `moved`; a new boot gets the pod reports sent again.
async fn follow_feed(
    node: NodeClient,
    in_place: Arc<inplace::InPlaceSync>,
    reports: Arc<Reports>,
    moved: tokio::sync::watch::Sender<()>,
) {
    let mut seen: Option<Changes> = None;
    let mut failures = 0u32;
    loop {
        match node.changes(seen.as_ref(), FEED_WAIT).await {
            Ok(now) => {
                failures = 0;
                if seen.as_ref() == Some(&now) {
                    continue;
                }
                let rebooted = seen.as_ref().is_some_and(|s| s.boot != now.boot);
                if rebooted {
                    tracing::info!(boot = %now.boot, "host agent restarted; sending pod readiness again");
                    reports.resend().await;
                }
                seen = Some(now);
                in_place.on_book_change().await;
                moved.send_replace(());
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error = %e, "host agent's change feed unreachable; retrying");
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10)))).await;
            }
        }
    }
}

async fn follow(
    c: &ClusterConfig,
    node: &NodeClient,
    reports: &Arc<Reports>,
    synced: &mut bool,
) -> Result<(), String> {
    let client = connect(c).await?;
    // The version the cluster stores NodeImages in, told by discovery.
    let node_images = nodeimage_sync::NodeImages::discover(client.clone())
        .await
        .map_err(|e| format!("discovering the NodeImage version: {e}"))?;
    let image_api = node_images.api();
    let images =
        nodeimage_sync::NodeImageSync::new(client.clone(), node_images, &c.node_name, node.clone());
    let crrs = crr_sync::CrrSync::new(client.clone(), &c.node_name, node.clone());
    let by_name = watcher::Config::default().fields(&format!("metadata.name={}", c.node_name));
    let mut image_events = watcher(image_api, by_name).boxed();
    let in_place = Arc::new(inplace::InPlaceSync::new(client.clone(), node.clone()));
    let (moved_tx, mut moved) = tokio::sync::watch::channel(());
    let _feed = AbortOnDrop(tokio::spawn(follow_feed(
        node.clone(),
        in_place.clone(),
        reports.clone(),
        moved_tx,
    )));
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = watcher::Config::default().fields(&format!("spec.nodeName={}", c.node_name));
    let mut pod_events = watcher(pods, on_node).boxed();
    let requests: Api<ContainerRecreateRequest> = Api::all(client);
    let by_node = watcher::Config::default().labels(&crrs.selector());
    // This node's active requests, kept by the watch: a round reads them
    // from the store, not from a LIST.
    let (crr_store, crr_writer) = kube::runtime::reflector::store();
    let mut crr_events = kube::runtime::reflector(crr_writer, watcher(requests, by_node)).boxed();
    tracing::info!(node = %c.node_name, admin_socket = %node.socket().display(), "cluster mode: following this node's NodeImage, ContainerRecreateRequests and pods");
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
                    reports.update(&p).await;
                    in_place.on_pod(&p).await;
                }
                Some(Ok(watcher::Event::Delete(p))) => {
                    if let Some(uid) = &p.metadata.uid {
                        reports.remove(uid).await;
                    }
                    in_place.remove(&p);
                }
                Some(Ok(watcher::Event::Init)) => reports.listing_starts(),
                Some(Ok(watcher::Event::InitDone)) => reports.listing_done().await,
                Some(Err(e)) => return Err(format!("watching pods: {e}")),
                None => return Err("pod watch ended".into()),
            },
            ev = crr_events.next() => match ev {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("watching ContainerRecreateRequests: {e}")),
                None => return Err("ContainerRecreateRequest watch ended".into()),
            },
            r = moved.changed() => {
                if r.is_err() {
                    return Err("host agent's change feed follower ended".into());
                }
                // Let a burst of updates settle into one write.
                tokio::time::sleep(Duration::from_millis(200)).await;
                moved.borrow_and_update();
            }
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{admin_node_of, node_without_runtime};

    /// A kubeconfig whose API server is a loopback listener that only
    /// counts the connections made to it.
    fn counting_apiserver(dir: &std::path::Path) -> (PathBuf, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(conn);
            }
        });
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
            ),
        )
        .unwrap();
        (path, count)
    }

    async fn connections_while_running(cluster_side_of: Option<String>) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("state")).unwrap();
        let (_plain, pulls, restarts) = node_without_runtime(dir.path(), &store);
        let book = crate::pods::PodBook::open(&store).unwrap();
        let host = admin_node_of(pulls, restarts, book, cluster_side_of.clone());
        assert_eq!(host_runs_cluster_side(&host.client).await, cluster_side_of);
        let (kubeconfig, count) = counting_apiserver(dir.path());
        let side = tokio::spawn(run_beside_host(
            ClusterConfig {
                node_name: "node-a".into(),
                kubeconfig: Some(kubeconfig),
            },
            host.client.clone(),
        ));
        // Up to 2 s for a first connection (the check above made the
        // agent's version answer fast: its binary digest is computed once).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while count.load(std::sync::atomic::Ordering::SeqCst) == 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        side.abort();
        count.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn the_daemonset_side_stays_idle_while_the_host_agent_runs_the_cluster_side() {
        assert_eq!(
            connections_while_running(Some("node-a".into())).await,
            0,
            "the API server was called although the host agent runs the cluster side"
        );
        assert!(
            connections_while_running(None).await > 0,
            "without the host agent running it, the cluster side starts"
        );
    }
}
