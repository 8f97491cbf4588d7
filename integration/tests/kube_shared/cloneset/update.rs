//! Template changes: in place where possible (env from an annotation, a
//! retagged image), recreated otherwise, the grace period, and the
//! pre-downloaded image.

use super::*;

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
    // The updates were judged done on the node, the moment the new
    // container started (before kubelet's status could say so). The
    // controller may win a race now and then, so most, not all, of the six.
    let log = c.agent_log();
    let marked: BTreeMap<&String, usize> = after_image
        .keys()
        .map(|name| {
            let n = log
                .lines()
                .filter(|l| {
                    l.contains("in-place update took effect on the node")
                        && l.contains(&format!("pod={name} namespace={ns}"))
                })
                .count();
            (name, n)
        })
        .collect();
    assert!(
        marked.values().all(|n| *n <= 2) && marked.values().sum::<usize>() >= 4,
        "updates the agent marked done, per pod (2 each): {marked:?}"
    );

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
fn a_recreate_rollout_surges_within_max_surge_and_never_drops_below_replicas() {
    let c = cluster();
    let guard = c.namespace("cloneset-surge").unwrap();
    let ns = guard.name.as_str();
    let strategy = "    type: ReCreate\n    maxSurge: 1\n    maxUnavailable: 0\n";
    c.apply_stdin(&cloneset(ns, "surge", 3, strategy, "v1"))
        .unwrap();
    converged(&c, ns, "surge", 3);
    let before = identities(&c, ns, "surge");
    patch(
        &c,
        ns,
        "surge",
        &json!({"spec": {"template": {"metadata": {"annotations": {"app-config": "v2"}}}}}),
    );
    // With maxUnavailable 0 the rollout can only go through the surge: at
    // every sample 3 pods Ready and at most 4 pods alive.
    let samples = roll_within_bounds(&c, ns, "surge", 3, 0, 1);
    let after = identities(&c, ns, "surge");
    assert_eq!(after.len(), 3);
    for (uid, _, _) in after.values() {
        assert!(
            !before.values().any(|(u, _, _)| u == uid),
            "every pod recreated: {before:?} → {after:?}"
        );
    }
    eprintln!("surge rollout: {samples} samples, bounds held");
}
