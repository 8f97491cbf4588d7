use super::*;
use crate::pods::{Container, Sandbox, State};

fn pod(yaml: &str) -> Pod {
    serde_saphyr::from_str(yaml).unwrap()
}

const POD: &str = "metadata:
  name: web-a
  uid: u1
  annotations: {app-config: v2}
spec:
  readinessGates: [{conditionType: InPlaceUpdateReady}]
  containers:
  - name: main
    image: nginx:2
    env: [{name: CFG, valueFrom: {fieldRef: {fieldPath: \"metadata.annotations['app-config']\"}}}]
status:
  conditions: [{type: InPlaceUpdateReady, status: 'False', reason: StartInPlaceUpdate}]
  containerStatuses: [{name: main, image: nginx, imageID: x, ready: true, restartCount: 1, containerID: 'containerd://old'}]
";

fn view(instances: &[(&str, u64, &str, &str)]) -> PodView {
    PodView {
        sandbox: Sandbox {
            id: "sb".into(),
            uid: "u1".into(),
            name: "web-a".into(),
            namespace: "ns".into(),
            annotations: HashMap::new(),
        },
        containers: instances
            .iter()
            .map(|(id, seq, image, cfg)| {
                (
                    Container {
                        id: id.to_string(),
                        sandbox_id: "sb".into(),
                        name: "main".into(),
                        attempt: *seq as u32,
                        seq: *seq,
                        env: HashMap::from([("CFG".to_string(), cfg.to_string())]),
                        grace_period_seconds: None,
                        image: image.to_string(),
                    },
                    State::Running,
                )
            })
            .collect(),
        ever_started: vec!["main".into()],
    }
}

#[test]
fn reports_the_newest_instance_with_image_and_env_hash() {
    let p = pod(POD);
    assert!(updating(&p) && gated(&p));
    let meta = runtime_meta(
        &p,
        &[view(&[
            ("old", 0, "nginx:1", "v1"),
            ("new", 1, "nginx:2", "v2"),
        ])],
    )
    .unwrap();
    assert_eq!(meta.containers.len(), 1);
    let m = &meta.containers[0];
    assert_eq!(m.container_id, "containerd://new");
    assert_eq!(m.restart_count, 1);
    assert_eq!(m.image.as_deref(), Some("nginx:2"));
    // The controller's expectation from the pod's current metadata.
    let refs = envmeta::references(&p.spec.as_ref().unwrap().containers[0]);
    let expected = envmeta::expected_hash(
        &refs,
        &BTreeMap::new(),
        p.metadata.annotations.as_ref().unwrap(),
    );
    assert_eq!(m.hashes.extracted_env_from_metadata_hash, expected);
    assert!(runtime_meta(&p, &[]).is_none());
}

#[test]
fn lists_the_newest_started_instance_only() {
    let p = pod(POD);
    let mut v = view(&[("old", 0, "nginx:1", "v1"), ("new", 1, "nginx:2", "v2")]);
    v.containers[0].1 = State::Exited(0);
    v.containers[1].1 = State::Created;
    // The new instance is created, not started: the old one still stands.
    let meta = runtime_meta(&p, std::slice::from_ref(&v)).unwrap();
    assert_eq!(meta.containers[0].container_id, "containerd://old");
    v.containers[1].1 = State::Starting;
    let meta = runtime_meta(&p, std::slice::from_ref(&v)).unwrap();
    assert_eq!(meta.containers[0].container_id, "containerd://old");
    v.containers[1].1 = State::Running;
    let meta = runtime_meta(&p, std::slice::from_ref(&v)).unwrap();
    assert_eq!(meta.containers[0].container_id, "containerd://new");
    // Nothing started yet: nothing to report.
    v.containers[0].1 = State::Created;
    v.containers[1].1 = State::Created;
    assert!(runtime_meta(&p, &[v]).is_none());
}

#[test]
fn env_target_follows_only_the_values_env_reads() {
    let p = pod(POD);
    let mut q = p.clone();
    q.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("unrelated".into(), "x".into());
    assert_eq!(env_target(&p), env_target(&q));
    q.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("app-config".into(), "v3".into());
    assert_ne!(env_target(&p), env_target(&q));
    let u = metadata_update(&p);
    assert_eq!(u.annotations["app-config"], Some("v2".to_string()));
}

#[test]
fn an_update_takes_effect_when_the_report_shows_the_new_instance() {
    let mut p = pod(POD);
    p.metadata.annotations.as_mut().unwrap().insert(
        "apps.kruise.io/inplace-update-state".into(),
        r#"{"revision":"web-h2","updateTimestamp":"2026-12-01T00:00:00Z","lastContainerStatuses":{"main":{"imageID":"x","containerID":"containerd://old"}},"updateImages":true}"#.into(),
    );
    let report = |id: &str, image: &str| {
        format!(
            r#"{{"containers":[{{"name":"main","containerID":"containerd://{id}","restartCount":1,"hashes":{{"plainHash":0}},"image":"{image}"}}]}}"#
        )
    };
    // The condition names the update the record is for.
    p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].message =
        Some(keelson_api::inplace::start_message("web-h2"));
    assert!(taken_effect(&p, &report("new", "nginx:2")));
    // The condition of the next update next to this (finished) record,
    // between the controller's two writes: not this agent's to judge.
    let mut next = p.clone();
    next.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].message =
        Some(keelson_api::inplace::start_message("web-h3"));
    assert!(!taken_effect(&next, &report("new", "nginx:2")));
    // The old instance, or a new one of the old image: not yet.
    assert!(!taken_effect(&p, &report("old", "nginx:2")));
    assert!(!taken_effect(&p, &report("new", "nginx:1")));
    // Not being updated (the condition is True): nothing to mark.
    let mut done = p.clone();
    done.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
    assert!(!taken_effect(&done, &report("new", "nginx:2")));
}
