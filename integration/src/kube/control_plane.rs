//! The control plane as host processes: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler, with the flags of upstream's
//! `hack/local-up-cluster.sh` adapted to this machine (no kube-proxy, so
//! webhooks are routed to endpoint IPs; the API server listens on the
//! node address only).

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::bins::Bins;
use super::network::SERVICE_CIDR;
use super::pki::{Credential, Pki, write_kubeconfig};
use crate::proc::Daemon;

/// A free TCP port on `ip` (the OS's choice; closed again at once).
pub fn free_port(ip: Ipv4Addr) -> crate::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// The running control plane.
pub struct ControlPlane {
    // Drop order: the API server's clients first, etcd last.
    pub scheduler: Daemon,
    pub controller_manager: Daemon,
    pub apiserver: Daemon,
    pub etcd: Daemon,
    pub server: String,
    pub admin_kubeconfig: PathBuf,
    /// How long each component took to serve, in start order.
    pub startup: Vec<(&'static str, Duration)>,
}

impl ControlPlane {
    /// Starts everything under `dir` and waits until the API server is
    /// ready; `ip` is the node address it listens on.
    pub fn start(bins: &Bins, dir: &Path, pki: &Pki, ip: Ipv4Addr) -> crate::Result<Self> {
        let mut startup = vec![];
        let logs = dir.join("logs");
        fs::create_dir_all(&logs)?;

        let t = Instant::now();
        let etcd_port = free_port(Ipv4Addr::LOCALHOST)?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd = Daemon::spawn(
            "etcd",
            Command::new(bins.etcd())
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg("--listen-peer-urls=http://127.0.0.1:0")
                .arg("--log-level=warn")
                // Throwaway data: fsync buys nothing here.
                .arg("--unsafe-no-fsync"),
            &logs.join("etcd.log"),
        )?;
        wait_tcp(&etcd, ("127.0.0.1", etcd_port), Duration::from_secs(30))?;
        startup.push(("etcd", t.elapsed()));

        let t = Instant::now();
        let port = free_port(ip)?;
        let server = format!("https://{ip}:{port}");
        let p = |p: &Path| p.display().to_string();
        let apiserver = Daemon::spawn(
            "kube-apiserver",
            Command::new(bins.kube("kube-apiserver"))
                .arg(format!("--etcd-servers={etcd_url}"))
                .arg(format!("--bind-address={ip}"))
                .arg(format!("--advertise-address={ip}"))
                .arg(format!("--secure-port={port}"))
                .arg(format!("--tls-cert-file={}", p(&pki.apiserver_cert)))
                .arg(format!("--tls-private-key-file={}", p(&pki.apiserver_key)))
                .arg(format!("--client-ca-file={}", p(&pki.ca_cert)))
                .arg("--authorization-mode=Node,RBAC")
                .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!("--service-account-key-file={}", p(&pki.sa_pub)))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    p(&pki.sa_key)
                ))
                .arg(format!(
                    "--kubelet-client-certificate={}",
                    p(&pki.apiserver_kubelet_client.cert)
                ))
                .arg(format!(
                    "--kubelet-client-key={}",
                    p(&pki.apiserver_kubelet_client.key)
                ))
                .arg("--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultTolerationSeconds,Priority,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota,NodeRestriction")
                // No kube-proxy: webhooks and aggregated APIs are called at
                // their Service's endpoint addresses, not its ClusterIP.
                .arg("--enable-aggregator-routing=true")
                // Reach kubelet at its address, never through a DNS lookup.
                .arg("--kubelet-preferred-address-types=InternalIP")
                .arg("--profiling=false")
                .arg("--v=1"),
            &logs.join("kube-apiserver.log"),
        )?;
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(
            &admin_kubeconfig,
            &server,
            &pki.ca_cert,
            Credential::Cert(&pki.admin),
        )?;
        wait_ready(
            &apiserver,
            &bins.kube("kubectl"),
            &admin_kubeconfig,
            Duration::from_secs(120),
        )?;
        startup.push(("kube-apiserver", t.elapsed()));

        let t = Instant::now();
        let kcm_config = dir.join("controller-manager.kubeconfig");
        write_kubeconfig(
            &kcm_config,
            &server,
            &pki.ca_cert,
            Credential::Cert(&pki.controller_manager),
        )?;
        let controller_manager = Daemon::spawn(
            "kube-controller-manager",
            Command::new(bins.kube("kube-controller-manager"))
                .arg(format!("--kubeconfig={}", p(&kcm_config)))
                .arg(format!("--authentication-kubeconfig={}", p(&kcm_config)))
                .arg(format!("--authorization-kubeconfig={}", p(&kcm_config)))
                .arg(format!(
                    "--service-account-private-key-file={}",
                    p(&pki.sa_key)
                ))
                .arg(format!("--root-ca-file={}", p(&pki.ca_cert)))
                .arg(format!("--cluster-signing-cert-file={}", p(&pki.ca_cert)))
                .arg(format!("--cluster-signing-key-file={}", p(&pki.ca_key)))
                .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
                .arg("--use-service-account-credentials")
                .arg("--controllers=*")
                .arg("--leader-elect=false")
                .arg("--secure-port=0")
                .arg("--v=1"),
            &logs.join("kube-controller-manager.log"),
        )?;
        startup.push(("kube-controller-manager", t.elapsed()));

        let t = Instant::now();
        let sched_kubeconfig = dir.join("scheduler.kubeconfig");
        write_kubeconfig(
            &sched_kubeconfig,
            &server,
            &pki.ca_cert,
            Credential::Cert(&pki.scheduler),
        )?;
        let sched_config = dir.join("scheduler.yaml");
        fs::write(
            &sched_config,
            serde_json::to_vec_pretty(&serde_json::json!({
                "apiVersion": "kubescheduler.config.k8s.io/v1",
                "kind": "KubeSchedulerConfiguration",
                "clientConnection": {"kubeconfig": p(&sched_kubeconfig)},
                "leaderElection": {"leaderElect": false},
            }))?,
        )?;
        let scheduler = Daemon::spawn(
            "kube-scheduler",
            Command::new(bins.kube("kube-scheduler"))
                .arg(format!("--config={}", p(&sched_config)))
                .arg(format!(
                    "--authentication-kubeconfig={}",
                    p(&sched_kubeconfig)
                ))
                .arg(format!(
                    "--authorization-kubeconfig={}",
                    p(&sched_kubeconfig)
                ))
                .arg("--secure-port=0")
                .arg("--v=1"),
            &logs.join("kube-scheduler.log"),
        )?;
        startup.push(("kube-scheduler", t.elapsed()));
        Ok(Self {
            scheduler,
            controller_manager,
            apiserver,
            etcd,
            server,
            admin_kubeconfig,
            startup,
        })
    }

    /// Fails with the log of the first component that has exited.
    pub fn check_running(&self) -> crate::Result<()> {
        self.etcd.check_running()?;
        self.apiserver.check_running()?;
        self.controller_manager.check_running()?;
        self.scheduler.check_running()
    }
}

/// Waits until `addr` accepts TCP connections (or `daemon` exits).
fn wait_tcp(daemon: &Daemon, addr: (&str, u16), limit: Duration) -> crate::Result<()> {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(addr).is_err() {
        daemon.check_running()?;
        if Instant::now() > deadline {
            bail!("{addr:?} not served within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Waits until the API server says it is ready (`/readyz`).
fn wait_ready(
    apiserver: &Daemon,
    kubectl: &Path,
    kubeconfig: &Path,
    limit: Duration,
) -> crate::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        apiserver.check_running()?;
        let out = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["get", "--raw", "/readyz"])
            .output()
            .context("running kubectl")?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "kube-apiserver not ready within {limit:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                apiserver.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
