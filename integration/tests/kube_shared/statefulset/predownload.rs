//! The new image of an in-place update held back by the partition is
//! pulled by an ImagePullJob owned by the set before any pod is updated;
//! released, every pod updates in place after the pull completed.

use std::collections::BTreeMap;

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster};
use serde_json::Value;

use super::{LIMIT, cluster, name, pods, ready, sts};

fn time(v: &Value) -> k8s_openapi::jiff::Timestamp {
    v.as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

#[test]
fn the_new_image_is_pre_downloaded_before_the_in_place_update() {
    let c = cluster();
    let ns = c.namespace("asts-predownload").unwrap();
    let ns = ns.name.as_str();
    let registry = keelson_integration::registry::Registry::start(None).unwrap();
    let layout = c.runtime().unwrap().images().layout("busybox");
    let v1 = registry.push(&layout, BUSYBOX, "asts/db:v1").unwrap();
    let v2 = registry.push(&layout, BUSYBOX, "asts/db:v2").unwrap();
    // 4 replicas (upstream pre-downloads for more than 3), partition 4
    // holding them all back while their node pulls.
    c.apply_stdin(
        &sts(
            ns,
            "pull",
            4,
            "  podManagementPolicy: Parallel\n  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate: {podUpdatePolicy: InPlaceIfPossible, maxUnavailable: 2, partition: 4}\n",
        )
        .replace(&format!("image: {BUSYBOX}"), &format!("image: {v1}")),
    )
    .unwrap();
    let status = |c: &Cluster| c.get_json(&["-n", ns, "asts", "pull"]).unwrap()["status"].clone();
    c.wait_for("4 ready pods", LIMIT, |c| {
        let s = status(c);
        Ok((s["readyReplicas"] == 4
            && pods(c, ns, "pull").iter().filter(|p| ready(p)).count() == 4)
            .then_some(()))
    })
    .unwrap();
    let uids: BTreeMap<String, String> = pods(&c, ns, "pull")
        .iter()
        .map(|p| {
            (
                name(p),
                p["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let current = status(&c)["currentRevision"].as_str().unwrap().to_string();
    c.wait_for("NodeImage of the node", LIMIT, |c| {
        Ok(c.get_json(&["nodeimage", kube::NODE]).ok().map(|_| ()))
    })
    .unwrap();
    c.kubectl(&[
        "-n",
        ns,
        "patch",
        "asts",
        "pull",
        "--type=json",
        "-p",
        &format!(
            r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{v2}"}}]"#
        ),
    ])
    .unwrap();
    // Sampled from the change until the job completes: no pod moves.
    let mut samples = 0;
    let (update, job) = c
        .wait_for("pre-download ImagePullJob completed", LIMIT, |c| {
            for p in pods(c, ns, "pull") {
                assert_eq!(
                    p["metadata"]["labels"]["controller-revision-hash"],
                    current.as_str(),
                    "sample {samples}: {} updated before the pre-download finished",
                    name(&p)
                );
                assert_eq!(p["spec"]["containers"][0]["image"], v1.as_str());
            }
            samples += 1;
            let update = status(c)["updateRevision"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if update.is_empty() || update == current {
                return Ok(None);
            }
            let Ok(job) = c.get_json(&["-n", ns, "imagepulljob", &format!("{update}-main")]) else {
                return Ok(None);
            };
            if job["status"]["failed"].as_i64().unwrap_or(0) > 0 {
                anyhow::bail!("pull failed: {}", job["status"]);
            }
            let done =
                job["status"]["succeeded"] == 1 && job["status"]["completionTime"].is_string();
            Ok(done.then_some((update, job)))
        })
        .unwrap();
    assert_eq!(job["spec"]["image"], v2.as_str());
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    assert_eq!(
        job["spec"]["podSelector"]["matchExpressions"][0]["values"][0],
        update.as_str()
    );
    assert!(
        registry.log_text().contains("asts/db/manifests/v2"),
        "v2 pulled from the registry by the job"
    );
    // Released: every pod in place, each update started after the pull.
    c.kubectl(&[
        "-n",
        ns,
        "patch",
        "asts",
        "pull",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ])
    .unwrap();
    c.wait_for("rolled in place", LIMIT, |c| {
        let s = status(c);
        Ok((s["currentRevision"] == update.as_str()
            && s["updatedReadyReplicas"] == 4
            && pods(c, ns, "pull").iter().filter(|p| ready(p)).count() == 4)
            .then_some(()))
    })
    .unwrap();
    let completed = time(&job["status"]["completionTime"]);
    for p in pods(&c, ns, "pull") {
        let n = name(&p);
        assert_eq!(
            p["metadata"]["uid"].as_str(),
            Some(uids[&n].as_str()),
            "{n} in place"
        );
        assert_eq!(p["spec"]["containers"][0]["image"], v2.as_str());
        let state: Value = serde_json::from_str(
            p["metadata"]["annotations"]["apps.kruise.io/inplace-update-state"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let started = time(&state["updateTimestamp"]);
        assert!(
            started >= completed,
            "{n}: in-place update started at {started}, before the pull completed at {completed}"
        );
    }
    eprintln!("{samples} samples before the pull completed at {completed}");
    c.wait_for("pre-download jobs deleted", LIMIT, |c| {
        let jobs = c.get_json(&["-n", ns, "imagepulljobs"])?;
        Ok(jobs["items"]
            .as_array()
            .is_none_or(|j| j.is_empty())
            .then_some(()))
    })
    .unwrap();
}
