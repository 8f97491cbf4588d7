//! The test cluster's network: a bridge the harness makes itself, whose
//! address is the node's IP (kubelet, the API server) and the pods'
//! gateway. Pods get addresses from a private /24 on it through Debian's
//! CNI bridge plugin; nothing is routed anywhere else (no default route in
//! pods, no masquerade, forwarding untouched), and the service range is
//! routed nowhere. The bridge and its route go when the guard drops.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::proc::run;

/// The service range (ClusterIPs are allocated from it; no packet to it
/// goes anywhere: there is no kube-proxy).
pub const SERVICE_CIDR: &str = "10.96.0.0/24";
/// The first service IP (the `kubernetes` Service).
pub const FIRST_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// The bridge, its /24 and the CNI config that puts pods on it.
pub struct Network {
    bridge: String,
    third_octet: u8,
}

impl Network {
    /// Creates the bridge (named and numbered after `tag`, so concurrent
    /// harnesses differ) with the node address, and writes the CNI config
    /// into `cni_conf_dir` with IPAM state under `state_dir`.
    pub fn create(tag: &str, cni_conf_dir: &Path, state_dir: &Path) -> crate::Result<Self> {
        anyhow::ensure!(
            Path::new("/usr/lib/cni/bridge").exists(),
            "CNI plugins missing: install containernetworking-plugins"
        );
        let hash = tag
            .bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        let me = Self {
            bridge: format!("kc{:08x}", hash),
            third_octet: 10 + (hash % 200) as u8,
        };
        let _ = Command::new("ip")
            .args(["link", "del", &me.bridge])
            .output();
        run(Command::new("ip").args(["link", "add", &me.bridge, "type", "bridge"]))?;
        run(Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/24", me.node_ip()),
            "dev",
            &me.bridge,
        ]))?;
        run(Command::new("ip").args(["link", "set", &me.bridge, "up"]))?;
        let conf = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "keelson-cluster",
            "plugins": [{
                "type": "bridge",
                "bridge": me.bridge,
                // The host side of the bridge already has the address:
                // kubelet's probes and the API server (webhooks) reach
                // pods over it; pods get no default route.
                "isGateway": true,
                "isDefaultGateway": false,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": state_dir.join("cni-ipam").display().to_string(),
                    "ranges": [[{
                        "subnet": me.pod_cidr(),
                        "rangeStart": format!("10.244.{}.10", me.third_octet),
                        "gateway": me.node_ip().to_string(),
                    }]]
                }
            }]
        });
        fs::create_dir_all(cni_conf_dir)?;
        fs::write(
            cni_conf_dir.join("10-keelson-cluster.conflist"),
            serde_json::to_vec_pretty(&conf)?,
        )?;
        Ok(me)
    }

    /// The node's address (on the bridge): kubelet, the API server.
    pub fn node_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.third_octet, 1)
    }

    /// The pods' range.
    pub fn pod_cidr(&self) -> String {
        format!("10.244.{}.0/24", self.third_octet)
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}
