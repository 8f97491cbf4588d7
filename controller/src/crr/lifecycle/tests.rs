//! The request lifecycle steps, state in → step out.

use super::*;
use crate::testing::at;
use k8s_openapi::api::core::v1::PodCondition;

/// A request for container app of pod web-0 (uid pod-uid), made at t=1000.
fn crr(extra_spec: &str, status: &str) -> ContainerRecreateRequest {
    serde_saphyr::from_str(&format!(
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ContainerRecreateRequest\nmetadata:\n  name: r\n  namespace: team\n  creationTimestamp: '1970-01-01T00:16:40Z'\n  labels: {{crr.apps.kruise.io/pod-uid: pod-uid, crr.apps.kruise.io/active: 'true'}}\nspec:\n  podName: web-0\n  containers: [{{name: app}}]\n{extra_spec}{status}"
    ))
    .unwrap()
}

/// Pod web-0, app started at `started` (seconds), with or without the
/// KruisePodReady gate, Ready.
fn pod(started: i64, gate: bool) -> Pod {
    let started = k8s_openapi::jiff::Timestamp::from_second(started).unwrap();
    let gates = if gate {
        "  readinessGates: [{conditionType: KruisePodReady}]\n"
    } else {
        ""
    };
    serde_saphyr::from_str(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web-0, namespace: team, uid: pod-uid, resourceVersion: '77'}}\nspec:\n  containers: [{{name: app, image: nginx}}]\n{gates}status:\n  conditions:\n  - {{type: ContainersReady, status: 'True'}}\n  - {{type: Ready, status: 'True'}}\n  - {{type: KruisePodReady, status: 'True'}}\n  containerStatuses:\n  - name: app\n    image: nginx\n    imageID: x\n    ready: true\n    restartCount: 3\n    containerID: containerd://new\n    state: {{running: {{startedAt: '{started}'}}}}\n"
    ))
    .unwrap()
}

const RECREATING: &str = "status: {phase: Recreating}\n";

#[test]
fn a_request_whose_pod_has_gone_is_completed() {
    let r = crr("", RECREATING);
    let gone = Step::Complete {
        message: POD_GONE.into(),
    };
    assert_eq!(step(&r, None, &at(1010)), gone);
    let mut replaced = pod(900, false);
    replaced.metadata.uid = Some("another".into());
    assert_eq!(step(&r, Some(&replaced), &at(1010)), gone);
    let mut deleting = pod(900, false);
    deleting.metadata.deletion_timestamp = Some(at(1005));
    assert_eq!(step(&r, Some(&deleting), &at(1010)), gone);
}

#[test]
fn a_request_nobody_takes_up_is_completed_after_a_minute() {
    let r = crr("", "");
    let p = pod(900, false);
    assert_eq!(
        step(&r, Some(&p), &at(1030)),
        Step::Nothing {
            after_seconds: Some(30)
        }
    );
    assert_eq!(
        step(&r, Some(&p), &at(1060)),
        Step::Complete {
            message: NO_RESPONSE.into()
        }
    );
}

#[test]
fn fresh_container_statuses_are_mirrored_while_recreating() {
    let r = crr("", RECREATING);
    // Started before the request: history, not mirrored.
    let Step::SyncStatuses { value } = step(&r, Some(&pod(900, false)), &at(1010)) else {
        panic!()
    };
    assert_eq!(value, "[]");
    let Step::SyncStatuses { value } = step(&r, Some(&pod(1005, false)), &at(1010)) else {
        panic!()
    };
    assert_eq!(
        value,
        r#"[{"name":"app","ready":true,"restartCount":3,"containerID":"containerd://new"}]"#
    );
    let mut synced = r.clone();
    synced.metadata.annotations =
        Some([(ANNOTATION_SYNC_CONTAINER_STATUSES.to_string(), value)].into());
    assert_eq!(
        step(&synced, Some(&pod(1005, false)), &at(1010)),
        Step::Nothing {
            after_seconds: None
        }
    );
}

fn synced(mut r: ContainerRecreateRequest, p: &Pod) -> ContainerRecreateRequest {
    let value = synced_statuses(&r, p);
    r.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_SYNC_CONTAINER_STATUSES.into(), value);
    r
}

#[test]
fn unready_grace_makes_the_pod_not_ready_first() {
    let p = pod(900, true);
    let r = synced(
        crr("  strategy: {unreadyGracePeriodSeconds: 5}\n", RECREATING),
        &p,
    );
    let Step::Acquire {
        add_finalizer,
        pod_patch,
        at: when,
    } = step(&r, Some(&p), &at(1010))
    else {
        panic!()
    };
    assert!(add_finalizer);
    assert_eq!(when, "1970-01-01T00:16:50Z");
    let patch = pod_patch.unwrap();
    assert_eq!(patch["metadata"]["resourceVersion"], "77");
    let conds = patch["status"]["conditions"].as_array().unwrap();
    assert_eq!(conds[0]["type"], "KruisePodReady");
    assert_eq!(conds[0]["status"], "False");
    assert_eq!(
        conds[0]["message"],
        r#"[{"userAgent":"ContainerRecreateRequest","key":"team/r"}]"#
    );
    assert_eq!(
        (&conds[1]["type"], &conds[1]["status"]),
        (&"Ready".into(), &"False".into())
    );

    // Without the gate: no finalizer, no pod write, the time all the same
    // (the node must not wait for ever).
    let plain = pod(900, false);
    let r2 = synced(
        crr("  strategy: {unreadyGracePeriodSeconds: 5}\n", RECREATING),
        &plain,
    );
    assert_eq!(
        step(&r2, Some(&plain), &at(1010)),
        Step::Acquire {
            add_finalizer: false,
            pod_patch: None,
            at: "1970-01-01T00:16:50Z".into()
        }
    );

    // Acquired: nothing more.
    let mut done = r.clone();
    done.metadata.annotations.as_mut().unwrap().insert(
        ANNOTATION_UNREADY_ACQUIRED.into(),
        "1970-01-01T00:16:50Z".into(),
    );
    assert_eq!(
        step(&done, Some(&p), &at(1011)),
        Step::Nothing {
            after_seconds: None
        }
    );
}

/// The pod's KruisePodReady condition (the fixture has one).
fn gate_of(p: &mut Pod) -> &mut PodCondition {
    p.status
        .as_mut()
        .and_then(|s| s.conditions.as_mut())
        .and_then(|c| c.iter_mut().find(|c| c.type_ == "KruisePodReady"))
        .expect("the fixture pod has a KruisePodReady condition")
}

#[test]
fn completion_releases_the_gate_leaving_other_holders() {
    let mut r = crr(
        "  strategy: {unreadyGracePeriodSeconds: 5}\n",
        "status: {phase: Completed, completionTime: '1970-01-01T00:17:00Z'}\n",
    );
    r.metadata.finalizers = Some(vec![UNREADY_FINALIZER.into()]);
    let mut p = pod(900, true);
    let gate = gate_of(&mut p);
    gate.status = "False".into();
    gate.message = Some(
        r#"[{"userAgent":"ContainerRecreateRequest","key":"team/other"},{"userAgent":"ContainerRecreateRequest","key":"team/r"}]"#.into(),
    );
    let Step::Release { pod_patch } = step(&r, Some(&p), &at(1030)) else {
        panic!()
    };
    let c = &pod_patch.unwrap()["status"]["conditions"][0];
    assert_eq!(c["status"], "False", "another request still holds it");
    assert_eq!(
        c["message"],
        r#"[{"userAgent":"ContainerRecreateRequest","key":"team/other"}]"#
    );
    // The last holder turns it True.
    let gate = gate_of(&mut p);
    gate.message = Some(r#"[{"userAgent":"ContainerRecreateRequest","key":"team/r"}]"#.into());
    let Step::Release { pod_patch } = step(&r, Some(&p), &at(1030)) else {
        panic!()
    };
    assert_eq!(
        pod_patch.unwrap()["status"]["conditions"][0]["status"],
        "True"
    );
    // The pod gone: just the finalizer.
    assert_eq!(step(&r, None, &at(1030)), Step::Release { pod_patch: None });
    r.metadata.finalizers = None;
    assert_eq!(
        step(&r, None, &at(1030)),
        Step::Nothing {
            after_seconds: None
        }
    );
}
