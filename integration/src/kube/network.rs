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

use anyhow::Context;

use crate::proc::run;

/// Bridges this harness makes are named `kc<hash>` and carry
/// `keelson-test pid=<owner>` as their alias.
const ALIAS_PREFIX: &str = "keelson-test pid=";

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
        remove_abandoned_bridges();
        let taken = octets_in_use();
        let third_octet = (0..200)
            .map(|i| 10 + ((hash + i) % 200) as u8)
            .find(|o| !taken.contains(o))
            .context("every 10.244.x.0/24 test range is in use")?;
        let me = Self {
            bridge: format!("kc{:08x}", hash),
            third_octet,
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
        // The owner's pid goes into the link's alias, so a later harness
        // can tell a bridge left by a killed test from a live one.
        run(Command::new("ip").args([
            "link",
            "set",
            "dev",
            &me.bridge,
            "alias",
            &format!("{ALIAS_PREFIX}{}", std::process::id()),
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

/// Deletes `kc*` bridges whose owning process is gone (a test killed by a
/// timeout never runs its guard): their /24 route would shadow a new
/// cluster's pods that happened to get the same range, and kubelet's probes
/// would see "no route to host". A bridge without our alias is from an
/// older harness and treated as abandoned too.
fn remove_abandoned_bridges() {
    let Ok(out) = Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split(": ").nth(1).map(|n| n.trim()) else {
            continue;
        };
        if !name.starts_with("kc") {
            continue;
        }
        let owner = line
            .split("alias ")
            .nth(1)
            .and_then(|a| a.trim().strip_prefix(ALIAS_PREFIX))
            .and_then(|pid| pid.trim().parse::<u32>().ok());
        let alive = owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
    }
}

/// The third octets of every 10.244.x.0/24 some interface already routes.
fn octets_in_use() -> Vec<u8> {
    let Ok(out) = Command::new("ip")
        .args(["-o", "-4", "route", "show"])
        .output()
    else {
        return vec![];
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|dst| dst.strip_prefix("10.244."))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect()
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}
