use super::*;
use keelson_api::apps::shared::RUNTIME_CONTAINER_META_KEY;

fn template(image: &str, config: &str, command: Option<&str>) -> Value {
    let mut c = json!({
        "name": "main", "image": image,
        "env": [{"name": "APP_CONFIG", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['app-config']"}}}]
    });
    if let Some(cmd) = command {
        c["command"] = json!([cmd]);
    }
    json!({
        "metadata": {"labels": {"app": "web"}, "annotations": {"app-config": config}},
        "spec": {"containers": [c, {"name": "side", "image": "busybox:1.36"}]}
    })
}

#[test]
fn image_and_metadata_changes_are_in_place() {
    let d = diff(
        &template("nginx:1", "a", None),
        &template("nginx:2", "b", None),
        true,
    )
    .unwrap();
    let Diff::InPlace(c) = d else { panic!("{d:?}") };
    assert_eq!(
        c.images,
        BTreeMap::from([("main".into(), "nginx:2".into())])
    );
    assert_eq!(
        c.annotations,
        BTreeMap::from([("app-config".into(), Some("b".into()))])
    );
    assert!(c.labels.is_empty());
    assert_eq!(c.env_containers, BTreeSet::from(["main".to_string()]));
    let Diff::InPlace(c) = diff(
        &template("nginx:1", "a", None),
        &template("nginx:1", "b", None),
        false,
    )
    .unwrap() else {
        panic!()
    };
    assert!(
        c.env_containers.is_empty() && c.images.is_empty(),
        "gate off: metadata only"
    );
}

#[test]
fn other_spec_changes_recreate() {
    let d = diff(
        &template("nginx:1", "a", None),
        &template("nginx:2", "a", Some("sh")),
        true,
    )
    .unwrap();
    assert_eq!(
        d,
        Diff::Recreate("spec/containers/0/command changed".into())
    );
}

fn pod(yaml: &str) -> Pod {
    serde_saphyr::from_str(yaml).unwrap()
}

const RUNNING: &str = "metadata:
  name: web-x
  resourceVersion: '5'
  labels: {app: web}
  annotations: {app-config: a}
spec:
  readinessGates: [{conditionType: InPlaceUpdateReady}]
  containers:
  - name: main
    image: nginx:2
    env: [{name: APP_CONFIG, valueFrom: {fieldRef: {fieldPath: \"metadata.annotations['app-config']\"}}}]
status:
  phase: Running
  conditions:
  - {type: ContainersReady, status: 'True'}
  - {type: Ready, status: 'True'}
  containerStatuses:
  - {name: main, image: 'docker.io/library/nginx:1', imageID: 'sha256:one', containerID: 'containerd://c1', restartCount: 0, ready: true, state: {running: {}}}
";

#[test]
fn start_writes_the_record_labels_images_and_conditions() {
    let p = pod(RUNNING);
    let change = Change {
        images: BTreeMap::from([("main".into(), "nginx:2".into())]),
        annotations: BTreeMap::from([("app-config".into(), Some("b".into()))]),
        env_containers: BTreeSet::from(["main".into()]),
        ..Default::default()
    };
    let now = Time("2026-01-01T00:00:00Z".parse().unwrap());
    let labels = BTreeMap::from([("controller-revision-hash".to_string(), "web-h2".to_string())]);
    let s = start(&p, &change, "web-h2", &labels, &BTreeMap::new(), 0, &now);
    assert_eq!(s.pod_patch["metadata"]["resourceVersion"], "5");
    assert_eq!(
        s.pod_patch["metadata"]["labels"]["controller-revision-hash"],
        "web-h2"
    );
    assert_eq!(s.pod_patch["metadata"]["annotations"]["app-config"], "b");
    assert_eq!(
        s.pod_patch["spec"]["containers"],
        json!([{"name": "main", "image": "nginx:2"}])
    );
    let record: Value = serde_json::from_str(
        s.pod_patch["metadata"]["annotations"][IN_PLACE_UPDATE_STATE_KEY]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        record,
        json!({
            "revision": "web-h2", "updateTimestamp": "2026-01-01T00:00:00Z",
            "lastContainerStatuses": {"main": {"imageID": "sha256:one", "containerID": "containerd://c1"}},
            "updateEnvFromMetadata": true, "updateImages": true,
            "containerBatchesRecord": [{"timestamp": "2026-01-01T00:00:00Z", "containers": ["main"]}]
        })
    );
    let conds = s.status_patch["status"]["conditions"].as_array().unwrap();
    assert_eq!(conds[0]["status"], "False");
    assert_eq!(conds[0]["reason"], REASON_START);
    assert_eq!(conds[1]["type"], "Ready");
}

fn with_status(main: &str, meta: Option<&str>) -> Pod {
    let mut p = pod(RUNNING);
    let status: k8s_openapi::api::core::v1::ContainerStatus = serde_saphyr::from_str(main).unwrap();
    p.status.as_mut().unwrap().container_statuses = Some(vec![status]);
    if let Some(m) = meta {
        p.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(RUNTIME_CONTAINER_META_KEY.into(), m.into());
    }
    p
}

fn record(env: bool) -> InPlaceUpdateState {
    InPlaceUpdateState {
        revision: "web-h2".into(),
        update_env_from_metadata: env,
        update_images: true,
        last_container_statuses: BTreeMap::from([(
            "main".into(),
            InPlaceUpdateContainerStatus {
                image_id: "sha256:one".into(),
                container_id: "containerd://c1".into(),
            },
        )]),
        ..Default::default()
    }
}

#[test]
fn done_only_when_a_new_container_runs_the_new_image() {
    let same = with_status(
        "{name: main, image: 'nginx:1', imageID: 'sha256:one', containerID: 'containerd://c1', restartCount: 0, ready: true, state: {running: {}}}",
        None,
    );
    assert!(
        matches!(progress(&same, &record(false)), Progress::Waiting(w) if w.contains("not been restarted"))
    );
    let waiting = with_status(
        "{name: main, image: 'nginx:2', imageID: 'sha256:two', containerID: 'containerd://c2', restartCount: 1, ready: false, state: {waiting: {reason: ContainerCreating}}}",
        None,
    );
    assert!(
        matches!(progress(&waiting, &record(false)), Progress::Waiting(w) if w.contains("not running"))
    );
    let new = with_status(
        "{name: main, image: 'docker.io/library/nginx:2', imageID: 'sha256:two', containerID: 'containerd://c2', restartCount: 1, ready: true, state: {running: {}}}",
        None,
    );
    assert_eq!(progress(&new, &record(false)), Progress::Done);
}

#[test]
fn a_retag_with_the_same_image_id_completes() {
    // nginx:1 retagged as nginx:2: same image ID, new container.
    let retag = with_status(
        "{name: main, image: 'docker.io/library/nginx:2', imageID: 'sha256:one', containerID: 'containerd://c2', restartCount: 1, ready: true, state: {running: {}}}",
        None,
    );
    assert_eq!(progress(&retag, &record(false)), Progress::Done);
    // The agent's report is exact even where status.image is not.
    let reported = with_status(
        "{name: main, image: 'registry.local/other:x', imageID: 'sha256:one', containerID: 'containerd://c2', restartCount: 1, ready: true, state: {running: {}}}",
        Some(
            r#"{"containers":[{"name":"main","containerID":"containerd://c2","restartCount":1,"hashes":{"plainHash":0},"image":"nginx:2"}]}"#,
        ),
    );
    assert_eq!(progress(&reported, &record(false)), Progress::Done);
}

#[test]
fn the_agents_report_of_a_started_instance_is_enough_before_kubelets_status() {
    // kubelet still shows the old container (its PLEG relist is to come);
    // the agent reports the new instance the runtime started.
    let old = "{name: main, image: 'nginx:1', imageID: 'sha256:one', containerID: 'containerd://c1', restartCount: 0, ready: true, state: {running: {}}}";
    let started = r#"{"containers":[{"name":"main","containerID":"containerd://c2","restartCount":1,"hashes":{"plainHash":0},"image":"nginx:2"}]}"#;
    assert_eq!(
        progress(&with_status(old, Some(started)), &record(false)),
        Progress::Done
    );
    // A new instance of the old image (a crash restart) is not the update.
    let crashed = started.replace("nginx:2", "nginx:1");
    assert!(matches!(
        progress(&with_status(old, Some(&crashed)), &record(false)),
        Progress::Waiting(w) if w.contains("not been restarted")
    ));
    // The old instance reported is not the update either.
    let same = started.replace("c2", "c1");
    assert!(matches!(
        progress(&with_status(old, Some(&same)), &record(false)),
        Progress::Waiting(_)
    ));
}

#[test]
fn env_updates_wait_for_the_agents_report_of_the_current_values() {
    let refs = BTreeMap::from([(
        "APP_CONFIG".to_string(),
        envmeta::FieldRef::Annotation("app-config".into()),
    )]);
    let hash_a = envmeta::expected_hash(
        &refs,
        &BTreeMap::new(),
        &BTreeMap::from([("app-config".into(), "a".into())]),
    );
    let status = "{name: main, image: 'nginx:2', imageID: 'sha256:two', containerID: 'containerd://c2', restartCount: 1, ready: true, state: {running: {}}}";
    let unreported = with_status(status, None);
    assert!(
        matches!(progress(&unreported, &record(true)), Progress::Waiting(w) if w.contains("node agent"))
    );
    let meta = |h: u64| {
        format!(
            r#"{{"containers":[{{"name":"main","containerID":"containerd://c2","restartCount":1,"hashes":{{"plainHash":0,"extractedEnvFromMetadataHash":{h}}},"image":"nginx:2"}}]}}"#
        )
    };
    assert_eq!(
        progress(&with_status(status, Some(&meta(hash_a))), &record(true)),
        Progress::Done
    );
    assert!(matches!(
        progress(&with_status(status, Some(&meta(hash_a + 1))), &record(true)),
        Progress::Waiting(_)
    ));
}

#[test]
fn images_normalize_like_the_runtime_reports_them() {
    assert_eq!(normalized_image("nginx"), "docker.io/library/nginx:latest");
    assert_eq!(
        normalized_image("nginx:1.27"),
        "docker.io/library/nginx:1.27"
    );
    assert_eq!(normalized_image("me/app"), "docker.io/me/app:latest");
    assert_eq!(
        normalized_image("localhost:5000/app:v1"),
        "localhost:5000/app:v1"
    );
    assert_eq!(
        normalized_image("quay.io/x/y@sha256:ab"),
        "quay.io/x/y@sha256:ab"
    );
}

#[test]
fn gated_pods_need_the_condition_until_it_is_plainly_true() {
    let mut p = pod(RUNNING);
    assert!(needs_ready(&p));
    p.status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()
        .push(serde_saphyr::from_str("{type: InPlaceUpdateReady, status: 'True'}").unwrap());
    assert!(!needs_ready(&p));
}

#[test]
fn a_grace_period_holds_the_changes_then_applies_them() {
    let mut p = pod(RUNNING);
    let change = Change {
        images: BTreeMap::from([("main".into(), "nginx:2".into())]),
        ..Default::default()
    };
    let t0 = Time("2026-01-01T00:00:00Z".parse().unwrap());
    let labels = BTreeMap::from([("controller-revision-hash".to_string(), "web-h2".to_string())]);
    let s = start(&p, &change, "web-h2", &labels, &BTreeMap::new(), 10, &t0);
    assert!(
        s.pod_patch.get("spec").is_none(),
        "images wait for the grace period"
    );
    let grace = s.pod_patch["metadata"]["annotations"]
        [keelson_api::apps::shared::IN_PLACE_UPDATE_GRACE_KEY]
        .as_str()
        .unwrap()
        .to_string();
    p.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("controller-revision-hash".into(), "web-h2".into());
    p.metadata.annotations.as_mut().unwrap().insert(
        keelson_api::apps::shared::IN_PLACE_UPDATE_GRACE_KEY.into(),
        grace,
    );
    assert!(matches!(progress(&p, &s.state), Progress::Waiting(w) if w.contains("grace")));
    let at = |t: &str| Time(t.parse().unwrap());
    assert_eq!(
        grace_due(&p, &s.state, &at("2026-01-01T00:00:04Z")),
        Some(Err(6))
    );
    let patch = grace_due(&p, &s.state, &at("2026-01-01T00:00:10Z"))
        .unwrap()
        .unwrap();
    assert_eq!(patch["spec"]["containers"][0]["image"], "nginx:2");
    assert!(
        patch["metadata"]["annotations"][keelson_api::apps::shared::IN_PLACE_UPDATE_GRACE_KEY]
            .is_null()
    );
    // The pod moved to another revision meanwhile: only the annotation goes.
    p.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("controller-revision-hash".into(), "web-h3".into());
    let patch = grace_due(&p, &s.state, &at("2026-01-01T00:00:10Z"))
        .unwrap()
        .unwrap();
    assert!(patch.get("spec").is_none());
}
