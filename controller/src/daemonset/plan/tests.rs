use super::*;
use crate::daemonset::status;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

const NOW: i64 = 1_900_000_000;

fn ds(extra: Value) -> DaemonSet {
    let mut v = json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "DaemonSet",
        "metadata": {"name": "d", "namespace": "ns", "uid": "u", "generation": 2},
        "spec": {"selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "main", "image": "img:2"}]}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {}}},
        "status": {"desiredNumberScheduled": 4, "currentNumberScheduled": 0,
            "numberMisscheduled": 0, "numberReady": 0, "updatedNumberScheduled": 0}
    });
    merge(&mut v, &extra);
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

fn node(name: &str, labels: Value, taints: Value) -> Node {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}),
    )
    .unwrap()
}

fn nodes(n: usize) -> Vec<Node> {
    (1..=n)
        .map(|i| node(&format!("n{i}"), json!({}), json!([])))
        .collect()
}

/// A running pod of revision `hash` on `node`, ready since
/// `ready_since` seconds before now (`None`: not ready).
fn pod(name: &str, node: &str, hash: &str, ready_since: Option<i64>, gated: bool) -> Pod {
    let ready = ready_since.is_some();
    let gates = if gated {
        json!([{"conditionType": "InPlaceUpdateReady"}])
    } else {
        json!([])
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"controller-revision-hash": hash, "app": "d"},
            "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "img:1"}],
            "readinessGates": gates},
        "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                "lastTransitionTime": Time(Timestamp::from_second(NOW - ready_since.unwrap_or(0)).unwrap())},
                {"type": "InPlaceUpdateReady", "status": "True"}],
            "containerStatuses": [{"name": "main", "image": "img:1", "imageID": "sha256:1",
                "containerID": format!("containerd://{name}"), "ready": ready, "restartCount": 0,
                "state": {"running": {}}}]}
    }))
    .unwrap()
}

fn templates(d: &DaemonSet) -> BTreeMap<String, Value> {
    let t2 = serde_json::to_value(&d.spec.template).unwrap();
    let mut t1 = t2.clone();
    t1["spec"]["containers"][0]["image"] = json!("img:1");
    BTreeMap::from([("h1".to_string(), t1), ("h2".to_string(), t2)])
}

fn run_with(d: &DaemonSet, nodes: &[Node], pods: &[Pod], backoff: &BTreeMap<String, i64>) -> Plan {
    let t = templates(d);
    plan(&Input {
        ds: d,
        nodes,
        pods,
        hash: "h2",
        templates: &t,
        now: Timestamp::from_second(NOW).unwrap(),
        env_from_metadata: true,
        backoff,
    })
}

fn run(d: &DaemonSet, nodes: &[Node], pods: &[Pod]) -> Plan {
    run_with(d, nodes, pods, &BTreeMap::new())
}

fn creates(p: &Plan) -> Vec<String> {
    p.steps
        .iter()
        .filter_map(|s| match s {
            Step::Create { node } => Some(node.clone()),
            _ => None,
        })
        .collect()
}

fn deletes(p: &Plan) -> Vec<String> {
    p.steps
        .iter()
        .filter_map(|s| match s {
            Step::Delete { pod } | Step::DeleteFailed { pod, .. } => Some(pod.clone()),
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

/// Pods `p1..pN` on `n1..nN`, all of `hash`, available.
fn fleet(n: usize, hash: &str, gated: bool) -> Vec<Pod> {
    (1..=n)
        .map(|i| pod(&format!("p{i}"), &format!("n{i}"), hash, Some(100), gated))
        .collect()
}

#[test]
fn one_pod_per_eligible_node() {
    let d = ds(json!({"spec": {"template": {"spec": {"nodeSelector": {"role": "edge"}}}}}));
    let ns = vec![
        node("a", json!({"role": "edge"}), json!([])),
        node("b", json!({"role": "core"}), json!([])),
        node(
            "c",
            json!({"role": "edge"}),
            json!([{"key": "x", "effect": "NoSchedule"}]),
        ),
        node(
            "d",
            json!({"role": "edge"}),
            json!([{"key": TAINT_UNSCHED, "effect": "NoSchedule"}]),
        ),
    ];
    let p = run(&d, &ns, &[]);
    assert_eq!(creates(&p), vec!["a", "d"], "cordoned nodes are tolerated");
    // A pod on a node that no longer matches goes; one on a NoSchedule node stays.
    let pods = vec![
        pod("pa", "a", "h2", Some(100), false),
        pod("pb", "b", "h2", Some(100), false),
        pod("pc", "c", "h2", Some(100), false),
        pod("pd", "d", "h2", Some(100), false),
    ];
    let p = run(&d, &ns, &pods);
    assert_eq!(deletes(&p), vec!["pb"]);
    let s = status_of(&d, &ns, &pods);
    assert_eq!(
        (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_misscheduled
        ),
        (2, 2, 2),
        "b and c run a pod they should not (c keeps it)"
    );
}

const TAINT_UNSCHED: &str = crate::daemonset::placement::TAINT_UNSCHEDULABLE;

fn status_of(
    d: &DaemonSet,
    nodes: &[Node],
    pods: &[Pod],
) -> keelson_api::apps::v1beta1::daemonset::DaemonSetStatus {
    let t = templates(d);
    let b = BTreeMap::new();
    status::compute(&Input {
        ds: d,
        nodes,
        pods,
        hash: "h2",
        templates: &t,
        now: Timestamp::from_second(NOW).unwrap(),
        env_from_metadata: true,
        backoff: &b,
    })
}

#[test]
fn burst_caps_creations_and_extra_pods_go() {
    let d = ds(json!({"spec": {"burstReplicas": "50%"}}));
    let p = run(&d, &nodes(4), &[]);
    assert_eq!(creates(&p), vec!["n1", "n2"], "50% of the 4 reported");
    let mut pods = fleet(1, "h2", false);
    let mut younger = pod("p1b", "n1", "h2", Some(100), false);
    younger.metadata.creation_timestamp = Some(Time(Timestamp::from_second(NOW).unwrap()));
    pods.push(younger);
    let p = run(&d, &nodes(1), &pods);
    assert_eq!(deletes(&p), vec!["p1b"], "the oldest is kept");
}

#[test]
fn failed_pods_are_deleted_under_backoff() {
    let d = ds(json!({}));
    let mut failed = pod("p1", "n1", "h2", None, false);
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    let p = run(&d, &nodes(1), std::slice::from_ref(&failed));
    assert_eq!(
        p.steps,
        vec![Step::DeleteFailed {
            pod: "p1".into(),
            node: "n1".into()
        }]
    );
    let waiting = BTreeMap::from([("n1".to_string(), 8)]);
    let p = run_with(&d, &nodes(1), &[failed], &waiting);
    assert!(p.steps.is_empty());
    assert_eq!(p.requeue_after, Some(8));
}

#[test]
fn pre_delete_hook_holds_deletions() {
    let d = ds(json!({"spec": {"lifecycle": {"preDelete": {"labelsHandler": {"hold": "true"}}}}}));
    let mut held = pod("p1", "n1", "h1", Some(100), false);
    held.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("hold".into(), "true".into());
    let p = run(&d, &nodes(1), std::slice::from_ref(&held));
    assert!(matches!(&p.steps[..], [Step::Patch { pod, patch }]
        if pod == "p1" && patch["metadata"]["labels"]["lifecycle.apps.kruise.io/state"] == "PreparingDelete"));
    // Still hooked while PreparingDelete: nothing; once unhooked: deleted.
    held.metadata.labels.as_mut().unwrap().insert(
        "lifecycle.apps.kruise.io/state".into(),
        "PreparingDelete".into(),
    );
    assert!(deletes(&run(&d, &nodes(1), std::slice::from_ref(&held))).is_empty());
    held.metadata.labels.as_mut().unwrap().remove("hold");
    assert_eq!(deletes(&run(&d, &nodes(1), &[held])), vec!["p1"]);
}

#[test]
fn standard_rollout_within_max_unavailable_descending_nodes() {
    let d = ds(json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}}}));
    let p = run(&d, &nodes(4), &fleet(4, "h1", false));
    assert_eq!(deletes(&p), vec!["p4", "p3"]);
    // An unavailable old pod is replaced beyond the budget.
    let mut pods = fleet(4, "h1", false);
    pods[0] = pod("p1", "n1", "h1", None, false);
    let d1 = ds(json!({}));
    let p = run(&d1, &nodes(4), &pods);
    assert_eq!(
        deletes(&p),
        vec!["p1", "p4"],
        "an unavailable old pod is replaced without using the budget (as upstream)"
    );
    // New pods not yet available use the budget.
    let mut pods = fleet(4, "h1", false);
    pods[3] = pod("p4", "n4", "h2", None, false);
    assert!(deletes(&run(&d1, &nodes(4), &pods)).is_empty());
}

#[test]
fn partition_and_selector_hold_nodes_back() {
    let d = ds(
        json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 4, "partition": 3}}}}),
    );
    assert_eq!(
        deletes(&run(&d, &nodes(4), &fleet(4, "h1", false))),
        vec!["p4"]
    );
    // n4 done: still only one updated node.
    let mut pods = fleet(4, "h1", false);
    pods[3] = pod("p4", "n4", "h2", Some(100), false);
    assert!(deletes(&run(&d, &nodes(4), &pods)).is_empty());
    let d = ds(
        json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 4, "partition": "50%",
        "selector": {"matchLabels": {"canary": "true"}}}}}}),
    );
    let ns = vec![
        node("n1", json!({"canary": "true"}), json!([])),
        node("n2", json!({}), json!([])),
        node("n3", json!({"canary": "true"}), json!([])),
        node("n4", json!({}), json!([])),
    ];
    assert_eq!(
        deletes(&run(&d, &ns, &fleet(4, "h1", false))),
        vec!["p3", "p1"]
    );
    let d = ds(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 4}}}}));
    assert!(deletes(&run(&d, &nodes(4), &fleet(4, "h1", false))).is_empty());
}

#[test]
fn paused_and_on_delete_update_nothing() {
    let paused = ds(json!({"spec": {"updateStrategy": {"rollingUpdate": {"paused": true}}}}));
    assert!(
        run(&paused, &nodes(2), &fleet(2, "h1", false))
            .steps
            .is_empty()
    );
    let on_delete = ds(json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}));
    assert!(
        run(&on_delete, &nodes(2), &fleet(2, "h1", false))
            .steps
            .is_empty()
    );
    // A deleted pod comes back on the new revision (the template's).
    let p = run(&on_delete, &nodes(2), &fleet(1, "h1", false));
    assert_eq!(creates(&p), vec!["n2"]);
}

#[test]
fn surge_creates_first_and_deletes_the_old_once_available() {
    let d = ds(
        json!({"spec": {"minReadySeconds": 10, "updateStrategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}}),
    );
    let p = run(&d, &nodes(3), &fleet(3, "h1", false));
    assert_eq!(creates(&p), vec!["n3"]);
    assert!(deletes(&p).is_empty());
    // The new pod is ready but not yet for minReadySeconds: wait.
    let mut pods = fleet(3, "h1", false);
    pods.push(pod("q3", "n3", "h2", Some(5), false));
    let p = run(&d, &nodes(3), &pods);
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert_eq!(p.requeue_after, Some(6));
    pods.pop();
    pods.push(pod("q3", "n3", "h2", Some(30), false));
    let p = run(&d, &nodes(3), &pods);
    assert_eq!(
        deletes(&p),
        vec!["p3"],
        "old goes once the new one is available"
    );
    // Old pod gone: the next node surges.
    pods.remove(2);
    assert_eq!(creates(&run(&d, &nodes(3), &pods)), vec!["n2"]);
}

#[test]
fn in_place_if_possible_updates_gated_pods_and_recreates_the_rest() {
    let d = ds(
        json!({"spec": {"updateStrategy": {"rollingUpdate": {"rollingUpdateType": "InPlaceIfPossible", "maxUnavailable": 2}}}}),
    );
    let mut pods = fleet(2, "h1", true);
    pods[0] = pod("p1", "n1", "h1", Some(100), false);
    let p = run(&d, &nodes(2), &pods);
    assert_eq!(in_place(&p), vec!["p2"]);
    assert_eq!(deletes(&p), vec!["p1"], "no gate: recreated");
    let Step::InPlace { start, .. } = &p.steps[0] else {
        panic!()
    };
    assert_eq!(start.state.revision, "h2");
    assert_eq!(
        start.pod_patch["metadata"]["labels"]["controller-revision-hash"],
        "h2"
    );
    assert_eq!(start.pod_patch["spec"]["containers"][0]["image"], "img:2");
}

#[test]
fn partitioned_scaling_creates_only_above_the_partition() {
    assert_eq!(
        nodes_needing_pods(1, 5, 2, true, vec!["c".into(), "a".into(), "b".into()]),
        vec!["a", "b"]
    );
    assert_eq!(
        nodes_needing_pods(3, 5, 2, true, vec!["a".into()]),
        Vec::<String>::new()
    );
    assert_eq!(
        nodes_needing_pods(0, 5, 2, false, vec!["b".into(), "a".into()]),
        vec!["a", "b"]
    );
    let d = ds(
        json!({"spec": {"scaleStrategy": {"partitionedScaling": true},
            "updateStrategy": {"rollingUpdate": {"partition": 3}}}}),
    );
    assert_eq!(creates(&run(&d, &nodes(4), &[])), vec!["n1"]);
}

#[test]
fn status_counts_oldest_pod_per_node() {
    let d = ds(
        json!({"spec": {"minReadySeconds": 50, "updateStrategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}}),
    );
    let mut pods = fleet(3, "h1", false);
    pods[2] = pod("p3", "n3", "h2", Some(10), false);
    let mut surge = pod("q1", "n1", "h2", Some(100), false);
    surge.metadata.creation_timestamp = Some(Time(Timestamp::from_second(NOW).unwrap()));
    pods.push(surge);
    let s = status_of(&d, &nodes(4), &pods);
    assert_eq!(
        (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_ready,
            s.number_available,
            s.updated_number_scheduled,
            s.number_unavailable,
            s.number_misscheduled
        ),
        (4, 3, 3, 2, 1, 2, 0),
        "n1's oldest pod is old (surge undercounts, as upstream)"
    );
    assert_eq!(s.update_revision.as_deref(), Some("h2"));
}
