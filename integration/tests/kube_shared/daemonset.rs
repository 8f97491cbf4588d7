//! Advanced DaemonSet on the real single-node cluster, manifests applied
//! with kubectl: one pod on the real node, pinned to it by a node affinity
//! term on `metadata.name`, labelled with the bare revision hash, with the
//! daemon tolerations and (InPlaceIfPossible) the `InPlaceUpdateReady`
//! gate; an image change updates it in place (same UID, new container);
//! `partition` holds the node back until lowered; `OnDelete` waits for the
//! pod to be deleted; the status counters as upstream. Placement across
//! nodes uses extra Node objects with no kubelet (their pods stay
//! Pending): only nodes matching the node selector with no untolerated
//! taint get a pod, pinned to them. `maxSurge` on the real node starts the
//! new pod beside the old one (sampled). Surge and partition across many
//! nodes are unit tests of the planner (`daemonset::plan::tests`). With
//! `PreDownloadImageForDaemonSetUpdate`, the new image of a held-back
//! node is pulled by an ImagePullJob before its pod is updated in place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster, NODE};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn cluster() -> kube::Turn {
    kube::shared_in(module_path!()).expect("test cluster")
}

fn ads(ns: &str, name: &str, strategy: &str, spec_extra: &str) -> String {
    format!(
        r#"apiVersion: apps.kruise.io/v1alpha1
kind: DaemonSet
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
{spec_extra}      containers:
      - name: main
        image: {BUSYBOX}
        imagePullPolicy: IfNotPresent
        command: ["sleep", "3600"]
  updateStrategy:
{strategy}"#
    )
}

fn pods(c: &Cluster, ns: &str, app: &str) -> Vec<Value> {
    c.pods(ns, app)
        .unwrap()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn status(c: &Cluster, ns: &str, name: &str) -> Value {
    // As a v1alpha1 user reads it (converted from the stored v1beta1).
    c.get_json(&["-n", ns, "daemonsets.v1alpha1.apps.kruise.io", name])
        .unwrap()["status"]
        .clone()
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// The single ready, updated pod once the DaemonSet reports it.
fn settled(c: &Cluster, ns: &str, name: &str) -> Value {
    c.wait_for(&format!("{name} settled"), LIMIT, |c| {
        let ps = pods(c, ns, name);
        let st = status(c, ns, name);
        let done = ps.len() == 1
            && kube::condition(&ps[0], "Ready")
            && st["updatedNumberScheduled"] == 1
            && st["numberAvailable"] == 1
            && ps[0]["metadata"]["labels"]["controller-revision-hash"] == st["daemonSetHash"];
        Ok(done.then(|| ps[0].clone()))
    })
    .unwrap()
}

fn set_image(c: &Cluster, ns: &str, name: &str, image: &str) {
    c.kubectl(&[
        "-n",
        ns,
        "patch",
        "ads",
        name,
        "--type=json",
        "-p",
        &format!(r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{image}"}}]"#),
    ])
    .unwrap();
}

#[test]
fn one_pod_on_the_node_pinned_then_updated_in_place() {
    let c = cluster();
    let ns = c.namespace("ads-inplace").unwrap();
    let ns = ns.name.as_str();
    c.apply_stdin(&ads(
        ns,
        "agent",
        "    type: RollingUpdate\n    rollingUpdate: {rollingUpdateType: InPlaceIfPossible, maxUnavailable: 1}\n",
        "",
    ))
    .unwrap();
    let p = settled(&c, ns, "agent");
    let st = status(&c, ns, "agent");
    let hash = s(&st["daemonSetHash"]);
    assert!(!hash.is_empty() && !hash.contains('-'), "bare hash: {hash}");
    assert_eq!(
        p["metadata"]["labels"]["controller-revision-hash"],
        hash.as_str()
    );
    assert_eq!(p["spec"]["nodeName"], NODE);
    assert_eq!(
        p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        serde_json::json!({"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [NODE]}]}]})
    );
    assert!(
        p["spec"]["readinessGates"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["conditionType"] == "InPlaceUpdateReady"))
    );
    let tolerated: Vec<String> = p["spec"]["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| s(&t["key"]))
        .collect();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/unschedulable",
    ] {
        assert!(tolerated.iter().any(|t| t == key), "{key} in {tolerated:?}");
    }
    assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    let ds = c.get_json(&["-n", ns, "ads", "agent"]).unwrap();
    assert_eq!(
        (
            st["desiredNumberScheduled"].as_i64(),
            st["currentNumberScheduled"].as_i64(),
            st["numberReady"].as_i64(),
            st["numberAvailable"].as_i64(),
            st["updatedNumberScheduled"].as_i64(),
            st["numberUnavailable"].as_i64(),
            st["numberMisscheduled"].as_i64(),
        ),
        (
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            Some(0),
            Some(0)
        ),
        "{st}"
    );
    assert_eq!(st["observedGeneration"], ds["metadata"]["generation"]);
    let revision = c
        .get_json(&["-n", ns, "controllerrevision", &format!("agent-{hash}")])
        .unwrap();
    assert_eq!(
        revision["metadata"]["labels"]["controller-revision-hash"],
        hash.as_str()
    );

    // In place: same pod, its container recreated with the new image.
    let uid = s(&p["metadata"]["uid"]);
    let container = s(&p["status"]["containerStatuses"][0]["containerID"]);
    let retag = "localhost/keelson/busybox:ads-2";
    c.tag_image(BUSYBOX, retag).unwrap();
    set_image(&c, ns, "agent", retag);
    let started = Instant::now();
    let updated = c
        .wait_for("in-place update", LIMIT, |c| {
            let ps = pods(c, ns, "agent");
            for p in &ps {
                assert_eq!(s(&p["metadata"]["uid"]), uid, "the pod is kept");
            }
            let st = status(c, ns, "agent");
            let done = ps.len() == 1
                && st["daemonSetHash"] != hash.as_str()
                && st["updatedNumberScheduled"] == 1
                && st["numberAvailable"] == 1
                && kube::condition(&ps[0], "Ready")
                && kube::condition(&ps[0], "InPlaceUpdateReady")
                && s(&ps[0]["status"]["containerStatuses"][0]["containerID"]) != container;
            Ok(done.then(|| ps[0].clone()))
        })
        .unwrap();
    assert_eq!(updated["spec"]["containers"][0]["image"], retag);
    assert_eq!(
        updated["metadata"]["labels"]["controller-revision-hash"],
        status(&c, ns, "agent")["daemonSetHash"]
    );
    assert!(updated["metadata"]["annotations"]["apps.kruise.io/inplace-update-state"].is_string());
    eprintln!("in-place update took {:?}", started.elapsed());
}

#[test]
fn partition_holds_the_node_back_and_on_delete_waits() {
    let c = cluster();
    let ns = c.namespace("ads-partition").unwrap();
    let ns = ns.name.as_str();
    c.apply_stdin(&ads(
        ns,
        "held",
        "    type: RollingUpdate\n    rollingUpdate: {partition: 1}\n",
        "",
    ))
    .unwrap();
    let p = settled(&c, ns, "held");
    let uid = s(&p["metadata"]["uid"]);
    let old_hash = s(&p["metadata"]["labels"]["controller-revision-hash"]);
    let second = "localhost/keelson/busybox:ads-partition";
    c.tag_image(BUSYBOX, second).unwrap();
    set_image(&c, ns, "held", second);
    // The new revision is reported, the node held back.
    c.wait_for("new revision reported", LIMIT, |c| {
        let st = status(c, ns, "held");
        Ok(
            (st["daemonSetHash"] != old_hash.as_str() && st["updatedNumberScheduled"] == 0)
                .then_some(()),
        )
    })
    .unwrap();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let ps = pods(&c, ns, "held");
        assert_eq!(ps.len(), 1);
        assert_eq!(
            s(&ps[0]["metadata"]["uid"]),
            uid,
            "partition 1 keeps the only node"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Lowered: the pod is recreated on the new revision.
    c.kubectl(&[
        "-n",
        ns,
        "patch",
        "ads",
        "held",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ])
    .unwrap();
    let p = settled(&c, ns, "held");
    assert_ne!(s(&p["metadata"]["uid"]), uid, "recreated (Standard)");
    assert_eq!(p["spec"]["containers"][0]["image"], second);

    // OnDelete: a template change waits until the pod is deleted.
    c.kubectl(&[
        "-n",
        ns,
        "patch",
        "ads",
        "held",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#,
    ])
    .unwrap();
    let uid = s(&p["metadata"]["uid"]);
    set_image(&c, ns, "held", BUSYBOX);
    c.wait_for("OnDelete revision reported", LIMIT, |c| {
        let st = status(c, ns, "held");
        Ok((st["updatedNumberScheduled"] == 0).then_some(()))
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let ps = pods(&c, ns, "held");
    assert_eq!(ps.len(), 1);
    assert_eq!(
        s(&ps[0]["metadata"]["uid"]),
        uid,
        "OnDelete does not replace"
    );
    c.kubectl(&[
        "-n",
        ns,
        "delete",
        "pod",
        &s(&ps[0]["metadata"]["name"]),
        "--wait=false",
    ])
    .unwrap();
    let p = settled(&c, ns, "held");
    assert_ne!(s(&p["metadata"]["uid"]), uid);
    assert_eq!(p["spec"]["containers"][0]["image"], BUSYBOX);
}

fn fake_node(c: &Arc<Cluster>, name: &str, label: &str, taint: &str) -> kube::Deleting {
    c.apply_stdin(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{keelson.io/ads-test: \"{label}\"}}\nspec:\n  taints: [{taint}]\n"
    ))
    .unwrap();
    c.deleting("node", name)
}

#[test]
fn nodes_matching_the_selector_without_untolerated_taints_get_a_pinned_pod() {
    let c = cluster();
    let ns = c.namespace("ads-placement").unwrap();
    let ns = ns.name.as_str();
    // Nodes with no kubelet: pods for them stay Pending; the node
    // lifecycle controller's unreachable / not-ready taints are tolerated.
    // Every fake node is tainted so that only this test's DaemonSet
    // (tolerating `keelson.io/fake`) places pods there.
    let fake = "{key: keelson.io/fake, effect: NoSchedule}";
    let _a = fake_node(&c, "ads-fake-a", "yes", fake);
    let _b = fake_node(&c, "ads-fake-b", "no", fake);
    let blocked = format!("{fake}, {{key: keelson.io/blocked, effect: NoExecute}}");
    let _c = fake_node(&c, "ads-fake-c", "yes", &blocked);
    c.apply_stdin(&ads(
        ns,
        "placed",
        "    type: RollingUpdate\n",
        "      nodeSelector: {keelson.io/ads-test: \"yes\"}\n      tolerations:\n      - {key: node.kubernetes.io/unreachable, operator: Exists}\n      - {key: node.kubernetes.io/not-ready, operator: Exists}\n      - {key: keelson.io/fake, operator: Exists}\n",
    ))
    .unwrap();
    let target = |p: &Value| {
        s(
            &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0],
        )
    };
    // The reconcile that creates the pod writes a status from the pods it
    // listed before (none scheduled yet); the pod's own event brings the
    // next one. So wait for the status to count the pod, not only for it.
    c.wait_for("ads-fake-a's pod, counted", LIMIT, |c| {
        let ps = pods(c, ns, "placed");
        let st = status(c, ns, "placed");
        let ok = ps.len() == 1
            && target(&ps[0]) == "ads-fake-a"
            && st["desiredNumberScheduled"] == 1
            && st["currentNumberScheduled"] == 1;
        Ok(ok.then_some(()))
    })
    .unwrap();
    let st = status(&c, ns, "placed");
    assert_eq!(
        (
            st["currentNumberScheduled"].as_i64(),
            st["numberReady"].as_i64(),
            st["numberUnavailable"].as_i64()
        ),
        (Some(1), Some(0), Some(1)),
        "{st}"
    );
    // Relabelled, b qualifies too.
    c.kubectl(&[
        "label",
        "node",
        "ads-fake-b",
        "keelson.io/ads-test=yes",
        "--overwrite",
    ])
    .unwrap();
    c.wait_for("a pod for ads-fake-b", LIMIT, |c| {
        let mut nodes: Vec<String> = pods(c, ns, "placed").iter().map(target).collect();
        nodes.sort();
        Ok((nodes == ["ads-fake-a", "ads-fake-b"]).then_some(()))
    })
    .unwrap();
    // Unlabelled again: its pod goes (it no longer fits).
    c.kubectl(&[
        "label",
        "node",
        "ads-fake-a",
        "keelson.io/ads-test=no",
        "--overwrite",
    ])
    .unwrap();
    c.wait_for("ads-fake-a's pod removed", LIMIT, |c| {
        let nodes: Vec<String> = pods(c, ns, "placed").iter().map(target).collect();
        Ok((nodes == ["ads-fake-b"]).then_some(()))
    })
    .unwrap();
}

#[test]
fn webhooks_default_the_spec_not_the_template_and_refuse_bad_strategies() {
    let c = cluster();
    let ns = c.namespace("ads-webhook").unwrap();
    let ns = ns.name.as_str();
    let manifest = format!(
        "apiVersion: apps.kruise.io/v1alpha1\nkind: DaemonSet\nmetadata: {{name: plain, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: plain}}}}\n  template:\n    metadata: {{labels: {{app: plain}}}}\n    spec:\n      containers: [{{name: main, image: {BUSYBOX}, command: [sleep, '3600']}}]\n"
    );
    c.apply_stdin(&manifest).unwrap();
    let ds = c.get_json(&["-n", ns, "ads", "plain"]).unwrap();
    assert_eq!(ds["spec"]["burstReplicas"], 250);
    assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(
        ds["spec"]["updateStrategy"],
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {
            "rollingUpdateType": "Standard", "maxUnavailable": 1, "maxSurge": 0}})
    );
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container.get("imagePullPolicy").is_none()
            && container.get("terminationMessagePath").is_none(),
        "the template is not defaulted: {container}"
    );
    let bad = ads(
        ns,
        "bad",
        "    type: RollingUpdate\n    rollingUpdate: {rollingUpdateType: InPlaceIfPossible, maxUnavailable: 0, maxSurge: 1}\n",
        "",
    );
    let (ok, out, err) = c.kubectl_result(&["apply", "-f", "-"], Some(&bad)).unwrap();
    assert!(!ok, "{out}");
    assert!(
        err.contains("spec.updateStrategy.rollingUpdate.maxSurge: Required value: must be 0 for InPlaceIfPossible type"),
        "{err}"
    );
    let (ok, _, err) = c
        .kubectl_result(
            &[
                "-n",
                ns,
                "patch",
                "ads",
                "plain",
                "--type=merge",
                "-p",
                r#"{"spec":{"selector":{"matchLabels":{"app":"plain","x":"y"}}}}"#,
            ],
            None,
        )
        .unwrap();
    assert!(!ok);
    assert!(
        err.contains("updates to daemonset spec for fields other than"),
        "{err}"
    );
}

fn time(v: &Value) -> k8s_openapi::jiff::Timestamp {
    v.as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

#[test]
fn the_new_image_is_pre_downloaded_before_the_in_place_update() {
    let c = cluster();
    let ns = c.namespace("ads-predownload").unwrap();
    let ns = ns.name.as_str();
    let registry = keelson_integration::registry::Registry::start(None).unwrap();
    let layout = c.runtime().unwrap().images().layout("busybox");
    let v1 = registry.push(&layout, BUSYBOX, "ads/agent:v1").unwrap();
    let v2 = registry.push(&layout, BUSYBOX, "ads/agent:v2").unwrap();
    // Partition 1 holds the only node back: it pulls while it waits.
    c.apply_stdin(
        &ads(
            ns,
            "puller",
            "    type: RollingUpdate\n    rollingUpdate: {rollingUpdateType: InPlaceIfPossible, maxUnavailable: 1, partition: 1}\n",
            "",
        )
        .replace(&format!("image: {BUSYBOX}"), &format!("image: {v1}")),
    )
    .unwrap();
    let p = settled(&c, ns, "puller");
    let (uid, old_hash) = (
        s(&p["metadata"]["uid"]),
        s(&p["metadata"]["labels"]["controller-revision-hash"]),
    );
    // ImagePullJobs reach the node through its NodeImage.
    c.wait_for("NodeImage of the node", LIMIT, |c| {
        Ok(c.get_json(&["nodeimage", NODE]).ok().map(|_| ()))
    })
    .unwrap();
    set_image(&c, ns, "puller", &v2);
    // Sampled from the change until the job completes: the pod stays.
    let mut samples = 0;
    let (hash, job) = c
        .wait_for("pre-download ImagePullJob completed", LIMIT, |c| {
            let ps = pods(c, ns, "puller");
            assert_eq!(ps.len(), 1);
            assert_eq!(s(&ps[0]["metadata"]["uid"]), uid);
            assert_eq!(
                s(&ps[0]["metadata"]["labels"]["controller-revision-hash"]),
                old_hash,
                "sample {samples}: updated before the pre-download finished"
            );
            assert_eq!(ps[0]["spec"]["containers"][0]["image"], v1.as_str());
            samples += 1;
            // v1alpha1 `daemonSetHash`, v1beta1 `updateRevision`.
            let st = status(c, ns, "puller");
            let hash = s(st.get("daemonSetHash").unwrap_or(&st["updateRevision"]));
            if hash.is_empty() || hash == old_hash {
                return Ok(None);
            }
            let Ok(job) = c.get_json(&["-n", ns, "imagepulljob", &format!("puller-{hash}-main")])
            else {
                return Ok(None);
            };
            if job["status"]["failed"].as_i64().unwrap_or(0) > 0 {
                anyhow::bail!("pull failed: {}", job["status"]);
            }
            let done =
                job["status"]["succeeded"] == 1 && job["status"]["completionTime"].is_string();
            Ok(done.then_some((hash, job)))
        })
        .unwrap();
    assert_eq!(job["spec"]["image"], v2.as_str());
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    assert_eq!(
        job["metadata"]["labels"]["controller.kubernetes.io/hash"],
        hash.as_str()
    );
    let e = &job["spec"]["podSelector"]["matchExpressions"][0];
    assert_eq!(
        (e["key"].as_str(), e["operator"].as_str()),
        (Some("controller-revision-hash"), Some("NotIn"))
    );
    assert!(
        registry.log_text().contains("ads/agent/manifests/v2"),
        "v2 pulled from the registry by the job"
    );
    let rev = c
        .get_json(&["-n", ns, "controllerrevision", &format!("puller-{hash}")])
        .unwrap();
    assert_eq!(
        rev["metadata"]["labels"]["apps.kruise.io/pre-predownload-created"],
        "true"
    );
    // Released: the pod is updated in place, after the job completed.
    c.kubectl(&[
        "-n",
        ns,
        "patch",
        "ads",
        "puller",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ])
    .unwrap();
    let p = settled(&c, ns, "puller");
    assert_eq!(s(&p["metadata"]["uid"]), uid, "in place");
    assert_eq!(p["spec"]["containers"][0]["image"], v2.as_str());
    let state: Value = serde_json::from_str(
        p["metadata"]["annotations"]["apps.kruise.io/inplace-update-state"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let (started, completed) = (
        time(&state["updateTimestamp"]),
        time(&job["status"]["completionTime"]),
    );
    assert!(
        started >= completed,
        "in-place update started at {started}, before the pull completed at {completed}"
    );
    eprintln!(
        "{samples} samples before the pull completed; update started {started}, pull done {completed}"
    );
    // Consistent again: the DaemonSet's jobs go.
    c.wait_for("pre-download jobs deleted", LIMIT, |c| {
        let jobs = c.get_json(&["-n", ns, "imagepulljobs"])?;
        Ok(jobs["items"]
            .as_array()
            .is_none_or(|j| j.is_empty())
            .then_some(()))
    })
    .unwrap();
}

/// `maxSurge: 1, maxUnavailable: 0` on the real node: a template change
/// starts the new pod beside the old one and deletes the old one only once
/// the new one is available (`minReadySeconds` past Ready). Sampled while
/// it runs: never more than two live pods, never none Ready.
#[test]
fn max_surge_starts_the_new_pod_beside_the_old_one() {
    let c = cluster();
    let ns = c.namespace("ads-surge").unwrap();
    let ns = ns.name.as_str();
    let mut manifest = ads(
        ns,
        "surge",
        "    type: RollingUpdate\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n",
        "",
    );
    manifest = manifest.replace(
        "spec:\n  selector:",
        "spec:\n  minReadySeconds: 2\n  selector:",
    );
    c.apply_stdin(&manifest).unwrap();
    let old = settled(&c, ns, "surge");
    let old_uid = s(&old["metadata"]["uid"]);
    let retag = "localhost/keelson/busybox:ads-surge";
    c.tag_image(BUSYBOX, retag).unwrap();
    set_image(&c, ns, "surge", retag);
    let (mut most, mut both_ready_seen) = (0, false);
    let mut new_ready_at: Option<Instant> = None;
    let until = Instant::now() + LIMIT;
    let old_gone_after = loop {
        let ps = pods(&c, ns, "surge");
        most = most.max(ps.len());
        assert!(Instant::now() < until, "surge update did not finish");
        assert!(ps.len() <= 2, "at most one surge pod: {}", ps.len());
        let ready: Vec<&Value> = ps.iter().filter(|p| kube::condition(p, "Ready")).collect();
        assert!(
            !ready.is_empty(),
            "maxUnavailable 0: a pod is Ready at every sample"
        );
        let old_live = ps.iter().any(|p| s(&p["metadata"]["uid"]) == old_uid);
        let new_ready = ready.iter().any(|p| s(&p["metadata"]["uid"]) != old_uid);
        if new_ready {
            new_ready_at.get_or_insert_with(Instant::now);
            both_ready_seen |= old_live;
        }
        if !old_live {
            assert!(
                new_ready,
                "the old pod went only once the new one was Ready"
            );
            break new_ready_at.map(|t| t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(most, 2, "the new pod ran beside the old one");
    assert!(
        both_ready_seen,
        "both Ready at once before the old one went"
    );
    let p = settled(&c, ns, "surge");
    assert_ne!(s(&p["metadata"]["uid"]), old_uid, "recreated (Standard)");
    assert_eq!(p["spec"]["containers"][0]["image"], retag);
    assert_eq!(p["spec"]["nodeName"], NODE);
    eprintln!("old pod deleted {old_gone_after:?} after the new one was seen Ready");
}

/// `rollingUpdate.selector`: only nodes whose labels match are updated; the
/// real node is held back until it gets the label.
#[test]
fn the_rolling_update_selector_holds_the_node_back_until_it_matches() {
    let c = cluster();
    let ns = c.namespace("ads-selector").unwrap();
    let ns = ns.name.as_str();
    c.apply_stdin(&ads(
        ns,
        "picky",
        "    type: RollingUpdate\n    rollingUpdate:\n      selector: {matchLabels: {keelson-test/ads-update: \"yes\"}}\n",
        "",
    ))
    .unwrap();
    let p = settled(&c, ns, "picky");
    let uid = s(&p["metadata"]["uid"]);
    let old_hash = s(&p["metadata"]["labels"]["controller-revision-hash"]);
    let second = "localhost/keelson/busybox:ads-selector";
    c.tag_image(BUSYBOX, second).unwrap();
    set_image(&c, ns, "picky", second);
    c.wait_for("new revision reported", LIMIT, |c| {
        let st = status(c, ns, "picky");
        Ok(
            (st["daemonSetHash"] != old_hash.as_str() && st["updatedNumberScheduled"] == 0)
                .then_some(()),
        )
    })
    .unwrap();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let ps = pods(&c, ns, "picky");
        assert_eq!(ps.len(), 1);
        assert_eq!(s(&ps[0]["metadata"]["uid"]), uid, "the node does not match");
        std::thread::sleep(Duration::from_millis(500));
    }
    c.kubectl(&["label", "node", NODE, "keelson-test/ads-update=yes"])
        .unwrap();
    let updated = c.wait_for("the node updated once labelled", LIMIT, |c| {
        let ps = pods(c, ns, "picky");
        let st = status(c, ns, "picky");
        let done = ps.len() == 1
            && s(&ps[0]["metadata"]["uid"]) != uid
            && kube::condition(&ps[0], "Ready")
            && st["updatedNumberScheduled"] == 1;
        Ok(done.then(|| ps[0].clone()))
    });
    c.kubectl(&["label", "node", NODE, "keelson-test/ads-update-"])
        .unwrap();
    assert_eq!(updated.unwrap()["spec"]["containers"][0]["image"], second);
}
