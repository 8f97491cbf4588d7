//! A settled cluster is quiet: once an ImagePullJob has finished on the
//! node and nothing changes, neither the agent nor the controller writes
//! the NodeImage again (counted in kube-apiserver's own
//! `apiserver_request_total` for `nodeimages`, every writing verb), and an
//! image dropped from the NodeImage's spec really leaves its status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster};
use keelson_integration::registry::Registry;

fn cluster() -> Arc<Cluster> {
    kube::shared().expect("test cluster")
}

/// kube-apiserver's count of writing requests on NodeImages (and their
/// status subresource), by `verb`/`subresource`/`code` labels.
fn nodeimage_writes(c: &Cluster) -> BTreeMap<String, f64> {
    let text = c.kubectl(&["get", "--raw", "/metrics"]).unwrap();
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains("resource=\"nodeimages\""))
        .filter(|l| {
            ["POST", "PUT", "PATCH", "APPLY", "DELETE"]
                .iter()
                .any(|v| l.contains(&format!("verb=\"{v}\"")))
        })
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// kube-apiserver's count of LISTs of NodeImages (watches' initial lists
/// included).
fn nodeimage_lists(c: &Cluster) -> f64 {
    let text = c.kubectl(&["get", "--raw", "/metrics"]).unwrap();
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains("resource=\"nodeimages\"") && l.contains("verb=\"LIST\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn total(m: &BTreeMap<String, f64>) -> f64 {
    m.values().sum()
}

#[test]
fn a_settled_nodeimage_is_written_by_nobody_and_dropped_images_leave_its_status() {
    let c = cluster();
    let ns = c.namespace("quiet").unwrap();
    let registry = Registry::start(None).unwrap();
    let image = registry
        .push(
            &c.runtime().unwrap().images().layout("busybox"),
            BUSYBOX,
            "team/quiet:v1",
        )
        .unwrap();
    let repo = image.rsplit_once(':').unwrap().0.to_string();
    c.wait_for("NodeImage of the node", Duration::from_secs(120), |c| {
        Ok(c.get_json(&["nodeimage", kube::NODE]).ok().map(|_| ()))
    })
    .unwrap();
    let lists_before = nodeimage_lists(&c);
    c.apply_stdin(&format!(
        r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ImagePullJob
metadata:
  name: quiet
  namespace: {ns}
spec:
  image: {image}
  parallelism: 1
  completionPolicy:
    type: Always
  pullPolicy:
    backoffLimit: 1
    timeoutSeconds: 120
"#,
        ns = ns.name
    ))
    .unwrap();
    c.wait_for("ImagePullJob succeeded", Duration::from_secs(120), |c| {
        let job = c.get_json(&["-n", &ns.name, "imagepulljob", "quiet"])?;
        if job["status"]["failed"].as_i64().unwrap_or(0) > 0 {
            anyhow::bail!("pull failed: {}", job["status"]);
        }
        Ok((job["status"]["succeeded"] == 1).then_some(()))
    })
    .unwrap();
    // The job's reconciles read NodeImages from the controller's store:
    // no LIST during the job (one allowed for a watch that had to start
    // over; each reconcile used to LIST them all, several per job).
    let lists = nodeimage_lists(&c) - lists_before;
    eprintln!("NodeImage LISTs during the job: {lists}");
    assert!(
        lists <= 1.0,
        "NodeImages LISTed {lists} times during one job"
    );
    let node_image = c.get_json(&["nodeimage", kube::NODE]).unwrap();
    let tag = &node_image["status"]["imageStatuses"][&repo]["tags"][0];
    assert_eq!(tag["phase"], "Succeeded", "{node_image}");
    assert!(tag["startTime"].is_string(), "timed: {tag}");

    // Let the job's own follow-ups (finalizer, secret copies) settle, then
    // count for a minute: the agent's 30 s resync and the pods' watch
    // events wake it meanwhile, the controller's watches too.
    std::thread::sleep(Duration::from_secs(10));
    let rv_before =
        c.get_json(&["nodeimage", kube::NODE]).unwrap()["metadata"]["resourceVersion"].clone();
    let before = nodeimage_writes(&c);
    std::thread::sleep(Duration::from_secs(60));
    let after = nodeimage_writes(&c);
    let rv_after =
        c.get_json(&["nodeimage", kube::NODE]).unwrap()["metadata"]["resourceVersion"].clone();
    let moved: BTreeMap<&String, f64> = after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect();
    eprintln!(
        "NodeImage writes in 60 s: {} (total before {}, after {}); by label: {moved:?}",
        total(&after) - total(&before),
        total(&before),
        total(&after)
    );
    assert!(
        moved.is_empty(),
        "NodeImage written while nothing changed: {moved:#?}\nagent log tail:\n{}",
        c.diagnostics()
    );
    assert_eq!(rv_before, rv_after, "the NodeImage did not change");

    // The job goes: the controller drops its tag from the spec, and the
    // agent's status write really removes the image's entry (a merge
    // patch would have kept it).
    c.kubectl(&["-n", &ns.name, "delete", "imagepulljob", "quiet"])
        .unwrap();
    c.wait_for(
        "the dropped image's status entry gone",
        Duration::from_secs(60),
        |c| {
            let n = c.get_json(&["nodeimage", kube::NODE])?;
            let in_spec = n["spec"]["images"].get(&repo).is_some();
            let in_status = n["status"]["imageStatuses"].get(&repo).is_some();
            Ok((!in_spec && !in_status).then_some(()))
        },
    )
    .unwrap();
    let n = c.get_json(&["nodeimage", kube::NODE]).unwrap();
    assert_eq!(n["status"]["desired"], 0, "{}", n["status"]);
    assert_eq!(n["status"]["succeeded"], 0, "{}", n["status"]);
}
