//! The restart decision, without I/O: from a request's journaled record,
//! what the runtime shows of the pod now, and the time, the next status
//! and the one thing to do (stop a container, or wait).
//!
//! Per container, as OpenKruise's daemon decides it:
//! - not on the node: Pending ("not found container on node");
//! - already replaced (its id or restart count differ from the captured
//!   status context) and not `forceRecreate`: nothing to stop, wait for it
//!   to run;
//! - not running: kubelet is about to recreate it, nothing to stop;
//! - otherwise: stop it (preStop first), then wait for kubelet to
//!   recreate it.
//!
//! A replacement that runs (and is not known to be unready) for
//! `minStartedSeconds` makes the container Succeeded; a failed stop makes
//! it Failed. With `orderedRecreate` the next container is touched only
//! once the previous one Succeeded. `failurePolicy: Fail` ends the request
//! at the first Failed container; `activeDeadlineSeconds` and a pod that
//! left the node end it with every unfinished container Failed. A request
//! ends in Completed, as in OpenKruise.
//!
//! Exactly-once: the intent to stop an instance is in the record (and the
//! engine journals it) before the stop is sent; a record that says a stop
//! was sent but not confirmed is resumed only if that same instance still
//! runs, so no instance is stopped twice for one request.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::spec::{
    ContainerRecreateState, DEFAULT_GRACE_SECONDS, FailurePolicy, Phase, RestartSpec,
    RestartStatus, StatusContext,
};

/// Engine bookkeeping for one container, next to its public state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The instance the request is about (given, or captured at acceptance).
    pub baseline: Option<StatusContext>,
    /// The instance being replaced, once decided.
    pub replacing: Option<String>,
    /// A stop of `replacing` was (about to be) sent.
    pub stop_sent: bool,
    /// That stop returned (successfully or not).
    pub stop_done: bool,
}

/// Everything journaled about a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub spec: RestartSpec,
    pub status: RestartStatus,
    pub progress: Vec<Progress>,
    /// Order of acceptance on this node (ties in `acceptedUnixMs`).
    pub seq: u64,
}

/// A container instance as the runtime shows it now (the newest instance
/// of each name in the pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    pub running: bool,
    pub restart_count: i32,
    pub started_unix_ms: Option<u64>,
    /// From a readiness source; `None`: unknown (running is enough).
    pub ready: Option<bool>,
    /// Kubelet's grace period annotation of the instance.
    pub grace_period_seconds: Option<i64>,
}

/// The pod now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// A ready sandbox of the pod exists.
    pub pod_present: bool,
    pub containers: HashMap<String, Seen>,
}

/// What the engine does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run the preStop (if any) and stop instance `container_id` of
    /// container `index`, all within `grace`.
    Stop {
        index: usize,
        container_id: String,
        pre_stop: Option<Vec<String>>,
        grace: Duration,
    },
    /// Nothing to do until the pod changes or `until_unix_ms` passes.
    Wait { until_unix_ms: Option<u64> },
    /// The request is over.
    Finished,
}

/// Whether the request has ended.
pub fn finished(r: &Record) -> bool {
    r.status.phase == Phase::Completed
}

fn complete(r: &mut Record, now: u64, message: String) -> Action {
    r.status.phase = Phase::Completed;
    r.status.completion_unix_ms = Some(now);
    r.status.message = message;
    Action::Finished
}

fn fail_unfinished(r: &mut Record, why: &str) {
    for s in &mut r.status.container_recreate_states {
        if !s.phase.is_final() {
            s.phase = Phase::Failed;
            s.message = why.to_string();
        }
    }
}

fn summary(r: &Record) -> String {
    let states = &r.status.container_recreate_states;
    let failed: Vec<&str> = states
        .iter()
        .filter(|s| s.phase == Phase::Failed)
        .map(|s| s.name.as_str())
        .collect();
    if failed.is_empty() {
        format!("{} of {} containers recreated", states.len(), states.len())
    } else {
        format!(
            "{} of {} containers recreated; failed: {}",
            states
                .iter()
                .filter(|s| s.phase == Phase::Succeeded)
                .count(),
            states.len(),
            failed.join(", ")
        )
    }
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Advances `r` (which must be its pod's active request) given `seen` at
/// `now` (unix ms) and says what to do next.
pub fn step(r: &mut Record, seen: &Observed, now: u64) -> Action {
    if finished(r) {
        return Action::Finished;
    }
    if !seen.pod_present {
        fail_unfinished(r, "pod is no longer on this node");
        return complete(r, now, "pod is no longer on this node".into());
    }
    let deadline = deadline(r);
    if deadline.is_some_and(|d| now >= d) {
        fail_unfinished(r, "activeDeadlineSeconds exceeded");
        return complete(r, now, "activeDeadlineSeconds exceeded".into());
    }
    if r.status.phase == Phase::Pending {
        r.status.phase = Phase::Recreating;
        r.status.started_unix_ms = Some(now);
        r.status.message.clear();
    }
    let strategy = r.spec.strategy.clone();
    if let Some(g) = strategy.unready_grace_period_seconds.filter(|g| *g > 0) {
        let until = r.status.started_unix_ms.unwrap_or(now) + (g as u64) * 1000;
        if now < until {
            r.status.message = format!("waiting unreadyGracePeriodSeconds ({g} s)");
            return Action::Wait {
                until_unix_ms: earliest(Some(until), deadline),
            };
        }
        if r.status.message.starts_with("waiting unready") {
            r.status.message.clear();
        }
    }
    let min_started = u64::from(strategy.min_started_seconds.max(0) as u32) * 1000;
    let mut wake = deadline;

    for i in 0..r.spec.containers.len() {
        let name = r.spec.containers[i].name.clone();
        let phase = r.status.container_recreate_states[i].phase;
        match phase {
            Phase::Succeeded => continue,
            Phase::Failed => {
                if strategy.failure_policy == FailurePolicy::Fail {
                    let msg = format!(
                        "container {name} failed: {}",
                        r.status.container_recreate_states[i].message
                    );
                    return complete(r, now, msg);
                }
                continue;
            }
            _ => {}
        }
        let cur = seen.containers.get(&name);
        let progress = &mut r.progress[i];
        let state = &mut r.status.container_recreate_states[i];

        if progress.replacing.is_none() {
            let Some(c) = cur else {
                state.phase = Phase::Pending;
                state.message = "not found container on node".into();
                if strategy.ordered_recreate {
                    return Action::Wait {
                        until_unix_ms: wake,
                    };
                }
                continue;
            };
            let baseline = progress.baseline.clone();
            let replaced = baseline
                .as_ref()
                .is_some_and(|b| c.id != b.bare_id() || c.restart_count > b.restart_count);
            if replaced && !strategy.force_recreate {
                progress.replacing = baseline.map(|b| b.bare_id().to_string());
                progress.stop_done = true;
                state.phase = Phase::Recreating;
                state.message = "already recreated since the request was made".into();
            } else if !c.running {
                progress.replacing = Some(c.id.clone());
                progress.stop_done = true;
                state.phase = Phase::Recreating;
                state.message = "not running; waiting for kubelet to recreate it".into();
            } else {
                progress.replacing = Some(c.id.clone());
                progress.stop_sent = true;
                progress.stop_done = false;
                state.phase = Phase::Recreating;
                state.is_killed = true;
                let hook = r.spec.containers[i].pre_stop.as_ref();
                state.message = if hook.is_some_and(|h| h.exec.is_none()) {
                    "stopping (an httpGet/tcpSocket preStop cannot run from the node; skipped)"
                        .into()
                } else {
                    "stopping".into()
                };
                return stop_action(r, i, c);
            }
        }

        // An instance is being replaced.
        let Some(old) = progress.replacing.clone() else {
            continue;
        };
        if progress.stop_sent && !progress.stop_done {
            // Interrupted (agent restart) before the stop was confirmed.
            match cur {
                Some(c) if c.id == old && c.running => return stop_action(r, i, c),
                _ => progress.stop_done = true,
            }
        }
        match cur {
            Some(c) if c.id != old && c.running => {
                let up_since = c.started_unix_ms.unwrap_or(now);
                let ready_at = up_since + min_started;
                if c.ready == Some(false) {
                    state.message = format!("recreated as {}; waiting until ready", short(&c.id));
                } else if now >= ready_at {
                    state.phase = Phase::Succeeded;
                    state.message = format!("recreated as {}", short(&c.id));
                    continue;
                } else {
                    state.message =
                        format!("recreated as {}; waiting minStartedSeconds", short(&c.id));
                    wake = earliest(wake, Some(ready_at));
                }
            }
            _ => {
                if state.message.starts_with("stopping") || state.message.is_empty() {
                    state.message = "stopped; waiting for kubelet to recreate it".into();
                }
            }
        }
        if strategy.ordered_recreate {
            return Action::Wait {
                until_unix_ms: wake,
            };
        }
    }

    let states = &r.status.container_recreate_states;
    if states.iter().all(|s| s.phase.is_final()) {
        let msg = summary(r);
        return complete(r, now, msg);
    }
    Action::Wait {
        until_unix_ms: wake,
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn stop_action(r: &Record, i: usize, c: &Seen) -> Action {
    let grace = r
        .spec
        .strategy
        .termination_grace_period_seconds
        .or(c.grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0);
    let pre_stop = r.spec.containers[i]
        .pre_stop
        .as_ref()
        .and_then(|p| p.exec.as_ref())
        .map(|e| e.command.clone());
    Action::Stop {
        index: i,
        container_id: c.id.clone(),
        pre_stop,
        grace: Duration::from_secs(grace as u64),
    }
}

/// When the request's `activeDeadlineSeconds`, counted from its
/// acceptance, runs out (unix ms).
pub fn deadline(r: &Record) -> Option<u64> {
    r.spec
        .active_deadline_seconds
        .map(|s| r.status.accepted_unix_ms + (s as u64) * 1000)
}

/// Records the outcome of an [`Action::Stop`] for container `index`.
pub fn stopped(r: &mut Record, index: usize, outcome: Result<(), String>) {
    r.progress[index].stop_done = true;
    let state = &mut r.status.container_recreate_states[index];
    match outcome {
        Ok(()) => state.message = "stopped; waiting for kubelet to recreate it".into(),
        Err(e) => {
            state.phase = Phase::Failed;
            state.message = format!("kill container error: {e}");
        }
    }
}

/// A fresh record for an accepted request.
pub fn new_record(
    spec: RestartSpec,
    status_base: RestartStatus,
    baselines: Vec<Option<StatusContext>>,
    seq: u64,
) -> Record {
    let mut status = status_base;
    status.container_recreate_states = spec
        .containers
        .iter()
        .map(|c| ContainerRecreateState {
            name: c.name.clone(),
            phase: Phase::Pending,
            message: String::new(),
            is_killed: false,
        })
        .collect();
    let progress = baselines
        .into_iter()
        .map(|b| Progress {
            baseline: b,
            ..Default::default()
        })
        .collect();
    Record {
        spec,
        status,
        progress,
        seq,
    }
}

#[cfg(test)]
mod tests {
    use super::super::spec::{PodIdentity, PodRef, RestartContainer, Strategy};
    use super::*;

    fn record(names: &[&str], strategy: Strategy, deadline: Option<i64>) -> Record {
        let spec = RestartSpec {
            key: None,
            pod: PodRef {
                uid: Some("u1".into()),
                ..Default::default()
            },
            containers: names
                .iter()
                .map(|n| RestartContainer {
                    name: n.to_string(),
                    pre_stop: None,
                    status_context: None,
                })
                .collect(),
            strategy,
            active_deadline_seconds: deadline,
            ttl_seconds_after_finished: None,
        };
        let status = RestartStatus {
            id: "r1".into(),
            pod: PodIdentity {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u1".into(),
            },
            phase: Phase::Pending,
            accepted_unix_ms: 1_000,
            started_unix_ms: None,
            completion_unix_ms: None,
            message: String::new(),
            container_recreate_states: vec![],
        };
        let baselines = names
            .iter()
            .map(|n| {
                Some(StatusContext {
                    container_id: format!("containerd://{n}-0"),
                    restart_count: 0,
                })
            })
            .collect();
        new_record(spec, status, baselines, 0)
    }

    fn running(id: &str, restarts: i32, started: u64) -> Seen {
        Seen {
            id: id.into(),
            running: true,
            restart_count: restarts,
            started_unix_ms: Some(started),
            ready: None,
            grace_period_seconds: Some(7),
        }
    }

    fn pod(cs: &[(&str, Seen)]) -> Observed {
        Observed {
            pod_present: true,
            containers: cs.iter().map(|(n, s)| (n.to_string(), s.clone())).collect(),
        }
    }

    fn phases(r: &Record) -> Vec<Phase> {
        r.status
            .container_recreate_states
            .iter()
            .map(|s| s.phase)
            .collect()
    }

    #[test]
    fn single_container_stop_then_recreated() {
        let mut r = record(&["a"], Strategy::default(), None);
        let before = pod(&[("a", running("a-0", 0, 500))]);
        let act = step(&mut r, &before, 2_000);
        assert_eq!(
            act,
            Action::Stop {
                index: 0,
                container_id: "a-0".into(),
                pre_stop: None,
                grace: Duration::from_secs(7),
            }
        );
        assert_eq!(r.status.phase, Phase::Recreating);
        assert!(r.progress[0].stop_sent && !r.progress[0].stop_done);
        assert!(r.status.container_recreate_states[0].is_killed);
        stopped(&mut r, 0, Ok(()));
        // Exited, not yet recreated.
        let mut gone = before.clone();
        gone.containers.get_mut("a").unwrap().running = false;
        assert_eq!(
            step(&mut r, &gone, 2_100),
            Action::Wait {
                until_unix_ms: None
            }
        );
        let after = pod(&[("a", running("a-1", 1, 2_200))]);
        assert_eq!(step(&mut r, &after, 2_300), Action::Finished);
        assert_eq!(phases(&r), vec![Phase::Succeeded]);
        assert_eq!(r.status.phase, Phase::Completed);
        assert_eq!(r.status.completion_unix_ms, Some(2_300));
        assert_eq!(r.status.message, "1 of 1 containers recreated");
    }

    #[test]
    fn ordered_waits_for_min_started_before_the_next() {
        let strategy = Strategy {
            ordered_recreate: true,
            min_started_seconds: 3,
            termination_grace_period_seconds: Some(1),
            ..Default::default()
        };
        let mut r = record(&["a", "b"], strategy, None);
        let both = pod(&[("a", running("a-0", 0, 0)), ("b", running("b-0", 0, 0))]);
        assert!(matches!(
            step(&mut r, &both, 1_000),
            Action::Stop { index: 0, .. }
        ));
        stopped(&mut r, 0, Ok(()));
        let a_new = pod(&[("a", running("a-1", 1, 1_500)), ("b", running("b-0", 0, 0))]);
        // b is not touched while a has run less than 3 s.
        assert_eq!(
            step(&mut r, &a_new, 2_000),
            Action::Wait {
                until_unix_ms: Some(4_500)
            }
        );
        assert_eq!(phases(&r), vec![Phase::Recreating, Phase::Pending]);
        let act = step(&mut r, &a_new, 4_500);
        assert!(
            matches!(&act, Action::Stop { index: 1, container_id, grace, .. } if container_id == "b-0" && *grace == Duration::from_secs(1)),
            "{act:?}"
        );
    }

    #[test]
    fn already_recreated_counts_unless_forced() {
        let mut r = record(&["a"], Strategy::default(), None);
        let moved_on = pod(&[("a", running("a-9", 1, 0))]);
        assert_eq!(step(&mut r, &moved_on, 5_000), Action::Finished);
        assert!(!r.status.container_recreate_states[0].is_killed);

        let mut forced = record(
            &["a"],
            Strategy {
                force_recreate: true,
                ..Default::default()
            },
            None,
        );
        assert!(matches!(
            step(&mut forced, &moved_on, 5_000),
            Action::Stop { container_id, .. } if container_id == "a-9"
        ));
    }

    #[test]
    fn interrupted_stop_resumes_only_if_the_same_instance_runs() {
        let mut r = record(&["a"], Strategy::default(), None);
        let before = pod(&[("a", running("a-0", 0, 0))]);
        assert!(matches!(step(&mut r, &before, 1_000), Action::Stop { .. }));
        // The agent died here: stop sent (journaled) but not confirmed.
        let mut again = r.clone();
        assert!(matches!(
            step(&mut again, &before, 1_100),
            Action::Stop { .. }
        ));
        // If the instance already went, it is not stopped again.
        let mut after_crash = r.clone();
        let replaced = pod(&[("a", running("a-1", 1, 1_050))]);
        assert_eq!(step(&mut after_crash, &replaced, 1_100), Action::Finished);
        assert!(after_crash.progress[0].stop_done);
    }

    #[test]
    fn failure_policy_fail_stops_ignore_goes_on() {
        let both = pod(&[("a", running("a-0", 0, 0)), ("b", running("b-0", 0, 0))]);
        let mut fail = record(&["a", "b"], Strategy::default(), None);
        assert!(matches!(
            step(&mut fail, &both, 1_000),
            Action::Stop { index: 0, .. }
        ));
        stopped(&mut fail, 0, Err("runc kill failed".into()));
        assert_eq!(step(&mut fail, &both, 1_100), Action::Finished);
        assert_eq!(phases(&fail), vec![Phase::Failed, Phase::Pending]);
        assert!(
            fail.status
                .message
                .contains("container a failed: kill container error: runc kill failed")
        );

        let mut ignore = record(
            &["a", "b"],
            Strategy {
                failure_policy: FailurePolicy::Ignore,
                ..Default::default()
            },
            None,
        );
        assert!(matches!(
            step(&mut ignore, &both, 1_000),
            Action::Stop { index: 0, .. }
        ));
        stopped(&mut ignore, 0, Err("x".into()));
        assert!(matches!(
            step(&mut ignore, &both, 1_100),
            Action::Stop { index: 1, .. }
        ));
    }

    #[test]
    fn deadline_fails_what_is_unfinished() {
        let mut r = record(&["a", "b"], Strategy::default(), Some(10));
        let only_a = pod(&[("a", running("a-0", 0, 0))]);
        assert!(matches!(
            step(&mut r, &only_a, 2_000),
            Action::Stop { index: 0, .. }
        ));
        stopped(&mut r, 0, Ok(()));
        let a_new = pod(&[("a", running("a-1", 1, 2_500))]);
        // b is not on the node: Pending until the deadline (accepted 1 s + 10 s).
        assert_eq!(
            step(&mut r, &a_new, 3_000),
            Action::Wait {
                until_unix_ms: Some(11_000)
            }
        );
        assert_eq!(phases(&r), vec![Phase::Succeeded, Phase::Pending]);
        assert_eq!(step(&mut r, &a_new, 11_000), Action::Finished);
        assert_eq!(phases(&r), vec![Phase::Succeeded, Phase::Failed]);
        assert_eq!(r.status.message, "activeDeadlineSeconds exceeded");
        assert_eq!(
            r.status.container_recreate_states[1].message,
            "activeDeadlineSeconds exceeded"
        );
    }

    #[test]
    fn unready_grace_delays_the_first_stop_and_a_vanished_pod_ends_it() {
        let mut r = record(
            &["a"],
            Strategy {
                unready_grace_period_seconds: Some(2),
                ..Default::default()
            },
            None,
        );
        let p = pod(&[("a", running("a-0", 0, 0))]);
        assert_eq!(
            step(&mut r, &p, 1_000),
            Action::Wait {
                until_unix_ms: Some(3_000)
            }
        );
        assert!(matches!(step(&mut r, &p, 3_000), Action::Stop { .. }));
        assert_eq!(step(&mut r, &Observed::default(), 3_500), Action::Finished);
        assert_eq!(phases(&r), vec![Phase::Failed]);
        assert_eq!(r.status.message, "pod is no longer on this node");
    }

    #[test]
    fn an_unready_replacement_is_not_succeeded() {
        let mut r = record(&["a"], Strategy::default(), None);
        let mut moved_on = pod(&[("a", running("a-1", 1, 0))]);
        moved_on.containers.get_mut("a").unwrap().ready = Some(false);
        assert_eq!(
            step(&mut r, &moved_on, 5_000),
            Action::Wait {
                until_unix_ms: None
            }
        );
        moved_on.containers.get_mut("a").unwrap().ready = Some(true);
        assert_eq!(step(&mut r, &moved_on, 5_100), Action::Finished);
    }
}
