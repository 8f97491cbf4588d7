//! CloneSet against `apps/v1` Deployment on one real single-node cluster
//! (kubelet → keelson-agent → containerd, keelson-controller installed),
//! side by side with the same pod template:
//!
//! 1. scale 0 → N: time from `kubectl apply` to N pods Ready;
//! 2. an image change of N pods with maxUnavailable 50%: CloneSet
//!    InPlaceIfPossible, CloneSet ReCreate, Deployment RollingUpdate
//!    (maxSurge 0), time from the patch to all N updated and Ready;
//! 3. per pod of the in-place run: from the pod turning not-ready for the
//!    update to Ready again on the new image (sampled every 100 ms).
//!
//! `cargo run -p keelson-integration --bin bench-cloneset [N]` (after
//! `cargo build --workspace --bins`; N defaults to 50).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster, Options};
use keelson_integration::stats::summarize;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(600);

fn container(image: &str) -> Value {
    json!({"name": "main", "image": image, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]})
}

fn template(app: &str, image: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [container(image)]}})
}

fn cloneset(ns: &str, name: &str, n: usize, strategy: &str) -> Value {
    json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": n, "selector": {"matchLabels": {"app": name}},
            "template": template(name, BUSYBOX),
            "updateStrategy": {"type": strategy, "maxUnavailable": "50%"}}})
}

fn deployment(ns: &str, name: &str, n: usize) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": n, "selector": {"matchLabels": {"app": name}},
            "template": template(name, BUSYBOX),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%", "maxSurge": 0}}}})
}

fn pods(c: &Cluster, ns: &str, app: &str) -> anyhow::Result<Vec<Value>> {
    let list = c.get_json(&["-n", ns, "pods", "-l", &format!("app={app}")])?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

fn live(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
}

/// Waits until `app` has exactly `n` live pods, all Ready on `image`;
/// calls `sample` with every listing.
fn wait_all(
    c: &Cluster,
    ns: &str,
    app: &str,
    n: usize,
    image: &str,
    mut sample: impl FnMut(&[Value]),
) -> anyhow::Result<()> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let all = pods(c, ns, app)?;
        sample(&all);
        let total = all.iter().filter(|p| live(p)).count();
        let done = all
            .iter()
            .filter(|p| {
                live(p)
                    && kube::condition(p, "Ready")
                    && p["spec"]["containers"][0]["image"] == image
            })
            .count();
        if total == n && done == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{app}: {done}/{n} pods ready on {image} after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn timed_scale(
    c: &Cluster,
    ns: &str,
    manifest: &Value,
    app: &str,
    n: usize,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    c.apply_stdin(&manifest.to_string())?;
    wait_all(c, ns, app, n, BUSYBOX, |_| {})?;
    Ok(t.elapsed())
}

/// Patches the image and waits; returns the whole time and, per pod, the
/// time from turning not-ready to Ready again on the new image.
fn timed_update(
    c: &Cluster,
    ns: &str,
    kind: &str,
    app: &str,
    n: usize,
    image: &str,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let patch = json!({"spec": {"template": {"spec": {"containers": [container(image)]}}}});
    let t = Instant::now();
    c.kubectl(&[
        "-n",
        ns,
        "patch",
        kind,
        app,
        "--type",
        "merge",
        "-p",
        &patch.to_string(),
    ])?;
    let mut down: BTreeMap<String, Instant> = BTreeMap::new();
    let mut per_pod = vec![];
    let mut done: std::collections::BTreeSet<String> = Default::default();
    wait_all(c, ns, app, n, image, |all| {
        for p in all {
            let name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let ready = kube::condition(p, "Ready");
            let new = p["spec"]["containers"][0]["image"] == image;
            if !ready && !down.contains_key(&name) {
                down.insert(name.clone(), Instant::now());
            }
            if ready
                && new
                && !done.contains(&name)
                && let Some(since) = down.get(&name)
            {
                per_pod.push(since.elapsed());
                done.insert(name);
            }
        }
    })?;
    Ok((t.elapsed(), per_pod))
}

fn fresh_namespace(c: &Cluster, ns: &str) -> anyhow::Result<()> {
    let _ = c.kubectl(&["delete", "namespace", ns, "--wait=true", "--timeout=300s"]);
    c.kubectl(&["create", "namespace", ns])?;
    Ok(())
}

fn retag(c: &Cluster, tag: &str) -> anyhow::Result<String> {
    let image = BUSYBOX.replace(":test", tag);
    c.tag_image(BUSYBOX, &image)?;
    Ok(image)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50);
    println!("starting the cluster (kubelet → keelson-agent, keelson-controller) …");
    let c = Cluster::start_with(&Options::default())?;
    let img2 = retag(&c, ":bench2")?;

    // 1. Scale 0 → n.
    fresh_namespace(&c, "bench")?;
    let cs_scale = timed_scale(
        &c,
        "bench",
        &cloneset("bench", "cs", n, "ReCreate"),
        "cs",
        n,
    )?;
    fresh_namespace(&c, "bench")?;
    let dep_scale = timed_scale(&c, "bench", &deployment("bench", "dep", n), "dep", n)?;

    // 2. and 3. Image update of n pods, maxUnavailable 50%.
    fresh_namespace(&c, "bench")?;
    timed_scale(
        &c,
        "bench",
        &cloneset("bench", "inplace", n, "InPlaceIfPossible"),
        "inplace",
        n,
    )?;
    let (inplace, mut per_pod) = timed_update(&c, "bench", "cloneset", "inplace", n, &img2)?;
    fresh_namespace(&c, "bench")?;
    timed_scale(
        &c,
        "bench",
        &cloneset("bench", "recreate", n, "ReCreate"),
        "recreate",
        n,
    )?;
    let (recreate, _) = timed_update(&c, "bench", "cloneset", "recreate", n, &img2)?;
    fresh_namespace(&c, "bench")?;
    timed_scale(&c, "bench", &deployment("bench", "dep", n), "dep", n)?;
    let (dep_update, _) = timed_update(&c, "bench", "deployment", "dep", n, &img2)?;

    let p = summarize(&mut per_pod);
    println!("\n{n} pods, one node (2 cores), same template:");
    println!("| scenario | CloneSet | Deployment | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| scale 0 → {n}, apply → all Ready | {:.1} s | {:.1} s | {:.2} |",
        secs(cs_scale),
        secs(dep_scale),
        secs(cs_scale) / secs(dep_scale)
    );
    println!(
        "| image update, maxUnavailable 50%: InPlaceIfPossible | {:.1} s | {:.1} s | {:.2} |",
        secs(inplace),
        secs(dep_update),
        secs(inplace) / secs(dep_update)
    );
    println!(
        "| image update, maxUnavailable 50%: ReCreate | {:.1} s | {:.1} s | {:.2} |",
        secs(recreate),
        secs(dep_update),
        secs(recreate) / secs(dep_update)
    );
    println!(
        "\nper-pod in-place update (not-ready → Ready on the new image, {} pods): p50 {:.0} ms, p99 {:.0} ms, mean {:.0} ms",
        per_pod.len(),
        p.p50 / 1e3,
        p.p99 / 1e3,
        p.mean / 1e3
    );
    Ok(())
}
