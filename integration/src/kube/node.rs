//! The node: a real kubelet whose CRI endpoint is keelson-agent's socket,
//! configured for this machine (cgroupfs driver under a cgroup root of the
//! harness's own, cgroup v1 allowed, no swap check, image GC and disk
//! eviction off, OOM score left alone, no iptables chains, no DNS).

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::bins::Bins;
use super::control_plane::free_port;
use super::pki::{Credential, Pki, write_kubeconfig};
use crate::proc::Daemon;

/// Where and how kubelet runs.
pub struct KubeletSpec<'a> {
    pub node_name: &'a str,
    pub node_ip: Ipv4Addr,
    pub server: &'a str,
    pub runtime_socket: &'a Path,
    pub cgroup_root: &'a str,
    pub pod_logs: &'a Path,
}

/// A running kubelet and the files it owns.
pub struct Kubelet {
    pub daemon: Daemon,
    pub root_dir: PathBuf,
    pub healthz_port: u16,
}

impl Kubelet {
    /// Writes kubelet's config and kubeconfig under `dir` and starts it.
    pub fn start(
        bins: &Bins,
        dir: &Path,
        pki: &Pki,
        spec: &KubeletSpec<'_>,
    ) -> crate::Result<Self> {
        let root_dir = dir.join("kubelet");
        fs::create_dir_all(&root_dir)?;
        fs::create_dir_all(spec.pod_logs)?;
        make_cgroup(spec.cgroup_root)?;
        let kubeconfig = dir.join("kubelet.kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            spec.server,
            &pki.ca_cert,
            Credential::Cert(&pki.kubelet),
        )?;
        let port = free_port(spec.node_ip)?;
        let healthz_port = free_port(Ipv4Addr::LOCALHOST)?;
        let endpoint = format!("unix://{}", spec.runtime_socket.display());
        let config = serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": spec.node_ip.to_string(),
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz_port,
            "containerRuntimeEndpoint": endpoint,
            "imageServiceEndpoint": endpoint,
            // PID 1 is not systemd here; the machines run cgroup v1.
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": format!("/{}", spec.cgroup_root),
            "cgroupsPerQOS": true,
            "failCgroupV1": false,
            "failSwapOn": false,
            "authentication": {
                "anonymous": {"enabled": false},
                "webhook": {"enabled": true},
                "x509": {"clientCAFile": pki.ca_cert.display().to_string()},
            },
            "authorization": {"mode": "Webhook"},
            // No cluster DNS; pods get no resolv.conf from the host.
            "resolvConf": "",
            // Root lacks CAP_SYS_RESOURCE: a negative score cannot be set.
            "oomScoreAdj": 0,
            // The preloaded images (pause among them) must stay.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            // One signal given: the disk ones are 0 (off); free disk varies.
            "evictionHard": {"memory.available": "100Mi"},
            "makeIPTablesUtilChains": false,
            "podLogsDir": spec.pod_logs.display().to_string(),
            "volumePluginDir": dir.join("volume-plugins").display().to_string(),
            "registerNode": true,
            "serializeImagePulls": false,
            "nodeStatusReportFrequency": "10s",
            "shutdownGracePeriod": "0s",
        });
        let config_path = dir.join("kubelet.yaml");
        fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let daemon = Daemon::spawn(
            "kubelet",
            Command::new(bins.kube("kubelet"))
                .arg(format!("--config={}", config_path.display()))
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg(format!("--root-dir={}", root_dir.display()))
                .arg(format!("--hostname-override={}", spec.node_name))
                .arg(format!("--node-ip={}", spec.node_ip))
                .arg("--v=2"),
            &dir.join("logs").join("kubelet.log"),
        )?;
        Ok(Self {
            daemon,
            root_dir,
            healthz_port,
        })
    }
}

/// Creates cgroup `name` under every mounted cgroup hierarchy (kubelet
/// refuses a cgroup root that does not exist); cpuset gets its parent's
/// cpus and mems, as cgroup v1 does not inherit them.
fn make_cgroup(name: &str) -> crate::Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    for line in mounts.lines() {
        let mut f = line.split(' ');
        let (Some(_), Some(point), Some(kind), Some(opts)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if kind != "cgroup" && kind != "cgroup2" {
            continue;
        }
        let dir = Path::new(point).join(name);
        fs::create_dir_all(&dir)?;
        if kind == "cgroup" && opts.split(',').any(|o| o == "cpuset") {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let parent = fs::read_to_string(Path::new(point).join(file))?;
                let own = dir.join(file);
                if fs::read_to_string(&own)?.trim().is_empty() {
                    fs::write(&own, parent.trim())?;
                }
            }
        }
    }
    Ok(())
}
