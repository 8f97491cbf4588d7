//! An isolated CNI bridge for pods that are not on the host network: no
//! gateway, no masquerade, no forwarding, a link-local range, and its IPAM
//! state under the containerd temp dir. Nothing can leave the host.

use std::fs;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::containerd::Containerd;
use crate::kubelet::Kubelet;

/// A bridge network containerd's CRI plugin uses for new pods.
pub struct Bridge {
    name: String,
    third_octet: u8,
    conf: std::path::PathBuf,
}

impl Bridge {
    /// Writes the network config into containerd's CNI conf dir.
    pub fn install(ctrd: &Containerd) -> crate::Result<Self> {
        anyhow::ensure!(
            std::path::Path::new("/usr/lib/cni/bridge").exists(),
            "CNI plugins missing: install containernetworking-plugins"
        );
        let tag = ctrd
            .dir()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hash = tag
            .bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        let name = format!("kit{:08x}", hash);
        let third_octet = 100 + (hash % 100) as u8;
        let conf = ctrd.dir().join("cni").join("10-keelson-it.conflist");
        let json = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": name,
            "plugins": [{
                "type": "bridge",
                "bridge": name,
                "isGateway": false,
                "isDefaultGateway": false,
                "ipMasq": false,
                "hairpinMode": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ctrd.dir().join("cni-ipam").display().to_string(),
                    "ranges": [[{ "subnet": format!("169.254.{third_octet}.0/24") }]]
                }
            }]
        });
        fs::write(&conf, serde_json::to_vec_pretty(&json)?)?;
        Ok(Self {
            name,
            third_octet,
            conf,
        })
    }

    /// Waits until the runtime reports NetworkReady.
    pub async fn wait_ready(&self, k: &mut Kubelet) -> crate::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = k
                .runtime
                .status(cri_proto::StatusRequest { verbose: false })
                .await?
                .into_inner()
                .status
                .unwrap_or_default();
            if status
                .conditions
                .iter()
                .any(|c| c.r#type == "NetworkReady" && c.status)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "NetworkReady not reported within 20 s: {:?}",
                    status.conditions
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether `ip` is in this bridge's range.
    pub fn contains(&self, ip: &str) -> bool {
        ip.parse::<Ipv4Addr>()
            .is_ok_and(|a| a.octets()[..3] == [169, 254, self.third_octet])
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.conf);
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}
