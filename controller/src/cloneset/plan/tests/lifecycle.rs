//! Lifecycle hooks with `markPodNotReady`, and the `Updated` pod held anew.

use super::*;

const STATE: &str = "lifecycle.apps.kruise.io/state";

/// A pod with the `KruisePodReady` gate, its condition held by `holders`
/// (JSON list; empty: True).
fn gated(name: &str, revision: &str, state: &str, labels: &[(&str, &str)], holders: &str) -> Pod {
    let mut p = pod(name, revision, true);
    let l = p.metadata.labels.as_mut().unwrap();
    l.insert(STATE.into(), state.into());
    for (k, v) in labels {
        l.insert(k.to_string(), v.to_string());
    }
    p.spec.as_mut().unwrap().readiness_gates = Some(vec![
        serde_json::from_value(json!({"conditionType": "KruisePodReady"})).unwrap(),
    ]);
    let status = if holders.is_empty() { "True" } else { "False" };
    p.status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()
        .push(
            serde_json::from_value(
                json!({"type": "KruisePodReady", "status": status, "message": holders}),
            )
            .unwrap(),
        );
    p
}

fn state_of(patch: &Value) -> &str {
    patch["metadata"]["labels"][STATE].as_str().unwrap_or("")
}

#[test]
fn pre_delete_mark_pod_not_ready_holds_the_pod_out_of_service() {
    let c = cs(
        "  replicas: 1\n  lifecycle: {preDelete: {labelsHandler: {hold: 'true'}, markPodNotReady: true}}\n",
    );
    let held = gated("web-a", "web-new", "Normal", &[("hold", "true")], "");
    let other = gated("web-b", "web-new", "Normal", &[], "");
    let p = run(&c, &[held, other.clone()], "web-new", "web-new");
    assert!(
        matches!(&p.steps[..], [Step::Readiness { pod, key: "preDeleteHook", hold: true, then: Some(t) }]
            if pod == "web-a" && state_of(t) == "PreparingDelete"),
        "{:?}",
        p.steps
    );
    // Already PreparingDelete but not held (written before the flag):
    // held now, no state write.
    let waiting = gated(
        "web-a",
        "web-new",
        "PreparingDelete",
        &[("hold", "true")],
        "",
    );
    let p = run(&c, &[waiting, other.clone()], "web-new", "web-new");
    assert_eq!(
        p.steps,
        vec![Step::Readiness {
            pod: "web-a".into(),
            key: "preDeleteHook",
            hold: true,
            then: None
        }]
    );
    let held_now = gated(
        "web-a",
        "web-new",
        "PreparingDelete",
        &[("hold", "true")],
        r#"[{"userAgent":"Lifecycle","key":"preDeleteHook"}]"#,
    );
    let p = run(&c, &[held_now.clone(), other.clone()], "web-new", "web-new");
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    // With markPodNotReady a PreparingDelete pod is not taken back when
    // replicas grow again; the new pod is created beside it.
    let more = cs(
        "  replicas: 3\n  lifecycle: {preDelete: {labelsHandler: {hold: 'true'}, markPodNotReady: true}}\n",
    );
    let p = run(&more, &[held_now, other], "web-new", "web-new");
    assert_eq!(
        p.steps,
        vec![Step::Create {
            revision: "web-new".into(),
            count: 1
        }]
    );
}

#[test]
fn pods_without_the_gate_are_only_moved() {
    let c = cs(
        "  replicas: 1\n  lifecycle: {preDelete: {labelsHandler: {hold: 'true'}, markPodNotReady: true}}\n",
    );
    let mut held = pod("web-a", "web-new", true);
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
        matches!(&p.steps[..], [Step::Patch { patch, .. }] if state_of(patch) == "PreparingDelete"),
        "{:?}",
        p.steps
    );
    held.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(STATE.into(), "PreparingDelete".into());
    let p = run(
        &c,
        &[held, pod("web-b", "web-new", true)],
        "web-new",
        "web-new",
    );
    assert!(p.steps.is_empty(), "nothing to hold: {:?}", p.steps);
}

#[test]
fn in_place_update_mark_pod_not_ready_from_preparing_update_to_updated() {
    let spec = "  replicas: 1\n  updateStrategy: {type: InPlaceIfPossible}\n  lifecycle: {inPlaceUpdate: {labelsHandler: {ready: 'true'}, markPodNotReady: true}}\n";
    let c = cs(spec);
    // Hooked: held in PreparingUpdate, out of service.
    let hooked = gated("web-a", "web-old", "Normal", &[("ready", "true")], "");
    let p = run(&c, &[hooked], "web-old", "web-new");
    assert!(
        matches!(&p.steps[..], [Step::Readiness { key: "preUpdateHook", hold: true, then: Some(t), .. }]
            if state_of(t) == "PreparingUpdate"),
        "{:?}",
        p.steps
    );
    // Released by the user: updated in place (the holder stays while it
    // updates).
    let held = r#"[{"userAgent":"Lifecycle","key":"preUpdateHook"}]"#;
    let released = gated("web-a", "web-old", "PreparingUpdate", &[], held);
    let p = run(&c, &[released], "web-old", "web-new");
    assert!(
        matches!(&p.steps[..], [Step::InPlace { .. }]),
        "{:?}",
        p.steps
    );
    // Done, hook not all hooked: Updated, and the holder dropped first.
    let mut done = gated("web-a", "web-new", "Updating", &[], held);
    done.metadata.annotations = Some(BTreeMap::from([(
        keelson_api::apps::shared::IN_PLACE_UPDATE_STATE_KEY.to_string(),
        r#"{"revision":"web-new","updateTimestamp":null,"lastContainerStatuses":{"main":{"imageID":"sha256:1","containerID":"containerd://old"}}}"#.to_string(),
    )]));
    let conds = done.status.as_mut().unwrap().conditions.as_mut().unwrap();
    conds[1].status = "False".into();
    conds[1].reason = Some(inplace::REASON_START.into());
    let p = run(&c, &[done], "web-old", "web-new");
    assert_eq!(
        p.steps[0],
        Step::MarkReady {
            pod: "web-a".into()
        }
    );
    assert!(
        matches!(&p.steps[1], Step::Readiness { key: "preUpdateHook", hold: false, then: Some(t), .. }
            if state_of(t) == "Updated"),
        "{:?}",
        p.steps
    );
    // A pod back to Normal while still held (its hook labels came back
    // before the update finished) is released too.
    let back = gated("web-a", "web-new", "Updated", &[("ready", "true")], held);
    let p = run(&c, &[back], "web-new", "web-new");
    assert!(
        matches!(&p.steps[..], [Step::Readiness { hold: false, then: Some(t), .. }] if state_of(t) == "Normal"),
        "{:?}",
        p.steps
    );
}

#[test]
fn an_updated_pod_to_update_again_gets_its_hook_back() {
    let c = cs(
        "  replicas: 1\n  updateStrategy: {type: InPlaceIfPossible}\n  lifecycle: {inPlaceUpdate: {labelsHandler: {ready: 'true'}, finalizersHandler: [example.com/hold]}}\n",
    );
    // Updated (the user has not re-added the hook yet), on an old revision.
    let p = run(
        &c,
        &[gated("web-a", "web-old", "Updated", &[], "")],
        "web-old",
        "web-new",
    );
    let [Step::Patch { pod, patch }] = &p.steps[..] else {
        panic!("{:?}", p.steps)
    };
    assert_eq!(pod, "web-a");
    assert_eq!(state_of(patch), "PreparingUpdate");
    assert_eq!(patch["metadata"]["labels"]["ready"], "true");
    assert_eq!(patch["metadata"]["finalizers"], json!(["example.com/hold"]));
}
