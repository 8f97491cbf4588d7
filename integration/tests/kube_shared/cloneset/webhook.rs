//! Manifests the validating webhook refuses, with OpenKruise's messages.

use super::*;

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

#[test]
fn pods_to_delete_must_name_live_pods_of_the_cloneset() {
    let c = cluster();
    let guard = c.namespace("cloneset-podstodelete").unwrap();
    let ns = guard.name.as_str();
    c.apply_stdin(&cloneset(ns, "pd", 1, "    type: ReCreate\n", "v1"))
        .unwrap();
    converged(&c, ns, "pd", 1);
    c.apply_stdin(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: stray, namespace: {ns}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: main, image: {BUSYBOX}, imagePullPolicy: IfNotPresent, command: [sleep, '3600']}}]\n"
    ))
    .unwrap();
    let refused = |list: Value| -> String {
        let p = json!({"spec": {"scaleStrategy": {"podsToDelete": list}}}).to_string();
        let (ok, out, err) = c
            .kubectl_result(
                &[
                    "-n", ns, "patch", "cloneset", "pd", "--type", "merge", "-p", &p,
                ],
                None,
            )
            .unwrap();
        assert!(!ok, "accepted: {out}");
        err
    };
    let err = refused(json!(["nope"]));
    assert!(
        err.contains(r#"spec.scaleStrategy.podsToDelete: Invalid value: "nope": find pod nope failed: pods "nope" not found"#),
        "{err}"
    );
    let err = refused(json!(["stray"]));
    assert!(
        err.contains("find pod stray owner is not this CloneSet"),
        "{err}"
    );
    let own = pod_names(&c, ns, "pd")[0].clone();
    let err = refused(json!([own, own]));
    assert!(err.contains(&format!("duplicated items [{own}]")), "{err}");
    // Its own pod is accepted, and replaced.
    patch(
        &c,
        ns,
        "pd",
        &json!({"spec": {"scaleStrategy": {"podsToDelete": [own]}}}),
    );
    c.wait_for("the named pod replaced", LIMIT, |c| {
        let n = pod_names(c, ns, "pd");
        Ok((n.len() == 1 && !n.contains(&own)).then_some(()))
    })
    .unwrap();
}
