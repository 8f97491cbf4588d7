//! Advanced StatefulSet against `apps/v1` StatefulSet on one real
//! single-node cluster (kubelet → keelson-agent → containerd,
//! keelson-controller installed), side by side with the same pod template
//! and the same (default) OrderedReady, one-at-a-time rolling update: the
//! time from an image change to all N pods updated and Ready, the
//! Advanced StatefulSet updating in place (InPlaceIfPossible), the
//! StatefulSet recreating each pod (kube-controller-manager). Repeated
//! `ROUNDS` times, interleaved, for two containers: `sleep` as PID 1
//! (ignores SIGTERM, so kubelet's 2 s minimum kill grace is paid on every
//! in-place restart) and a shell that exits on SIGTERM (as most servers).
//!
//! `cargo run -p keelson-integration --bin bench-asts [N] [ROUNDS]` (after
//! `cargo build --workspace --bins`; N defaults to 10, ROUNDS to 2).

use std::time::{Duration, Instant};

use anyhow::bail;
use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster, Options};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(900);

/// The container's command: `sleep` as PID 1, or a shell exiting on TERM.
fn command(exits_on_term: bool) -> Value {
    if exits_on_term {
        json!(["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"])
    } else {
        json!(["sleep", "3600"])
    }
}

fn template(app: &str, image: &str, exits_on_term: bool) -> Value {
    json!({"metadata": {"labels": {"app": app}},
        "spec": {"terminationGracePeriodSeconds": 0,
            "readinessGates": [{"conditionType": "InPlaceUpdateReady"}],
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": command(exits_on_term)}]}})
}

fn manifest(
    api_version: &str,
    ns: &str,
    name: &str,
    n: usize,
    extra: Value,
    exits_on_term: bool,
) -> Value {
    let mut spec = json!({"replicas": n, "serviceName": name,
        "selector": {"matchLabels": {"app": name}}, "template": template(name, BUSYBOX, exits_on_term)});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    // apps/v1 pods never get the InPlaceUpdateReady condition: no gate.
    if api_version == "apps/v1" {
        spec["template"]["spec"]
            .as_object_mut()
            .map(|t| t.remove("readinessGates"));
    }
    json!({"apiVersion": api_version, "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn all_ready_on(c: &Cluster, ns: &str, app: &str, n: usize, image: &str) -> anyhow::Result<bool> {
    let list = c.get_json(&["-n", ns, "pods", "-l", &format!("app={app}")])?;
    let pods = list["items"].as_array().cloned().unwrap_or_default();
    let live: Vec<&Value> = pods
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    Ok(live.len() == n
        && live
            .iter()
            .all(|p| kube::condition(p, "Ready") && p["spec"]["containers"][0]["image"] == image))
}

fn wait(c: &Cluster, ns: &str, app: &str, n: usize, image: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + LIMIT;
    while !all_ready_on(c, ns, app, n, image)? {
        if Instant::now() > deadline {
            bail!("{app}: not all {n} pods Ready on {image} after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Creates the set, waits for it, changes the image; the update's time.
fn round(
    c: &Cluster,
    api_version: &str,
    kind: &str,
    n: usize,
    image: &str,
    exits_on_term: bool,
) -> anyhow::Result<Duration> {
    let ns = "bench-asts";
    let _ = c.kubectl(&["delete", "namespace", ns, "--wait=true", "--timeout=300s"]);
    c.kubectl(&["create", "namespace", ns])?;
    let extra = if api_version == "apps/v1" {
        json!({})
    } else {
        json!({"updateStrategy": {"rollingUpdate": {"podUpdatePolicy": "InPlaceIfPossible"}}})
    };
    c.apply_stdin(&manifest(api_version, ns, "set", n, extra, exits_on_term).to_string())?;
    wait(c, ns, "set", n, BUSYBOX)?;
    let patch = json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}]);
    let t = Instant::now();
    c.kubectl(&[
        "-n",
        ns,
        "patch",
        kind,
        "set",
        "--type=json",
        "-p",
        &patch.to_string(),
    ])?;
    wait(c, ns, "set", n, image)?;
    Ok(t.elapsed())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2);
    println!("starting the cluster (kubelet → keelson-agent, keelson-controller) …");
    let c = Cluster::start_with(&Options::default())?;
    let image = BUSYBOX.replace(":test", ":bench-asts");
    c.tag_image(BUSYBOX, &image)?;
    let mut rows = vec![];
    for exits_on_term in [false, true] {
        for r in 0..rounds {
            let asts = round(
                &c,
                "apps.kruise.io/v1beta1",
                "statefulsets.apps.kruise.io",
                n,
                &image,
                exits_on_term,
            )?;
            let sts = round(&c, "apps/v1", "statefulsets.apps", n, &image, exits_on_term)?;
            println!(
                "round {r} (exits on TERM: {exits_on_term}): Advanced StatefulSet in place {:.1} s, apps/v1 StatefulSet {:.1} s",
                asts.as_secs_f64(),
                sts.as_secs_f64()
            );
            rows.push((exits_on_term, asts, sts));
        }
    }
    println!("\n{n} pods, OrderedReady, one at a time, image change → all updated and Ready:");
    println!(
        "| container | round | Advanced StatefulSet (in place) | apps/v1 StatefulSet | ratio |"
    );
    println!("|---|---|---|---|---|");
    for (i, (term, a, s)) in rows.iter().enumerate() {
        let what = if *term {
            "exits on SIGTERM"
        } else {
            "sleep as PID 1"
        };
        println!(
            "| {what} | {i} | {:.1} s | {:.1} s | {:.2} |",
            a.as_secs_f64(),
            s.as_secs_f64(),
            a.as_secs_f64() / s.as_secs_f64()
        );
    }
    Ok(())
}
