//! Where the time of one in-place update goes: starts the real
//! single-node cluster, creates an Advanced StatefulSet (or CloneSet) of N
//! pods updating in place, changes the image, and prints each pod's
//! timeline as the API server showed it (from a `kubectl get -w` stream,
//! so every change, not samples): spec image changed, InPlaceUpdateReady
//! False, the old container terminated, the new one running, container
//! ready, InPlaceUpdateReady True, pod Ready — in ms after the patch —
//! followed by kubelet's log lines about those pods.
//!
//! `cargo run -p keelson-integration --bin trace-inplace [asts|cloneset] [N]`
//! (after `cargo build --workspace --bins`).

use std::collections::BTreeMap;
use std::io::BufReader;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster, Options};
use serde_json::{Value, json};

const NS: &str = "trace-inplace";

fn manifest(kind: &str, n: usize) -> Value {
    let template = json!({"metadata": {"labels": {"app": "set"}},
        "spec": {"terminationGracePeriodSeconds": 0,
            "readinessGates": [{"conditionType": "InPlaceUpdateReady"}],
            "containers": [{"name": "main", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}]}});
    if kind == "cloneset" {
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "metadata": {"name": "set", "namespace": NS},
            "spec": {"replicas": n, "selector": {"matchLabels": {"app": "set"}}, "template": template,
                "updateStrategy": {"type": "InPlaceIfPossible", "maxUnavailable": 1}}})
    } else {
        json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "StatefulSet",
            "metadata": {"name": "set", "namespace": NS},
            "spec": {"replicas": n, "serviceName": "set", "selector": {"matchLabels": {"app": "set"}},
                "template": template,
                "updateStrategy": {"rollingUpdate": {"podUpdatePolicy": "InPlaceIfPossible"}}}})
    }
}

/// What of a pod the timeline follows.
fn facts(p: &Value) -> BTreeMap<String, String> {
    let cond = |t: &str| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == t)
            .map(|c| c["status"].as_str().unwrap_or("?").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let cs = &p["status"]["containerStatuses"][0];
    let state = cs["state"]
        .as_object()
        .and_then(|o| o.keys().next().cloned())
        .unwrap_or_else(|| "-".into());
    let id = cs["containerID"].as_str().unwrap_or("-");
    let short = id.rsplit('/').next().unwrap_or(id);
    let mut out: BTreeMap<String, String> = BTreeMap::from([
        (
            "a.spec".to_string(),
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("-")
                .rsplit(':')
                .next()
                .unwrap_or("-")
                .to_string(),
        ),
        ("b.inplaceready".into(), cond("InPlaceUpdateReady")),
        (
            "c.container".into(),
            format!("{state}/{}", &short[..short.len().min(8)]),
        ),
        ("d.cready".into(), cs["ready"].to_string()),
        ("e.restarts".into(), cs["restartCount"].to_string()),
        ("f.ready".into(), cond("Ready")),
    ]);
    // Which metadata a write touched (kubelet syncs on those).
    for part in ["labels", "annotations"] {
        for (k, v) in p["metadata"][part].as_object().into_iter().flatten() {
            let text = v.as_str().unwrap_or("");
            let sum = text
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
            out.insert(format!("g.{k}"), format!("#{:04x}", sum & 0xffff));
        }
    }
    out
}

type Timeline = Vec<(Duration, String, String)>;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "asts".into());
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    if kind != "asts" && kind != "cloneset" {
        bail!("kind must be asts or cloneset, not {kind}");
    }
    let c = Cluster::start_with(&Options::default())?;
    let image = BUSYBOX.replace(":test", ":trace");
    c.tag_image(BUSYBOX, &image)?;
    c.kubectl(&["create", "namespace", NS])?;
    c.apply_stdin(&manifest(&kind, n).to_string())?;
    c.wait_for("all pods Ready", Duration::from_secs(300), |c| {
        let pods = c.pods(NS, "set")?;
        Ok((pods.len() == n && pods.iter().all(kube::live_and_ready)).then_some(()))
    })?;

    let start = Arc::new(Mutex::new(None::<Instant>));
    let timeline: Arc<Mutex<Timeline>> = Arc::default();
    let mut watch = Command::new(c.bins.kube("kubectl"))
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(["-n", NS, "get", "pods", "-w", "-o", "json", "-l", "app=set"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("kubectl get -w")?;
    let out = watch.stdout.take().context("watch stdout")?;
    let reader = {
        let (start, timeline) = (start.clone(), timeline.clone());
        std::thread::spawn(move || {
            let mut last: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            for p in serde_json::Deserializer::from_reader(BufReader::new(out)).into_iter::<Value>()
            {
                let Ok(p) = p else { break };
                let Some(t0) = *start.lock().unwrap_or_else(|e| e.into_inner()) else {
                    last.insert(kube::name_of(&p), facts(&p));
                    continue;
                };
                let now = facts(&p);
                let name = kube::name_of(&p);
                let before = last.insert(name.clone(), now.clone()).unwrap_or_default();
                let changed: Vec<String> = now
                    .iter()
                    .filter(|(k, v)| before.get(k.as_str()) != Some(v))
                    .map(|(k, v)| format!("{}={v}", &k[2..]))
                    .collect();
                if !changed.is_empty() {
                    timeline.lock().unwrap_or_else(|e| e.into_inner()).push((
                        t0.elapsed(),
                        name,
                        changed.join(" "),
                    ));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let resource = if kind == "cloneset" {
        "clonesets.apps.kruise.io"
    } else {
        "statefulsets.apps.kruise.io"
    };
    let patch = json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}]);
    *start.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    let wall = chrono_now();
    c.kubectl(&[
        "-n",
        NS,
        "patch",
        resource,
        "set",
        "--type=json",
        "-p",
        &patch.to_string(),
    ])?;
    c.wait_for(
        "all pods updated and Ready",
        Duration::from_secs(300),
        |c| {
            let pods = c.pods(NS, "set")?;
            Ok((pods.len() == n
                && pods.iter().all(|p| {
                    kube::live_and_ready(p) && p["spec"]["containers"][0]["image"] == image
                }))
            .then_some(()))
        },
    )?;
    let total = start
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map(|t| t.elapsed())
        .unwrap_or_default();
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = reader.join();
    println!(
        "patch at {wall}; all updated and Ready after {} ms",
        total.as_millis()
    );
    for (t, pod, what) in timeline.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("{:>7} ms  {pod:<8} {what}", t.as_millis());
    }
    println!("\nkubelet, about these pods, from the patch on:");
    for line in c.kubelet_log().lines() {
        if line.contains("trace-inplace/set-") || line.contains("\"set-") {
            let stamp = line.get(1..21).unwrap_or("");
            if stamp >= wall.as_str() {
                println!("{}", &line[..line.len().min(260)]);
            }
        }
    }
    println!("\nthe agent, about in-place updates:");
    for line in c.agent_log().lines() {
        if line.contains("in-place")
            || line.contains("InPlaceUpdateReady")
            || line.contains("runtime container meta")
        {
            println!("{}", &line[..line.len().min(300)]);
        }
    }
    Ok(())
}

/// klog's `mmdd hh:mm:ss.uuuuuu` for now (UTC), to cut kubelet's log.
fn chrono_now() -> String {
    Command::new("date")
        .args(["-u", "+%m%d %H:%M:%S.%6N"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
