//! A ContainerRecreateRequest ↔ the restart engine, without I/O: the
//! engine request a CRR stands for (the pod by the uid label the webhook
//! set, containers with their captured statusContext and preStop), and the
//! CRR status a restart's status makes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keelson_api::apps::v1alpha1::containerrecreaterequest::{
    ANNOTATION_UNREADY_ACQUIRED, ContainerRecreateRequest,
    ContainerRecreateRequestContainerRecreateState, ContainerRecreateRequestStatus, LABEL_POD_UID,
};

use crate::restart::spec::{
    ExecAction, FailurePolicy, Phase, PodRef, PreStop, RestartContainer, RestartSpec,
    RestartStatus, StatusContext, Strategy,
};

/// The restart key of the ContainerRecreateRequest with `uid`.
pub fn key_of(uid: &str) -> String {
    format!("crr/{uid}")
}

/// The restart request `crr` stands for.
pub fn restart_spec(crr: &ContainerRecreateRequest) -> Result<RestartSpec, String> {
    let uid = crr
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_POD_UID).cloned())
        .filter(|u| !u.is_empty());
    let pod = PodRef {
        namespace: crr.metadata.namespace.clone(),
        name: Some(crr.spec.pod_name.clone()),
        uid,
        sandbox_id: None,
    };
    let s = crr.spec.strategy.clone().unwrap_or_default();
    let failure_policy = match s.failure_policy.as_deref() {
        None | Some("") | Some("Fail") => FailurePolicy::Fail,
        Some("Ignore") => FailurePolicy::Ignore,
        Some(other) => return Err(format!("unknown failurePolicy {other}")),
    };
    let spec = RestartSpec {
        // The CRR's uid is the restart's identity: submitted again (after
        // a crash before its id was noted), it restarts nothing twice.
        key: crr.metadata.uid.as_ref().map(|u| key_of(u)),
        pod,
        containers: crr
            .spec
            .containers
            .iter()
            .map(|c| RestartContainer {
                name: c.name.clone(),
                pre_stop: c.pre_stop.as_ref().map(|p| PreStop {
                    exec: p.exec.as_ref().map(|e| ExecAction {
                        command: e.command.clone().unwrap_or_default(),
                    }),
                    http_get: p
                        .http_get
                        .as_ref()
                        .and_then(|h| serde_json::to_value(h).ok()),
                    tcp_socket: p
                        .tcp_socket
                        .as_ref()
                        .and_then(|t| serde_json::to_value(t).ok()),
                }),
                status_context: c.status_context.as_ref().map(|ctx| StatusContext {
                    container_id: ctx.container_id.clone(),
                    restart_count: ctx.restart_count,
                }),
            })
            .collect(),
        strategy: Strategy {
            failure_policy,
            ordered_recreate: s.ordered_recreate,
            force_recreate: s.force_recreate,
            termination_grace_period_seconds: s.termination_grace_period_seconds,
            unready_grace_period_seconds: s.unready_grace_period_seconds,
            min_started_seconds: s.min_started_seconds,
        },
        active_deadline_seconds: crr.spec.active_deadline_seconds,
        ttl_seconds_after_finished: crr.spec.ttl_seconds_after_finished,
    };
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

/// Where a request with `unreadyGracePeriodSeconds` stands before the
/// node may act: the controller first makes the pod not-ready and writes
/// when (annotation `crr.apps.kruise.io/unready-acquired`, RFC 3339); the
/// grace runs from then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unready {
    /// No grace asked for: go ahead.
    NotAsked,
    /// Not acquired yet: wait (the request shows Recreating meanwhile, which
    /// is what the controller acts on).
    Acquiring,
    /// Acquired: this many seconds of grace are left (0: none).
    Left(i64),
    /// The annotation cannot be read: the request fails with this.
    Bad(String),
}

/// The unready state of `crr` at `now_s` (Unix seconds).
pub fn unready(crr: &ContainerRecreateRequest, now_s: i64) -> Unready {
    let Some(grace) = crr
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.unready_grace_period_seconds)
    else {
        return Unready::NotAsked;
    };
    let Some(at) = crr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_UNREADY_ACQUIRED))
        .filter(|v| !v.is_empty())
    else {
        return Unready::Acquiring;
    };
    match at.parse::<k8s_openapi::jiff::Timestamp>() {
        Ok(t) => Unready::Left((grace - (now_s - t.as_second())).max(0)),
        Err(e) => Unready::Bad(format!("failed to parse unready time {at}: {e}")),
    }
}

/// The status a request waiting for the pod to be made not-ready shows.
pub fn acquiring_status() -> ContainerRecreateRequestStatus {
    ContainerRecreateRequestStatus {
        phase: "Recreating".into(),
        message: Some("waiting for the pod to be made not-ready".into()),
        ..Default::default()
    }
}

fn phase(p: Phase) -> String {
    format!("{p:?}")
}

/// The CRR status for a restart's status.
pub fn crr_status(s: &RestartStatus) -> ContainerRecreateRequestStatus {
    ContainerRecreateRequestStatus {
        phase: phase(s.phase),
        completion_time: s
            .completion_unix_ms
            .and_then(|ms| i64::try_from(ms).ok())
            .and_then(|ms| k8s_openapi::jiff::Timestamp::from_millisecond(ms).ok())
            .map(Time),
        message: Some(s.message.clone()).filter(|m| !m.is_empty()),
        container_recreate_states: s
            .container_recreate_states
            .iter()
            .map(|c| ContainerRecreateRequestContainerRecreateState {
                name: c.name.clone(),
                phase: phase(c.phase),
                message: Some(c.message.clone()).filter(|m| !m.is_empty()),
                is_killed: c.is_killed,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restart::spec::{ContainerRecreateState, PodIdentity};

    fn crr() -> ContainerRecreateRequest {
        serde_saphyr::from_str(
            r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ContainerRecreateRequest
metadata:
  name: r
  namespace: team
  labels: {crr.apps.kruise.io/pod-uid: uid-1, crr.apps.kruise.io/node-name: node-a}
spec:
  podName: web-0
  containers:
  - name: app
    preStop: {exec: {command: [sh, -c, "sleep 1"]}}
    statusContext: {containerID: "containerd://abc", restartCount: 2}
  - name: side
    statusContext: {containerID: "containerd://def", restartCount: 0}
  strategy: {failurePolicy: Ignore, orderedRecreate: true, minStartedSeconds: 5, terminationGracePeriodSeconds: 10}
  activeDeadlineSeconds: 300
"#,
        )
        .unwrap()
    }

    #[test]
    fn a_crr_becomes_an_engine_request() {
        let s = restart_spec(&crr()).unwrap();
        assert_eq!(s.pod.uid.as_deref(), Some("uid-1"));
        assert_eq!(s.pod.name.as_deref(), Some("web-0"));
        assert_eq!(s.strategy.failure_policy, FailurePolicy::Ignore);
        assert!(s.strategy.ordered_recreate);
        assert_eq!(s.strategy.min_started_seconds, 5);
        let app = &s.containers[0];
        assert_eq!(app.status_context.as_ref().unwrap().bare_id(), "abc");
        assert_eq!(
            app.pre_stop
                .as_ref()
                .unwrap()
                .exec
                .as_ref()
                .unwrap()
                .command,
            vec!["sh", "-c", "sleep 1"]
        );
        assert_eq!(s.active_deadline_seconds, Some(300));
        let mut bad = crr();
        bad.spec.strategy.as_mut().unwrap().failure_policy = Some("Maybe".into());
        assert!(restart_spec(&bad).unwrap_err().contains("Maybe"));
    }

    #[test]
    fn unready_grace_waits_for_the_controller_then_runs_from_its_time() {
        let mut r = crr();
        assert_eq!(unready(&r, 1000), Unready::NotAsked);
        r.spec
            .strategy
            .as_mut()
            .unwrap()
            .unready_grace_period_seconds = Some(5);
        assert_eq!(unready(&r, 1000), Unready::Acquiring);
        r.metadata.annotations = Some(
            [(
                ANNOTATION_UNREADY_ACQUIRED.to_string(),
                "1970-01-01T00:16:40Z".to_string(),
            )]
            .into(),
        );
        assert_eq!(unready(&r, 1002), Unready::Left(3));
        assert_eq!(unready(&r, 1100), Unready::Left(0));
        r.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_UNREADY_ACQUIRED.into(), "yesterday".into());
        assert!(matches!(unready(&r, 1000), Unready::Bad(m) if m.contains("yesterday")));
    }

    #[test]
    fn a_restart_status_becomes_the_crr_status() {
        let s = RestartStatus {
            id: "restart-1".into(),
            pod: PodIdentity {
                namespace: "team".into(),
                name: "web-0".into(),
                uid: "uid-1".into(),
            },
            phase: Phase::Completed,
            accepted_unix_ms: 1_000,
            started_unix_ms: Some(1_000),
            completion_unix_ms: Some(5_000),
            message: "1 of 2 containers recreated; failed: side".into(),
            container_recreate_states: vec![
                ContainerRecreateState {
                    name: "app".into(),
                    phase: Phase::Succeeded,
                    message: "recreated as 123".into(),
                    is_killed: true,
                },
                ContainerRecreateState {
                    name: "side".into(),
                    phase: Phase::Failed,
                    message: String::new(),
                    is_killed: false,
                },
            ],
        };
        let c = crr_status(&s);
        assert_eq!(c.phase, "Completed");
        assert_eq!(c.completion_time.unwrap().0.as_millisecond(), 5_000);
        assert_eq!(c.container_recreate_states[0].phase, "Succeeded");
        assert!(c.container_recreate_states[0].is_killed);
        assert_eq!(c.container_recreate_states[1].message, None);
        let json = serde_json::to_value(crr_status(&s)).unwrap();
        assert_eq!(json["containerRecreateStates"][0]["isKilled"], true);
    }
}
