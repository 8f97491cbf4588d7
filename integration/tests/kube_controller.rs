//! keelson-controller installed from `deploy/` on the real single-node
//! cluster: its webhooks, called by the real kube-apiserver through the
//! shipped configurations (Service endpoints, caBundle written by the
//! controller), refuse bad ImagePullJobs, ImageListPullJobs and
//! ContainerRecreateRequests with OpenKruise's messages and store good ones
//! defaulted; an ImageListPullJob pulls every image through its jobs; and
//! a request with `unreadyGracePeriodSeconds` makes the pod not-ready (its
//! `KruisePodReady` gate) before the agent restarts, then releases it.
//! The kinds OpenKruise v1.9 stores as v1beta1 (Advanced DaemonSet,
//! ImagePullJob, ImageListPullJob, NodeImage) go through the controller's
//! conversion webhook: objects written in one version read back in the
//! other, field by field, including the fields only one version has.

use std::sync::Arc;
use std::time::Duration;

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster};
use keelson_integration::registry::Registry;
use serde_json::{Value, json};

fn cluster() -> Arc<Cluster> {
    kube::shared().expect("test cluster")
}

/// `kubectl apply` of `manifest`: Ok(stored object) or Err(kubectl's
/// error text).
fn apply(c: &Cluster, ns: &str, manifest: &Value) -> Result<Value, String> {
    let (ok, out, err) = c
        .kubectl_result(
            &["apply", "-n", ns, "-o", "json", "-f", "-"],
            Some(&manifest.to_string()),
        )
        .unwrap();
    if ok {
        Ok(serde_json::from_str(&out).unwrap())
    } else {
        Err(err)
    }
}

/// Pod `web` (one container `app` that sleeps) in `ns`, with `grace`
/// seconds to stop and `spec_extra` (YAML lines of its spec).
fn web_pod(c: &Cluster, ns: &str, grace: u32, spec_extra: &str) {
    c.apply_stdin(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: {grace}
{spec_extra}  containers:
  - {{name: app, image: {BUSYBOX}, command: ["sleep", "3600"]}}
"#
    ))
    .unwrap();
}

fn ready_pod(c: &Cluster, ns: &str, name: &str) -> Value {
    c.wait_pod_running(ns, name, Duration::from_secs(90))
        .unwrap()
}

#[test]
fn image_pull_jobs_are_defaulted_and_validated_by_the_shipped_webhooks() {
    let c = cluster();
    let ns = c.namespace("ipj-webhooks").unwrap();
    let job = |name: &str, extra: Value| {
        let mut spec = json!({"image": "nginx:1.25", "completionPolicy": {"type": "Always"}});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
            "metadata": {"name": name}, "spec": spec})
    };
    for (name, extra, message) in [
        (
            "both",
            json!({"selector": {"names": ["node-a"], "matchLabels": {"zone": "a"}}}),
            "can not set both names and labelSelector in this spec.selector",
        ),
        (
            "never",
            json!({"completionPolicy": {"type": "Never", "ttlSecondsAfterFinished": 60}}),
            "activeDeadlineSeconds and ttlSecondsAfterFinished can only work with Always CompletionPolicyType",
        ),
        (
            "short",
            json!({"completionPolicy": {"type": "Always", "activeDeadlineSeconds": 60}}),
            "completionPolicy.activeDeadlineSeconds must be greater than pullPolicy.timeoutSeconds(default 600)",
        ),
    ] {
        let err = apply(&c, &ns.name, &job(name, extra)).unwrap_err();
        assert!(
            err.contains(&format!(
                "admission webhook \"vimagepulljob.kb.io\" denied the request: {message}"
            )),
            "{name}: {err}"
        );
        assert!(c.get_json(&["-n", &ns.name, "imagepulljob", name]).is_err());
    }
    // A job as users write it is stored with OpenKruise's defaults.
    let created = apply(
        &c,
        &ns.name,
        &json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
            "metadata": {"name": "fine"},
            "spec": {"image": "nginx:1.25", "selector": {"matchLabels": {"zone": "a"}},
                "completionPolicy": {}}}),
    )
    .unwrap();
    let spec = &created["spec"];
    assert_eq!(spec["completionPolicy"]["type"], "Always", "{created}");
    assert_eq!(
        spec["pullPolicy"],
        json!({"timeoutSeconds": 600, "backoffLimit": 3})
    );
    assert_eq!(spec["imagePullPolicy"], "IfNotPresent");
    assert_eq!(spec["selector"]["matchLabels"]["zone"], "a");
    // The protection finalizer went on at creation (the controller drops
    // it again for a job with no pull-secret copies to release).
    let lists = |name: &str, images: Value| {
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImageListPullJob",
            "metadata": {"name": name}, "spec": {"images": images, "completionPolicy": {}}})
    };
    let err = apply(
        &c,
        &ns.name,
        &lists("twice", json!(["nginx:1.25", "nginx:1.25"])),
    )
    .unwrap_err();
    assert!(
        err.contains("admission webhook \"vimagelistpulljob.kb.io\" denied the request: images cannot have duplicate values"),
        "{err}"
    );
    let created = apply(
        &c,
        &ns.name,
        &lists("pair", json!(["nginx:1.25", "redis:7"])),
    )
    .unwrap();
    assert_eq!(created["spec"]["completionPolicy"]["type"], "Always");
    assert_eq!(
        created["spec"]["pullPolicy"],
        json!({"timeoutSeconds": 600, "backoffLimit": 3})
    );
}

#[test]
fn container_recreate_requests_are_checked_by_the_webhook() {
    let c = cluster();
    let ns = c.namespace("crr-webhook").unwrap();
    web_pod(&c, &ns.name, 1, "");
    let pod = ready_pod(&c, &ns.name, "web");
    let crr = |name: &str, container: &str| {
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequest",
            "metadata": {"name": name},
            "spec": {"podName": "web", "containers": [{"name": container}],
                "strategy": {"minStartedSeconds": 1}, "ttlSecondsAfterFinished": 600}})
    };
    let err = apply(&c, &ns.name, &crr("typo", "nope")).unwrap_err();
    assert!(err.contains("container nope not found in Pod"), "{err}");
    let created = apply(&c, &ns.name, &crr("restart-app", "app")).unwrap();
    let labels = &created["metadata"]["labels"];
    assert_eq!(
        labels["crr.apps.kruise.io/node-name"],
        kube::NODE,
        "{created}"
    );
    assert_eq!(labels["crr.apps.kruise.io/pod-uid"], pod["metadata"]["uid"]);
    assert_eq!(
        created["spec"]["containers"][0]["statusContext"]["containerID"],
        pod["status"]["containerStatuses"][0]["containerID"]
    );
    // The spec is immutable once created.
    let (ok, out, err) = c
        .kubectl_result(
            &[
                "-n",
                &ns.name,
                "patch",
                "crr",
                "restart-app",
                "--type=merge",
                "-p",
                r#"{"spec":{"activeDeadlineSeconds":30}}"#,
            ],
            None,
        )
        .unwrap();
    assert!(!ok, "{out}");
    assert!(err.contains("immutable"), "{err}");
}

#[test]
fn unready_grace_goes_through_the_controller_and_the_pod_gate_is_released() {
    let c = cluster();
    let ns = c.namespace("unready-grace").unwrap();
    web_pod(
        &c,
        &ns.name,
        2,
        "  readinessGates:\n  - conditionType: KruisePodReady\n",
    );
    let before = ready_pod(&c, &ns.name, "web");
    // What OpenKruise's pod readiness controller does for its pods; and a
    // condition another controller owns, which the CRR controller's pod
    // status writes must leave alone (as they must kubelet's and the
    // scheduler's).
    c.kubectl(&[
        "-n",
        &ns.name,
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=strategic",
        "-p",
        r#"{"status":{"conditions":[{"type":"KruisePodReady","status":"True"},{"type":"example.com/other","status":"True","reason":"Mine"}]}}"#,
    ])
    .unwrap();
    let others_kept = |pod: &Value, when: &str| {
        let types: Vec<&str> = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["type"].as_str())
            .collect();
        for want in ["PodScheduled", "Initialized", "example.com/other"] {
            assert!(
                types.contains(&want),
                "{when}: condition {want} lost: {}",
                pod["status"]["conditions"]
            );
        }
    };
    let gate = |c: &Cluster| -> keelson_integration::Result<Value> {
        let pod = c.get_json(&["-n", &ns.name, "pod", "web"])?;
        Ok(pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["type"] == "KruisePodReady")
            .cloned()
            .unwrap_or(Value::Null))
    };
    let ready = c
        .wait_pod_ready(&ns.name, "web", Duration::from_secs(60))
        .unwrap();
    others_kept(&ready, "before the request");
    apply(
        &c,
        &ns.name,
        &json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequest",
            "metadata": {"name": "restart-app"},
            "spec": {"podName": "web", "containers": [{"name": "app"}],
                "strategy": {"unreadyGracePeriodSeconds": 2, "terminationGracePeriodSeconds": 5,
                    "minStartedSeconds": 1},
                "ttlSecondsAfterFinished": 600}}),
    )
    .unwrap();
    // The controller makes the pod not-ready before anything stops.
    let held = c
        .wait_for("the pod made not-ready", Duration::from_secs(60), |c| {
            let g = gate(c)?;
            Ok((g["status"] == "False").then_some(g))
        })
        .unwrap();
    assert_eq!(
        held["message"],
        format!(
            r#"[{{"userAgent":"ContainerRecreateRequest","key":"{}/restart-app"}}]"#,
            ns.name
        )
    );
    others_kept(
        &c.get_json(&["-n", &ns.name, "pod", "web"]).unwrap(),
        "made not-ready",
    );
    let done = c
        .wait_for("the request completed", Duration::from_secs(120), |c| {
            let crr = c.get_json(&["-n", &ns.name, "crr", "restart-app"])?;
            Ok((crr["status"]["phase"] == "Completed").then_some(crr))
        })
        .unwrap();
    assert_eq!(
        done["status"]["containerRecreateStates"][0]["phase"], "Succeeded",
        "{done}"
    );
    assert!(
        done["metadata"]["annotations"]
            .get("crr.apps.kruise.io/unready-acquired")
            .is_some(),
        "{done}"
    );
    // Completed: the gate is released, the finalizer and active label go.
    c.wait_for("the pod released", Duration::from_secs(60), |c| {
        let crr = c.get_json(&["-n", &ns.name, "crr", "restart-app"])?;
        let released = gate(c)?["status"] == "True";
        let unheld = crr["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
        let inactive = crr["metadata"]["labels"]
            .get("crr.apps.kruise.io/active")
            .is_none();
        Ok((released && unheld && inactive).then_some(()))
    })
    .unwrap();
    let after = c.get_json(&["-n", &ns.name, "pod", "web"]).unwrap();
    others_kept(&after, "released");
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(
        after["status"]["containerStatuses"][0]["restartCount"],
        before["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap()
            + 1
    );
}

#[test]
fn an_image_list_pull_job_pulls_every_image_through_its_jobs() {
    let c = cluster();
    let ns = c.namespace("image-list").unwrap();
    let registry = Registry::start(None).unwrap();
    let layout = c.runtime().unwrap().images().layout("busybox");
    let images: Vec<String> = ["list/one:v1", "list/two:v1"]
        .iter()
        .map(|r| registry.push(&layout, BUSYBOX, r).unwrap())
        .collect();
    // A job made before the node's NodeImage exists targets no node.
    c.wait_for("NodeImage of the node", Duration::from_secs(120), |c| {
        Ok(c.get_json(&["nodeimage", kube::NODE]).ok().map(|_| ()))
    })
    .unwrap();
    apply(
        &c,
        &ns.name,
        &json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImageListPullJob",
            "metadata": {"name": "list"},
            "spec": {"images": images, "parallelism": 2, "completionPolicy": {"type": "Always"}}}),
    )
    .unwrap();
    let list = c
        .wait_for("the list completed", Duration::from_secs(120), |c| {
            let l = c.get_json(&["-n", &ns.name, "imagelistpulljob", "list"])?;
            Ok(l["status"].get("completionTime").map(|_| l.clone()))
        })
        .unwrap();
    let s = &list["status"];
    assert_eq!(
        (
            s["desired"].clone(),
            s["completed"].clone(),
            s["succeeded"].clone()
        ),
        (json!(2), json!(2), json!(2)),
        "{list}"
    );
    let jobs = c.get_json(&["-n", &ns.name, "imagepulljobs"]).unwrap();
    let jobs = jobs["items"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    for j in jobs {
        assert_eq!(
            j["metadata"]["ownerReferences"][0]["kind"],
            "ImageListPullJob"
        );
        assert_eq!(j["status"]["succeeded"], 1, "{j}");
    }
    let socket = c.runtime().unwrap().socket();
    let listed = c.crictl(&socket, &["images", "-o", "json"]).unwrap();
    for image in &images {
        assert!(listed.contains(image.as_str()), "{image} not in containerd");
    }
}

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

/// One permission the authorizer grants: (resource or non-resource URL,
/// resource name or "", verb).
type Grant = (String, String, String);

/// The grants in `kubectl auth can-i --list` output: one row per rule,
/// `Resources  [Non-Resource URLs]  [Resource Names]  [Verbs]`, the first
/// column empty for non-resource URLs.
fn grants_of_can_i(out: &str) -> std::collections::BTreeSet<Grant> {
    let mut set = std::collections::BTreeSet::new();
    for line in out.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let resource = if line.starts_with(char::is_whitespace) {
            ""
        } else {
            line.split_whitespace().next().unwrap_or("")
        };
        let rest = &line[resource.len()..];
        let groups: Vec<Vec<&str>> = rest
            .split('[')
            .skip(1)
            .map(|g| {
                g.split(']')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect()
            })
            .collect();
        let [urls, names, verbs] = groups.as_slice() else {
            panic!("unexpected `auth can-i --list` row: {line:?}");
        };
        let subjects: Vec<&str> = if resource.is_empty() {
            urls.clone()
        } else {
            vec![resource]
        };
        let names = if names.is_empty() {
            vec![""]
        } else {
            names.clone()
        };
        for s in &subjects {
            for n in &names {
                for v in verbs {
                    set.insert((s.to_string(), n.to_string(), v.to_string()));
                }
            }
        }
    }
    set
}

/// The grants of an expectation section: `resource[name]: verb verb…`
/// per line (`[name]` absent when not narrowed by name), `#` comments.
fn grants_of_expectation(text: &str) -> std::collections::BTreeSet<Grant> {
    let mut set = std::collections::BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (subject, verbs) = line
            .rsplit_once(": ")
            .unwrap_or_else(|| panic!("expectation line without `: verbs`: {line:?}"));
        let (resource, name) = match subject.strip_suffix(']').and_then(|s| s.split_once('[')) {
            Some((r, n)) => (r, n),
            None => (subject, ""),
        };
        for v in verbs.split_whitespace() {
            set.insert((resource.to_string(), name.to_string(), v.to_string()));
        }
    }
    set
}

/// `grants` in the expectation format, one line per resource and name.
fn expectation_lines(grants: &std::collections::BTreeSet<Grant>) -> String {
    let mut by: std::collections::BTreeMap<(&str, &str), Vec<&str>> = Default::default();
    for (r, n, v) in grants {
        by.entry((r, n)).or_default().push(v);
    }
    by.into_iter()
        .map(|((r, n), vs)| {
            let name = if n.is_empty() {
                String::new()
            } else {
                format!("[{n}]")
            };
            format!("{r}{name}: {}\n", vs.join(" "))
        })
        .collect()
}

/// The sections of an expectation file: `[cluster]` (what the ServiceAccount
/// may do in a namespace where no Role binds it) and `[<namespace>]` (what
/// a Role adds there).
fn expectation_sections(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut out: std::collections::BTreeMap<String, String> = Default::default();
    let mut current = None;
    for line in text.lines() {
        if let Some(s) = line
            .trim()
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
        {
            current = Some(s.to_string());
            out.entry(s.to_string()).or_default();
        } else if let Some(s) = &current {
            let body = out.get_mut(s).unwrap();
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

type Grants = std::collections::BTreeSet<Grant>;

/// The namespaces the expectation files have a section for, besides
/// `[cluster]` (checked in `default`, where no Role of ours binds).
const RBAC_NAMESPACES: [&str; 2] = ["keelson-system", "kruise-daemon-config"];

/// The expectation of `sa` from deploy/rbac/expected/: `<sa>.txt` plus
/// `<sa>.<dir>.txt` of each optional role in `optional`, by section.
fn rbac_expectation(sa: &str, optional: &[&str]) -> std::collections::BTreeMap<String, Grants> {
    let dir = kube::install::deploy_dir().join("rbac").join("expected");
    let mut files = vec![dir.join(format!("{sa}.txt"))];
    files.extend(
        optional
            .iter()
            .map(|d| dir.join(format!("{sa}.{d}.txt")))
            .filter(|f| f.exists()),
    );
    let mut expected: std::collections::BTreeMap<String, Grants> = Default::default();
    for f in files {
        let text =
            std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        for (section, body) in expectation_sections(&text) {
            expected
                .entry(section)
                .or_default()
                .extend(grants_of_expectation(&body));
        }
    }
    let unknown: Vec<_> = expected
        .keys()
        .filter(|s| *s != "cluster" && !RBAC_NAMESPACES.contains(&s.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "{sa}: sections never checked: {unknown:?}"
    );
    expected
}

/// What the real authorizer lets `sa` do in `ns`.
fn can_i_list(c: &Cluster, sa: &str, ns: &str) -> Grants {
    grants_of_can_i(
        &c.kubectl(&[
            "auth",
            "can-i",
            "--list",
            "-n",
            ns,
            &format!("--as=system:serviceaccount:keelson-system:{sa}"),
        ])
        .unwrap(),
    )
}

/// Compares what `sa` may do with `expected`; the differences as text
/// (empty when none). In a namespace section, the expectation is
/// `[cluster]` plus that section; a difference already reported for
/// `[cluster]` is not repeated. Writes the authorizer's answer, in the
/// expectation format, to a temp file named in the output.
fn rbac_differences(
    c: &Cluster,
    sa: &str,
    expected: &std::collections::BTreeMap<String, Grants>,
    label: &str,
) -> String {
    let cluster_want = expected.get("cluster").cloned().unwrap_or_default();
    let cluster_got = can_i_list(c, sa, "default");
    let mut report = String::new();
    let mut answer = format!("[cluster]\n{}", expectation_lines(&cluster_got));
    let mut diff = |section: &str, want: &Grants, got: &Grants, skip: &Grants| {
        let extra: Grants = got
            .difference(want)
            .filter(|g| !skip.contains(*g))
            .cloned()
            .collect();
        let missing: Grants = want
            .difference(got)
            .filter(|g| !skip.contains(*g))
            .cloned()
            .collect();
        if extra.is_empty() && missing.is_empty() {
            return;
        }
        report.push_str(&format!("{sa} ({label}) in [{section}]:\n"));
        for l in expectation_lines(&extra).lines() {
            report.push_str(&format!("  + {l}   (granted, not expected)\n"));
        }
        for l in expectation_lines(&missing).lines() {
            report.push_str(&format!("  - {l}   (expected, not granted)\n"));
        }
    };
    diff("cluster", &cluster_want, &cluster_got, &Grants::new());
    let reported: Grants = cluster_got
        .symmetric_difference(&cluster_want)
        .cloned()
        .collect();
    for ns in RBAC_NAMESPACES {
        let mut want = cluster_want.clone();
        want.extend(expected.get(ns).cloned().unwrap_or_default());
        let got = can_i_list(c, sa, ns);
        answer.push_str(&format!(
            "\n[{ns}]\n{}",
            expectation_lines(&got.difference(&cluster_got).cloned().collect())
        ));
        diff(ns, &want, &got, &reported);
    }
    let out = std::env::temp_dir().join(format!("keelson-rbac-{sa}-{label}.txt"));
    std::fs::write(&out, &answer).unwrap();
    eprintln!("{sa} ({label}): the authorizer's answer: {}", out.display());
    report
}

/// Polls until `done` or 30 s.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !done() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The optional roles the test cluster's gates bind
/// (deploy/rbac/optional/<dir>), re-applied when dropped.
struct OptionalRoles<'a> {
    c: &'a Cluster,
    dirs: Vec<&'static str>,
}

impl OptionalRoles<'_> {
    fn binding(dir: &str) -> String {
        format!("clusterrolebinding/keelson-controller-{dir}")
    }

    fn bound(&self, dir: &str) -> bool {
        self.c
            .kubectl_result(&["get", &Self::binding(dir)], None)
            .unwrap()
            .0
    }

    fn restore(&self) {
        for d in &self.dirs {
            let path = kube::install::deploy_dir().join("rbac/optional").join(d);
            let _ = self
                .c
                .kubectl(&["apply", "-k", &path.display().to_string()]);
        }
    }
}

impl Drop for OptionalRoles<'_> {
    fn drop(&mut self) {
        self.restore();
    }
}

#[test]
fn service_accounts_may_do_exactly_what_deploy_rbac_expected_lists() {
    let c = cluster();
    // What the test cluster's gates add from deploy/rbac/optional/.
    let optional: Vec<&'static str> = kube::install::OPTIONAL_RBAC
        .iter()
        .filter(|(gate, _)| kube::DEFAULT_GATES.contains(&format!("{gate}=true")))
        .map(|(_, d)| *d)
        .collect();
    assert!(
        optional.contains(&"resource-distribution"),
        "the test cluster runs ResourceDistribution: its role is bound"
    );
    let mut report = String::new();
    // The test install: base + the optional roles of its gates.
    for sa in ["keelson-agent", "keelson-controller"] {
        report.push_str(&rbac_differences(
            &c,
            sa,
            &rbac_expectation(sa, &optional),
            "test install",
        ));
    }
    // The base alone (`kubectl apply -k deploy/`): the optional bindings
    // dropped for the while (nothing else in this binary uses them), then
    // put back.
    let roles = OptionalRoles {
        c: &c,
        dirs: optional.clone(),
    };
    for d in &roles.dirs {
        c.kubectl(&["delete", &OptionalRoles::binding(d)]).unwrap();
    }
    until(
        "the optional bindings to be gone from the authorizer",
        || {
            !can_i_list(&c, "keelson-controller", "default")
                .iter()
                .any(|(r, _, _)| r.starts_with("resourcedistributions."))
        },
    );
    let base_expected = rbac_expectation("keelson-controller", &[]);
    report.push_str(&rbac_differences(
        &c,
        "keelson-controller",
        &base_expected,
        "base",
    ));
    roles.restore();
    assert!(roles.dirs.iter().all(|d| roles.bound(d)));
    until("the optional bindings back in the authorizer", || {
        can_i_list(&c, "keelson-controller", "default")
            .iter()
            .any(|(r, _, _)| r.starts_with("resourcedistributions."))
    });
    assert!(
        report.is_empty(),
        "the real authorizer's answer differs from deploy/rbac/expected/ (optional roles of the test cluster: {optional:?}):\n{report}"
    );
    // The base writes Secrets nowhere but kruise-daemon-config and its own
    // certificate Secret (made once in keelson-system).
    let writes = |section: &str| -> Vec<Grant> {
        base_expected
            .get(section)
            .into_iter()
            .flatten()
            .filter(|(r, _, v)| r == "secrets" && !["get", "list", "watch"].contains(&v.as_str()))
            .cloned()
            .collect()
    };
    assert!(writes("cluster").is_empty(), "{:?}", writes("cluster"));
    // Every CRD shipped with a conversion webhook gets its caBundle from
    // the controller: exactly those may it update.
    let controller_crds: std::collections::BTreeSet<String> = base_expected["cluster"]
        .iter()
        .filter(|(r, _, v)| r == "customresourcedefinitions.apiextensions.k8s.io" && v == "update")
        .map(|(_, n, _)| n.clone())
        .collect();
    let mut converted = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(kube::install::deploy_dir().join("crds")).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("strategy: Webhook") {
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("  name: "))
                .unwrap_or_else(|| panic!("{}: no metadata.name", path.display()));
            converted.insert(name.trim().to_string());
        }
    }
    assert!(
        !converted.is_empty(),
        "no CRD in deploy/crds has a conversion webhook"
    );
    assert_eq!(
        controller_crds, converted,
        "the controller may update exactly the CRDs whose conversion webhook it injects the CA into"
    );
}
