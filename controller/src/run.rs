//! Running the controller: flags, logs, the health/metrics endpoint, the
//! connection to the API server (retried with backoff while it is away),
//! leader election, and the reconcilers that only the leader runs.
//! SIGTERM/SIGINT stop it cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;

use crate::gates::FeatureGates;
use crate::leader;

/// The leader election's lease, renew deadline and retry period.
const ELECTION: leader::Timing = leader::Timing::DEFAULT;

/// Controller flags.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// OpenKruise feature gates, `Name=true|false,…`.
    #[arg(long, default_value = "")]
    pub feature_gates: String,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub logging_format: String,
    /// `/healthz`, `/readyz` and `/metrics` listen here.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease.
    #[arg(long, default_value = "keelson-system")]
    pub leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "keelson-controller")]
    pub leader_election_id: String,
    /// This replica's identity [default: $POD_NAME, else the hostname].
    #[arg(long)]
    pub identity: Option<String>,
    /// The admission webhook server (HTTPS) listens here.
    #[arg(long, default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
    /// Do not serve admission webhooks.
    #[arg(long)]
    pub disable_webhook: bool,
    /// The Service the API server calls the webhooks through (its DNS
    /// names go into the self-made certificate; webhooks calling it get
    /// the caBundle).
    #[arg(long, default_value = "keelson-webhook")]
    pub webhook_service_name: String,
    /// Namespace of that Service and of the certificate Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = "keelson-system")]
    pub webhook_namespace: String,
    /// Secret keeping the self-made CA and serving certificate.
    #[arg(long, default_value = "keelson-webhook-certs")]
    pub webhook_secret_name: String,
    /// With EnableExternalCerts: where `tls.crt` and `tls.key` are mounted.
    #[arg(long, default_value = "/tmp/keelson-webhook-certs")]
    pub webhook_cert_dir: std::path::PathBuf,
    /// Seconds a Node must have been Ready before its NodeImage is created.
    #[arg(long, default_value_t = crate::nodeimage::DEFAULT_CREATION_DELAY_SECONDS)]
    pub nodeimage_creation_delay_seconds: i64,
    /// CloneSet scaling does not count pods in PreparingDelete.
    #[arg(long)]
    pub cloneset_scaling_exclude_preparing_delete: bool,
}

/// What the health and metrics endpoints report.
#[derive(Default)]
pub struct Health {
    pub connected: AtomicBool,
    /// Whether this replica should serve webhooks, and whether it does:
    /// not ready until it does (the webhook Service routes to ready pods).
    pub webhook_expected: AtomicBool,
    pub webhook_serving: AtomicBool,
    pub leader: AtomicBool,
    pub lease_rounds: AtomicU64,
    pub lease_errors: AtomicU64,
}

impl Health {
    fn metrics(&self) -> Result<String, std::fmt::Error> {
        crate::metrics::render(crate::metrics::Health {
            leader: self.leader.load(Ordering::Relaxed),
            api_connected: self.connected.load(Ordering::Relaxed),
            lease_rounds: self.lease_rounds.load(Ordering::Relaxed),
            lease_errors: self.lease_errors.load(Ordering::Relaxed),
            writes_sent: leader::WRITES_SENT.load(Ordering::Relaxed),
            writes_refused: leader::WRITES_REFUSED.load(Ordering::Relaxed),
        })
    }

    /// The answer to `path`: (HTTP status, body).
    pub fn answer(&self, path: &str) -> (u16, String) {
        match path {
            "/healthz" => (200, "ok\n".into()),
            "/readyz" if !self.connected.load(Ordering::Relaxed) => {
                (503, "API server not reachable\n".into())
            }
            "/readyz"
                if self.webhook_expected.load(Ordering::Relaxed)
                    && !self.webhook_serving.load(Ordering::Relaxed) =>
            {
                (503, "webhook server not serving yet\n".into())
            }
            "/readyz" => (200, "ok\n".into()),
            "/metrics" => match self.metrics() {
                Ok(text) => (200, text),
                Err(e) => (500, format!("rendering metrics: {e}\n")),
            },
            _ => (404, "not found\n".into()),
        }
    }
}

async fn serve_health(addr: SocketAddr, health: Arc<Health>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let health = health.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (code, body) = health.answer(req.uri().path());
                    let metrics = req.uri().path() == "/metrics" && code == 200;
                    async move {
                        let mut resp = http::Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = http::StatusCode::from_u16(code)
                            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                        let kind = if metrics {
                            crate::metrics::CONTENT_TYPE
                        } else {
                            "text/plain; charset=utf-8"
                        };
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static(kind),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn identity(args: &RunArgs) -> String {
    args.identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(hostname)
        .unwrap_or_else(|| format!("keelson-controller-{}", std::process::id()))
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// The reconcilers the gates enable, started when this replica leads.
fn start_reconcilers(
    client: &Client,
    gates: &FeatureGates,
    args: &RunArgs,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![];
    if gates.enabled("KruiseDaemon") {
        tasks.push(tokio::spawn(crate::nodeimage::controller::run(
            client.clone(),
            args.nodeimage_creation_delay_seconds.max(0),
        )));
    }
    if gates.enabled("ImagePullJobGate") {
        tasks.push(tokio::spawn(crate::imagepulljob::controller::run(
            client.clone(),
        )));
    }
    if gates.enabled("ImagePullJobGate") {
        tasks.push(tokio::spawn(crate::imagelistpulljob::controller::run(
            client.clone(),
        )));
    }
    if gates.enabled("KruiseDaemon") {
        tasks.push(tokio::spawn(crate::crr::controller::run(client.clone())));
    }
    tasks.push(tokio::spawn(crate::podreadiness::run(client.clone())));
    if gates.enabled(crate::resourcedistribution::validate::GATE) {
        tasks.push(tokio::spawn(crate::resourcedistribution::controller::run(
            client.clone(),
        )));
    }
    if gates.enabled("PodUnavailableBudgetDeleteGate")
        || gates.enabled("PodUnavailableBudgetUpdateGate")
    {
        tasks.push(tokio::spawn(crate::podunavailablebudget::controller::run(
            client.clone(),
            args.identity
                .clone()
                .unwrap_or_else(|| "keelson-controller".into()),
        )));
    }
    tasks.push(tokio::spawn(crate::sidecarset::controller::run(
        client.clone(),
        args.webhook_namespace.clone(),
        args.identity
            .clone()
            .unwrap_or_else(|| "keelson-controller".into()),
    )));
    tasks.push(tokio::spawn(crate::statefulset::controller::run(
        client.clone(),
        crate::statefulset::controller::Gates {
            start_ordinal: gates.enabled("StatefulSetStartOrdinal"),
            pod_index_label: gates.enabled("PodIndexLabel"),
            env_from_metadata: gates.enabled("InPlaceUpdateEnvFromMetadata"),
            pub_update: gates.enabled("PodUnavailableBudgetUpdateGate"),
            predownload: gates.enabled("PreDownloadImageForInPlaceUpdate")
                && gates.enabled("KruiseDaemon"),
        },
        args.identity
            .clone()
            .unwrap_or_else(|| "keelson-controller".into()),
    )));
    tasks.push(tokio::spawn(crate::daemonset::controller::run(
        client.clone(),
        crate::daemonset::controller::Gates {
            env_from_metadata: gates.enabled("InPlaceUpdateEnvFromMetadata"),
            pub_update: gates.enabled("PodUnavailableBudgetUpdateGate"),
            predownload: gates.enabled("PreDownloadImageForDaemonSetUpdate")
                && gates.enabled("KruiseDaemon"),
        },
        args.identity
            .clone()
            .unwrap_or_else(|| "keelson-controller".into()),
    )));
    tasks.push(tokio::spawn(crate::cloneset::controller::run(
        client.clone(),
        crate::cloneset::controller::Gates {
            env_from_metadata: gates.enabled("InPlaceUpdateEnvFromMetadata"),
            predownload: gates.enabled("PreDownloadImageForInPlaceUpdate")
                && gates.enabled("KruiseDaemon"),
            pub_update: gates.enabled("PodUnavailableBudgetUpdateGate"),
            short_hash: gates.enabled("CloneSetShortHash"),
            partition_rollback: gates.enabled("CloneSetPartitionRollback"),
            recreate_on_vct_change: gates.enabled("RecreatePodWhenChangeVCTInCloneSetGate"),
        },
        args.cloneset_scaling_exclude_preparing_delete,
        args.identity
            .clone()
            .unwrap_or_else(|| "keelson-controller".into()),
    )));
    tasks
}

/// The webhook server: TLS material (made and kept in a Secret, or read
/// from a directory under EnableExternalCerts), the caBundle kept in the
/// webhook configurations, then HTTPS on `listener`. Runs until dropped.
async fn run_webhook(
    listener: tokio::net::TcpListener,
    client: Client,
    args: RunArgs,
    gates: Arc<FeatureGates>,
    health: Arc<Health>,
) {
    let external = gates.enabled("EnableExternalCerts");
    use crate::webhook::{certs, tls as keep};
    let settings = keep::Settings {
        source: if external {
            keep::Source::Dir(args.webhook_cert_dir.clone())
        } else {
            keep::Source::Secret {
                namespace: args.webhook_namespace.clone(),
                name: args.webhook_secret_name.clone(),
            }
        },
        service: args.webhook_service_name.clone(),
        namespace: args.webhook_namespace.clone(),
        names: certs::dns_names(&args.webhook_service_name, &args.webhook_namespace),
    };
    // The certificates, kept current (re-read, rotated, CA injected first)
    // for as long as the server runs.
    let (keeper, tls) = match keep::Keeper::start(client.clone(), settings).await {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "webhook certificates unusable; not serving webhooks");
            return;
        }
    };
    let keeper = tokio::spawn(keeper.run());
    // The pod and SidecarSet webhooks answer from watched state: serve
    // (and report ready) only once it is listed.
    let (caches, watches) = crate::webhook::cache::Caches::start(&client);
    caches.ready().await;
    let scope = tokio::spawn(crate::webhook::scope::keep(
        client.clone(),
        caches.clone(),
        gates.enabled("KruisePodReadinessGate"),
        Duration::from_secs(1),
    ));
    tracing::info!(addr = ?listener.local_addr().ok(), external_certs = external, "webhook server serving");
    health.webhook_serving.store(true, Ordering::Relaxed);
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "keelson-webhook".into(),
            instance: args.identity.clone(),
        },
    );
    let guard = crate::podunavailablebudget::guard::Guard::new(
        client.clone(),
        caches.budgets.clone(),
        recorder,
        gates.enabled("InPlacePodVerticalScaling"),
    );
    let ctx = crate::webhook::Context {
        client,
        gates,
        caches,
        namespace: args.webhook_namespace.clone(),
        guard,
    };
    crate::webhook::serve(listener, tls, ctx).await;
    keeper.abort();
    scope.abort();
    drop(watches);
}

/// Runs the controller until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let gates = FeatureGates::parse(&args.feature_gates)?;
    let me = identity(&args);
    tracing::info!(identity = %me, gates = %gates.describe(), "keelson-controller starting");
    // Bound first, so a taken port is an error at start-up.
    let webhook_listener = if args.disable_webhook {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(args.webhook_addr)
                .await
                .with_context(|| format!("binding the webhook address {}", args.webhook_addr))?,
        )
    };
    let health = Arc::new(Health::default());
    health
        .webhook_expected
        .store(webhook_listener.is_some(), Ordering::Relaxed);
    let metrics = tokio::spawn(serve_health(args.metrics_addr, health.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    tokio::pin!(stop);

    // The API server may be away at start-up: retry with backoff.
    let mut backoff = Duration::from_millis(500);
    let client = loop {
        match Client::try_default().await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "no API server yet");
                tokio::select! {
                    _ = &mut stop => { metrics.abort(); return Ok(()); }
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    let webhook = webhook_listener.map(|l| {
        tokio::spawn(run_webhook(
            l,
            client.clone(),
            args.clone(),
            Arc::new(gates.clone()),
            health.clone(),
        ))
    });
    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.leader_election_namespace);
    let mut elector = leader::Elector::new(
        leases,
        &args.leader_election_id,
        &args.leader_election_namespace,
        &me,
        ELECTION,
    );
    // The reconcilers write only while the renew deadline holds, checked
    // at every request (a paused and resumed replica writes nothing).
    let reconciler_client = leader::fenced(client.clone(), elector.fence());
    let mut running: Vec<tokio::task::JoinHandle<()>> = vec![];
    loop {
        health.lease_rounds.fetch_add(1, Ordering::Relaxed);
        let (led, error) = elector.round().await;
        match error {
            None => health.connected.store(true, Ordering::Relaxed),
            Some(e) => {
                health.lease_errors.fetch_add(1, Ordering::Relaxed);
                health.connected.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, leading = led, "leader election round failed");
            }
        }
        if led && running.is_empty() {
            tracing::info!(identity = %me, "leading: starting reconcilers");
            running = start_reconcilers(&reconciler_client, &gates, &args);
        } else if !led && !running.is_empty() {
            tracing::warn!(identity = %me, "no longer leading (another holder, or no renewal within the renew deadline): stopping reconcilers");
            for t in running.drain(..) {
                t.abort();
            }
        }
        health.leader.store(led, Ordering::Relaxed);
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(ELECTION.retry) => {}
        }
    }
    for t in running {
        t.abort();
    }
    if let Some(w) = webhook {
        w.abort();
    }
    metrics.abort();
    tracing::info!("keelson-controller stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_metrics_answers() {
        let h = Health::default();
        assert_eq!(h.answer("/healthz").0, 200);
        assert_eq!(h.answer("/readyz").0, 503);
        h.connected.store(true, Ordering::Relaxed);
        h.leader.store(true, Ordering::Relaxed);
        assert_eq!(h.answer("/readyz").0, 200);
        h.webhook_expected.store(true, Ordering::Relaxed);
        assert_eq!(
            h.answer("/readyz"),
            (503, "webhook server not serving yet\n".into())
        );
        h.webhook_serving.store(true, Ordering::Relaxed);
        assert_eq!(h.answer("/readyz").0, 200);
        let (code, body) = h.answer("/metrics");
        assert_eq!(code, 200);
        assert!(body.contains("keelson_controller_leader 1\n"), "{body}");
        assert_eq!(h.answer("/nope").0, 404);
    }
}
