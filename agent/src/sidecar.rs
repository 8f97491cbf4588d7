//! Job sidecar terminator (OpenKruise `KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT`)
//! with exit-code normalisation.
//!
//! In a pod whose restartPolicy is Never (OnFailure), once every main
//! container (one without the env) has exited (exited 0), the sidecars
//! that carry the env are stopped through CRI with the pod's grace period
//! (at least 2 s). A sidecar stopped this way usually exits non-zero
//! (SIGTERM/SIGKILL), which would make kubelet mark the pod Failed; so for
//! the sidecars the agent stopped on purpose, ContainerStatus answers to
//! kubelet report exit code 0 and reason `Completed`, and the pod ends
//! Succeeded by kubelet's own logic. With
//! `KRUISE_TERMINATE_SIDECAR_IGNORE_EXIT_CODE=true` a sidecar's own exit
//! code is ignored too once the mains are done, as in OpenKruise. A
//! sidecar that exits by itself while mains run keeps its real code.
//!
//! CRI does not carry the restart policy: it comes from the pod annotation
//! `keelson.io/restart-policy` (stamped by the controller's webhook), else
//! from the agent's `--default-restart-policy`. Nor does it carry preStop
//! hooks: standalone the agent cannot run them; in cluster mode it reads a
//! sidecar's `preStop.exec` from the pod watch and runs it (CRI ExecSync)
//! before the stop, as kubelet would.
//! Which sidecars were stopped on purpose is kept in sled, flushed before
//! the StopContainer is sent, so normalisation survives an agent crash.

use crate::runtime_conn::RuntimeConn;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use cri_proto as cri;
use serde::{Deserialize, Serialize};

use crate::backoff::{Backoff, Retry};
use crate::config::RestartPolicy;
use crate::cri::methods::runtime as m;
use crate::cri::{After, Call, Hook, HookFuture, Interest, Outcome};
use crate::kruise;
use crate::pods::{PodBook, PodView, State};
use crate::store::{Store, StoreError, Table};

/// Shortest grace period a sidecar gets (OpenKruise's minimum).
pub const MIN_GRACE_SECONDS: i64 = 2;
/// Grace period when kubelet's annotation is missing (Kubernetes' default).
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// A sidecar whose exit code is reported as 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalised {
    pub sandbox_id: String,
    pub name: String,
    /// True when the agent stopped it; false when only its exit code is
    /// ignored (`KRUISE_TERMINATE_SIDECAR_IGNORE_EXIT_CODE`).
    pub stopped_by_agent: bool,
}

fn env_true(value: Option<&String>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// What to do for a pod now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Sidecars to stop: (container id, name, grace seconds).
    pub stop: Vec<(String, String, i64)>,
    /// Exited sidecars whose exit code is to be ignored: (id, name).
    pub ignore: Vec<(String, String)>,
}

/// Decides, from what the agent knows of a pod, which sidecars to stop.
pub fn plan(view: &PodView, default_policy: RestartPolicy) -> Plan {
    let policy = view
        .sandbox
        .annotations
        .get(kruise::ANNOTATION_RESTART_POLICY)
        .and_then(|v| RestartPolicy::parse(v))
        .unwrap_or(default_policy);
    if policy == RestartPolicy::Always {
        return Plan::default();
    }
    let mut names: Vec<String> = view.names();
    // The stamp lists every container, including mains not created yet.
    let stamped = view
        .sandbox
        .annotations
        .get(kruise::ANNOTATION_PRIORITIES)
        .and_then(|s| {
            serde_json::from_str::<std::collections::HashMap<String, serde_json::Value>>(s).ok()
        });
    let mains = view
        .sandbox
        .annotations
        .get(kruise::ANNOTATION_MAIN_CONTAINERS)
        .and_then(|s| serde_json::from_str::<Vec<String>>(s).ok())
        .unwrap_or_default();
    for n in stamped.into_iter().flat_map(|m| m.into_keys()).chain(mains) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let is_sidecar = |name: &str| {
        view.latest(name)
            .is_some_and(|(c, _)| env_true(c.env.get(kruise::ENV_TERMINATE_SIDECAR)))
    };
    let sidecars: Vec<&String> = names.iter().filter(|n| is_sidecar(n)).collect();
    if sidecars.is_empty() {
        return Plan::default();
    }
    // No main known yet (kubelet creates the sidecars first when they
    // come first in the spec): nothing is done.
    let mut mains = names.iter().filter(|n| !is_sidecar(n)).peekable();
    if mains.peek().is_none() {
        return Plan::default();
    }
    let mains_done = mains.all(|n| match view.latest(n) {
        Some((_, State::Exited(code))) => policy == RestartPolicy::Never || *code == 0,
        _ => false,
    });
    if !mains_done {
        return Plan::default();
    }
    let mut out = Plan::default();
    for name in sidecars {
        let Some((c, state)) = view.latest(name) else {
            continue;
        };
        match state {
            State::Exited(_) => {
                if env_true(c.env.get(kruise::ENV_TERMINATE_SIDECAR_IGNORE_EXIT_CODE)) {
                    out.ignore.push((c.id.clone(), c.name.clone()));
                }
            }
            // Not running yet: containerd answers StopContainer on a
            // created container with success and does nothing, and kubelet
            // starts it afterwards. Its start changes the book; it is
            // stopped then.
            State::Created | State::Starting => {}
            State::Running => {
                let grace = c
                    .grace_period_seconds
                    .unwrap_or(DEFAULT_GRACE_SECONDS)
                    .max(MIN_GRACE_SECONDS);
                out.stop.push((c.id.clone(), c.name.clone(), grace));
            }
        }
    }
    out
}

/// Retrying a failed sidecar stop (the runtime away, or failing the call):
/// 1 s doubling to 16 s, 6 attempts in all (about half a minute). After
/// the last the sidecar is no longer in flight, so the next pass over the
/// pods (a pod change, or the 30 s tick) starts a new round: the Job is
/// never left hanging on one lost call, nor is the runtime hammered.
pub const STOP_RETRY: Backoff = Backoff {
    base: Duration::from_secs(1),
    max: Duration::from_secs(16),
    attempts: Some(6),
};

/// Watches pods and stops their sidecars when the mains are done.
pub struct SidecarTerminator {
    book: Arc<PodBook>,
    /// Sidecars (container ids) with a stop under way.
    in_flight: std::sync::Mutex<HashSet<String>>,
    stop_retry: Backoff,
    normalised: Table<Normalised>,
    default_policy: RestartPolicy,
    /// The features' shared runtime connection.
    runtime: RuntimeConn,
    /// Cluster mode: where the pods' specs (and so preStop hooks) come from.
    specs: std::sync::OnceLock<Arc<dyn crate::priority::Readiness>>,
}

impl SidecarTerminator {
    pub fn new(
        book: Arc<PodBook>,
        store: &Store,
        default_policy: RestartPolicy,
        runtime: RuntimeConn,
    ) -> Result<Arc<Self>, StoreError> {
        Self::with_stop_retry(book, store, default_policy, runtime, STOP_RETRY)
    }

    /// [`new`](Self::new) with another stop retry policy.
    pub fn with_stop_retry(
        book: Arc<PodBook>,
        store: &Store,
        default_policy: RestartPolicy,
        runtime: RuntimeConn,
        stop_retry: Backoff,
    ) -> Result<Arc<Self>, StoreError> {
        Ok(Arc::new(Self {
            book,
            in_flight: std::sync::Mutex::new(HashSet::new()),
            stop_retry,
            normalised: store.table("sidecar.normalised", 100_000)?,
            default_policy,
            runtime,
            specs: std::sync::OnceLock::new(),
        }))
    }

    /// Cluster mode: read sidecars' `preStop` exec hooks from `specs` and
    /// run them (CRI ExecSync, within the grace period) before the stop.
    pub fn use_specs(&self, specs: Arc<dyn crate::priority::Readiness>) {
        let _ = self.specs.set(specs);
    }

    /// The sidecar's preStop exec command, when the pod's spec is known.
    fn pre_stop(&self, sandbox_id: &str, name: &str) -> Option<Vec<String>> {
        let uid = self.book.pod(sandbox_id)?.sandbox.uid;
        self.specs
            .get()?
            .spec_containers(&uid)?
            .into_iter()
            .find(|c| c.name == name)?
            .pre_stop_exec
    }

    /// The hook that rewrites exit codes in status replies.
    pub fn hook(self: &Arc<Self>) -> Arc<dyn Hook> {
        Arc::new(StatusRewrite(self.clone()))
    }

    /// Re-evaluates every pod whenever the pod book changes.
    pub async fn run(self: Arc<Self>) {
        let mut last_gc = tokio::time::Instant::now();
        loop {
            let changed = self.book.changed();
            for sandbox_id in self.book.sandbox_ids() {
                let Some(view) = self.book.pod(&sandbox_id) else {
                    continue;
                };
                let plan = plan(&view, self.default_policy);
                for (id, name) in plan.ignore {
                    if self.normalised.get(&id).ok().flatten().is_none() {
                        let rec = Normalised {
                            sandbox_id: sandbox_id.clone(),
                            name,
                            stopped_by_agent: false,
                        };
                        if let Err(e) = self.normalised.put(&id, &rec).await {
                            tracing::warn!(error = %e, container = %id, "cannot record ignored exit code");
                        }
                    }
                }
                for (id, name, grace) in plan.stop {
                    if !self.flight().insert(id.clone()) {
                        continue;
                    }
                    let me = self.clone();
                    let pod = format!("{}/{}", view.sandbox.namespace, view.sandbox.name);
                    let sandbox = sandbox_id.clone();
                    tokio::spawn(async move { me.stop(pod, sandbox, id, name, grace).await });
                }
            }
            if last_gc.elapsed() > Duration::from_secs(30) {
                last_gc = tokio::time::Instant::now();
                let book = self.book.clone();
                match self
                    .normalised
                    .retain(|id, _| book.container(id).is_some())
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(removed = n, "collected sidecar records"),
                    Err(e) => tracing::warn!(error = %e, "collecting sidecar records failed"),
                }
                self.flight().retain(|id| {
                    book.container(id)
                        .is_some_and(|(_, s)| !matches!(s, State::Exited(_)))
                });
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    }

    fn flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops sidecar `id` (its preStop hook once, then StopContainer with
    /// [`STOP_RETRY`]'s backoff); returns whether it is stopped. When the
    /// retries run out it is taken off the in-flight set for a later round.
    async fn stop(
        &self,
        pod: String,
        sandbox_id: String,
        id: String,
        name: String,
        grace: i64,
    ) -> bool {
        // Remember before acting: a crash after the stop must not lose it.
        let rec = Normalised {
            sandbox_id,
            name: name.clone(),
            stopped_by_agent: true,
        };
        if let Err(e) = self.normalised.put(&id, &rec).await {
            tracing::error!(%pod, container = %name, error = %e, "cannot record sidecar stop; not stopping it");
            self.flight().remove(&id);
            return false;
        }
        let hook = self.pre_stop(&rec.sandbox_id, &name);
        tracing::info!(%pod, container = %name, grace_seconds = grace, pre_stop = hook.is_some(), unix_us = crate::unix_micros(), "main containers done; stopping job sidecar");
        let started = std::time::Instant::now();
        if let Some(cmd) = hook {
            // As kubelet: the hook first (once), within the grace period;
            // the stop gets what is left (at least the minimum).
            let mut cri =
                cri::runtime_service_client::RuntimeServiceClient::new(self.runtime.channel());
            match cri
                .exec_sync(cri::ExecSyncRequest {
                    container_id: id.clone(),
                    cmd,
                    timeout: grace,
                })
                .await
            {
                Ok(r) => {
                    let code = r.into_inner().exit_code;
                    tracing::info!(%pod, container = %name, exit_code = code, "sidecar preStop hook ran");
                }
                Err(s) => {
                    tracing::warn!(%pod, container = %name, error = %s.message(), "sidecar preStop hook failed")
                }
            }
        }
        let mut retry = Retry::new(self.stop_retry);
        loop {
            let left = (grace - started.elapsed().as_secs() as i64).max(MIN_GRACE_SECONDS);
            let result = async {
                let mut cri =
                    cri::runtime_service_client::RuntimeServiceClient::new(self.runtime.channel());
                match cri
                    .stop_container(cri::StopContainerRequest {
                        container_id: id.clone(),
                        timeout: left,
                    })
                    .await
                {
                    Ok(_) => Ok(()),
                    // Gone already: nothing left to stop.
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
                    Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
                }
            }
            .await;
            let Err(e) = result else {
                return true;
            };
            match retry.failed() {
                Some(delay) => {
                    tracing::warn!(%pod, container = %name, error = %e, attempt = retry.failures(), retry_in_ms = delay.as_millis() as u64, "stopping sidecar failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                None => {
                    tracing::error!(%pod, container = %name, error = %e, attempts = retry.failures(), "stopping sidecar failed; trying again on the next pass");
                    self.flight().remove(&id);
                    return false;
                }
            }
        }
    }

    fn normalised(&self, id: &str) -> bool {
        self.normalised.contains(id)
    }
}

/// `status { exit_code: 0, reason: "Completed" }`, encoded so that it
/// merges over a ContainerStatusResponse (exit code 0 written explicitly:
/// proto3 would otherwise omit it and the runtime's value would stay).
pub fn completed_status_fields() -> Bytes {
    let mut inner = BytesMut::new();
    prost::encoding::int32::encode(7, &0, &mut inner);
    prost::encoding::string::encode(10, &"Completed".to_string(), &mut inner);
    let mut out = BytesMut::new();
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(inner.len() as u64, &mut out);
    out.put(inner);
    out.freeze()
}

struct StatusRewrite(Arc<SidecarTerminator>);

impl Hook for StatusRewrite {
    fn name(&self) -> &str {
        "sidecar-exit-code"
    }

    fn interest(&self) -> Interest {
        Interest {
            before: vec![],
            after: vec![m::ContainerStatus],
        }
    }

    /// Only while some container is recorded (a Job's sidecar stopped by
    /// the agent, or one whose exit code is ignored): otherwise kubelet's
    /// hottest call is forwarded untouched.
    fn engaged(&self) -> bool {
        !self.0.normalised.is_empty()
    }

    fn wants_reply(&self, call: &Call) -> bool {
        call.decode::<cri::ContainerStatusRequest>()
            .is_ok_and(|req| self.0.normalised(&req.container_id))
    }

    fn after<'a>(&'a self, call: &'a Call, outcome: &'a Outcome) -> HookFuture<'a, After> {
        Box::pin(async move {
            let req: cri::ContainerStatusRequest = call.decode()?;
            if !self.0.normalised(&req.container_id) {
                return Ok(After::Keep);
            }
            let Some(reply) = outcome.decode::<cri::ContainerStatusResponse>()? else {
                return Ok(After::Keep);
            };
            let exited_non_zero = reply.status.as_ref().is_some_and(|s| {
                s.state == cri::ContainerState::ContainerExited as i32 && s.exit_code != 0
            });
            Ok(if exited_non_zero {
                After::Append(completed_status_fields())
            } else {
                After::Keep
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::{Container, Sandbox};
    use prost::Message;
    use std::collections::HashMap;

    fn pod(policy: Option<&str>, containers: &[(&str, bool, bool, State)]) -> PodView {
        let mut annotations = HashMap::new();
        if let Some(p) = policy {
            annotations.insert(kruise::ANNOTATION_RESTART_POLICY.to_string(), p.to_string());
        }
        PodView {
            sandbox: Sandbox {
                id: "sb".into(),
                uid: "u".into(),
                name: "job".into(),
                namespace: "ns".into(),
                annotations,
            },
            containers: containers
                .iter()
                .enumerate()
                .map(|(i, (name, sidecar, ignore, state))| {
                    let mut env = HashMap::new();
                    if *sidecar {
                        env.insert(
                            kruise::ENV_TERMINATE_SIDECAR.to_string(),
                            "true".to_string(),
                        );
                    }
                    if *ignore {
                        env.insert(
                            kruise::ENV_TERMINATE_SIDECAR_IGNORE_EXIT_CODE.to_string(),
                            "true".to_string(),
                        );
                    }
                    (
                        Container {
                            id: format!("id-{name}"),
                            sandbox_id: "sb".into(),
                            name: name.to_string(),
                            attempt: 0,
                            seq: i as u64,
                            env,
                            grace_period_seconds: Some(1),
                            image: String::new(),
                        },
                        *state,
                    )
                })
                .collect(),
            ever_started: vec![],
        }
    }

    #[test]
    fn never_stops_sidecars_once_mains_exit_whatever_their_code() {
        let v = pod(
            None,
            &[
                ("main", false, false, State::Exited(1)),
                ("proxy", true, false, State::Running),
            ],
        );
        let p = plan(&v, RestartPolicy::Never);
        assert_eq!(
            p.stop,
            vec![("id-proxy".into(), "proxy".into(), MIN_GRACE_SECONDS)]
        );
        let v = pod(
            None,
            &[
                ("main", false, false, State::Running),
                ("proxy", true, false, State::Running),
            ],
        );
        assert_eq!(plan(&v, RestartPolicy::Never), Plan::default());
    }

    /// Regression (a CI flake): the main exited before kubelet had started
    /// the last sidecar; the stop sent to the created container was a
    /// no-op in containerd, the sidecar then started and ran for ever.
    #[test]
    fn a_sidecar_not_running_yet_is_stopped_only_once_it_runs() {
        for state in [State::Created, State::Starting] {
            let v = pod(
                None,
                &[
                    ("main", false, false, State::Exited(1)),
                    ("proxy", true, false, State::Running),
                    ("logger", true, false, state),
                ],
            );
            let p = plan(&v, RestartPolicy::Never);
            assert_eq!(
                p.stop.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
                ["proxy"],
                "{state:?}"
            );
        }
        let v = pod(
            None,
            &[
                ("main", false, false, State::Exited(1)),
                ("logger", true, false, State::Running),
            ],
        );
        assert_eq!(plan(&v, RestartPolicy::Never).stop.len(), 1);
    }

    #[test]
    fn a_sidecar_created_before_any_main_waits_for_the_stamped_mains() {
        // Kubelet created the sidecar (first in spec) and nothing else yet.
        let mut v = pod(Some("Never"), &[("proxy", true, false, State::Running)]);
        assert_eq!(plan(&v, RestartPolicy::Never), Plan::default());
        v.sandbox.annotations.insert(
            kruise::ANNOTATION_MAIN_CONTAINERS.into(),
            r#"["main"]"#.into(),
        );
        assert_eq!(plan(&v, RestartPolicy::Never), Plan::default());
    }

    #[test]
    fn on_failure_needs_success_and_always_does_nothing() {
        let failed = pod(
            Some("OnFailure"),
            &[
                ("main", false, false, State::Exited(1)),
                ("proxy", true, false, State::Running),
            ],
        );
        assert_eq!(plan(&failed, RestartPolicy::Never), Plan::default());
        let ok = pod(
            Some("OnFailure"),
            &[
                ("main", false, false, State::Exited(0)),
                ("proxy", true, false, State::Running),
            ],
        );
        assert_eq!(plan(&ok, RestartPolicy::Never).stop.len(), 1);
        let always = pod(
            Some("Always"),
            &[
                ("main", false, false, State::Exited(0)),
                ("proxy", true, false, State::Running),
            ],
        );
        assert_eq!(plan(&always, RestartPolicy::Never), Plan::default());
        let by_default = pod(
            None,
            &[
                ("main", false, false, State::Exited(0)),
                ("proxy", true, false, State::Running),
            ],
        );
        assert_eq!(
            plan(&by_default, RestartPolicy::Always),
            Plan::default(),
            "agent default applies without the stamp"
        );
    }

    #[test]
    fn exited_sidecars_are_not_stopped_and_ignore_flag_is_honoured() {
        let v = pod(
            None,
            &[
                ("main", false, false, State::Exited(0)),
                ("crashed", true, false, State::Exited(5)),
                ("quiet", true, true, State::Exited(137)),
                ("live", true, false, State::Running),
            ],
        );
        let p = plan(&v, RestartPolicy::Never);
        assert_eq!(
            p.stop.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
            ["live"]
        );
        assert_eq!(p.ignore, vec![("id-quiet".into(), "quiet".into())]);
    }

    #[test]
    fn pods_without_sidecars_or_with_mains_missing_are_left_alone() {
        let v = pod(None, &[("main", false, false, State::Exited(0))]);
        assert_eq!(plan(&v, RestartPolicy::Never), Plan::default());
        let mut v = pod(
            None,
            &[
                ("main", false, false, State::Exited(0)),
                ("proxy", true, false, State::Running),
            ],
        );
        v.sandbox.annotations.insert(
            kruise::ANNOTATION_PRIORITIES.into(),
            r#"{"main":0,"proxy":1,"later":0}"#.into(),
        );
        assert_eq!(
            plan(&v, RestartPolicy::Never),
            Plan::default(),
            "main \"later\" has not run yet"
        );
    }

    #[test]
    fn appended_fields_override_exit_code_and_reason() {
        let runtime = cri::ContainerStatusResponse {
            status: Some(cri::ContainerStatus {
                id: "c".into(),
                exit_code: 143,
                reason: "Error".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut bytes = runtime.encode_to_vec();
        bytes.extend_from_slice(&completed_status_fields());
        let merged = cri::ContainerStatusResponse::decode(&bytes[..])
            .unwrap()
            .status
            .unwrap();
        assert_eq!(
            (merged.exit_code, merged.reason.as_str(), merged.id.as_str()),
            (0, "Completed", "c")
        );
    }

    #[test]
    fn the_stop_retry_policy() {
        let delays: Vec<u64> = (1..=6)
            .map(|n| STOP_RETRY.delay(n).map_or(0, |d| d.as_secs()))
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 0], "6 attempts, then give up");
    }

    fn quick() -> Backoff {
        Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(40),
            attempts: Some(3),
        }
    }

    fn terminator(dir: &std::path::Path, socket: std::path::PathBuf) -> Arc<SidecarTerminator> {
        let store = Store::open(&dir.join("state")).unwrap();
        let book = PodBook::open(&store).unwrap();
        let runtime = RuntimeConn::new(&socket);
        SidecarTerminator::with_stop_retry(book, &store, RestartPolicy::Never, runtime, quick())
            .unwrap()
    }

    /// Regression: one failed StopContainer left the sidecar running and
    /// the Job hanging for good.
    #[tokio::test]
    async fn a_failed_sidecar_stop_is_retried_with_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("cri.sock");
        // UNAVAILABLE twice, then the stop works.
        let (calls, server) =
            crate::testing::fake_runtime(&socket, |n| if n <= 2 { 14 } else { 0 });
        let t = terminator(dir.path(), socket);
        t.flight().insert("c1".into());
        let started = std::time::Instant::now();
        let stopped = t
            .stop(
                "team/job".into(),
                "s1".into(),
                "c1".into(),
                "proxy".into(),
                2,
            )
            .await;
        assert!(stopped);
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert!(started.elapsed() >= Duration::from_millis(30), "backed off");
        assert!(t.normalised("c1"), "remembered as stopped on purpose");
        server.abort();
    }

    /// With no container recorded the exit-code rewrite is disengaged, so
    /// ContainerStatus takes the proxy's opaque path; one record engages it.
    #[tokio::test]
    async fn the_exit_code_rewrite_engages_only_while_a_container_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let t = terminator(dir.path(), dir.path().join("cri.sock"));
        let hook = t.hook();
        assert!(!hook.engaged());
        let rec = Normalised {
            sandbox_id: "s1".into(),
            name: "proxy".into(),
            stopped_by_agent: true,
        };
        t.normalised.put("c1", &rec).await.unwrap();
        assert!(hook.engaged());
        let call = |id: &str| {
            let req = cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            };
            Call::new(
                m::ContainerStatus,
                Default::default(),
                req.encode_to_vec().into(),
            )
        };
        assert!(hook.wants_reply(&call("c1")));
        assert!(!hook.wants_reply(&call("c2")));
        t.normalised.remove("c1").await.unwrap();
        assert!(!hook.engaged());
    }

    #[tokio::test]
    async fn a_sidecar_stop_that_keeps_failing_gives_up_and_is_tried_again_later() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("cri.sock");
        let (calls, server) = crate::testing::fake_runtime(&socket, |_| 14);
        let t = terminator(dir.path(), socket);
        t.flight().insert("c1".into());
        let stopped = t
            .stop(
                "team/job".into(),
                "s1".into(),
                "c1".into(),
                "proxy".into(),
                2,
            )
            .await;
        assert!(!stopped);
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::Relaxed),
            3,
            "bounded"
        );
        assert!(
            !t.flight().contains("c1"),
            "off the in-flight set: the next pass starts a new round"
        );
        server.abort();
    }
}
