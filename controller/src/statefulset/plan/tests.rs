use super::*;
use serde_json::json;

fn sts(extra: Value) -> StatefulSet {
    let mut v = json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "StatefulSet",
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "s"}},
            "template": {"metadata": {"labels": {"app": "s"}},
                "spec": {"containers": [{"name": "main", "image": "img:1"}]}}}
    });
    merge(&mut v["spec"], &extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut Value, b: &Value) {
    if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
        for (k, v) in b {
            if v.is_object() && a.get(k).is_some_and(Value::is_object) {
                merge(a.get_mut(k).unwrap(), v);
            } else {
                a.insert(k.clone(), v.clone());
            }
        }
    }
}

fn pod(name: &str, revision: &str, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"controller-revision-hash": revision, "app": "s",
            "statefulset.kubernetes.io/pod-name": name}},
        "spec": {"containers": [{"name": "main", "image": "img:1"}]},
        "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "containerStatuses": [{"name": "main", "image": "img:1", "imageID": "sha256:1",
                "containerID": format!("containerd://{name}"), "ready": ready, "restartCount": 0,
                "state": {"running": {}}}]}
    }))
    .unwrap()
}

fn templates(s: &StatefulSet, image2: &str) -> BTreeMap<String, Value> {
    let t1 = serde_json::to_value(&s.spec.template).unwrap();
    let mut t2 = t1.clone();
    t2["spec"]["containers"][0]["image"] = json!(image2);
    BTreeMap::from([("r1".to_string(), t1), ("r2".to_string(), t2)])
}

fn run(s: &StatefulSet, pods: &[Pod], update: &str, start_ordinal: bool) -> Plan {
    let t = templates(s, "img:2");
    plan(&Input {
        sts: s,
        pods,
        current_revision: "r1",
        update_revision: update,
        templates: &t,
        now: Timestamp::from_second(1_900_000_000).unwrap(),
        start_ordinal,
        env_from_metadata: true,
        pod_index_label: true,
    })
}

fn creates(p: &Plan) -> Vec<i32> {
    p.steps
        .iter()
        .filter_map(|s| match s {
            Step::Create { ordinal, .. } => Some(*ordinal),
            _ => None,
        })
        .collect()
}

fn deletes(p: &Plan) -> Vec<String> {
    p.steps
        .iter()
        .filter_map(|s| match s {
            Step::Delete { pod } => Some(pod.clone()),
            _ => None,
        })
        .collect()
}

fn in_place(p: &Plan) -> Vec<String> {
    p.steps
        .iter()
        .filter_map(|s| match s {
            Step::InPlace { pod, .. } => Some(pod.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn ordered_ready_creates_one_at_a_time_after_the_previous_is_available() {
    let s = sts(json!({"replicas": 5, "ordinals": {"start": 3}}));
    assert_eq!(
        creates(&run(&s, &[], "r1", true)),
        vec![3],
        "the seed's first pod"
    );
    assert_eq!(
        creates(&run(&s, &[], "r1", false)),
        vec![0],
        "without the gate: 0"
    );
    assert!(creates(&run(&s, &[pod("s-3", "r1", false)], "r1", true)).is_empty());
    assert_eq!(
        creates(&run(&s, &[pod("s-3", "r1", true)], "r1", true)),
        vec![4]
    );
}

#[test]
fn parallel_creates_at_once_within_the_scale_budget() {
    let s = sts(json!({"replicas": 4, "podManagementPolicy": "Parallel"}));
    assert_eq!(creates(&run(&s, &[], "r1", false)), vec![0, 1, 2, 3]);
    let s = sts(json!({"replicas": 4, "podManagementPolicy": "Parallel",
        "scaleStrategy": {"maxUnavailable": 2}}));
    assert_eq!(creates(&run(&s, &[], "r1", false)), vec![0, 1]);
}

#[test]
fn condemned_pods_go_highest_first_and_reserved_ordinals_are_skipped() {
    let s = sts(json!({"replicas": 2}));
    let all = [
        pod("s-0", "r1", true),
        pod("s-1", "r1", true),
        pod("s-2", "r1", true),
        pod("s-3", "r1", true),
    ];
    assert_eq!(deletes(&run(&s, &all, "r1", false)), vec!["s-3"]);
    let s = sts(json!({"replicas": 3, "reserveOrdinals": [1]}));
    let p = run(
        &s,
        &[pod("s-0", "r1", true), pod("s-1", "r1", true)],
        "r1",
        false,
    );
    assert_eq!(creates(&p), vec![2], "1 is reserved, 2 comes next");
    let p = run(
        &s,
        &[
            pod("s-0", "r1", true),
            pod("s-1", "r1", true),
            pod("s-2", "r1", true),
            pod("s-3", "r1", true),
        ],
        "r1",
        false,
    );
    assert_eq!(
        deletes(&p),
        vec!["s-1"],
        "the reserved ordinal's pod is condemned"
    );
    let s = sts(json!({"replicas": 1, "podManagementPolicy": "Parallel"}));
    let p = run(
        &s,
        &[
            pod("s-0", "r1", true),
            pod("s-1", "r1", true),
            pod("s-2", "r1", false),
        ],
        "r1",
        false,
    );
    assert_eq!(deletes(&p), vec!["s-2", "s-1"]);
}

#[test]
fn rolling_update_in_place_descending_above_the_partition_within_max_unavailable() {
    let s = sts(json!({"replicas": 5, "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {
            "partition": 2, "maxUnavailable": 2, "podUpdatePolicy": "InPlaceIfPossible"}}}));
    let pods: Vec<Pod> = (0..5).map(|i| pod(&format!("s-{i}"), "r1", true)).collect();
    let p = run(&s, &pods, "r2", false);
    assert_eq!(in_place(&p), vec!["s-4", "s-3"]);
    // One already updating (unavailable): only one more.
    let mut pods2 = pods.clone();
    pods2[4] = pod("s-4", "r2", false);
    let p = run(&s, &pods2, "r2", false);
    assert_eq!(in_place(&p), vec!["s-3"]);
    // Below the partition nothing moves.
    let mut done = pods.clone();
    done[4] = pod("s-4", "r2", true);
    done[3] = pod("s-3", "r2", true);
    done[2] = pod("s-2", "r2", true);
    assert!(run(&s, &done, "r2", false).steps.is_empty());
}

#[test]
fn recreate_policy_deletes_and_ordered_ready_updates_one_by_one() {
    let s = sts(json!({"replicas": 3}));
    let pods: Vec<Pod> = (0..3).map(|i| pod(&format!("s-{i}"), "r1", true)).collect();
    assert_eq!(deletes(&run(&s, &pods, "r2", false)), vec!["s-2"]);
    let s = sts(
        json!({"replicas": 3, "updateStrategy": {"rollingUpdate": {"podUpdatePolicy": "InPlaceOnly"}}}),
    );
    let mut t = templates(&s, "img:2");
    t.get_mut("r2").unwrap()["spec"]["containers"][0]["command"] = json!(["sh"]);
    let p = plan(&Input {
        sts: &s,
        pods: &pods,
        current_revision: "r1",
        update_revision: "r2",
        templates: &t,
        now: Timestamp::from_second(1_900_000_000).unwrap(),
        start_ordinal: false,
        env_from_metadata: true,
        pod_index_label: true,
    });
    assert!(
        p.failed_update
            .unwrap()
            .contains("InPlaceOnly but Pod s-2 can not update in-place")
    );
}

#[test]
fn new_pods_below_the_partition_get_the_current_revision() {
    let s = sts(json!({"replicas": 3, "podManagementPolicy": "Parallel",
        "updateStrategy": {"rollingUpdate": {"partition": 2}}}));
    let p = run(&s, &[], "r2", false);
    let revs: Vec<(i32, String)> = p
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Create { ordinal, revision } => Some((*ordinal, revision.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        revs,
        vec![(0, "r1".into()), (1, "r1".into()), (2, "r2".into())]
    );
}

#[test]
fn paused_and_on_delete_do_not_roll() {
    let pods: Vec<Pod> = (0..3).map(|i| pod(&format!("s-{i}"), "r1", true)).collect();
    let s = sts(json!({"replicas": 3, "updateStrategy": {"rollingUpdate": {"paused": true}}}));
    assert!(run(&s, &pods, "r2", false).steps.is_empty());
    let s = sts(json!({"replicas": 3, "updateStrategy": {"type": "OnDelete"}}));
    assert!(run(&s, &pods, "r2", false).steps.is_empty());
}

#[test]
fn a_replica_whose_pod_name_label_is_off_is_repaired() {
    let s = sts(json!({"replicas": 2}));
    let mut off = pod("s-1", "r1", true);
    off.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("statefulset.kubernetes.io/pod-name".into(), "other".into());
    let p = run(&s, &[pod("s-0", "r1", true), off], "r1", false);
    assert_eq!(
        p.steps,
        vec![Step::Repair {
            pod: "s-1".into(),
            patch: json!({"metadata": {"labels": {
                "statefulset.kubernetes.io/pod-name": "s-1",
                "apps.kubernetes.io/pod-index": "1"}}}),
        }]
    );
    // Labels right: nothing to do.
    let p = run(
        &s,
        &[pod("s-0", "r1", true), pod("s-1", "r1", true)],
        "r1",
        false,
    );
    assert!(p.steps.is_empty(), "{:?}", p.steps);
}
