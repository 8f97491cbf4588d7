//! Scaling (the scale subresource, chosen deletes, the preDelete hook),
//! partition and pause, and the kubectl plugin.

use super::*;

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
