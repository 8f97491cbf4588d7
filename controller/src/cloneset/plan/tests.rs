use super::*;

fn cs(yaml_spec: &str) -> CloneSet {
    serde_saphyr::from_str(&format!(
        "apiVersion: apps.kruise.io/v1alpha1\nkind: CloneSet\nmetadata: {{name: web, namespace: ns, uid: u}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: main, image: 'nginx:1'}}]}}\n{yaml_spec}"
    ))
    .unwrap()
}

fn template(image: &str) -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "main", "image": image}]}})
}

fn pod(name: &str, revision: &str, ready: bool) -> Pod {
    serde_saphyr::from_str(&format!(
        "metadata: {{name: {name}, labels: {{app: web, controller-revision-hash: {revision}, lifecycle.apps.kruise.io/state: Normal}}, creationTimestamp: '2026-01-01T00:00:00Z'}}\nspec: {{nodeName: n, containers: [{{name: main, image: 'nginx:1'}}]}}\nstatus:\n  phase: Running\n  conditions: [{{type: Ready, status: '{}', lastTransitionTime: '2026-01-01T00:00:00Z'}}, {{type: InPlaceUpdateReady, status: 'True'}}]\n  containerStatuses: [{{name: main, image: 'nginx:1', imageID: 'sha256:1', containerID: 'containerd://{name}', restartCount: 0, ready: {ready}, state: {{running: {{}}}}}}]\n",
        if ready { "True" } else { "False" }
    ))
    .unwrap()
}

fn templates() -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("web-old".to_string(), template("nginx:1")),
        ("web-new".to_string(), template("nginx:2")),
    ])
}

/// Gates and revision annotations a test turns on.
#[derive(Default)]
struct With {
    vct_hashes: BTreeMap<String, String>,
    recreate_on_vct_change: bool,
    short_hash: bool,
    partition_rollback: bool,
}

fn run(cs: &CloneSet, pods: &[Pod], current: &str, update: &str) -> Plan {
    run_with(cs, pods, current, update, &With::default())
}

fn run_with(cs: &CloneSet, pods: &[Pod], current: &str, update: &str, with: &With) -> Plan {
    let t = templates();
    plan(&Input {
        cs,
        pods,
        current_revision: current,
        update_revision: update,
        templates: &t,
        now: "2026-01-01T01:00:00Z".parse().unwrap(),
        env_from_metadata: true,
        exclude_preparing_delete: false,
        vct_hashes: &with.vct_hashes,
        recreate_on_vct_change: with.recreate_on_vct_change,
        short_hash: with.short_hash,
        partition_rollback: with.partition_rollback,
    })
}

#[test]
fn scales_up_on_the_update_revision() {
    let p = run(
        &cs("  replicas: 3\n"),
        &[pod("web-a", "web-new", true)],
        "web-new",
        "web-new",
    );
    assert_eq!(
        p.steps,
        vec![Step::Create {
            revision: "web-new".into(),
            count: 2
        }]
    );
}

#[test]
fn scale_up_keeps_the_partition_on_the_current_revision() {
    let c = cs("  replicas: 4\n  updateStrategy: {partition: 2}\n");
    let p = run(&c, &[], "web-old", "web-new");
    assert_eq!(
        p.steps,
        vec![
            Step::Create {
                revision: "web-old".into(),
                count: 2
            },
            Step::Create {
                revision: "web-new".into(),
                count: 2
            }
        ]
    );
}

#[test]
fn scales_in_not_ready_pods_first() {
    let pods = [
        pod("web-a", "web-new", true),
        pod("web-b", "web-new", false),
        pod("web-c", "web-new", true),
    ];
    let p = run(&cs("  replicas: 2\n"), &pods, "web-new", "web-new");
    assert_eq!(
        p.steps,
        vec![Step::Delete {
            pod: "web-b".into()
        }]
    );
}

#[test]
fn specified_deletes_of_ready_pods_stay_within_max_unavailable() {
    let mut pods: Vec<Pod> = (0..5)
        .map(|i| pod(&format!("web-{i}"), "web-new", true))
        .collect();
    for p in &mut pods[..3] {
        p.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(SPECIFIED_DELETE_KEY.into(), "true".into());
    }
    // maxUnavailable 20% of 5 = 1.
    let p = run(&cs("  replicas: 5\n"), &pods, "web-new", "web-new");
    assert_eq!(p.steps.len(), 1, "{:?}", p.steps);
}

#[test]
fn in_place_updates_respect_max_unavailable() {
    let c = cs("  replicas: 4\n  updateStrategy: {type: InPlaceIfPossible, maxUnavailable: 2}\n");
    let pods: Vec<Pod> = (0..4)
        .map(|i| pod(&format!("web-{i}"), "web-old", true))
        .collect();
    let p = run(&c, &pods, "web-old", "web-new");
    let started: Vec<_> = p
        .steps
        .iter()
        .filter(|s| matches!(s, Step::InPlace { .. }))
        .collect();
    assert_eq!(started.len(), 2);
    let Step::InPlace { start, .. } = started[0] else {
        unreachable!()
    };
    assert_eq!(start.pod_patch["spec"]["containers"][0]["image"], "nginx:2");
    assert_eq!(
        start.pod_patch["metadata"]["labels"]["controller-revision-hash"],
        "web-new"
    );
    assert_eq!(
        start.pod_patch["metadata"]["labels"]["lifecycle.apps.kruise.io/state"],
        "Updating"
    );
}

#[test]
fn partition_holds_pods_back_and_paused_holds_all() {
    let pods: Vec<Pod> = (0..4)
        .map(|i| pod(&format!("web-{i}"), "web-old", true))
        .collect();
    let c = cs(
        "  replicas: 4\n  updateStrategy: {type: InPlaceIfPossible, partition: 3, maxUnavailable: 4}\n",
    );
    assert_eq!(run(&c, &pods, "web-old", "web-new").steps.len(), 1);
    let c = cs(
        "  replicas: 4\n  updateStrategy: {type: InPlaceIfPossible, partition: '50%', maxUnavailable: 4}\n",
    );
    assert_eq!(run(&c, &pods, "web-old", "web-new").steps.len(), 2);
    let c = cs("  replicas: 4\n  updateStrategy: {type: InPlaceIfPossible, paused: true}\n");
    assert!(run(&c, &pods, "web-old", "web-new").steps.is_empty());
}

#[test]
fn recreate_marks_pods_for_deletion() {
    let c = cs("  replicas: 2\n  updateStrategy: {maxUnavailable: 1}\n");
    let pods = [pod("web-a", "web-old", true), pod("web-b", "web-old", true)];
    let p = run(&c, &pods, "web-old", "web-new");
    assert_eq!(
        p.steps,
        vec![Step::Patch {
            pod: "web-a".into(),
            patch: json!({"metadata": {"labels": {SPECIFIED_DELETE_KEY: "true"}}})
        }]
    );
}

#[test]
fn max_surge_creates_new_pods_before_old_ones_go() {
    let c = cs("  replicas: 2\n  updateStrategy: {maxSurge: 1, maxUnavailable: 0}\n");
    let pods = [pod("web-a", "web-old", true), pod("web-b", "web-old", true)];
    let p = run(&c, &pods, "web-old", "web-new");
    assert_eq!(
        p.steps,
        vec![Step::Create {
            revision: "web-new".into(),
            count: 1
        }]
    );
}

#[test]
fn pre_delete_hook_holds_pods_in_preparing_delete() {
    let c = cs("  replicas: 1\n  lifecycle: {preDelete: {labelsHandler: {hold: 'true'}}}\n");
    let mut held = pod("web-a", "web-new", false);
    held.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("hold".into(), "true".into());
    let p = run(
        &c,
        &[held.clone(), pod("web-b", "web-new", true)],
        "web-new",
        "web-new",
    );
    assert!(
        matches!(&p.steps[..], [Step::Patch { pod, patch }] if pod == "web-a" && patch["metadata"]["labels"]["lifecycle.apps.kruise.io/state"] == "PreparingDelete"),
        "{:?}",
        p.steps
    );
    held.metadata.labels.as_mut().unwrap().insert(
        "lifecycle.apps.kruise.io/state".into(),
        "PreparingDelete".into(),
    );
    let p = run(
        &c,
        &[held.clone(), pod("web-b", "web-new", true)],
        "web-new",
        "web-new",
    );
    assert!(p.steps.is_empty(), "still held: {:?}", p.steps);
    held.metadata.labels.as_mut().unwrap().remove("hold");
    let p = run(
        &c,
        &[held, pod("web-b", "web-new", true)],
        "web-new",
        "web-new",
    );
    assert_eq!(
        p.steps,
        vec![Step::Delete {
            pod: "web-a".into()
        }]
    );
}

#[test]
fn finished_in_place_updates_are_marked_ready_and_normal() {
    let c = cs("  replicas: 1\n  updateStrategy: {type: InPlaceIfPossible}\n");
    let mut p = pod("web-a", "web-new", true);
    p.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("lifecycle.apps.kruise.io/state".into(), "Updating".into());
    p.metadata.annotations = Some(BTreeMap::from([(
        keelson_api::apps::shared::IN_PLACE_UPDATE_STATE_KEY.to_string(),
        r#"{"revision":"web-new","updateTimestamp":null,"lastContainerStatuses":{"main":{"imageID":"sha256:1","containerID":"containerd://old"}}}"#.to_string(),
    )]));
    let conds = p.status.as_mut().unwrap().conditions.as_mut().unwrap();
    conds[1].status = "False".into();
    conds[1].reason = Some(inplace::REASON_START.into());
    let plan = run(&c, &[p], "web-old", "web-new");
    assert_eq!(
        plan.steps[0],
        Step::MarkReady {
            pod: "web-a".into()
        }
    );
    assert!(
        matches!(&plan.steps[1], Step::Patch { patch, .. } if patch["metadata"]["labels"]["lifecycle.apps.kruise.io/state"] == "Normal")
    );
}

#[test]
fn scale_up_cancels_a_plain_pre_delete_and_vanished_names_are_pruned() {
    let c = cs(
        "  replicas: 2\n  lifecycle: {preDelete: {labelsHandler: {hold: 'true'}}}\n  scaleStrategy: {podsToDelete: [gone]}\n",
    );
    let mut held = pod("web-a", "web-new", true);
    held.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("hold".into(), "true".into());
    held.metadata.labels.as_mut().unwrap().insert(
        "lifecycle.apps.kruise.io/state".into(),
        "PreparingDelete".into(),
    );
    let p = run(
        &c,
        &[held.clone(), pod("web-b", "web-new", true)],
        "web-new",
        "web-new",
    );
    assert!(
        matches!(&p.steps[..], [Step::Patch { pod, patch }] if pod == "web-a" && patch["metadata"]["labels"]["lifecycle.apps.kruise.io/state"] == "PreparingNormal"),
        "{:?}",
        p.steps
    );
    assert_eq!(
        vanished_pods_to_delete(&c, &[held]),
        vec!["gone".to_string()]
    );
}

#[test]
fn priority_strategies_order_the_updates() {
    let with = |name: &str, labels: &[(&str, &str)]| {
        let mut p = pod(name, "web-old", true);
        for (k, v) in labels {
            p.metadata
                .labels
                .as_mut()
                .unwrap()
                .insert(k.to_string(), v.to_string());
        }
        p
    };
    let pods = [
        with("web-a", &[]),
        with("web-b", &[("tier", "canary")]),
        with("web-c", &[("rank", "pod-2")]),
        with("web-d", &[("rank", "pod-10")]),
    ];
    let first = |c: &CloneSet| {
        let p = run(c, &pods, "web-old", "web-new");
        p.steps
            .iter()
            .find_map(|s| match s {
                Step::InPlace { pod, .. } => Some(pod.clone()),
                _ => None,
            })
            .unwrap()
    };
    let weighted = cs(
        "  replicas: 4\n  updateStrategy: {type: InPlaceIfPossible, maxUnavailable: 1, priorityStrategy: {weightPriority: [{weight: 50, matchSelector: {matchLabels: {tier: canary}}}]}}\n",
    );
    assert_eq!(first(&weighted), "web-b");
    let ordered = cs(
        "  replicas: 4\n  updateStrategy: {type: InPlaceIfPossible, maxUnavailable: 1, priorityStrategy: {orderPriority: [{orderedKey: rank}]}}\n",
    );
    assert_eq!(first(&ordered), "web-d", "larger trailing number first");
}

#[test]
fn scatter_spreads_the_matching_pods_through_the_update_order() {
    let c = cs(
        "  replicas: 6\n  updateStrategy: {type: InPlaceIfPossible, maxUnavailable: 6, scatterStrategy: [{key: zone, value: a}]}\n",
    );
    let pods: Vec<Pod> = (0..6)
        .map(|i| {
            let mut p = pod(&format!("web-{i}"), "web-old", true);
            if i < 2 {
                p.metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .insert("zone".into(), "a".into());
            }
            p
        })
        .collect();
    let p = run(&c, &pods, "web-old", "web-new");
    let order: Vec<String> = p
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::InPlace { pod, .. } => Some(pod.clone()),
            _ => None,
        })
        .collect();
    // Without scatter the two zone-a pods (web-0, web-1) would go first.
    assert_eq!(
        order,
        vec!["web-2", "web-3", "web-0", "web-4", "web-5", "web-1"]
    );
}

mod gates;
mod lifecycle;
