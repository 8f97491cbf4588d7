//! The delegation path end to end, with both real binaries: an
//! ImagePullJob is written to the (stand-in) API server; `keelson-controller`
//! makes the Node's NodeImage, copies the job's pull secret into
//! `kruise-daemon-config` and writes the NodeImage entry; `keelson-agent`
//! (cluster mode, real containerd) pulls from a real registry with that
//! secret and reports; the controller aggregates the job's status, then
//! releases the secret copy. The API server is the in-memory stand-in
//! (no kube-apiserver exists on this machine).

mod common;

use base64::Engine;
use common::*;
use cri_proto as cri;
use keelson_integration::api_stand_in::{
    ApiStandIn, CRRS, IMAGE_PULL_JOBS, Kind, NODE_IMAGES, NODES, PODS, SECRETS,
};
use keelson_integration::controller::Controller;
use keelson_integration::images::BUSYBOX;
use keelson_integration::registry::{Credentials, Registry};
use serde_json::{Value, json};

/// The body of a plain HTTP GET.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
}

/// What a timed-out wait shows: both logs and the requests the stand-in
/// served.
fn logs<'a>(
    node: &'a Node,
    controller: &'a Controller,
    api: &'a ApiStandIn,
) -> impl Fn() -> String + 'a {
    move || {
        format!(
            "controller log:\n{}\nagent log:\n{}\nrequests:\n{:#?}",
            controller.log_text(),
            node.agent.log_text(),
            api.requests()
        )
    }
}

/// Node node-a (the agent's), Ready since 2020, with `labels`.
fn ready_node(api: &ApiStandIn, labels: Value) {
    api.put(
        NODES,
        json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-a", "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2020-01-01T00:00:00Z"}]}}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pull_job_is_carried_out_by_the_node_and_reported() {
    let (node, api, dir) = cluster_node().await;
    let registry = Registry::start(Some(Credentials {
        username: "keelson".into(),
        password: "s3cret".into(),
    }))
    .unwrap();
    registry
        .push(
            &node.containerd.images().layout("busybox"),
            BUSYBOX,
            "team/app:v1",
        )
        .unwrap();
    let host = registry.host();
    let auth = base64::engine::general_purpose::STANDARD.encode("keelson:s3cret");
    let config = json!({"auths": {&host: {"auth": auth}}}).to_string();
    // The cluster: one Ready node, the job's pull secret in its namespace.
    ready_node(&api, json!({"zone": "a"}));
    api.put(
        SECRETS,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "regcred", "namespace": "team"},
            "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(&config)}}),
    );
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let controller = Controller::start(
        &kubeconfig(&dir),
        &[
            "--feature-gates",
            "ImagePullJobGate=true",
            "--nodeimage-creation-delay-seconds",
            "0",
            "--metrics-addr",
            &metrics_addr,
        ],
    )
    .unwrap();
    until(
        "the controller made the NodeImage",
        logs(&node, &controller, &api),
        || {
            let n = api.get(NODE_IMAGES, "", "node-a")?;
            (n["metadata"]["labels"]["zone"] == "a").then_some(())
        },
    )
    .await;

    let image = format!("{host}/team/app:v1");
    api.put(
        IMAGE_PULL_JOBS,
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
            "metadata": {"name": "job", "namespace": "team"},
            "spec": {"image": image, "pullSecrets": ["regcred"], "parallelism": 1,
                "completionPolicy": {"type": "Always"},
                "pullPolicy": {"timeoutSeconds": 60, "backoffLimit": 1}}}),
    );
    let job = until("the job completed", logs(&node, &controller, &api), || {
        let j = api.get(IMAGE_PULL_JOBS, "team", "job")?;
        j["status"].get("completionTime").map(|_| j.clone())
    })
    .await;
    let status = &job["status"];
    assert_eq!(
        (status["desired"].clone(), status["succeeded"].clone()),
        (json!(1), json!(1)),
        "{job}"
    );
    assert_eq!(status["message"], "job has completed");

    // The entry the node pulled named the copy, not the source.
    let n = api.get(NODE_IMAGES, "", "node-a").unwrap();
    let entry = n["spec"]["images"][format!("{host}/team/app")].clone();
    let secret_ref = entry["pullSecrets"][0].clone();
    assert_eq!(secret_ref["namespace"], "kruise-daemon-config", "{entry}");
    assert!(
        secret_ref["name"].as_str().unwrap().starts_with("regcred-"),
        "{entry}"
    );
    assert_eq!(entry["tags"][0]["ownerReferences"][0]["name"], "job");
    let tag_status = &n["status"]["imageStatuses"][format!("{host}/team/app")]["tags"][0];
    assert_eq!(tag_status["phase"], "Succeeded", "{n}");
    // The agent read the copy, never the source.
    let secret_reads: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/namespaces/") && r.contains("/secrets/"))
        .filter(|r| !r.contains("keelson-webhook-certs"))
        .collect();
    assert!(
        secret_reads
            .iter()
            .any(|r| r.contains("/kruise-daemon-config/secrets/regcred-")),
        "{secret_reads:?}"
    );

    // Finished: the copy is released and the job let go of.
    let copy = secret_ref["name"].as_str().unwrap().to_string();
    until(
        "the copy was released",
        logs(&node, &controller, &api),
        || {
            let gone = api.get(SECRETS, "kruise-daemon-config", &copy).is_none();
            let j = api.get(IMAGE_PULL_JOBS, "team", "job")?;
            let unheld = j["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
            (gone && unheld).then_some(())
        },
    )
    .await;

    // The image is on the node.
    let listed = node
        .direct()
        .await
        .images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.images.iter().any(|i| i.repo_tags.contains(&image)),
        "{image} not in containerd"
    );
    // The reconciles are counted.
    let metrics = http_get(&metrics_addr, "/metrics");
    let ok = |c: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "keelson_controller_reconciles_total{{controller=\"{c}\",result=\"ok\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(ok("imagepulljob") > 0 && ok("nodeimage") > 0, "{metrics}");
    assert!(metrics.contains("keelson_controller_leader 1"), "{metrics}");
    assert_eq!(
        http_get(&metrics_addr, "/readyz"),
        "ok\n",
        "ready: API reachable and webhooks served"
    );
    // The webhook's certificate was made and stored once.
    let certs: Vec<Value> = api.list(SECRETS, "keelson-system");
    assert_eq!(certs.len(), 1);
    assert!(certs[0]["data"].get("ca-cert.pem").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unready_grace_goes_through_the_controller_and_the_pod_gate_is_released() {
    let (node, api, dir) = cluster_node().await;
    let w = web_pod(&node, &api).await;
    // The pod has OpenKruise's readiness gate, and is Ready.
    let mut pod = api.get(PODS, &w.namespace, &w.name).unwrap();
    pod["spec"]["readinessGates"] = json!([{"conditionType": "KruisePodReady"}]);
    pod["status"]["conditions"] = json!([
        {"type": "KruisePodReady", "status": "True"},
        {"type": "ContainersReady", "status": "True"},
        {"type": "Ready", "status": "True"}]);
    api.put(PODS, pod);
    let controller = Controller::start(&kubeconfig(&dir), &[]).unwrap();
    let (old_id, _, old_attempt) = w.snapshot()["app"].clone();
    api.put(
        CRRS,
        recreate_app(
            &w,
            json!({"unreadyGracePeriodSeconds": 1, "terminationGracePeriodSeconds": 5}),
        ),
    );
    let gate = |api: &ApiStandIn| -> Value {
        let p = api.get(PODS, &w.namespace, &w.name).unwrap();
        p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "KruisePodReady")
            .cloned()
            .unwrap_or(Value::Null)
    };
    // The controller makes the pod not-ready before anything stops.
    let held = until(
        "the pod made not-ready",
        logs(&node, &controller, &api),
        || {
            publish_pod(&api, &w);
            let g = gate(&api);
            (g["status"] == "False").then_some(g)
        },
    )
    .await;
    assert_eq!(
        held["message"],
        format!(
            r#"[{{"userAgent":"ContainerRecreateRequest","key":"{}/restart-app"}}]"#,
            w.namespace
        )
    );
    let crr = api.get(CRRS, &w.namespace, "restart-app").unwrap();
    assert!(
        crr["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "crr.apps.kruise.io/unready-acquired")),
        "{crr}"
    );
    let done = until(
        "the request completed",
        logs(&node, &controller, &api),
        || {
            publish_pod(&api, &w);
            let c = api.get(CRRS, &w.namespace, "restart-app")?;
            (c["status"]["phase"] == "Completed").then_some(c)
        },
    )
    .await;
    assert_eq!(
        done["status"]["containerRecreateStates"][0]["phase"], "Succeeded",
        "{done}"
    );
    assert!(
        done["metadata"]["annotations"]
            .get("crr.apps.kruise.io/unready-acquired")
            .is_some()
    );
    let (new_id, _, new_attempt) = w.snapshot()["app"].clone();
    assert_ne!(new_id, old_id);
    assert_eq!(new_attempt, old_attempt + 1);
    // Completed: the gate is released, the finalizer and active label go.
    until("the pod released", logs(&node, &controller, &api), || {
        publish_pod(&api, &w);
        let c = api.get(CRRS, &w.namespace, "restart-app")?;
        let released = gate(&api)["status"] == "True";
        let unheld = c["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
        let inactive = c["metadata"]["labels"]
            .get("crr.apps.kruise.io/active")
            .is_none();
        (released && unheld && inactive).then_some(())
    })
    .await;
    w.stop().await.unwrap();
}

/// The MutatingWebhookConfiguration shipped in deploy/webhooks.yaml.
fn shipped_mutating_configuration() -> Value {
    shipped_configuration("MutatingWebhookConfiguration")
}

/// The webhook configuration of `kind` in deploy/webhooks.yaml.
fn shipped_configuration(kind: &str) -> Value {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/webhooks.yaml"),
    )
    .unwrap();
    text.split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap())
        .find(|d| d["kind"] == kind)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_request_is_completed_by_the_webhook_and_carried_out_by_the_node() {
    let (node, api, dir) = cluster_node().await;
    let w = web_pod(&node, &api).await;
    api.put(
        Kind("mutatingwebhookconfigurations"),
        shipped_mutating_configuration(),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    api.route_service("keelson-system", "keelson-webhook", port);
    let controller =
        Controller::start(&kubeconfig(&dir), &["--webhook-addr", &port.to_string()]).unwrap();
    // The controller writes its CA into the shipped configuration.
    until(
        "the caBundle was written",
        logs(&node, &controller, &api),
        || {
            let c = api.get(
                Kind("mutatingwebhookconfigurations"),
                "",
                "keelson-mutating-webhook-configuration",
            )?;
            c["webhooks"][0]["clientConfig"].get("caBundle").map(|_| ())
        },
    )
    .await;
    let path = format!(
        "/apis/apps.kruise.io/v1alpha1/namespaces/{}/containerrecreaterequests",
        w.namespace
    );
    // A request naming a container the pod does not have is refused with
    // OpenKruise's message.
    let (code, refused) = api
        .send(
            "POST",
            &path,
            Some(
                &json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequest",
                "metadata": {"name": "typo"},
                "spec": {"podName": w.name, "containers": [{"name": "nope"}]}}),
            ),
        )
        .await;
    assert_eq!(code, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("container nope not found in Pod"),
        "{refused}"
    );
    // The manifest as a user writes it (OpenKruise's documented shape).
    let (old_id, _, old_attempt) = w.snapshot()["app"].clone();
    let (code, created) = api
        .send(
            "POST",
            &path,
            Some(
                &json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequest",
                "metadata": {"name": "restart-app"},
                "spec": {"podName": w.name, "containers": [{"name": "app"}],
                    "strategy": {"failurePolicy": "Fail", "orderedRecreate": false,
                        "unreadyGracePeriodSeconds": 1, "minStartedSeconds": 1},
                    "activeDeadlineSeconds": 300, "ttlSecondsAfterFinished": 600}}),
            ),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let labels = &created["metadata"]["labels"];
    assert_eq!(
        labels["crr.apps.kruise.io/node-name"], "node-a",
        "{created}"
    );
    assert_eq!(labels["crr.apps.kruise.io/pod-uid"], w.uid.as_str());
    assert_eq!(
        created["spec"]["containers"][0]["statusContext"]["containerID"],
        format!("containerd://{old_id}")
    );
    let done = until(
        "the request completed",
        logs(&node, &controller, &api),
        || {
            publish_pod(&api, &w);
            let c = api.get(CRRS, &w.namespace, "restart-app")?;
            (c["status"]["phase"] == "Completed").then_some(c)
        },
    )
    .await;
    assert_eq!(
        done["status"]["containerRecreateStates"][0]["phase"], "Succeeded",
        "{done}"
    );
    let (_, _, new_attempt) = w.snapshot()["app"].clone();
    assert_eq!(new_attempt, old_attempt + 1);
    // Updates that change the spec are refused by the webhook.
    let (code, refused) = api
        .send(
            "PATCH",
            &format!("{path}/restart-app"),
            Some(&json!({"spec": {"activeDeadlineSeconds": 30}})),
        )
        .await;
    assert_eq!(code, 403, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("immutable"));
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_jobs_are_defaulted_and_validated_by_the_shipped_webhooks() {
    let api = ApiStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    api.put(
        Kind("validatingwebhookconfigurations"),
        shipped_configuration("ValidatingWebhookConfiguration"),
    );
    api.put(
        Kind("mutatingwebhookconfigurations"),
        shipped_mutating_configuration(),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    api.route_service("keelson-system", "keelson-webhook", port);
    let controller = Controller::start(
        &kubeconfig,
        &[
            "--feature-gates",
            "ImagePullJobGate=true",
            "--webhook-addr",
            &port.to_string(),
        ],
    )
    .unwrap();
    let explain = || {
        format!(
            "controller log:\n{}\nrequests:\n{:#?}",
            controller.log_text(),
            api.requests()
        )
    };
    until("the caBundles were written", explain, || {
        let all = |kind, name| {
            api.get(Kind(kind), "", name).is_some_and(|c| {
                c["webhooks"].as_array().is_some_and(|w| {
                    w.iter()
                        .all(|w| w["clientConfig"].get("caBundle").is_some())
                })
            })
        };
        (all(
            "validatingwebhookconfigurations",
            "keelson-validating-webhook-configuration",
        ) && all(
            "mutatingwebhookconfigurations",
            "keelson-mutating-webhook-configuration",
        ))
        .then_some(())
    })
    .await;
    let path = "/apis/apps.kruise.io/v1alpha1/namespaces/team/imagepulljobs";
    let job = |name: &str, template: Value| {
        let mut spec = json!({"image": "nginx:1.25", "completionPolicy": {"type": "Always"}});
        for (k, v) in template.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
            "metadata": {"name": name}, "spec": spec})
    };
    for (name, template, message) in [
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
        let (code, refused) = api.send("POST", path, Some(&job(name, template))).await;
        assert_eq!(code, 400, "{name}: {refused}");
        assert_eq!(
            refused["message"],
            format!("admission webhook \"vimagepulljob.kb.io\" denied the request: {message}"),
            "{name}"
        );
        assert!(api.get(IMAGE_PULL_JOBS, "team", name).is_none());
    }
    let (code, created) = api
        .send(
            "POST",
            path,
            Some(
                &json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
                "metadata": {"name": "fine"},
                "spec": {"image": "nginx:1.25", "selector": {"matchLabels": {"zone": "a"}},
                    "completionPolicy": {}}}),
            ),
        )
        .await;
    // A job as users write it is stored with OpenKruise's defaults.
    assert_eq!(code, 201, "{created}");
    let spec = &created["spec"];
    assert_eq!(spec["completionPolicy"]["type"], "Always", "{created}");
    assert_eq!(
        spec["pullPolicy"],
        json!({"timeoutSeconds": 600, "backoffLimit": 3})
    );
    assert_eq!(spec["imagePullPolicy"], "IfNotPresent");
    assert_eq!(spec["selector"]["matchLabels"]["zone"], "a");
    assert_eq!(
        created["metadata"]["finalizers"],
        json!(["apps.kruise.io/deletion-protection"])
    );
    // ImageListPullJobs: the same, with their own rules.
    let lists = "/apis/apps.kruise.io/v1alpha1/namespaces/team/imagelistpulljobs";
    let list = |name: &str, images: Value| {
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImageListPullJob",
            "metadata": {"name": name}, "spec": {"images": images, "completionPolicy": {}}})
    };
    let (code, refused) = api
        .send(
            "POST",
            lists,
            Some(&list("twice", json!(["nginx:1.25", "nginx:1.25"]))),
        )
        .await;
    assert_eq!(code, 400, "{refused}");
    assert_eq!(
        refused["message"],
        "admission webhook \"vimagelistpulljob.kb.io\" denied the request: images cannot have duplicate values"
    );
    let (code, created) = api
        .send(
            "POST",
            lists,
            Some(&list("pair", json!(["nginx:1.25", "redis:7"]))),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["completionPolicy"]["type"], "Always");
    assert_eq!(
        created["spec"]["pullPolicy"],
        json!({"timeoutSeconds": 600, "backoffLimit": 3})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_list_pull_job_pulls_every_image_through_its_jobs() {
    let (node, api, dir) = cluster_node().await;
    let registry = Registry::start(None).unwrap();
    for repo in ["list/one:v1", "list/two:v1"] {
        registry
            .push(&node.containerd.images().layout("busybox"), BUSYBOX, repo)
            .unwrap();
    }
    let host = registry.host();
    ready_node(&api, json!({}));
    let controller = Controller::start(
        &kubeconfig(&dir),
        &[
            "--feature-gates",
            "ImagePullJobGate=true",
            "--nodeimage-creation-delay-seconds",
            "0",
        ],
    )
    .unwrap();
    // A job made before the node's NodeImage exists targets no node and
    // completes at once (0 desired), as in OpenKruise: wait for it.
    until(
        "the controller made the NodeImage",
        logs(&node, &controller, &api),
        || api.get(NODE_IMAGES, "", "node-a").map(|_| ()),
    )
    .await;
    let images = [format!("{host}/list/one:v1"), format!("{host}/list/two:v1")];
    api.put(
        Kind("imagelistpulljobs"),
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImageListPullJob",
            "metadata": {"name": "list", "namespace": "team"},
            "spec": {"images": images, "parallelism": 2,
                "completionPolicy": {"type": "Always"}}}),
    );
    let list = until("the list completed", logs(&node, &controller, &api), || {
        let l = api.get(Kind("imagelistpulljobs"), "team", "list")?;
        l["status"].get("completionTime").map(|_| l.clone())
    })
    .await;
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
    // One ImagePullJob per image, owned by the list.
    let jobs = api.list(IMAGE_PULL_JOBS, "team");
    assert_eq!(jobs.len(), 2);
    for j in &jobs {
        assert_eq!(
            j["metadata"]["ownerReferences"][0]["kind"],
            "ImageListPullJob"
        );
        assert_eq!(j["status"]["succeeded"], 1, "{j}");
    }
    let listed = node
        .direct()
        .await
        .images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    for image in &images {
        assert!(
            listed.images.iter().any(|i| i.repo_tags.contains(image)),
            "{image} not in containerd"
        );
    }
}
