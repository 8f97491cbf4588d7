//! CloneSet on the real single-node cluster, manifests applied with
//! kubectl: the shipped webhooks default and validate it, keelson-controller
//! creates its pods and revisions, and updates go in place through kubelet
//! and the agent — an annotation read by env restarts only that container
//! (same pod UID and IP, restartCount + 1, the new value in its env), an
//! image change (a retag with the same image ID, OpenKruise's #369) too,
//! and a change that cannot be made in place recreates the pods — with
//! `maxUnavailable` held at every sample taken during the rollout; the new
//! image of an in-place update is pre-downloaded by an ImagePullJob.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster};
use serde_json::{Value, json};

fn cluster() -> Arc<Cluster> {
    kube::shared().expect("test cluster")
}

const LIMIT: Duration = Duration::from_secs(120);

fn cloneset(ns: &str, name: &str, replicas: u32, strategy: &str, config: &str) -> String {
    format!(
        r#"
apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{app-config: {config}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {BUSYBOX}
        imagePullPolicy: IfNotPresent
        command: ["sleep", "3600"]
        env:
        - name: APP_CONFIG
          valueFrom: {{fieldRef: {{fieldPath: "metadata.annotations['app-config']"}}}}
  updateStrategy:
{strategy}
"#
    )
}

fn pods(c: &Cluster, ns: &str, app: &str) -> Vec<Value> {
    c.pods(ns, app).unwrap()
}

fn ready(p: &Value) -> bool {
    kube::live_and_ready(p)
}

fn status(c: &Cluster, ns: &str, name: &str) -> Value {
    c.get_json(&["-n", ns, "cloneset", name]).unwrap()["status"].clone()
}

/// Waits until the CloneSet has `n` pods, all updated and ready, with
/// currentRevision = updateRevision; returns its status.
fn converged(c: &Cluster, ns: &str, name: &str, n: i64) -> Value {
    c.wait_for(&format!("CloneSet {ns}/{name} converged"), LIMIT, |c| {
        let cs = c.get_json(&["-n", ns, "cloneset", name])?;
        let s = &cs["status"];
        let done = s["observedGeneration"] == cs["metadata"]["generation"]
            && s["replicas"] == n
            && s["readyReplicas"] == n
            && s["updatedReplicas"] == n
            && s["updatedReadyReplicas"] == n
            && s["currentRevision"] == s["updateRevision"];
        let ready_pods = pods(c, ns, name).iter().filter(|p| ready(p)).count() as i64;
        Ok((done && ready_pods == n).then(|| s.clone()))
    })
    .unwrap()
}

/// Per pod name: (uid, IP, main's restartCount).
fn identities(c: &Cluster, ns: &str, app: &str) -> BTreeMap<String, (String, String, i64)> {
    pods(c, ns, app)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                (
                    p["metadata"]["uid"].as_str().unwrap().to_string(),
                    p["status"]["podIP"].as_str().unwrap_or("").to_string(),
                    p["status"]["containerStatuses"][0]["restartCount"]
                        .as_i64()
                        .unwrap_or(-1),
                ),
            )
        })
        .collect()
}

/// Samples the pods every 100 ms until the CloneSet converges at `n`,
/// asserting at every sample that at most `max_unavailable` of the `n`
/// wanted pods are missing or not ready and at most `n + max_surge` pods
/// exist. Returns the number of samples.
fn roll_within_bounds(
    c: &Cluster,
    ns: &str,
    name: &str,
    n: usize,
    max_unavailable: usize,
    max_surge: usize,
) -> usize {
    let deadline = Instant::now() + LIMIT;
    let mut samples = 0;
    loop {
        let all = pods(c, ns, name);
        let live = all
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .count();
        let ready_n = all.iter().filter(|p| ready(p)).count();
        let unavailable = n.saturating_sub(ready_n);
        assert!(
            unavailable <= max_unavailable,
            "sample {samples}: {unavailable} of {n} pods unavailable (max {max_unavailable}): {:?}",
            all.iter()
                .map(|p| (p["metadata"]["name"].clone(), ready(p)))
                .collect::<Vec<_>>()
        );
        assert!(
            live <= n + max_surge,
            "sample {samples}: {live} pods (max {})",
            n + max_surge
        );
        samples += 1;
        let cs = c.get_json(&["-n", ns, "cloneset", name]).unwrap();
        let s = cs["status"].clone();
        if s["observedGeneration"] == cs["metadata"]["generation"]
            && s["updatedReadyReplicas"] == n as i64
            && s["readyReplicas"] == n as i64
            && s["replicas"] == n as i64
            && s["currentRevision"] == s["updateRevision"]
            && ready_n == n
            && live == n
        {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not finish: {s}\n{}",
            c.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main_env(c: &Cluster, ns: &str, pod: &str) -> BTreeMap<String, String> {
    let socket = c.cri_socket().expect("agent socket");
    let ids = c
        .crictl(
            &socket,
            &[
                "ps",
                "-q",
                "--name",
                "^main$",
                "--label",
                &format!("io.kubernetes.pod.name={pod}"),
                "--label",
                &format!("io.kubernetes.pod.namespace={ns}"),
            ],
        )
        .unwrap();
    let id = ids
        .lines()
        .next()
        .expect("main container")
        .trim()
        .to_string();
    let info: Value = serde_json::from_str(&c.crictl(&socket, &["inspect", &id]).unwrap()).unwrap();
    info["info"]["config"]["envs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["key"].as_str().unwrap_or("").to_string(),
                e["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn patch(c: &Cluster, ns: &str, name: &str, p: &Value) {
    c.kubectl(&[
        "-n",
        ns,
        "patch",
        "cloneset",
        name,
        "--type",
        "merge",
        "-p",
        &p.to_string(),
    ])
    .unwrap();
}

#[test]
fn updates_go_in_place_where_they_can_and_recreate_where_not() {
    let c = cluster();
    let guard = c.namespace("cloneset-inplace").unwrap();
    let ns = guard.name.as_str();
    let strategy = "    type: InPlaceIfPossible\n    maxUnavailable: 1\n";
    c.apply_stdin(&cloneset(ns, "web", 3, strategy, "v1"))
        .unwrap();
    let stored = c.get_json(&["-n", ns, "cloneset", "web"]).unwrap();
    // The mutating webhook defaulted spec and template as OpenKruise does.
    assert_eq!(stored["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(stored["spec"]["updateStrategy"]["partition"], 0);
    assert_eq!(
        stored["spec"]["updateStrategy"]["inPlaceUpdateStrategy"],
        json!({})
    );
    assert_eq!(
        stored["spec"]["template"]["spec"]["dnsPolicy"],
        "ClusterFirst"
    );
    let s1 = converged(&c, ns, "web", 3);
    let rev1 = s1["updateRevision"].as_str().unwrap().to_string();
    let before = identities(&c, ns, "web");
    for p in pods(&c, ns, "web") {
        assert_eq!(
            p["metadata"]["labels"]["controller-revision-hash"],
            rev1.as_str()
        );
        assert_eq!(
            p["metadata"]["labels"]["lifecycle.apps.kruise.io/state"],
            "Normal"
        );
        assert!(kube::condition(&p, "InPlaceUpdateReady"));
        assert_eq!(
            main_env(&c, ns, p["metadata"]["name"].as_str().unwrap())["APP_CONFIG"],
            "v1"
        );
    }
    let revisions = c.get_json(&["-n", ns, "controllerrevisions"]).unwrap();
    let names: Vec<&str> = revisions["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, vec![rev1.as_str()]);

    // 1. An annotation the env reads: the container restarts in place.
    patch(
        &c,
        ns,
        "web",
        &json!({"spec": {"template": {"metadata": {"annotations": {"app-config": "v2"}}}}}),
    );
    let samples = roll_within_bounds(&c, ns, "web", 3, 1, 0);
    let after = identities(&c, ns, "web");
    assert_eq!(after.len(), 3);
    for (name, (uid, ip, restarts)) in &before {
        let (uid2, ip2, restarts2) = after
            .get(name)
            .unwrap_or_else(|| panic!("pod {name} was recreated: {after:?}"));
        assert_eq!((uid, ip), (uid2, ip2), "{name} kept its UID and IP");
        assert_eq!(
            *restarts2,
            restarts + 1,
            "{name} restarted its container once"
        );
        assert_eq!(
            main_env(&c, ns, name)["APP_CONFIG"],
            "v2",
            "{name} runs with the new value"
        );
    }
    let s2 = status(&c, ns, "web");
    let rev2 = s2["updateRevision"].as_str().unwrap().to_string();
    assert_ne!(rev1, rev2);
    for p in pods(&c, ns, "web") {
        assert_eq!(
            p["metadata"]["labels"]["controller-revision-hash"],
            rev2.as_str()
        );
        let record: Value = serde_json::from_str(
            p["metadata"]["annotations"]["apps.kruise.io/inplace-update-state"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(record["revision"], rev2.as_str());
        assert_eq!(record["updateEnvFromMetadata"], true);
    }
    eprintln!("env rollout: {samples} samples, bounds held");

    // 2. An image change that keeps the image ID (a retag): in place, and
    // it completes (OpenKruise waits forever here without its daemon).
    let retag = BUSYBOX.replace(":test", ":retag");
    c.tag_image(BUSYBOX, &retag).unwrap();
    let image_patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": retag, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"], "env": [{"name": "APP_CONFIG", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['app-config']"}}}]}]}}}});
    patch(&c, ns, "web", &image_patch);
    roll_within_bounds(&c, ns, "web", 3, 1, 0);
    let after_image = identities(&c, ns, "web");
    for (name, (uid, _, restarts)) in &after {
        let (uid2, _, restarts2) = &after_image[name];
        assert_eq!(uid, uid2, "{name} kept its UID");
        assert_eq!(
            *restarts2,
            restarts + 1,
            "{name} restarted once for the image"
        );
    }
    for p in pods(&c, ns, "web") {
        assert_eq!(p["spec"]["containers"][0]["image"], retag.as_str());
    }

    // 3. A command change cannot be made in place: new pods.
    let recreate = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": retag, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3601"], "env": [{"name": "APP_CONFIG", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['app-config']"}}}]}]}}}});
    patch(&c, ns, "web", &recreate);
    roll_within_bounds(&c, ns, "web", 3, 1, 0);
    let recreated = identities(&c, ns, "web");
    for (name, (uid, _, _)) in &recreated {
        assert!(
            !after_image.values().any(|(u, _, _)| u == uid),
            "{name} should be a new pod, not one of {after_image:?}"
        );
    }
    let history = c.get_json(&["-n", ns, "controllerrevisions"]).unwrap();
    assert_eq!(
        history["items"].as_array().unwrap().len(),
        4,
        "one revision per template"
    );
}

#[test]
fn bad_clonesets_are_refused_with_openkruise_messages() {
    let c = cluster();
    let guard = c.namespace("cloneset-invalid").unwrap();
    let ns = guard.name.as_str();
    let manifest = cloneset(
        ns,
        "bad",
        1,
        "    type: InPlaceOnly\n    maxSurge: 1\n",
        "v1",
    );
    let (ok, _, err) = c
        .kubectl_result(&["apply", "-f", "-"], Some(&manifest))
        .unwrap();
    assert!(!ok);
    assert!(
        err.contains("can not use maxSurge with strategy type InPlaceOnly"),
        "{err}"
    );
}

fn pod_names(c: &Cluster, ns: &str, app: &str) -> Vec<String> {
    identities(c, ns, app).into_keys().collect()
}

fn label_of(p: &Value, key: &str) -> String {
    p["metadata"]["labels"][key]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn scaling_chosen_deletes_partition_pause_and_the_pre_delete_hook() {
    let c = cluster();
    let guard = c.namespace("cloneset-scale").unwrap();
    let ns = guard.name.as_str();
    let strategy = "    type: InPlaceIfPossible\n    maxUnavailable: 1\n  lifecycle:\n    preDelete:\n      labelsHandler: {hold: 'true'}\n";
    c.apply_stdin(&cloneset(ns, "api", 2, strategy, "v1"))
        .unwrap();
    converged(&c, ns, "api", 2);

    // `kubectl scale` goes through the scale subresource (HPA's path).
    c.kubectl(&["-n", ns, "scale", "cloneset", "api", "--replicas=4"])
        .unwrap();
    let s = converged(&c, ns, "api", 4);
    assert_eq!(s["labelSelector"], "app=api");
    let raw = c
        .kubectl(&[
            "get",
            "--raw",
            &format!("/apis/apps.kruise.io/v1alpha1/namespaces/{ns}/clonesets/api/scale"),
        ])
        .unwrap();
    let scale: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(scale["status"]["replicas"], 4);
    assert_eq!(scale["status"]["selector"], "app=api");

    // podsToDelete with a lower replica count removes exactly that pod.
    let names = pod_names(&c, ns, "api");
    let victim = names[1].clone();
    patch(
        &c,
        ns,
        "api",
        &json!({"spec": {"replicas": 3, "scaleStrategy": {"podsToDelete": [victim]}}}),
    );
    converged(&c, ns, "api", 3);
    let now = pod_names(&c, ns, "api");
    assert!(!now.contains(&victim), "{victim} deleted: {now:?}");
    assert!(
        names
            .iter()
            .filter(|n| *n != &victim)
            .take(2)
            .all(|n| now.contains(n))
    );

    // The specified-delete label replaces a pod.
    let relabelled = now[0].clone();
    c.kubectl(&[
        "-n",
        ns,
        "label",
        "pod",
        &relabelled,
        "apps.kruise.io/specified-delete=true",
    ])
    .unwrap();
    c.wait_for("specified-delete pod replaced", LIMIT, |c| {
        let n = pod_names(c, ns, "api");
        Ok((!n.contains(&relabelled) && n.len() == 3).then_some(()))
    })
    .unwrap();
    converged(&c, ns, "api", 3);

    // The preDelete hook holds a pod in PreparingDelete until released.
    let held = pod_names(&c, ns, "api")[0].clone();
    c.kubectl(&["-n", ns, "label", "pod", &held, "hold=true"])
        .unwrap();
    patch(
        &c,
        ns,
        "api",
        &json!({"spec": {"replicas": 2, "scaleStrategy": {"podsToDelete": [held]}}}),
    );
    c.wait_for("pod held in PreparingDelete", LIMIT, |c| {
        let p = c.get_json(&["-n", ns, "pod", &held])?;
        Ok((label_of(&p, "lifecycle.apps.kruise.io/state") == "PreparingDelete").then_some(()))
    })
    .unwrap();
    for _ in 0..15 {
        let p = c.get_json(&["-n", ns, "pod", &held]).unwrap();
        assert!(
            p["metadata"]["deletionTimestamp"].is_null(),
            "held pod must not be deleted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.kubectl(&["-n", ns, "label", "pod", &held, "hold-"])
        .unwrap();
    c.wait_for("released pod deleted", LIMIT, |c| {
        Ok((!pod_names(c, ns, "api").contains(&held)).then_some(()))
    })
    .unwrap();
    converged(&c, ns, "api", 2);
    patch(
        &c,
        ns,
        "api",
        &json!({"spec": {"replicas": 4, "scaleStrategy": {"podsToDelete": null}}}),
    );
    converged(&c, ns, "api", 4);

    // partition 3 of 4 (int): one pod updated; then 50%: two.
    patch(
        &c,
        ns,
        "api",
        &json!({"spec": {"updateStrategy": {"partition": 3}, "template": {"metadata": {"annotations": {"app-config": "v2"}}}}}),
    );
    let one = c
        .wait_for("partition 3 reached", LIMIT, |c| {
            let s = status(c, ns, "api");
            Ok((s["updatedReadyReplicas"] == 1 && s["expectedUpdatedReplicas"] == 1).then_some(s))
        })
        .unwrap();
    let update_revision = one["updateRevision"].as_str().unwrap().to_string();
    for _ in 0..10 {
        let updated = pods(&c, ns, "api")
            .iter()
            .filter(|p| label_of(p, "controller-revision-hash") == update_revision)
            .count();
        assert_eq!(updated, 1, "partition holds the others back");
        std::thread::sleep(Duration::from_millis(200));
    }
    patch(
        &c,
        ns,
        "api",
        &json!({"spec": {"updateStrategy": {"partition": "50%"}}}),
    );
    c.wait_for("partition 50% reached", LIMIT, |c| {
        let s = status(c, ns, "api");
        Ok((s["updatedReadyReplicas"] == 2 && s["expectedUpdatedReplicas"] == 2).then_some(()))
    })
    .unwrap();

    // Paused: nothing more is updated until resumed.
    patch(
        &c,
        ns,
        "api",
        &json!({"spec": {"updateStrategy": {"partition": 0, "paused": true}}}),
    );
    for _ in 0..15 {
        assert_eq!(status(&c, ns, "api")["updatedReplicas"], 2, "paused");
        std::thread::sleep(Duration::from_millis(200));
    }
    patch(
        &c,
        ns,
        "api",
        &json!({"spec": {"updateStrategy": {"paused": false}}}),
    );
    roll_within_bounds(&c, ns, "api", 4, 1, 0);
}

#[test]
fn kubectl_plugin_rolls_out_pauses_undoes_and_scales() {
    let c = cluster();
    let guard = c.namespace("cloneset-plugin").unwrap();
    let ns = guard.name.as_str();
    let plugins = keelson_integration::controller::plugin_dir().unwrap();
    let run = |args: &[&str]| -> (bool, String, String) {
        let (ok, out, err) = c.kubectl_with_plugins(plugins.path(), args).unwrap();
        eprintln!("kubectl {}: ok={ok}\n{out}{err}", args.join(" "));
        (ok, out, err)
    };
    let strategy = "    type: InPlaceIfPossible\n    maxUnavailable: 1\n";
    c.apply_stdin(&cloneset(ns, "cli", 2, strategy, "v1"))
        .unwrap();
    // `rollout status` until done (false when it fails or times out).
    let follow = || {
        run(&[
            "keelson",
            "rollout",
            "status",
            "-n",
            ns,
            "cloneset/cli",
            "--timeout=120s",
        ])
        .0
    };
    let (ok, out, _) = run(&[
        "keelson",
        "-n",
        ns,
        "rollout",
        "status",
        "cloneset/cli",
        "--timeout=120s",
    ]);
    assert!(
        ok && out.contains("CloneSet rolling update complete 2 pods at revision"),
        "{out}"
    );
    assert_eq!(status(&c, ns, "cli")["readyReplicas"], 2);

    // set image under the kubectl-kruise name, then follow it.
    let retag = BUSYBOX.replace(":test", ":plugin");
    c.tag_image(BUSYBOX, &retag).unwrap();
    let (ok, out, _) = run(&[
        "kruise",
        "set",
        "image",
        "-n",
        ns,
        "cloneset/cli",
        &format!("main={retag}"),
    ]);
    assert!(
        ok && out.contains("cloneset.apps.kruise.io/cli image updated"),
        "{out}"
    );
    let (ok, out, _) = run(&[
        "kruise",
        "rollout",
        "status",
        "-n",
        ns,
        "cloneset",
        "cli",
        "--timeout=120s",
    ]);
    assert!(
        ok && out.contains("rolling update complete 2 pods"),
        "{out}"
    );
    for p in pods(&c, ns, "cli") {
        assert_eq!(p["spec"]["containers"][0]["image"], retag.as_str());
    }

    // history lists both revisions; undo goes back to the first.
    let (ok, out, _) = run(&["keelson", "rollout", "history", "-n", ns, "cloneset/cli"]);
    assert!(
        ok && out.starts_with("REVISION  CHANGE-CAUSE\n1 ") && out.contains("\n2 "),
        "{out}"
    );
    let (ok, out, _) = run(&["keelson", "rollout", "undo", "-n", ns, "cloneset/cli"]);
    assert!(ok && out.contains("rolled back"), "{out}");
    assert!(follow(), "the rollout finishes");
    for p in pods(&c, ns, "cli") {
        assert_eq!(p["spec"]["containers"][0]["image"], BUSYBOX);
    }
    let (ok, out, _) = run(&[
        "keelson",
        "rollout",
        "undo",
        "-n",
        ns,
        "cloneset/cli",
        "--to-revision=3",
    ]);
    assert!(
        ok && out.contains("skipped rollback (current template already matches revision 3)"),
        "{out}"
    );

    // pause holds a change back; status times out non-zero; resume.
    let (ok, out, _) = run(&["keelson", "rollout", "pause", "-n", ns, "cloneset/cli"]);
    assert!(
        ok && out.contains("cloneset.apps.kruise.io/cli paused"),
        "{out}"
    );
    let (ok, _, err) = run(&["keelson", "rollout", "pause", "-n", ns, "cloneset/cli"]);
    assert!(!ok && err.contains("is already paused"), "{err}");
    let (ok, _, _) = run(&["keelson", "set", "env", "-n", ns, "cloneset/cli", "EXTRA=1"]);
    assert!(ok);
    let (ok, out, err) = run(&[
        "keelson",
        "rollout",
        "status",
        "-n",
        ns,
        "cloneset/cli",
        "--timeout=3s",
    ]);
    assert!(
        !ok && err.contains("timed out") && out.contains("Waiting for CloneSet"),
        "{out}{err}"
    );
    let (ok, out, _) = run(&["keelson", "rollout", "resume", "-n", ns, "cloneset/cli"]);
    assert!(ok && out.contains("resumed"), "{out}");
    assert!(follow(), "the rollout finishes");

    // scale through the scale subresource.
    let (ok, out, _) = run(&["keelson", "scale", "-n", ns, "cloneset/cli", "--replicas=3"]);
    assert!(
        ok && out.contains("cloneset.apps.kruise.io/cli scaled"),
        "{out}"
    );
    converged(&c, ns, "cli", 3);
    let (ok, _, err) = run(&["keelson", "rollout", "status", "-n", ns, "deploy/x"]);
    assert!(!ok && err.contains("doesn't have a resource type"), "{err}");
}

#[test]
fn the_in_place_grace_period_drains_before_the_restart() {
    let c = cluster();
    let guard = c.namespace("cloneset-grace").unwrap();
    let ns = guard.name.as_str();
    let strategy =
        "    type: InPlaceIfPossible\n    inPlaceUpdateStrategy: {gracePeriodSeconds: 3}\n";
    c.apply_stdin(&cloneset(ns, "slow", 1, strategy, "v1"))
        .unwrap();
    converged(&c, ns, "slow", 1);
    let before = identities(&c, ns, "slow");
    let (name, (uid, _, restarts)) = before.iter().next().unwrap();
    let t0 = Instant::now();
    patch(
        &c,
        ns,
        "slow",
        &json!({"spec": {"template": {"metadata": {"annotations": {"app-config": "v2"}}}}}),
    );
    // Not ready at once (endpoints drain), container untouched meanwhile.
    c.wait_for("pod marked not ready", LIMIT, |c| {
        let p = c.get_json(&["-n", ns, "pod", name])?;
        Ok((!kube::condition(&p, "Ready")).then_some(()))
    })
    .unwrap();
    let restarted_at = c
        .wait_for("container restarted", LIMIT, |c| {
            let id = identities(c, ns, "slow");
            Ok(id
                .get(name)
                .filter(|(_, _, r)| *r > *restarts)
                .map(|_| t0.elapsed()))
        })
        .unwrap();
    assert!(
        restarted_at >= Duration::from_secs(3),
        "restarted after {restarted_at:?}, before the 3 s grace"
    );
    converged(&c, ns, "slow", 1);
    let after = identities(&c, ns, "slow");
    assert_eq!(&after[name].0, uid);
    assert_eq!(main_env(&c, ns, name)["APP_CONFIG"], "v2");
}

#[test]
fn an_in_place_image_update_pre_downloads_the_new_image() {
    let c = cluster();
    let guard = c.namespace("cloneset-predownload").unwrap();
    let ns = guard.name.as_str();
    let registry = keelson_integration::registry::Registry::start(None).unwrap();
    let layout = c.runtime().unwrap().images().layout("busybox");
    let v1 = registry.push(&layout, BUSYBOX, "shop/app:v1").unwrap();
    let v2 = registry.push(&layout, BUSYBOX, "shop/app:v2").unwrap();
    let manifest = cloneset(
        ns,
        "shop",
        4,
        "    type: InPlaceIfPossible\n    maxUnavailable: 1\n",
        "v1",
    )
    .replace(&format!("image: {BUSYBOX}"), &format!("image: {v1}"));
    c.apply_stdin(&manifest).unwrap();
    converged(&c, ns, "shop", 4);
    // ImagePullJobs reach the node through its NodeImage (made once the
    // node has been Ready for the creation delay).
    c.wait_for("NodeImage of the node", LIMIT, |c| {
        Ok(c.get_json(&["nodeimage", kube::NODE]).ok().map(|_| ()))
    })
    .unwrap();
    patch(
        &c,
        ns,
        "shop",
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": v2, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"], "env": [{"name": "APP_CONFIG", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['app-config']"}}}]}]}}}}),
    );
    let job = c
        .wait_for("pre-download ImagePullJob", LIMIT, |c| {
            let jobs = c.get_json(&["-n", ns, "imagepulljobs"])?;
            Ok(jobs["items"].as_array().and_then(|j| j.first().cloned()))
        })
        .unwrap();
    let update_revision = status(&c, ns, "shop")["updateRevision"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(job["metadata"]["name"], format!("{update_revision}-main"));
    assert_eq!(job["spec"]["image"], v2.as_str());
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CloneSet");
    assert_eq!(
        job["spec"]["podSelector"]["matchExpressions"][0]["operator"],
        "NotIn"
    );
    let rev = c
        .get_json(&["-n", ns, "controllerrevision", &update_revision])
        .unwrap();
    assert_eq!(
        rev["metadata"]["labels"]["apps.kruise.io/pre-predownload-created"],
        "true"
    );
    roll_within_bounds(&c, ns, "shop", 4, 1, 0);
    assert!(
        registry.log_text().contains("shop/app/manifests/v2"),
        "v2 was pulled from the registry"
    );
    // Done: the CloneSet's jobs are gone.
    c.wait_for("pre-download jobs deleted", LIMIT, |c| {
        let jobs = c.get_json(&["-n", ns, "imagepulljobs"])?;
        Ok(jobs["items"]
            .as_array()
            .is_none_or(|j| j.is_empty())
            .then_some(()))
    })
    .unwrap();
}

#[test]
fn volume_claims_per_instance_go_with_scale_in_and_come_back_to_a_recreated_pod() {
    let c = cluster();
    let guard = c.namespace("cloneset-claims").unwrap();
    let ns = guard.name.as_str();
    // No provisioner here: claims and pods stay Pending, enough to see
    // the claims made, reused and removed.
    c.apply_stdin(&format!(
        r#"apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata: {{name: vol, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: vol}}}}
  template:
    metadata: {{labels: {{app: vol}}}}
    spec:
      containers: [{{name: main, image: {BUSYBOX}, command: ["sleep", "3600"]}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Mi}}}}
"#
    ))
    .unwrap();
    let claims = |c: &Cluster| -> Vec<Value> {
        c.get_json(&["-n", ns, "pvc"]).unwrap()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect()
    };
    let id = |p: &Value| {
        p["metadata"]["labels"]["apps.kruise.io/cloneset-instance-id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    c.wait_for("two pods and their claims", LIMIT, |c| {
        Ok((claims(c).len() == 2 && pods(c, ns, "vol").len() == 2).then_some(()))
    })
    .unwrap();
    for p in pods(&c, ns, "vol") {
        let i = id(&p);
        assert_eq!(
            p["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            format!("data-vol-{i}")
        );
        let pvc = c
            .get_json(&["-n", ns, "pvc", &format!("data-vol-{i}")])
            .unwrap();
        assert_eq!(id(&pvc), i);
        assert_eq!(pvc["metadata"]["labels"]["app"], "vol");
        assert_eq!(pvc["metadata"]["ownerReferences"][0]["kind"], "CloneSet");
    }
    // A pod deleted from outside comes back with the same id and claim.
    let victim = pods(&c, ns, "vol")[0].clone();
    let victim_id = id(&victim);
    c.kubectl(&[
        "-n",
        ns,
        "delete",
        "pod",
        victim["metadata"]["name"].as_str().unwrap(),
        "--wait=false",
    ])
    .unwrap();
    c.wait_for("the recreated pod reuses its claim's id", LIMIT, |c| {
        let now = pods(c, ns, "vol");
        let live: Vec<&Value> = now
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        Ok((live.len() == 2
            && live
                .iter()
                .any(|p| id(p) == victim_id && p["metadata"]["uid"] != victim["metadata"]["uid"]))
        .then_some(()))
    })
    .unwrap();
    assert_eq!(claims(&c).len(), 2, "no new claim");
    // Scale in: the deleted pod's claim goes with it.
    c.kubectl(&["-n", ns, "scale", "cloneset", "vol", "--replicas=1"])
        .unwrap();
    c.wait_for("one pod, one claim, same id", LIMIT, |c| {
        let now: Vec<Value> = pods(c, ns, "vol")
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let cl = claims(c);
        Ok((now.len() == 1 && cl.len() == 1 && id(&now[0]) == id(&cl[0])).then_some(()))
    })
    .unwrap();
}
