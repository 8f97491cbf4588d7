//! ContainerRecreateRequest on the cluster side, without I/O: admission
//! (defaulting and validation as OpenKruise's webhook does it, plus the
//! containers' `statusContext` taken from the pod's status at creation, so
//! the node knows which instance the request is about), and the
//! controller's deadline and TTL handling. The node side is the agent's
//! restart engine.

pub mod controller;
pub mod index;
pub mod lifecycle;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keelson_api::apps::v1alpha1::containerrecreaterequest::{
    ANNOTATION_UNREADY_ACQUIRED, ContainerRecreateRequest,
    ContainerRecreateRequestContainerContext, ContainerRecreateRequestStatus,
    ContainerRecreateRequestStrategy, LABEL_ACTIVE, LABEL_NODE_NAME, LABEL_POD_NAME, LABEL_POD_UID,
    ProbeHandler,
};

/// Shortest `activeDeadlineSeconds` accepted (OpenKruise's bound).
pub const MIN_DEADLINE_SECONDS: i64 = 3;
/// Message of a request ended by its deadline.
pub const DEADLINE_MESSAGE: &str = "recreating has exceeded the activeDeadlineSeconds";

/// Why a request is refused (the HTTP status an admission answer uses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
}

fn bad(msg: impl Into<String>) -> Refused {
    Refused::BadRequest(msg.into())
}

/// Defaults and validates a new request against its pod (`None`: not
/// found); returns the request as it is to be stored.
pub fn admit_create(
    crr: &ContainerRecreateRequest,
    pod: Option<&Pod>,
) -> Result<ContainerRecreateRequest, Refused> {
    let mut out = crr.clone();
    let spec = &mut out.spec;
    if spec.pod_name.is_empty() {
        return Err(bad("podName can not be empty"));
    }
    if spec.containers.is_empty() {
        return Err(bad("containers list can not be empty"));
    }
    if spec
        .active_deadline_seconds
        .is_some_and(|d| d < MIN_DEADLINE_SECONDS)
    {
        return Err(bad(format!(
            "activeDeadlineSeconds can not be less than {MIN_DEADLINE_SECONDS}s"
        )));
    }
    if spec.ttl_seconds_after_finished.is_some_and(|t| t < 0) {
        return Err(bad("ttlSecondsAfterFinished must be non-negative"));
    }
    let strategy = spec
        .strategy
        .get_or_insert_with(ContainerRecreateRequestStrategy::default);
    if strategy
        .termination_grace_period_seconds
        .is_some_and(|g| g < 0)
    {
        return Err(bad("terminationGracePeriodSeconds must be non-negative"));
    }
    if strategy.unready_grace_period_seconds.is_some_and(|g| g < 0) {
        return Err(bad("unreadyGracePeriodSeconds must be non-negative"));
    }
    if strategy.min_started_seconds < 0 {
        return Err(bad("minStartedSeconds must be non-negative"));
    }
    match strategy.failure_policy.as_deref() {
        None | Some("") => strategy.failure_policy = Some("Fail".into()),
        Some("Fail" | "Ignore") => {}
        Some(other) => return Err(bad(format!("unknown failurePolicy {other}"))),
    }
    let Some(pod) = pod else {
        return Err(bad(format!("no Pod named {}", spec.pod_name)));
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if pod.metadata.deletion_timestamp.is_some() || matches!(phase, Some("Succeeded" | "Failed")) {
        return Err(bad("not allowed to recreate containers in an inactive Pod"));
    }
    let pod_spec = pod.spec.clone().unwrap_or_default();
    let Some(node) = pod_spec.node_name.clone().filter(|n| !n.is_empty()) else {
        return Err(bad("not allowed to recreate containers in a pending Pod"));
    };
    if strategy.termination_grace_period_seconds.is_none() {
        strategy.termination_grace_period_seconds = pod_spec.termination_grace_period_seconds;
    }
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let mut seen = BTreeSet::new();
    for c in &mut spec.containers {
        if !seen.insert(c.name.clone()) {
            return Err(bad(format!("can not recreate {} more than once", c.name)));
        }
        if c.pre_stop.is_some() || !c.ports.is_empty() || c.status_context.is_some() {
            return Err(bad(
                "preStop, ports and statusContext of a container are read-only",
            ));
        }
        let Some(container) = pod_spec.containers.iter().find(|pc| pc.name == c.name) else {
            return Err(bad(format!("container {} not found in Pod", c.name)));
        };
        let Some(status) = statuses.iter().find(|s| s.name == c.name) else {
            return Err(bad(format!("no status of container {} in the Pod", c.name)));
        };
        let Some(id) = status.container_id.clone().filter(|i| !i.is_empty()) else {
            return Err(bad(format!(
                "container {} has no containerID yet (not started?)",
                c.name
            )));
        };
        c.status_context = Some(ContainerRecreateRequestContainerContext {
            container_id: id,
            restart_count: status.restart_count,
        });
        if let Some(hook) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
        {
            c.pre_stop = Some(ProbeHandler {
                exec: hook.exec.clone(),
                http_get: hook.http_get.clone(),
                tcp_socket: hook.tcp_socket.clone(),
            });
            if hook.http_get.is_some() {
                c.ports = container.ports.clone().unwrap_or_default();
            }
        }
    }
    let labels = out.metadata.labels.get_or_insert_with(Default::default);
    labels.insert(LABEL_POD_NAME.into(), out.spec.pod_name.clone());
    labels.insert(LABEL_ACTIVE.into(), "true".into());
    labels.insert(LABEL_NODE_NAME.into(), node);
    labels.insert(
        LABEL_POD_UID.into(),
        pod.metadata.uid.clone().unwrap_or_default(),
    );
    Ok(out)
}

/// Checks an update: the whole spec is immutable (its containers carry the
/// preStop hooks and statusContext checked at creation, which the node
/// acts on), and so are the pod/node labels and a set unready-acquired
/// annotation.
pub fn admit_update(
    old: &ContainerRecreateRequest,
    new: &ContainerRecreateRequest,
) -> Result<(), Refused> {
    if old.spec != new.spec {
        return Err(Refused::Forbidden(
            "spec of ContainerRecreateRequest is immutable".into(),
        ));
    }
    let label = |c: &ContainerRecreateRequest, k: &str| {
        c.metadata.labels.as_ref().and_then(|l| l.get(k).cloned())
    };
    for key in [LABEL_POD_NAME, LABEL_POD_UID, LABEL_NODE_NAME] {
        if label(old, key) != label(new, key) {
            return Err(Refused::Forbidden(format!(
                "not allowed to update immutable label {key}"
            )));
        }
    }
    let annotation = |c: &ContainerRecreateRequest| {
        c.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_UNREADY_ACQUIRED).cloned())
    };
    if annotation(old).is_some_and(|a| !a.is_empty()) && annotation(old) != annotation(new) {
        return Err(Refused::Forbidden(format!(
            "not allowed to update immutable annotation {ANNOTATION_UNREADY_ACQUIRED}"
        )));
    }
    Ok(())
}

/// What the controller does with a request now.
#[derive(Debug, Clone, PartialEq)]
pub enum Cleanup {
    /// Nothing until `after_seconds` (or an event).
    Wait { after_seconds: Option<i64> },
    /// Write this status: the deadline passed; every unfinished container
    /// failed (OpenKruise left them as they were, #2353).
    Expire(ContainerRecreateRequestStatus),
    /// Completed: drop the active label.
    Deactivate,
    /// Completed and past its TTL.
    Delete,
}

/// Deadline and TTL handling for `crr` at `now`.
pub fn cleanup(crr: &ContainerRecreateRequest, now: &Time) -> Cleanup {
    let now_s = now.0.as_second();
    let status = crr.status.clone().unwrap_or_default();
    if let Some(done) = &status.completion_time {
        let active = crr
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(LABEL_ACTIVE));
        if let Some(ttl) = crr.spec.ttl_seconds_after_finished {
            let left = done.0.as_second() + i64::from(ttl) - now_s;
            if left <= 0 {
                return Cleanup::Delete;
            }
            if active {
                return Cleanup::Deactivate;
            }
            return Cleanup::Wait {
                after_seconds: Some(left),
            };
        }
        return if active {
            Cleanup::Deactivate
        } else {
            Cleanup::Wait {
                after_seconds: None,
            }
        };
    }
    let (Some(deadline), Some(created)) = (
        crr.spec.active_deadline_seconds,
        crr.metadata.creation_timestamp.as_ref(),
    ) else {
        return Cleanup::Wait {
            after_seconds: None,
        };
    };
    let left = created.0.as_second() + deadline - now_s;
    if left > 0 {
        return Cleanup::Wait {
            after_seconds: Some(left),
        };
    }
    Cleanup::Expire(completed(crr, now, DEADLINE_MESSAGE))
}

/// `crr`'s status completed at `now` with `message`: every container not
/// yet finished is Failed with the same message.
pub fn completed(
    crr: &ContainerRecreateRequest,
    now: &Time,
    message: &str,
) -> ContainerRecreateRequestStatus {
    let mut expired = crr.status.clone().unwrap_or_default();
    expired.phase = "Completed".into();
    expired.completion_time = Some(now.clone());
    expired.message = Some(message.into());
    let mut states = expired.container_recreate_states.clone();
    for c in &crr.spec.containers {
        match states.iter_mut().find(|s| s.name == c.name) {
            Some(s) if s.phase == "Succeeded" || s.phase == "Failed" => {}
            Some(s) => {
                s.phase = "Failed".into();
                s.message = Some(message.into());
            }
            None => states.push(
                keelson_api::apps::v1alpha1::containerrecreaterequest::ContainerRecreateRequestContainerRecreateState {
                    name: c.name.clone(),
                    phase: "Failed".into(),
                    message: Some(message.into()),
                    is_killed: false,
                },
            ),
        }
    }
    expired.container_recreate_states = states;
    expired
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::at;
    use keelson_api::apps::v1alpha1::containerrecreaterequest::ContainerRecreateRequestContainerRecreateState as State;

    fn crr(yaml_spec: &str) -> ContainerRecreateRequest {
        serde_saphyr::from_str(&format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ContainerRecreateRequest\nmetadata:\n  name: r\n  namespace: default\nspec:\n{yaml_spec}"
        ))
        .unwrap()
    }

    fn pod() -> Pod {
        serde_saphyr::from_str(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: default, uid: pod-uid-1}
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 45
  containers:
  - name: app
    image: nginx
    ports: [{containerPort: 80}]
    lifecycle:
      preStop:
        httpGet: {path: /quit, port: 80}
  - name: sidecar
    image: busybox
    lifecycle:
      preStop:
        exec: {command: [sh, -c, sleep 1]}
status:
  phase: Running
  containerStatuses:
  - {name: app, containerID: "containerd://aaa", restartCount: 2, ready: true, image: nginx, imageID: x}
  - {name: sidecar, containerID: "containerd://bbb", restartCount: 0, ready: true, image: busybox, imageID: y}
"#,
        )
        .unwrap()
    }

    const SPEC: &str = "  podName: web-0\n  containers:\n  - name: app\n  - name: sidecar\n";

    #[test]
    fn create_fills_defaults_labels_and_status_context_from_the_pod() {
        let out = admit_create(&crr(SPEC), Some(&pod())).unwrap();
        let labels = out.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_NODE_NAME], "node-a");
        assert_eq!(labels[LABEL_POD_UID], "pod-uid-1");
        assert_eq!(labels[LABEL_POD_NAME], "web-0");
        assert_eq!(labels[LABEL_ACTIVE], "true");
        let s = out.spec.strategy.unwrap();
        assert_eq!(s.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(s.termination_grace_period_seconds, Some(45));
        let app = &out.spec.containers[0];
        let ctx = app.status_context.as_ref().unwrap();
        assert_eq!(
            (ctx.container_id.as_str(), ctx.restart_count),
            ("containerd://aaa", 2)
        );
        assert!(app.pre_stop.as_ref().unwrap().http_get.is_some());
        assert_eq!(app.ports.len(), 1, "ports come with an httpGet preStop");
        let side = &out.spec.containers[1];
        assert!(side.pre_stop.as_ref().unwrap().exec.is_some());
        assert!(side.ports.is_empty());
    }

    #[test]
    fn create_refuses_bad_requests() {
        let p = pod();
        for (spec, pod, want) in [
            (
                "  podName: ''\n  containers: [{name: app}]\n",
                Some(&p),
                "podName",
            ),
            (
                "  podName: web-0\n  containers: []\n",
                Some(&p),
                "containers list",
            ),
            (
                "  podName: web-0\n  containers: [{name: app}, {name: app}]\n",
                Some(&p),
                "more than once",
            ),
            (
                "  podName: web-0\n  containers: [{name: nope}]\n",
                Some(&p),
                "not found in Pod",
            ),
            (
                "  podName: web-0\n  containers: [{name: app}]\n  activeDeadlineSeconds: 2\n",
                Some(&p),
                "less than 3s",
            ),
            (
                "  podName: web-0\n  containers: [{name: app}]\n  strategy: {failurePolicy: Sometimes}\n",
                Some(&p),
                "unknown failurePolicy",
            ),
            (
                "  podName: web-0\n  containers: [{name: app, statusContext: {containerID: x, restartCount: 0}}]\n",
                Some(&p),
                "read-only",
            ),
            (SPEC, None, "no Pod named web-0"),
        ] {
            let err = admit_create(&crr(spec), pod).unwrap_err();
            assert!(err.to_string().contains(want), "{spec}: {err}");
        }
        let mut pending = pod();
        pending.spec.as_mut().unwrap().node_name = None;
        assert!(
            admit_create(&crr(SPEC), Some(&pending))
                .unwrap_err()
                .to_string()
                .contains("pending")
        );
        let mut done = pod();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(
            admit_create(&crr(SPEC), Some(&done))
                .unwrap_err()
                .to_string()
                .contains("inactive")
        );
    }

    #[test]
    fn updates_keep_spec_and_identity_labels() {
        let old = admit_create(&crr(SPEC), Some(&pod())).unwrap();
        let mut new = old.clone();
        new.spec.containers[0].pre_stop = None;
        assert!(
            matches!(admit_update(&old, &new), Err(Refused::Forbidden(_))),
            "containers (and their preStop, run on the node) may not change"
        );
        assert_eq!(admit_update(&old, &old.clone()), Ok(()));
        let mut new = old.clone();
        new.spec.active_deadline_seconds = Some(60);
        assert!(matches!(
            admit_update(&old, &new),
            Err(Refused::Forbidden(_))
        ));
        let mut new = old.clone();
        new.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(LABEL_NODE_NAME.into(), "node-b".into());
        assert!(
            admit_update(&old, &new)
                .unwrap_err()
                .to_string()
                .contains(LABEL_NODE_NAME)
        );
    }

    #[test]
    fn the_deadline_fails_unfinished_containers_and_the_ttl_deletes() {
        let mut r = admit_create(
            &crr(&format!(
                "{SPEC}  activeDeadlineSeconds: 60\n  ttlSecondsAfterFinished: 30\n"
            )),
            Some(&pod()),
        )
        .unwrap();
        r.metadata.creation_timestamp = Some(at(1000));
        r.status = Some(ContainerRecreateRequestStatus {
            phase: "Recreating".into(),
            container_recreate_states: vec![State {
                name: "app".into(),
                phase: "Succeeded".into(),
                message: None,
                is_killed: true,
            }],
            ..Default::default()
        });
        assert_eq!(
            cleanup(&r, &at(1030)),
            Cleanup::Wait {
                after_seconds: Some(30)
            }
        );
        let Cleanup::Expire(status) = cleanup(&r, &at(1060)) else {
            panic!("expected expiry");
        };
        assert_eq!(status.phase, "Completed");
        assert_eq!(status.message.as_deref(), Some(DEADLINE_MESSAGE));
        let phases: Vec<(&str, &str)> = status
            .container_recreate_states
            .iter()
            .map(|s| (s.name.as_str(), s.phase.as_str()))
            .collect();
        assert_eq!(phases, vec![("app", "Succeeded"), ("sidecar", "Failed")]);
        r.status = Some(status);
        assert_eq!(cleanup(&r, &at(1070)), Cleanup::Deactivate);
        r.metadata.labels.as_mut().unwrap().remove(LABEL_ACTIVE);
        assert_eq!(
            cleanup(&r, &at(1070)),
            Cleanup::Wait {
                after_seconds: Some(20)
            }
        );
        assert_eq!(cleanup(&r, &at(1090)), Cleanup::Delete);
    }
}
