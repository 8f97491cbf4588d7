//! Lifecycle hooks with `markPodNotReady`: a pod held in PreparingDelete
//! or PreparingUpdate is out of service (its `KruisePodReady` condition
//! False, naming the hook, and so not Ready) until the hook lets go; after
//! the in-place update the condition is True again.

use super::*;

/// The pod's `KruisePodReady` condition (status, message).
fn kruise_ready(p: &Value) -> (String, String) {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "KruisePodReady")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .unwrap_or_default()
}

#[test]
fn mark_pod_not_ready_takes_held_pods_out_of_service() {
    let c = cluster();
    let guard = c.namespace("cloneset-notready").unwrap();
    let ns = guard.name.as_str();
    let strategy = "    type: InPlaceIfPossible\n    maxUnavailable: 1\n  lifecycle:\n    preDelete:\n      labelsHandler: {hold: 'true'}\n      markPodNotReady: true\n    inPlaceUpdate:\n      labelsHandler: {upd: 'true'}\n      markPodNotReady: true\n";
    c.apply_stdin(&cloneset(ns, "hk", 2, strategy, "v1"))
        .unwrap();
    converged(&c, ns, "hk", 2);
    let names = pod_names(&c, ns, "hk");
    let (victim, kept) = (names[0].clone(), names[1].clone());
    let p = c.get_json(&["-n", ns, "pod", &kept]).unwrap();
    assert_eq!(
        kruise_ready(&p).0,
        "True",
        "the gate's condition starts True"
    );

    // preDelete: held in PreparingDelete, not Ready meanwhile.
    c.kubectl(&["-n", ns, "label", "pod", &victim, "hold=true"])
        .unwrap();
    patch(
        &c,
        ns,
        "hk",
        &json!({"spec": {"replicas": 1, "scaleStrategy": {"podsToDelete": [victim]}}}),
    );
    c.wait_for("the held pod out of service", LIMIT, |c| {
        let p = c.get_json(&["-n", ns, "pod", &victim])?;
        let (status, message) = kruise_ready(&p);
        Ok(
            (label_of(&p, "lifecycle.apps.kruise.io/state") == "PreparingDelete"
                && status == "False"
                && message.contains(r#"{"userAgent":"Lifecycle","key":"preDeleteHook"}"#)
                && !ready(&p))
            .then_some(()),
        )
    })
    .unwrap();
    c.kubectl(&["-n", ns, "label", "pod", &victim, "hold-"])
        .unwrap();
    c.wait_for("the released pod deleted", LIMIT, |c| {
        Ok((!pod_names(c, ns, "hk").contains(&victim)).then_some(()))
    })
    .unwrap();
    converged(&c, ns, "hk", 1);

    // inPlaceUpdate: held in PreparingUpdate out of service, then
    // updated in place and back in service.
    let before = identities(&c, ns, "hk")[&kept].clone();
    c.kubectl(&["-n", ns, "label", "pod", &kept, "upd=true"])
        .unwrap();
    patch(
        &c,
        ns,
        "hk",
        &json!({"spec": {"template": {"metadata": {"annotations": {"app-config": "v2"}}}}}),
    );
    c.wait_for(
        "the pod held before its update, out of service",
        LIMIT,
        |c| {
            let p = c.get_json(&["-n", ns, "pod", &kept])?;
            let (status, message) = kruise_ready(&p);
            Ok(
                (label_of(&p, "lifecycle.apps.kruise.io/state") == "PreparingUpdate"
                    && status == "False"
                    && message.contains(r#""key":"preUpdateHook""#)
                    && !ready(&p))
                .then_some(()),
            )
        },
    )
    .unwrap();
    for _ in 0..10 {
        let p = c.get_json(&["-n", ns, "pod", &kept]).unwrap();
        assert_eq!(
            p["metadata"]["annotations"]["app-config"], "v1",
            "not updated while held"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.kubectl(&["-n", ns, "label", "pod", &kept, "upd-"])
        .unwrap();
    c.wait_for("updated in place and back in service", LIMIT, |c| {
        let p = c.get_json(&["-n", ns, "pod", &kept])?;
        let (status, _) = kruise_ready(&p);
        Ok((label_of(&p, "lifecycle.apps.kruise.io/state") == "Updated"
            && p["metadata"]["annotations"]["app-config"] == "v2"
            && status == "True"
            && ready(&p))
        .then_some(()))
    })
    .unwrap();
    let after = identities(&c, ns, "hk")[&kept].clone();
    assert_eq!(after.0, before.0, "same pod");
    assert_eq!(after.2, before.2 + 1, "its container restarted once");
    // The hook labels back: Normal.
    c.kubectl(&["-n", ns, "label", "pod", &kept, "upd=true"])
        .unwrap();
    c.wait_for("Normal again", LIMIT, |c| {
        let p = c.get_json(&["-n", ns, "pod", &kept])?;
        Ok((label_of(&p, "lifecycle.apps.kruise.io/state") == "Normal").then_some(()))
    })
    .unwrap();
    converged(&c, ns, "hk", 1);
}
