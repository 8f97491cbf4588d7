//! Advanced StatefulSet on the real single-node cluster, manifests applied
//! with kubectl: the seed's example (`replicas: 5`, `ordinals.start: 3`,
//! gate `StatefulSetStartOrdinal` on in the test cluster) gives pods
//! `sample-3` … `sample-7`, created in order, each only once the previous
//! one is Ready (sampled while it scales); an image change rolls in place
//! above the partition, highest ordinal first, within `maxUnavailable`
//! at every sample; scaling down removes the highest ordinals one at a
//! time; claims are made per ordinal (counted in `status.volumeClaims`)
//! and, with `whenScaled: Delete`, go with their condemned pod; the new
//! image of an in-place update held back by the partition is pulled by
//! an ImagePullJob before any pod is updated.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster};
use serde_json::Value;

mod predownload;

const LIMIT: Duration = Duration::from_secs(150);

fn cluster() -> kube::Turn {
    kube::shared_in(module_path!()).expect("test cluster")
}

fn sts(ns: &str, name: &str, replicas: u32, extra: &str) -> String {
    format!(
        r#"apiVersion: apps.kruise.io/v1beta1
kind: StatefulSet
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  serviceName: {name}-svc
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      readinessGates: [{{conditionType: InPlaceUpdateReady}}]
      containers:
      - name: main
        image: {BUSYBOX}
        imagePullPolicy: IfNotPresent
        command: ["sleep", "3600"]
{extra}"#
    )
}

fn pods(c: &Cluster, ns: &str, app: &str) -> Vec<Value> {
    c.pods(ns, app).unwrap()
}

fn name(p: &Value) -> String {
    kube::name_of(p)
}

fn ready(p: &Value) -> bool {
    kube::live_and_ready(p)
}

fn ready_since(p: &Value) -> Option<String> {
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .map(String::from)
}

fn ordinal(p: &Value, set: &str) -> i64 {
    name(p)
        .strip_prefix(&format!("{set}-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

#[test]
fn the_seed_example_scales_in_order_from_ordinal_3_and_rolls_in_place_above_the_partition() {
    let c = cluster();
    let ns = c.namespace("asts-seed").unwrap();
    let ns = ns.name.as_str();
    c.apply_stdin(&sts(
        ns,
        "sample",
        5,
        "  ordinals: {start: 3}\n  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate: {podUpdatePolicy: InPlaceIfPossible}\n",
    ))
    .unwrap();
    // OrderedReady: sampled while it scales, a pod exists only once every
    // lower ordinal exists and was Ready before it was created.
    let deadline = Instant::now() + LIMIT;
    let mut samples = 0;
    loop {
        let now = pods(&c, ns, "sample");
        let by: BTreeMap<i64, &Value> = now.iter().map(|p| (ordinal(p, "sample"), p)).collect();
        for (&k, p) in &by {
            assert!((3..=7).contains(&k), "unexpected pod {}", name(p));
            if k > 3 {
                let prev = by.get(&(k - 1)).unwrap_or_else(|| {
                    panic!(
                        "sample {samples}: sample-{k} exists without sample-{}",
                        k - 1
                    )
                });
                let since = ready_since(prev).unwrap_or_else(|| {
                    panic!(
                        "sample {samples}: sample-{k} exists while sample-{} is not Ready",
                        k - 1
                    )
                });
                let created = p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default();
                assert!(
                    created >= since.as_str(),
                    "sample-{k} created at {created}, before sample-{} was Ready at {since}",
                    k - 1
                );
            }
        }
        samples += 1;
        if by.len() == 5 && now.iter().all(ready) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scale-up did not finish: {:?}\n{}",
            now.iter().map(name).collect::<Vec<_>>(),
            c.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut names: Vec<String> = pods(&c, ns, "sample").iter().map(name).collect();
    names.sort();
    assert_eq!(
        names,
        ["sample-3", "sample-4", "sample-5", "sample-6", "sample-7"]
    );
    let p = &pods(&c, ns, "sample")[0];
    assert_eq!(p["spec"]["hostname"], p["metadata"]["name"]);
    assert_eq!(p["spec"]["subdomain"], "sample-svc");
    assert_eq!(
        p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        p["metadata"]["name"]
    );
    assert!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"].is_string());
    let s = c.get_json(&["-n", ns, "asts", "sample"]).unwrap()["status"].clone();
    assert_eq!(
        (
            s["replicas"].as_i64(),
            s["readyReplicas"].as_i64(),
            s["updatedReplicas"].as_i64()
        ),
        (Some(5), Some(5), Some(5)),
        "{s}"
    );
    eprintln!("ordered scale-up: {samples} samples");

    // In place above the partition (2 kept), 2 at a time, highest first.
    let before: BTreeMap<String, (String, String)> = pods(&c, ns, "sample")
        .iter()
        .map(|p| {
            (
                name(p),
                (
                    p["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    p["status"]["containerStatuses"][0]["containerID"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
            )
        })
        .collect();
    let retag = "localhost/keelson/busybox:asts-2";
    c.tag_image(BUSYBOX, retag).unwrap();
    c.kubectl(&[
        "-n",
        ns,
        "patch",
        "asts",
        "sample",
        "--type=json",
        "-p",
        &format!(
            r#"[{{"op":"replace","path":"/spec/updateStrategy/rollingUpdate/partition","value":2}},{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{retag}"}}]"#
        ),
    ])
    .unwrap();
    let deadline = Instant::now() + LIMIT;
    let mut samples = 0;
    let mut order: Vec<String> = vec![];
    loop {
        let now = pods(&c, ns, "sample");
        let unavailable = now.iter().filter(|p| !ready(p)).count();
        assert!(
            unavailable <= 1,
            "sample {samples}: {unavailable} unavailable, maxUnavailable 1"
        );
        for p in &now {
            let n = name(p);
            let restarted = p["status"]["containerStatuses"][0]["containerID"]
                .as_str()
                .unwrap_or_default()
                != before[&n].1;
            if restarted && !order.contains(&n) {
                order.push(n.clone());
            }
            assert_eq!(
                p["metadata"]["uid"].as_str().unwrap_or_default(),
                before[&n].0,
                "{n} kept (in place)"
            );
        }
        samples += 1;
        let s = c.get_json(&["-n", ns, "asts", "sample"]).unwrap()["status"].clone();
        if s["updatedReplicas"] == 3 && s["updatedReadyReplicas"] == 3 && now.iter().all(ready) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not finish: {s}\n{}",
            c.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        order,
        ["sample-7", "sample-6", "sample-5"],
        "descending, partition kept 3 and 4"
    );
    for p in pods(&c, ns, "sample") {
        let updated = p["spec"]["containers"][0]["image"] == retag;
        assert_eq!(updated, ordinal(&p, "sample") >= 5, "{}", name(&p));
    }
    eprintln!("in-place rollout above the partition: {samples} samples");

    // Scale down: highest ordinals first, one at a time.
    c.kubectl(&["-n", ns, "scale", "asts", "sample", "--replicas=3"])
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    loop {
        let now = pods(&c, ns, "sample");
        let deleting: Vec<i64> = now
            .iter()
            .filter(|p| !p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| ordinal(p, "sample"))
            .collect();
        assert!(deleting.len() <= 1, "one at a time: {deleting:?}");
        let max = now.iter().map(|p| ordinal(p, "sample")).max().unwrap_or(0);
        if let Some(d) = deleting.first() {
            assert_eq!(*d, max, "the highest goes first");
        }
        if now.len() == 3 {
            let mut names: Vec<String> = now.iter().map(name).collect();
            names.sort();
            assert_eq!(names, ["sample-3", "sample-4", "sample-5"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scale-down did not finish\n{}",
            c.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn claims_per_ordinal_and_scaled_away_with_their_pod() {
    let c = cluster();
    let ns = c.namespace("asts-claims").unwrap();
    let ns = ns.name.as_str();
    // No provisioner here: the claims stay Pending and so do the pods,
    // which is enough to see the claims made and released.
    c.apply_stdin(&sts(
        ns,
        "db",
        2,
        "  podManagementPolicy: Parallel\n  persistentVolumeClaimRetentionPolicy: {whenScaled: Delete, whenDeleted: Retain}\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec:\n      accessModes: [ReadWriteOnce]\n      resources: {requests: {storage: 1Mi}}\n",
    ))
    .unwrap();
    let claims = |c: &Cluster| -> Vec<String> {
        let mut v: Vec<String> = c.get_json(&["-n", ns, "pvc"]).unwrap()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(name)
            .collect();
        v.sort();
        v
    };
    c.wait_for("claims and pods of both ordinals", LIMIT, |c| {
        Ok((claims(c) == ["data-db-0", "data-db-1"] && pods(c, ns, "db").len() == 2).then_some(()))
    })
    .unwrap();
    // Both claims match their template (requests as asked), none bound.
    let volume_claims = |c: &Cluster| {
        c.get_json(&["-n", ns, "asts", "db"]).unwrap()["status"]["volumeClaims"].clone()
    };
    c.wait_for("status.volumeClaims counts both", LIMIT, |c| {
        let v = volume_claims(c);
        Ok((v
            == serde_json::json!([{"volumeClaimName": "data",
            "compatibleReplicas": 2, "compatibleReadyReplicas": 0}]))
        .then_some(()))
    })
    .unwrap();
    let pvc = c.get_json(&["-n", ns, "pvc", "data-db-1"]).unwrap();
    assert_eq!(
        pvc["metadata"]["labels"]["app"], "db",
        "the selector's labels"
    );
    let pod = c.get_json(&["-n", ns, "pod", "db-1"]).unwrap();
    assert_eq!(
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "data-db-1"
    );
    c.kubectl(&["-n", ns, "scale", "asts", "db", "--replicas=1"])
        .unwrap();
    c.wait_for("the condemned pod's claim goes with it", LIMIT, |c| {
        Ok((claims(c) == ["data-db-0"]).then_some(()))
    })
    .unwrap();
    c.wait_for("status.volumeClaims counts the one left", LIMIT, |c| {
        Ok((volume_claims(c)[0]["compatibleReplicas"] == 1).then_some(()))
    })
    .unwrap();
    // whenDeleted: Retain — the set deleted, its pod goes, the claim stays.
    c.kubectl(&["-n", ns, "delete", "asts", "db", "--wait=true"])
        .unwrap();
    c.wait_for("db's pods gone", LIMIT, |c| {
        Ok(pods(c, ns, "db").is_empty().then_some(()))
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(claims(&c), ["data-db-0"], "Retain keeps the claim");
    // whenDeleted: Delete — the set owns its claims; they go with it.
    c.apply_stdin(&sts(
        ns,
        "cache",
        1,
        "  podManagementPolicy: Parallel\n  persistentVolumeClaimRetentionPolicy: {whenScaled: Retain, whenDeleted: Delete}\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec:\n      accessModes: [ReadWriteOnce]\n      resources: {requests: {storage: 1Mi}}\n",
    ))
    .unwrap();
    c.wait_for("cache's claim", LIMIT, |c| {
        Ok((claims(c) == ["data-cache-0", "data-db-0"]).then_some(()))
    })
    .unwrap();
    c.kubectl(&["-n", ns, "delete", "asts", "cache", "--wait=true"])
        .unwrap();
    c.wait_for("cache's claim deleted with the set", LIMIT, |c| {
        Ok((claims(c) == ["data-db-0"]).then_some(()))
    })
    .unwrap();
}

#[test]
fn kubectl_plugin_sets_images_follows_pauses_and_undoes_an_advanced_statefulset() {
    let c = cluster();
    let guard = c.namespace("asts-plugin").unwrap();
    let ns = guard.name.as_str();
    let plugins = keelson_integration::controller::plugin_dir().unwrap();
    let run = |args: &[&str]| -> (bool, String, String) {
        let (ok, out, err) = c.kubectl_with_plugins(plugins.path(), args).unwrap();
        eprintln!("kubectl {}: ok={ok}\n{out}{err}", args.join(" "));
        (ok, out, err)
    };
    c.apply_stdin(&sts(
        ns,
        "cli",
        2,
        "  podManagementPolicy: Parallel\n  updateStrategy:\n    rollingUpdate: {podUpdatePolicy: InPlaceIfPossible, maxUnavailable: 2}\n",
    ))
    .unwrap();
    let (ok, out, _) = run(&[
        "kruise",
        "rollout",
        "status",
        "-n",
        ns,
        "statefulset/cli",
        "--timeout",
        "120s",
    ]);
    assert!(
        ok && out.contains("statefulset rolling update complete 2 pods at revision"),
        "{out}"
    );
    let retag = "localhost/keelson/busybox:asts-cli";
    c.tag_image(BUSYBOX, retag).unwrap();
    let (ok, out, _) = run(&[
        "keelson",
        "set",
        "image",
        "-n",
        ns,
        "asts/cli",
        &format!("main={retag}"),
    ]);
    assert!(
        ok && out.contains("statefulset.apps.kruise.io/cli image updated"),
        "{out}"
    );
    let (ok, out, _) = run(&[
        "keelson",
        "rollout",
        "status",
        "-n",
        ns,
        "asts",
        "cli",
        "--timeout",
        "120s",
    ]);
    assert!(
        ok && out.contains("statefulset rolling update complete 2 pods"),
        "{out}"
    );
    for p in pods(&c, ns, "cli") {
        assert_eq!(p["spec"]["containers"][0]["image"], retag);
    }
    let (ok, out, _) = run(&["keelson", "rollout", "history", "-n", ns, "asts/cli"]);
    assert!(
        ok && out.starts_with("REVISION  CHANGE-CAUSE\n1 ") && out.contains("\n2 "),
        "{out}"
    );
    let (ok, out, _) = run(&["keelson", "rollout", "pause", "-n", ns, "asts/cli"]);
    assert!(ok && out.contains("paused"), "{out}");
    let s = c.get_json(&["-n", ns, "asts", "cli"]).unwrap();
    assert_eq!(s["spec"]["updateStrategy"]["rollingUpdate"]["paused"], true);
    let (ok, _, err) = run(&["keelson", "rollout", "pause", "-n", ns, "asts/cli"]);
    assert!(!ok && err.contains("already paused"), "{err}");
    run(&["keelson", "rollout", "resume", "-n", ns, "asts/cli"]);
    // Beyond what OpenKruise lets change, the spec is immutable.
    let (ok, _, err) = c
        .kubectl_result(
            &[
                "-n",
                ns,
                "patch",
                "asts",
                "cli",
                "--type=merge",
                "-p",
                r#"{"spec":{"serviceName":"other"}}"#,
            ],
            None,
        )
        .unwrap();
    assert!(
        !ok && err.contains("updates to statefulset spec for fields other than 'replicas'"),
        "{err}"
    );
    let (ok, out, _) = run(&["keelson", "rollout", "undo", "-n", ns, "asts/cli"]);
    assert!(ok && out.contains("rolled back"), "{out}");
    let (ok, out, _) = run(&[
        "keelson",
        "rollout",
        "status",
        "-n",
        ns,
        "asts/cli",
        "--timeout",
        "120s",
    ]);
    assert!(ok, "{out}");
    for p in pods(&c, ns, "cli") {
        assert_eq!(
            p["spec"]["containers"][0]["image"], BUSYBOX,
            "undone in place"
        );
    }
}
