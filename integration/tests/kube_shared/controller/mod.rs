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

use std::time::Duration;

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster};
use keelson_integration::registry::Registry;
use serde_json::{Value, json};

mod conversion;
mod rbac;

fn cluster() -> kube::Turn {
    kube::shared_in(module_path!()).expect("test cluster")
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
