//! Conversion between OpenKruise v1.9's versions through the real
//! apiserver and the controller's `/convert` webhook, field by field.

use super::*;

/// `kind` in `version`, qualified for kubectl (`daemonsets.v1beta1.apps.kruise.io`).
fn at(plural: &str, version: &str) -> String {
    format!("{plural}.{version}.apps.kruise.io")
}

/// `obj` without the fields named by JSON pointers in `drop`.
fn without(obj: &Value, drop: &[&str]) -> Value {
    let mut out = obj.clone();
    for path in drop {
        let (parent, key) = path.rsplit_once('/').unwrap();
        if let Some(m) = out.pointer_mut(parent).and_then(Value::as_object_mut) {
            m.remove(key);
        }
    }
    out
}

/// The object read in both versions once `ready` holds for the v1beta1
/// read and the two reads describe the same state (same
/// resourceVersion): (v1alpha1, v1beta1).
fn both_versions(
    c: &Cluster,
    ns: Option<&str>,
    plural: &str,
    name: &str,
    ready: impl Fn(&Value) -> bool,
) -> (Value, Value) {
    c.wait_for(
        &format!("{plural}/{name} in both versions"),
        Duration::from_secs(60),
        |c| {
            let get = |version: &str| {
                let kind = at(plural, version);
                let mut args = vec![kind.as_str(), name];
                if let Some(ns) = ns {
                    args.extend(["-n", ns]);
                }
                c.get_json(&args)
            };
            let (alpha, beta) = (get("v1alpha1")?, get("v1beta1")?);
            assert_eq!(alpha["apiVersion"], "apps.kruise.io/v1alpha1");
            assert_eq!(beta["apiVersion"], "apps.kruise.io/v1beta1");
            let same = alpha["metadata"]["resourceVersion"] == beta["metadata"]["resourceVersion"];
            Ok((same && ready(&beta)).then_some((alpha, beta)))
        },
    )
    .unwrap()
}

/// The CRD stores `plural` as v1beta1 and names the conversion webhook.
fn stored_as_v1beta1(c: &Cluster, plural: &str) {
    let crd = c
        .get_json(&["crd", &format!("{plural}.apps.kruise.io")])
        .unwrap();
    assert_eq!(
        crd["status"]["storedVersions"],
        json!(["v1beta1"]),
        "{plural}"
    );
    assert_eq!(crd["spec"]["conversion"]["strategy"], "Webhook", "{plural}");
    let mut served: Vec<&str> = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["served"] == true)
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    served.sort_unstable();
    assert_eq!(served, ["v1alpha1", "v1beta1"], "{plural}");
}

#[test]
fn advanced_daemonsets_convert_between_versions_field_by_field() {
    let c = cluster();
    stored_as_v1beta1(&c, "daemonsets");
    let ns = c.namespace("ads-versions").unwrap();
    let ns = ns.name.as_str();
    let spec = |name: &str| {
        json!({
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"nodeSelector": {"keelson.io/no-such-node": "x"},
                    "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {
                "rollingUpdateType": "InPlaceIfPossible", "maxUnavailable": "50%",
                "partition": 1, "paused": true,
                "selector": {"matchLabels": {"pool": "canary"}}}},
            "minReadySeconds": 7,
            "burstReplicas": "20%",
            "revisionHistoryLimit": 4,
            "lifecycle": {"preDelete": {"labelsHandler": {"example.com/drain": "true"}}},
        })
    };
    // Written as v1alpha1 with the progressive-create annotation.
    apply(
        &c,
        ns,
        &json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "DaemonSet",
            "metadata": {"name": "alpha", "annotations": {
                "daemonset.kruise.io/progressive-create-pod": "true", "team": "a"}},
            "spec": spec("alpha")}),
    )
    .unwrap();
    // The controller (on v1beta1) writes the status: read both ways.
    let (a, b) = both_versions(&c, Some(ns), "daemonsets", "alpha", |b| {
        b["status"]["updateRevision"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
            && b["status"]["observedGeneration"] == b["metadata"]["generation"]
    });
    assert_eq!(
        b["spec"]["scaleStrategy"],
        json!({"partitionedScaling": true})
    );
    assert!(a["spec"].get("scaleStrategy").is_none(), "{a}");
    assert_eq!(b["metadata"]["annotations"], a["metadata"]["annotations"]);
    assert_eq!(
        a["metadata"]["annotations"]["daemonset.kruise.io/progressive-create-pod"],
        "true"
    );
    // Every other spec field is the same, as written (and defaulted).
    assert_eq!(without(&b["spec"], &["/scaleStrategy"]), a["spec"]);
    for (path, want) in [
        ("/spec/minReadySeconds", json!(7)),
        ("/spec/burstReplicas", json!("20%")),
        ("/spec/revisionHistoryLimit", json!(4)),
        (
            "/spec/updateStrategy/rollingUpdate/maxUnavailable",
            json!("50%"),
        ),
        ("/spec/updateStrategy/rollingUpdate/partition", json!(1)),
        ("/spec/updateStrategy/rollingUpdate/paused", json!(true)),
        (
            "/spec/updateStrategy/rollingUpdate/rollingUpdateType",
            json!("InPlaceIfPossible"),
        ),
        (
            "/spec/updateStrategy/rollingUpdate/selector/matchLabels/pool",
            json!("canary"),
        ),
        (
            "/spec/lifecycle/preDelete/labelsHandler/example.com~1drain",
            json!("true"),
        ),
    ] {
        assert_eq!(b.pointer(path), Some(&want), "{path}: {b}");
    }
    // Status: updateRevision is v1alpha1's daemonSetHash, the rest as is.
    assert_eq!(a["status"]["daemonSetHash"], b["status"]["updateRevision"]);
    assert!(a["status"].get("updateRevision").is_none());
    assert!(b["status"].get("daemonSetHash").is_none());
    assert_eq!(
        without(&b["status"], &["/updateRevision"]),
        without(&a["status"], &["/daemonSetHash"])
    );
    assert_eq!(b["status"]["desiredNumberScheduled"], 0, "no node fits");

    // Written as v1beta1 with partitionedScaling: v1alpha1 readers see
    // the annotation instead.
    let mut beta_spec = spec("beta");
    beta_spec["scaleStrategy"] = json!({"partitionedScaling": true});
    apply(
        &c,
        ns,
        &json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "DaemonSet",
            "metadata": {"name": "beta"}, "spec": beta_spec}),
    )
    .unwrap();
    let (a, b) = both_versions(&c, Some(ns), "daemonsets", "beta", |b| {
        b["status"]["updateRevision"].is_string()
    });
    assert_eq!(
        b["spec"]["scaleStrategy"],
        json!({"partitionedScaling": true})
    );
    assert!(
        b["metadata"]["annotations"]
            .get("daemonset.kruise.io/progressive-create-pod")
            .is_none(),
        "stored without the annotation: {b}"
    );
    assert_eq!(
        a["metadata"]["annotations"]["daemonset.kruise.io/progressive-create-pod"],
        "true"
    );
    assert_eq!(without(&b["spec"], &["/scaleStrategy"]), a["spec"]);
    assert_eq!(a["status"]["daemonSetHash"], b["status"]["updateRevision"]);

    // v1beta1 has no Surging: refused there, defaulted in v1alpha1.
    let mut surging = spec("surging");
    surging["updateStrategy"] = json!({"rollingUpdate": {"rollingUpdateType": "Surging"}});
    let manifest = |version: &str| {
        json!({"apiVersion": format!("apps.kruise.io/{version}"), "kind": "DaemonSet",
            "metadata": {"name": "surging"}, "spec": surging})
    };
    let err = apply(&c, ns, &manifest("v1beta1")).unwrap_err();
    assert!(
        err.contains(
            "Unsupported value: \"Surging\": supported values: \"Standard\", \"InPlaceIfPossible\""
        ),
        "{err}"
    );
    let created = apply(&c, ns, &manifest("v1alpha1")).unwrap();
    assert_eq!(
        created["spec"]["updateStrategy"]["rollingUpdate"],
        json!({"rollingUpdateType": "Standard", "maxSurge": 1, "maxUnavailable": 0})
    );
}

#[test]
fn image_kinds_convert_between_versions_field_by_field() {
    let c = cluster();
    for plural in ["imagepulljobs", "imagelistpulljobs", "nodeimages"] {
        stored_as_v1beta1(&c, plural);
    }
    let ns = c.namespace("image-versions").unwrap();
    let ns = ns.name.as_str();
    let template = json!({
        "pullSecrets": ["regcred"],
        "selector": {"matchLabels": {"keelson.io/no-such-node": "x"}},
        "parallelism": "50%",
        "pullPolicy": {"timeoutSeconds": 120, "backoffLimit": 2},
        "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 1200,
            "ttlSecondsAfterFinished": 3600},
        "sandboxConfig": {"labels": {"a": "b"}, "annotations": {"c": "d"}},
    });
    for (kind, plural, key, value) in [
        ("ImagePullJob", "imagepulljobs", "image", json!(BUSYBOX)),
        (
            "ImageListPullJob",
            "imagelistpulljobs",
            "images",
            json!([BUSYBOX, "redis:7"]),
        ),
    ] {
        for (written, name) in [("v1alpha1", "from-alpha"), ("v1beta1", "from-beta")] {
            let mut spec = template.clone();
            spec[key] = value.clone();
            if kind == "ImagePullJob" {
                spec["imagePullPolicy"] = json!("Always");
            }
            apply(
                &c,
                ns,
                &json!({"apiVersion": format!("apps.kruise.io/{written}"), "kind": kind,
                    "metadata": {"name": name, "labels": {"team": "a"}}, "spec": spec}),
            )
            .unwrap();
            // Read back in both versions once the controller has written
            // the job's status.
            let (a, b) = both_versions(&c, Some(ns), plural, name, |b| {
                b["status"]["startTime"].is_string()
            });
            assert_eq!(a["spec"], b["spec"], "{kind} written as {written}");
            assert_eq!(a["status"], b["status"], "{kind} written as {written}");
            assert_eq!(a["metadata"]["labels"], b["metadata"]["labels"]);
            for (path, want) in [
                (format!("/spec/{key}"), value.clone()),
                ("/spec/pullSecrets".into(), json!(["regcred"])),
                ("/spec/parallelism".into(), json!("50%")),
                (
                    "/spec/pullPolicy".into(),
                    json!({"timeoutSeconds": 120, "backoffLimit": 2}),
                ),
                (
                    "/spec/completionPolicy/activeDeadlineSeconds".into(),
                    json!(1200),
                ),
                (
                    "/spec/completionPolicy/ttlSecondsAfterFinished".into(),
                    json!(3600),
                ),
                ("/spec/sandboxConfig/annotations/c".into(), json!("d")),
                (
                    "/spec/selector/matchLabels/keelson.io~1no-such-node".into(),
                    json!("x"),
                ),
            ] {
                assert_eq!(b.pointer(&path), Some(&want), "{kind} {path}: {b}");
            }
        }
    }

    // NodeImage (cluster-scoped; no Node behind it, kept by the fake
    // label). Written as v1beta1 with a v1beta1-only secret mode.
    let node_image = |name: &str, version: &str, mode: Option<&str>| {
        let mut secret = json!({"namespace": "kruise-daemon-config", "name": "regcred"});
        if let Some(m) = mode {
            secret["mode"] = json!(m);
        }
        json!({"apiVersion": format!("apps.kruise.io/{version}"), "kind": "NodeImage",
            "metadata": {"name": name, "labels": {"apps.kruise.io/fake-nodeimage": "true"}},
            "spec": {"images": {"docker.io/library/redis": {
                "pullSecrets": [secret],
                "sandboxConfig": {"labels": {"a": "b"}},
                "tags": [{"tag": "7", "version": 2, "createdAt": "2024-01-01T00:00:00Z",
                    "imagePullPolicy": "Always",
                    "pullPolicy": {"timeoutSeconds": 60, "backoffLimit": 1,
                        "ttlSecondsAfterFinished": 2000000000, "activeDeadlineSeconds": 86400},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
                        "namespace": ns, "name": "keeps-the-tag"}]}]}}}})
    };
    let _beta = c.deleting("nodeimage", "keelson-conv-beta");
    let _alpha = c.deleting("nodeimage", "keelson-conv-alpha");
    c.apply_stdin(&node_image("keelson-conv-beta", "v1beta1", Some("batch")).to_string())
        .unwrap();
    let (a, b) = both_versions(&c, None, "nodeimages", "keelson-conv-beta", |_| true);
    let image = "/spec/images/docker.io~1library~1redis";
    assert_eq!(
        b.pointer(&format!("{image}/pullSecrets/0/mode")),
        Some(&json!("batch"))
    );
    assert_eq!(
        a.pointer(&format!("{image}/pullSecrets")),
        Some(&json!([{"namespace": "kruise-daemon-config", "name": "regcred"}])),
        "v1alpha1 has no mode"
    );
    assert_eq!(
        without(
            &b["spec"],
            &["/images/docker.io~1library~1redis/pullSecrets/0/mode"]
        ),
        a["spec"]
    );
    // A status written in the stored version (as the agent writes it)
    // reads back in both versions, field by field, and keeps the mode.
    let status = |message: &str| {
        json!({"status": {"desired": 1, "succeeded": 1, "failed": 0, "pulling": 0,
        "waiting": 0,
        "imageStatuses": {"docker.io/library/redis": {"tags": [{"tag": "7",
            "phase": "Succeeded", "progress": 100, "version": 2, "imageID": "sha256:abc",
            "message": message, "startTime": "2024-01-01T00:00:01Z",
            "completionTime": "2024-01-01T00:00:09Z"}]}},
        "firstSyncStatus": {"syncAt": "2024-01-01T00:00:10Z", "status": "Succeeded",
            "message": "done"}}})
    };
    let write_status = |version: &str, message: &str| {
        c.kubectl(&[
            "patch",
            &at("nodeimages", version),
            "keelson-conv-beta",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status(message).to_string(),
        ])
        .unwrap();
        both_versions(&c, None, "nodeimages", "keelson-conv-beta", |b| {
            b.pointer("/status/imageStatuses/docker.io~1library~1redis/tags/0/message")
                == Some(&json!(message))
        })
    };
    let (a, b) = write_status("v1beta1", "pulled");
    assert_eq!(b["status"], status("pulled")["status"]);
    assert_eq!(a["status"], status("pulled")["status"]);
    assert_eq!(
        b.pointer(&format!("{image}/pullSecrets/0/mode")),
        Some(&json!("batch")),
        "a write in the stored version keeps the v1beta1-only field"
    );
    // Written through v1alpha1 (an older client), the status reads back
    // the same as v1beta1; the API server decodes the stored object into
    // the writer's version first, so the field v1alpha1 lacks is lost:
    // why the agent and the controller write in the stored version.
    let (a, b) = write_status("v1alpha1", "pulled again");
    assert_eq!(b["status"], status("pulled again")["status"]);
    assert_eq!(a["status"], b["status"]);
    assert_eq!(b.pointer(&format!("{image}/pullSecrets/0/mode")), None);

    // Written as v1alpha1: the same spec as v1beta1, no mode.
    c.apply_stdin(&node_image("keelson-conv-alpha", "v1alpha1", None).to_string())
        .unwrap();
    let (a, b) = both_versions(&c, None, "nodeimages", "keelson-conv-alpha", |_| true);
    assert_eq!(a["spec"], b["spec"]);
    assert_eq!(
        b.pointer(&format!("{image}/tags/0")),
        node_image("x", "v1alpha1", None).pointer(&format!("{image}/tags/0"))
    );
}
