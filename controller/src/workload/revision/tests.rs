use super::*;
use serde_json::json;

/// A defaulted template (as the CloneSet webhook stores it).
fn template() -> Value {
    json!({
        "metadata": {"labels": {"app": "sample"}, "annotations": {"app-config": "v1 <x> & y"}},
        "spec": {
            "containers": [{
                "name": "main", "image": "nginx:alpine", "imagePullPolicy": "Always",
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                "env": [
                    {"name": "APP_CONFIG", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['app-config']"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}
                ]
            }],
            "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
            "securityContext": {}, "terminationGracePeriodSeconds": 30,
            "volumes": [{"name": "d", "downwardAPI": {"items": [{"path": "l", "fieldRef": {"fieldPath": "metadata.labels"}}]}}],
            "unknownField": "dropped as Go drops it"
        }
    })
}

/// Bytes and hashes produced by Go (k8s.io/api with OpenKruise v1.9's
/// ObjectMeta encoding, which writes `creationTimestamp: null`) and
/// k8s.io/kubernetes/pkg/controller/history.HashControllerRevision.
const GO_DATA: &str = r#"{"spec":{"template":{"$patch":"replace","metadata":{"annotations":{"app-config":"v1 \u003cx\u003e \u0026 y"},"creationTimestamp":null,"labels":{"app":"sample"}},"spec":{"containers":[{"env":[{"name":"APP_CONFIG","valueFrom":{"fieldRef":{"fieldPath":"metadata.annotations['app-config']"}}},{"name":"CPU","valueFrom":{"resourceFieldRef":{"divisor":"0","resource":"limits.cpu"}}}],"image":"nginx:alpine","imagePullPolicy":"Always","name":"main","resources":{},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File"}],"dnsPolicy":"ClusterFirst","restartPolicy":"Always","schedulerName":"default-scheduler","securityContext":{},"terminationGracePeriodSeconds":30,"volumes":[{"downwardAPI":{"items":[{"fieldRef":{"fieldPath":"metadata.labels"},"path":"l"}]},"name":"d"}]}}}}"#;

#[test]
fn data_and_hash_match_go() {
    let data = revision_data(&template()).unwrap();
    assert_eq!(data, GO_DATA);
    assert_eq!(revision_hash(data.as_bytes(), Some(0)), "5b7844c588");
    assert_eq!(revision_hash(data.as_bytes(), Some(3)), "5b7844c58c");
}

#[test]
fn names_and_short_hashes() {
    assert_eq!(revision_name("web", "5b7844c588"), "web-5b7844c588");
    let long = "x".repeat(300);
    assert_eq!(revision_name(&long, "h").len(), 225);
    assert_eq!(short_hash("sample-data-5b7844c588"), "5b7844c588");
}

#[test]
fn template_round_trips_through_revision_data() {
    let parent = parent();
    let r = new_revision(&parent, &template(), 1, Some(0), &BTreeMap::new()).unwrap();
    let back = template_of(&r).unwrap();
    assert_eq!(revision_data(&back).unwrap(), GO_DATA);
    assert_eq!(r.metadata.name.as_deref(), Some("sample-5b7844c588"));
    let labels = r.metadata.labels.unwrap();
    assert_eq!(labels["app"], "sample");
    assert_eq!(labels[CONTROLLER_REVISION_HASH_LABEL], "5b7844c588");
    assert_eq!(
        r.metadata.annotations.unwrap()["kubernetes.io/change-cause"],
        "v1"
    );
}

fn parent() -> Parent {
    Parent {
        name: "sample".into(),
        namespace: "ns".into(),
        owner: OwnerReference {
            api_version: "apps.kruise.io/v1alpha1".into(),
            kind: "CloneSet".into(),
            name: "sample".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
        annotations: BTreeMap::from([("kubernetes.io/change-cause".into(), "v1".into())]),
    }
}

fn with_image(image: &str) -> Value {
    let mut t = template();
    t["spec"]["containers"][0]["image"] = json!(image);
    t
}

#[test]
fn a_new_template_creates_an_old_one_renumbers_the_same_keeps() {
    let p = parent();
    let none = BTreeMap::new();
    let (name1, change) = select_update_revision(&p, &template(), &[], Some(0), &none).unwrap();
    let RevisionChange::Create(r1) = change else {
        panic!("{change:?}")
    };
    assert_eq!(r1.revision, 1);
    assert_eq!(r1.metadata.name.as_deref(), Some(name1.as_str()));
    let (name2, change) = select_update_revision(
        &p,
        &with_image("nginx:1.27"),
        &[(*r1).clone()],
        Some(0),
        &none,
    )
    .unwrap();
    let RevisionChange::Create(r2) = change else {
        panic!("{change:?}")
    };
    assert_eq!(r2.revision, 2);
    assert_ne!(name1, name2);
    let both = [(*r1).clone(), (*r2).clone()];
    assert_eq!(
        select_update_revision(&p, &with_image("nginx:1.27"), &both, Some(0), &none).unwrap(),
        (name2.clone(), RevisionChange::Unchanged)
    );
    assert_eq!(
        select_update_revision(&p, &template(), &both, Some(0), &none).unwrap(),
        (
            name1.clone(),
            RevisionChange::Renumber {
                name: name1,
                revision: 3
            }
        )
    );
}

#[test]
fn history_keeps_the_limit_besides_live_revisions_oldest_go_first() {
    let rev = |n: &str, r: i64| ControllerRevision {
        metadata: ObjectMeta {
            name: Some(n.into()),
            ..Default::default()
        },
        data: None,
        revision: r,
    };
    let all = [
        rev("a", 1),
        rev("b", 2),
        rev("c", 3),
        rev("d", 4),
        rev("e", 5),
    ];
    let live = ["e".to_string(), "b".to_string()];
    assert_eq!(
        history_to_delete(&all, &live, 1),
        vec!["a".to_string(), "c".to_string()]
    );
    assert!(history_to_delete(&all, &live, 10).is_empty());
    assert_eq!(history_to_delete(&all, &live, 0).len(), 3);
}

#[test]
fn go_json_sorts_and_escapes() {
    assert_eq!(
        go_json(&json!({"b": 1, "a": ["<&>", null, true, 1.5]})),
        r#"{"a":["\u003c\u0026\u003e",null,true,1.5],"b":1}"#
    );
}
