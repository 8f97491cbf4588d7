//! Where the upstream components built by `integration/scripts/kube-build`
//! are: one cache directory per component and version, the versions read
//! from the same wrapper `go.mod` files the script builds from.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The built upstream binaries of the test cluster.
#[derive(Debug, Clone)]
pub struct Bins {
    pub kube_version: String,
    pub etcd_version: String,
    kube: PathBuf,
    etcd: PathBuf,
    crictl: PathBuf,
    kwok: PathBuf,
}

impl Bins {
    /// Locates every binary, failing with what to run when one is missing.
    pub fn find() -> crate::Result<Self> {
        let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("kube");
        let cache = std::env::var_os("KEELSON_KUBE_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/var/cache/keelson".into());
        let version = |dir: &str, module: &str| -> crate::Result<String> {
            let path = modules.join(dir).join("go.mod");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            required(&text, module)
                .with_context(|| format!("{} requires no {module}", path.display()))
        };
        let kube_version = version("k8s", "k8s.io/kubernetes")?;
        let etcd_version = version("etcd", "go.etcd.io/etcd/server/v3")?;
        let crictl_version = version("crictl", "sigs.k8s.io/cri-tools")?;
        let kwok_version = version("kwok", "sigs.k8s.io/kwok")?;
        let me = Self {
            kube: cache.join(format!("kube-{kube_version}/bin")),
            etcd: cache.join(format!("etcd-{etcd_version}/bin")),
            crictl: cache.join(format!("crictl-{crictl_version}/bin")),
            kwok: cache.join(format!("kwok-{kwok_version}/bin")),
            kube_version,
            etcd_version,
        };
        for bin in [
            me.etcd(),
            me.kube("kube-apiserver"),
            me.kube("kube-controller-manager"),
            me.kube("kube-scheduler"),
            me.kube("kubelet"),
            me.kube("kubectl"),
        ] {
            if !bin.is_file() {
                bail!(
                    "{} is missing: run `bash integration/scripts/kube-build` (.ci/run and the test script do)",
                    bin.display()
                );
            }
        }
        Ok(me)
    }

    /// A Kubernetes binary (`kubelet`, `kubectl`, …).
    pub fn kube(&self, name: &str) -> PathBuf {
        self.kube.join(name)
    }

    /// etcd.
    pub fn etcd(&self) -> PathBuf {
        self.etcd.join("etcd")
    }

    /// crictl, if it was built.
    pub fn crictl(&self) -> Option<PathBuf> {
        Some(self.crictl.join("crictl")).filter(|p| p.is_file())
    }

    /// kwok, if it was built.
    pub fn kwok(&self) -> Option<PathBuf> {
        Some(self.kwok.join("kwok")).filter(|p| p.is_file())
    }
}

/// The version `go.mod` text requires of `module` (single-line or block
/// `require`).
fn required(go_mod: &str, module: &str) -> Option<String> {
    go_mod.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let first = words.next()?;
        let (name, version) = if first == "require" {
            (words.next()?, words.next()?)
        } else {
            (first, words.next()?)
        };
        (name == module && version.starts_with('v')).then(|| version.to_string())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_required_versions() {
        let text = "module x\n\nrequire k8s.io/kubernetes v1.34.4\n\nrequire (\n\tgo.etcd.io/etcd/server/v3 v3.6.5\n\tfoo v1 // indirect\n)\nreplace (\n\tk8s.io/api => k8s.io/api v0.34.4\n)\n";
        assert_eq!(
            super::required(text, "k8s.io/kubernetes").as_deref(),
            Some("v1.34.4")
        );
        assert_eq!(
            super::required(text, "go.etcd.io/etcd/server/v3").as_deref(),
            Some("v3.6.5")
        );
        assert_eq!(super::required(text, "k8s.io/api"), None);
    }
}
