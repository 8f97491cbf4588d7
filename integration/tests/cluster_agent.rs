//! The agent's cluster mode end to end: the real `keelson-agent` binary
//! with `--node-name`/`--kubeconfig`, a real containerd and a real
//! registry, and a stand-in API server (no kube-apiserver exists on this
//! machine; see `keelson_integration::api_stand_in`). The test plays the
//! controller (it writes NodeImage specs and ContainerRecreateRequests as
//! the controller and its webhook would) and kubelet's status manager
//! (it writes the pod's container statuses).

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use cri_proto as cri;
use keelson_integration::api_stand_in::{CRRS, NODE_IMAGES, SECRETS};
use keelson_integration::images::BUSYBOX;
use keelson_integration::registry::{Credentials, Registry};
use serde_json::json;

/// What a timed-out wait shows: the agent's log.
fn agent_log(node: &Node) -> impl Fn() -> String + '_ {
    || format!("agent log:\n{}", node.agent.log_text())
}

fn now() -> String {
    now_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodeimage_entry_is_pulled_with_its_secret_and_the_status_written_back() {
    let (node, api, _dir) = cluster_node().await;
    let user = Credentials {
        username: "keelson".into(),
        password: "s3cret".into(),
    };
    let registry = Registry::start(Some(user)).unwrap();
    registry
        .push(
            &node.containerd.images().layout("busybox"),
            BUSYBOX,
            "team/app:v1",
        )
        .unwrap();
    let host = registry.host();
    let auth = base64::engine::general_purpose::STANDARD.encode("keelson:s3cret");
    let docker_config = json!({"auths": {&host: {"auth": auth}}}).to_string();
    // The pull secret where agents may read it (the controller's copy).
    api.put(
        SECRETS,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "regcred-x1", "namespace": "kruise-daemon-config"},
            "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(&docker_config)}}),
    );
    let image = format!("{host}/team/app");
    let owner = json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
        "namespace": "team", "name": "job", "uid": "uid-job"});
    api.put(
        NODE_IMAGES,
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "NodeImage",
            "metadata": {"name": "node-a"},
            "spec": {"images": {&image: {
                "pullSecrets": [{"namespace": "kruise-daemon-config", "name": "regcred-x1"}],
                "tags": [{"tag": "v1", "version": 1, "createdAt": now(),
                    "pullPolicy": {"timeoutSeconds": 60, "backoffLimit": 1},
                    "ownerReferences": [owner]}]}}}}),
    );
    let tag = until("the pull reported Succeeded", agent_log(&node), || {
        let n = api.get(NODE_IMAGES, "", "node-a")?;
        let t = n
            .pointer(&format!(
                "/status/imageStatuses/{}/tags/0",
                image.replace('/', "~1")
            ))?
            .clone();
        (t["phase"] == "Succeeded").then_some(t)
    })
    .await;
    assert_eq!(tag["version"], 1);
    assert!(
        tag["imageID"].as_str().unwrap().starts_with("sha256:"),
        "{tag}"
    );
    assert!(tag.get("completionTime").is_some(), "{tag}");
    let status = api.get(NODE_IMAGES, "", "node-a").unwrap()["status"].clone();
    assert_eq!(
        (status["desired"].clone(), status["succeeded"].clone()),
        (json!(1), json!(1))
    );
    // The image is on the node (asked of containerd, not of the agent).
    let mut direct = node.direct().await;
    let listed = direct
        .images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed
            .images
            .iter()
            .any(|i| i.repo_tags.contains(&format!("{image}:v1"))),
        "{image}:v1 not in containerd"
    );
    // The agent asked for the secret where its RBAC lets it read.
    let reads: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.contains("/secrets/"))
        .collect();
    assert!(
        reads.iter().all(
            |r| r.starts_with("GET /api/v1/namespaces/kruise-daemon-config/secrets/regcred-x1")
        ),
        "{reads:?}"
    );

    // A new round (the version bumped, as a second job joining the tag
    // does) is pulled again and reported for that version.
    let mut n = api.get(NODE_IMAGES, "", "node-a").unwrap();
    n["spec"]["images"][&image]["tags"][0]["version"] = json!(2);
    api.put(NODE_IMAGES, n);
    until("the second round reported", agent_log(&node), || {
        let n = api.get(NODE_IMAGES, "", "node-a")?;
        let t = n
            .pointer(&format!(
                "/status/imageStatuses/{}/tags/0",
                image.replace('/', "~1")
            ))?
            .clone();
        (t["phase"] == "Succeeded" && t["version"] == 2).then_some(())
    })
    .await;
    // Watches are by name and by this node only.
    let watches: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.contains("watch=true"))
        .collect();
    assert!(
        watches
            .iter()
            .filter(|r| r.contains("/nodeimages?"))
            .all(|r| r.contains("fieldSelector=metadata.name%3Dnode-a")),
        "{watches:?}"
    );
    assert!(
        watches
            .iter()
            .filter(|r| r.contains("/pods?"))
            .all(|r| r.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "{watches:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_recreate_request_restarts_the_container_and_completes() {
    let (node, api, _dir) = cluster_node().await;
    let w = web_pod(&node, &api).await;
    let (old_id, _, old_attempt) = w.snapshot()["app"].clone();
    api.put(
        CRRS,
        recreate_app(
            &w,
            json!({"failurePolicy": "Fail", "terminationGracePeriodSeconds": 5}),
        ),
    );
    // Kubelet's status manager meanwhile.
    let completed = until("the request completed", agent_log(&node), || {
        publish_pod(&api, &w);
        let crr = api.get(CRRS, &w.namespace, "restart-app")?;
        (crr["status"]["phase"] == "Completed").then_some(crr)
    })
    .await;
    let state = &completed["status"]["containerRecreateStates"][0];
    assert_eq!(state["name"], "app");
    assert_eq!(state["phase"], "Succeeded", "{completed}");
    assert_eq!(state["isKilled"], true);
    assert!(completed["status"].get("completionTime").is_some());
    let (new_id, st, new_attempt) = w.snapshot()["app"].clone();
    assert_ne!(new_id, old_id, "a new instance runs");
    assert_eq!(st, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(new_attempt, old_attempt + 1, "restarted exactly once");
    // The CRRs were found by this node's labels.
    assert!(
        api.requests()
            .iter()
            .filter(|r| r.contains("/containerrecreaterequests?"))
            .all(|r| r.contains("labelSelector=crr.apps.kruise.io%2Fnode-name%3Dnode-a")),
        "{:?}",
        api.requests()
    );
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_unready_grace_nothing_stops_until_the_pod_is_made_not_ready() {
    let (node, api, _dir) = cluster_node().await;
    let w = web_pod(&node, &api).await;
    let (old_id, _, _) = w.snapshot()["app"].clone();
    api.put(
        CRRS,
        recreate_app(
            &w,
            json!({"unreadyGracePeriodSeconds": 1, "terminationGracePeriodSeconds": 5}),
        ),
    );
    let waiting = until("the request shows Recreating", agent_log(&node), || {
        let crr = api.get(CRRS, &w.namespace, "restart-app")?;
        (crr["status"]["phase"] == "Recreating").then_some(crr)
    })
    .await;
    assert_eq!(
        waiting["status"]["message"],
        "waiting for the pod to be made not-ready"
    );
    // The controller has not acted: the container keeps running.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.snapshot()["app"].0, old_id, "nothing stopped yet");
    assert_eq!(
        api.get(CRRS, &w.namespace, "restart-app").unwrap()["status"]["phase"],
        "Recreating"
    );
    // The controller's move (as OpenKruise's): the time, in the annotation.
    let mut crr = api.get(CRRS, &w.namespace, "restart-app").unwrap();
    crr["metadata"]["annotations"] = json!({"crr.apps.kruise.io/unready-acquired": now()});
    api.put(CRRS, crr);
    let completed = until("the request completed", agent_log(&node), || {
        publish_pod(&api, &w);
        let crr = api.get(CRRS, &w.namespace, "restart-app")?;
        (crr["status"]["phase"] == "Completed").then_some(crr)
    })
    .await;
    assert_eq!(
        completed["status"]["containerRecreateStates"][0]["phase"], "Succeeded",
        "{completed}"
    );
    assert_ne!(w.snapshot()["app"].0, old_id);
    w.stop().await.unwrap();
}
