//! Keelson's end-to-end harness: a real containerd in a temp dir
//! ([`containerd`]), offline test images ([`images`]), the agent binary
//! ([`agent`]), CRI clients ([`client`]) and a kubelet-like CRI driver
//! ([`kubelet`]).
//!
//! The harness installs nothing: containerd, runc, umoci and friends come
//! from Debian's packages (`.ci/run` installs them). Everything a test
//! starts is stopped and unmounted when its guard drops, also on panic.

pub mod accounting;
pub mod activated;
pub mod agent;
pub mod client;
pub mod cni;
pub mod containerd;
pub mod controller;
pub mod forwarder;
pub mod images;
pub mod kube;
pub mod kubelet;
pub mod pod_worker;
pub mod proc;
pub mod registry;
pub mod stats;

/// Result type of the harness (errors carry context for the test log).
pub type Result<T> = anyhow::Result<T>;

/// Whether the machine has what the real-containerd tests need (root and
/// the Debian packages). Tests that need them fail with this message
/// instead of silently passing when something is missing.
pub fn require_runtime() -> Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "integration tests need root (containerd, mounts, cgroups)"
    );
    for tool in [
        "containerd",
        "containerd-shim-runc-v2",
        "runc",
        "ctr",
        "umoci",
        "gcc",
    ] {
        anyhow::ensure!(
            proc::which(tool).is_some(),
            "{tool} not found: install Debian's packages as .ci/run does"
        );
    }
    anyhow::ensure!(
        std::path::Path::new("/bin/busybox").exists(),
        "/bin/busybox missing: install busybox-static"
    );
    Ok(())
}

/// Where built test images are cached between runs
/// (`$KEELSON_IMAGE_CACHE`, default `/var/tmp/keelson-test-images`).
pub fn image_cache() -> std::path::PathBuf {
    std::env::var_os("KEELSON_IMAGE_CACHE")
        .map(Into::into)
        .unwrap_or_else(|| "/var/tmp/keelson-test-images".into())
}

/// Replaces every 64-hex-digit id (container, sandbox, exec ids) with
/// `<id>`, so messages about different objects can be compared.
pub fn mask_ids(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let run = b[i..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            .count();
        if run == 64 {
            out.push_str("<id>");
            i += 64;
        } else if run > 0 {
            out.push_str(&s[i..i + run]);
            i += run;
        } else {
            let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_ids_only() {
        let id = "a".repeat(64);
        assert_eq!(
            super::mask_ids(&format!("exec \"{id}\": x {}", "b".repeat(63))),
            format!("exec \"<id>\": x {}", "b".repeat(63))
        );
        assert_eq!(super::mask_ids("é ok"), "é ok");
    }
}
