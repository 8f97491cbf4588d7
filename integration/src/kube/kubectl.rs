//! Talking to the test cluster as a user does: kubectl as admin (output,
//! refusals, `apply -f -`, JSON), crictl against a CRI socket, and
//! SIGKILL of the controller's containers.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;

use super::Cluster;

impl Cluster {
    /// crictl against `socket`, failing with its stderr.
    pub fn crictl(&self, socket: &Path, args: &[&str]) -> crate::Result<String> {
        let bin = self
            .bins
            .crictl()
            .context("crictl was not built (integration/scripts/kube-build)")?;
        let endpoint = format!("unix://{}", socket.display());
        crate::proc::run(
            Command::new(bin)
                .args([
                    "--runtime-endpoint",
                    &endpoint,
                    "--image-endpoint",
                    &endpoint,
                ])
                .args(["--timeout", "20s"])
                .args(args),
        )
    }

    /// When containerd started container `id` (ns since the epoch), asked
    /// of containerd itself rather than read from the pod's status.
    pub fn container_started_ns(&self, id: &str) -> crate::Result<i128> {
        let socket = self.runtime()?.socket();
        let out = self.crictl(&socket, &["inspect", id])?;
        let v: Value = serde_json::from_str(&out).context("crictl inspect output")?;
        let text = v["status"]["startedAt"]
            .as_str()
            .with_context(|| format!("container {id} has no startedAt"))?;
        let ts: k8s_openapi::jiff::Timestamp = text
            .parse()
            .with_context(|| format!("startedAt {text:?}"))?;
        Ok(ts.as_nanosecond())
    }

    /// SIGKILL of every keelson-controller container's process (kubelet
    /// starts them again); how many were killed.
    pub fn kill_controllers(&self) -> crate::Result<usize> {
        let socket = self.cri_socket().context("no agent socket")?;
        let ids = self.crictl(&socket, &["ps", "-q", "--name", "^controller$"])?;
        let mut killed = 0;
        for id in ids.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let info: Value = serde_json::from_str(&self.crictl(&socket, &["inspect", id])?)?;
            let pid = info["info"]["pid"]
                .as_i64()
                .context("controller container without a pid")?;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )?;
            eprintln!("SIGKILL controller container {id} (pid {pid})");
            killed += 1;
        }
        Ok(killed)
    }

    /// Tags image `src` as `dst` in the node's containerd (`k8s.io`
    /// namespace): the same image ID under another name, a retag.
    pub fn tag_image(&self, src: &str, dst: &str) -> crate::Result<()> {
        crate::proc::run(
            Command::new("ctr")
                .arg("--address")
                .arg(self.runtime()?.socket())
                .args(["-n", "k8s.io", "images", "tag", "--force", src, dst]),
        )?;
        Ok(())
    }

    /// Runs kubectl as admin; fails with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> crate::Result<String> {
        let out = Command::new(self.bins.kube("kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl as admin and returns what it printed on stdout and
    /// stderr, and whether it succeeded (for tests of refusals).
    pub fn kubectl_result(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> crate::Result<(bool, String, String)> {
        let mut child = Command::new(self.bins.kube("kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kubectl")?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.unwrap_or_default().as_bytes())?;
        }
        let out = child.wait_with_output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// The real kubectl with `plugins` first on `PATH` and the admin
    /// kubeconfig in `$KUBECONFIG` (plugins read it from there), as a user
    /// runs `kubectl <plugin> …`: (succeeded, stdout, stderr).
    pub fn kubectl_with_plugins(
        &self,
        plugins: &Path,
        args: &[&str],
    ) -> crate::Result<(bool, String, String)> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![plugins.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        let out = Command::new(self.bins.kube("kubectl"))
            .args(args)
            .env("PATH", std::env::join_paths(dirs)?)
            .env("KUBECONFIG", self.kubeconfig())
            .output()
            .context("running kubectl")?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// `kubectl apply -f -` of `manifest` (YAML or JSON).
    pub fn apply_stdin(&self, manifest: &str) -> crate::Result<String> {
        let (ok, out, err) = self.kubectl_result(&["apply", "-f", "-"], Some(manifest))?;
        if !ok {
            bail!("kubectl apply failed: {err}{out}");
        }
        Ok(out)
    }

    /// The pods labelled `app=<app>` in `ns` (terminating ones too).
    pub fn pods(&self, ns: &str, app: &str) -> crate::Result<Vec<Value>> {
        let list = self.get_json(&["-n", ns, "pods", "-l", &format!("app={app}")])?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// `kubectl -n keelson-system rollout status <what>` (a Deployment or
    /// DaemonSet of Keelson's), up to 180 s.
    pub fn rolled_out(&self, what: &str) -> crate::Result<()> {
        self.kubectl(&[
            "-n",
            "keelson-system",
            "rollout",
            "status",
            what,
            "--timeout=180s",
        ])?;
        Ok(())
    }

    /// kubelet's `kubelet_runtime_operations_errors_total`, per operation
    /// (its failed CRI calls, from its own metrics).
    pub fn kubelet_cri_errors(&self) -> crate::Result<std::collections::BTreeMap<String, f64>> {
        let text = self.kubectl(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{}/proxy/metrics", super::NODE),
        ])?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("kubelet_runtime_operations_errors_total{"))
            .filter_map(|l| {
                let (labels, value) = l.rsplit_once(' ')?;
                Some((labels.to_string(), value.parse().ok()?))
            })
            .collect())
    }

    /// `kubectl get … -o json` parsed.
    pub fn get_json(&self, args: &[&str]) -> crate::Result<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend(["-o", "json"]);
        let text = self.kubectl(&all)?;
        serde_json::from_str(&text).context("kubectl printed no JSON")
    }
}

/// A listed object's name.
pub fn name_of(o: &Value) -> String {
    o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The runtime ids (without the `containerd://` prefix) of a pod's
/// containers, by name, from its status.
pub fn container_ids(pod: &Value) -> std::collections::HashMap<String, String> {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let id = s["containerID"].as_str()?;
            let bare = id.split_once("://").map_or(id, |(_, b)| b);
            Some((s["name"].as_str()?.to_string(), bare.to_string()))
        })
        .collect()
}

/// A pod that is Ready and not being deleted.
pub fn live_and_ready(p: &Value) -> bool {
    super::condition(p, "Ready") && p["metadata"]["deletionTimestamp"].is_null()
}

/// The counters of `after` that grew since `before`, by how much.
pub fn grown(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> std::collections::BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect()
}
