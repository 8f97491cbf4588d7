//! Container launch priority, enforced on the CRI path: a container starts
//! only once every container of higher priority in its pod runs (or is
//! ready, where a readiness source exists).
//!
//! Inputs as OpenKruise users write them: env `KRUISE_CONTAINER_PRIORITY`
//! (higher first, equal unordered, default 0) and pod annotation
//! `apps.kruise.io/container-launch-priority: Ordered` (spec order, i.e.
//! priorities 0, -1, -2, …). Kubelet tells the runtime nothing about
//! containers it has not created yet, so the controller's webhook stamps
//! the full map as `keelson.io/container-priorities`; without it the agent
//! goes by what it has seen.
//!
//! The gate never holds a call for a sibling kubelet has not created (that
//! would deadlock the pod: kubelet creates containers one after another);
//! it answers at once with an error saying what it waits for, and kubelet
//! retries on its next pod sync. The same goes for a sibling that was
//! created but whose start nobody asked for (e.g. one this gate refused
//! earlier). A sibling whose start is on its way is waited for, up to a
//! bound. Restarts are not gated.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cri_proto as cri;

use crate::cri::grpc::{Code, Status};
use crate::cri::methods::runtime as m;
use crate::cri::{Before, Call, Hook, HookFuture, Interest, Reply};
use crate::kruise;
use crate::pods::{Container, PodBook, PodView, State};

/// Default bound on holding a StartContainer for a sibling that is
/// starting (well under kubelet's 2-minute runtime request timeout).
pub const DEFAULT_HOLD: Duration = Duration::from_secs(30);

/// Where "ready" comes from. Standalone there is none and running counts;
/// cluster mode reads readiness from the pod's status.
pub trait Readiness: Send + Sync {
    /// Whether container `name` of the pod is ready; `None`: unknown, so
    /// running is enough.
    fn ready(&self, pod: &PodView, name: &str) -> Option<bool>;

    /// Whether instance `container_id` (the runtime's id) of container
    /// `name` in the pod with `uid` is ready (`false` while the status is
    /// still about another instance); `None`: no readiness source knows the
    /// pod.
    fn instance_ready(&self, _uid: &str, _name: &str, _container_id: &str) -> Option<bool> {
        None
    }

    /// The regular containers of the pod with `uid`, in spec order, with
    /// the value of their `KRUISE_CONTAINER_PRIORITY` env, when the source
    /// knows the pod's spec (cluster mode: the pod watch). `None`: only the
    /// containers kubelet has created are known.
    fn spec_containers(&self, _uid: &str) -> Option<Vec<SpecContainer>> {
        None
    }

    /// Whether this source learns pods' specs (so an unknown one is worth
    /// a short wait).
    fn knows_specs(&self) -> bool {
        false
    }
}

/// A container of a pod's spec, as the launch gate needs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecContainer {
    pub name: String,
    /// `KRUISE_CONTAINER_PRIORITY` as written (a plain `value`).
    pub priority: Option<String>,
    /// Whether a readiness or startup probe decides when it is ready
    /// (without one, kubelet counts it ready once it runs).
    pub probed: bool,
    /// Its `lifecycle.preStop.exec.command`, which the Job sidecar
    /// terminator runs before stopping it (CRI does not carry hooks).
    pub pre_stop_exec: Option<Vec<String>>,
}

/// No readiness source: running means ready.
pub struct RunningIsReady;

impl Readiness for RunningIsReady {
    fn ready(&self, _pod: &PodView, _name: &str) -> Option<bool> {
        None
    }
}

/// A priority value as written by a user.
pub fn parse_priority(value: &str) -> Result<i32, String> {
    let n: i64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not an integer"))?;
    if !kruise::PRIORITY_RANGE.contains(&n) {
        return Err(format!(
            "{n} is outside [{}, {}]",
            kruise::PRIORITY_RANGE.start(),
            kruise::PRIORITY_RANGE.end()
        ));
    }
    Ok(n as i32)
}

/// Launch priorities of a pod's containers, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Priorities {
    pub by_name: HashMap<String, i32>,
    /// Where they came from (for messages).
    pub source: &'static str,
}

/// The pod's priorities from what kubelet has created, or `None` when they
/// are all equal (the pod is left alone). Bad values are logged and count
/// as 0.
pub fn priorities(view: &PodView) -> Option<Priorities> {
    priorities_with(view, None)
}

/// [`priorities`], with the pod's whole spec when it is known (cluster
/// mode): then siblings kubelet has not created yet count too, in spec
/// order, and init containers (which kubelet runs before any of these) do
/// not.
pub fn priorities_with(view: &PodView, spec: Option<&[SpecContainer]>) -> Option<Priorities> {
    let pod = format!("{}/{}", view.sandbox.namespace, view.sandbox.name);
    let mut result = None;
    if let Some(stamp) = view.sandbox.annotations.get(kruise::ANNOTATION_PRIORITIES) {
        match serde_json::from_str::<HashMap<String, serde_json::Value>>(stamp) {
            Ok(map) => {
                let by_name = map
                    .into_iter()
                    .map(|(name, v)| {
                        let text = match &v {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        let p = parse_priority(&text).unwrap_or_else(|why| {
                            tracing::warn!(%pod, container = %name, annotation = kruise::ANNOTATION_PRIORITIES, %why, "bad launch priority; using 0");
                            0
                        });
                        (name, p)
                    })
                    .collect();
                result = Some(Priorities {
                    by_name,
                    source: "stamp",
                });
            }
            Err(e) => {
                tracing::warn!(%pod, annotation = kruise::ANNOTATION_PRIORITIES, error = %e, "malformed priority stamp ignored");
            }
        }
    }
    if result.is_none()
        && view
            .sandbox
            .annotations
            .get(kruise::ANNOTATION_LAUNCH_PRIORITY)
            .map(String::as_str)
            == Some(kruise::LAUNCH_PRIORITY_ORDERED)
    {
        // Kubelet creates containers in spec order.
        let names = match spec {
            Some(spec) => spec.iter().map(|c| c.name.clone()).collect(),
            None => view.names(),
        };
        let by_name = names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, -(i as i32)))
            .collect();
        result = Some(Priorities {
            by_name,
            source: "Ordered",
        });
    }
    let result = result.unwrap_or_else(|| {
        let value = |name: &str, v: Option<&String>| match v {
            None => 0,
            Some(v) => parse_priority(v).unwrap_or_else(|why| {
                tracing::warn!(%pod, container = %name, env = kruise::ENV_CONTAINER_PRIORITY, %why, "bad launch priority; using 0");
                0
            }),
        };
        let by_name = match spec {
            Some(spec) => spec
                .iter()
                .map(|c| (c.name.clone(), value(&c.name, c.priority.as_ref())))
                .collect(),
            None => view
                .containers
                .iter()
                .map(|(c, _)| {
                    let p = value(&c.name, c.env.get(kruise::ENV_CONTAINER_PRIORITY));
                    (c.name.clone(), p)
                })
                .collect(),
        };
        Priorities { by_name, source: "env" }
    });
    let mut values = result.by_name.values();
    let first = values.next().copied();
    if values.all(|v| Some(*v) == first) {
        return None;
    }
    Some(result)
}

/// What the gate decides for one StartContainer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Pass,
    /// Siblings that exist but are not running (ready) yet.
    Wait(Vec<String>),
    /// Cannot start now; the message says why.
    Refuse(String),
}

/// Decides whether `container` may start now.
pub fn decide(
    view: &PodView,
    container: &Container,
    prios: &Priorities,
    readiness: &dyn Readiness,
) -> Decision {
    let Some(&mine) = prios.by_name.get(&container.name) else {
        return Decision::Pass;
    };
    if view.ever_started.contains(&container.name) {
        return Decision::Pass;
    }
    let mut higher: Vec<(&String, i32)> = prios
        .by_name
        .iter()
        .filter(|(_, p)| **p > mine)
        .map(|(n, p)| (n, *p))
        .collect();
    higher.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut waiting = vec![];
    for (name, p) in higher {
        let what = format!(
            "container {:?} (launch priority {mine}) waits for {name:?} (priority {p}, from {})",
            container.name, prios.source
        );
        match view.latest(name) {
            None => return Decision::Refuse(format!("{what}, which kubelet has not created yet")),
            Some((_, State::Exited(code))) => {
                return Decision::Refuse(format!("{what}, which has exited (code {code})"));
            }
            Some((_, State::Created)) => {
                return Decision::Refuse(format!("{what}, which is created but not started yet"));
            }
            Some((_, State::Starting)) => waiting.push(name.clone()),
            Some((_, State::Running)) => {
                // Not held: readiness reaches the pod status only after
                // kubelet's sync of this pod returns, and a readiness change
                // makes kubelet sync (and retry) at once.
                if readiness.ready(view, name) == Some(false) {
                    return Decision::Refuse(format!("{what}, which is running but not ready yet"));
                }
            }
        }
    }
    if waiting.is_empty() {
        Decision::Pass
    } else {
        Decision::Wait(waiting)
    }
}

/// Longest a start waits for the pod's spec from the watch (cluster mode)
/// before the gate goes by the containers kubelet has created.
const SPEC_WAIT: Duration = Duration::from_secs(5);

/// Whether launch priority may concern the pod: a priority annotation on
/// it, or the priority env on the container being started.
fn may_have_priorities(view: &PodView, container: &Container) -> bool {
    view.sandbox
        .annotations
        .contains_key(kruise::ANNOTATION_PRIORITIES)
        || view
            .sandbox
            .annotations
            .contains_key(kruise::ANNOTATION_LAUNCH_PRIORITY)
        || container.env.contains_key(kruise::ENV_CONTAINER_PRIORITY)
}

/// The StartContainer hook.
pub struct LaunchGate {
    book: Arc<PodBook>,
    hold: Duration,
    readiness: Arc<dyn Readiness>,
}

impl LaunchGate {
    pub fn new(book: Arc<PodBook>, hold: Duration, readiness: Arc<dyn Readiness>) -> Self {
        Self {
            book,
            hold,
            readiness,
        }
    }

    async fn gate(&self, container_id: &str) -> Option<Reply> {
        let (container, _) = self.book.container(container_id)?;
        let start = tokio::time::Instant::now();
        let deadline = start + self.hold;
        // A pod kubelet got from the API server before the agent's watch
        // did: its spec comes moments later.
        let spec_deadline = start + self.hold.min(SPEC_WAIT);
        let mut waited_for: Vec<String> = vec![];
        loop {
            let changed = self.book.changed();
            let view = self.book.pod(&container.sandbox_id)?;
            let spec = self.readiness.spec_containers(&view.sandbox.uid);
            if spec.is_none()
                && self.readiness.knows_specs()
                && may_have_priorities(&view, &container)
                && tokio::time::Instant::now() < spec_deadline
            {
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep_until(spec_deadline) => {
                        tracing::warn!(pod = %view.sandbox.name, container = %container.name, "pod spec not seen from the API server in time; gating on the containers kubelet created");
                    }
                }
                continue;
            }
            let prios = priorities_with(&view, spec.as_deref())?;
            match decide(&view, &container, &prios, self.readiness.as_ref()) {
                Decision::Pass => {
                    if !waited_for.is_empty() {
                        tracing::info!(pod = %view.sandbox.name, container = %container.name, waited_for = ?waited_for, unix_us = crate::unix_micros(), "launch gate released");
                    }
                    return None;
                }
                Decision::Refuse(msg) => {
                    tracing::info!(pod = %view.sandbox.name, container = %container.name, reason = %msg, "launch gate refused start");
                    return Some(Reply::Status(Status::new(
                        Code::FailedPrecondition,
                        format!("keelson: {msg}"),
                    )));
                }
                Decision::Wait(names) => {
                    if waited_for.is_empty() {
                        tracing::info!(pod = %view.sandbox.name, container = %container.name, waiting_for = ?names, "launch gate holding start");
                    }
                    waited_for = names;
                }
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => {
                    let msg = format!(
                        "keelson: container {:?} gave up after {} s waiting for higher-priority {:?} to start",
                        container.name,
                        self.hold.as_secs(),
                        waited_for
                    );
                    return Some(Reply::Status(Status::new(Code::DeadlineExceeded, msg)));
                }
            }
        }
    }
}

impl Hook for LaunchGate {
    fn name(&self) -> &str {
        "launch-priority"
    }

    fn interest(&self) -> Interest {
        Interest {
            before: vec![m::StartContainer],
            after: vec![],
        }
    }

    fn before<'a>(&'a self, call: &'a Call) -> HookFuture<'a, Before> {
        Box::pin(async move {
            let req: cri::StartContainerRequest = call.decode()?;
            Ok(match self.gate(&req.container_id).await {
                None => {
                    self.book.set_state(&req.container_id, State::Starting);
                    Before::Pass
                }
                Some(reply) => Before::Answer(reply),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::Sandbox;

    fn view(annotations: &[(&str, &str)], containers: &[(&str, Option<&str>, State)]) -> PodView {
        PodView {
            sandbox: Sandbox {
                id: "sb".into(),
                uid: "u".into(),
                name: "pod".into(),
                namespace: "ns".into(),
                annotations: annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            containers: containers
                .iter()
                .enumerate()
                .map(|(i, (name, prio, state))| {
                    let env = prio
                        .map(|p| {
                            HashMap::from([(
                                kruise::ENV_CONTAINER_PRIORITY.to_string(),
                                p.to_string(),
                            )])
                        })
                        .unwrap_or_default();
                    (
                        Container {
                            id: format!("c{i}"),
                            sandbox_id: "sb".into(),
                            name: name.to_string(),
                            attempt: 0,
                            seq: i as u64,
                            env,
                            grace_period_seconds: None,
                            image: String::new(),
                        },
                        *state,
                    )
                })
                .collect(),
            ever_started: containers
                .iter()
                .filter(|(_, _, s)| !matches!(s, State::Created | State::Starting))
                .map(|(n, _, _)| n.to_string())
                .collect(),
        }
    }

    fn decide_for(v: &PodView, name: &str) -> Decision {
        let c = v.latest(name).unwrap().0.clone();
        let mut v = v.clone();
        v.ever_started.retain(|n| n != name);
        match priorities(&v) {
            None => Decision::Pass,
            Some(p) => decide(&v, &c, &p, &RunningIsReady),
        }
    }

    #[test]
    fn parses_values_like_openkruise() {
        assert_eq!(parse_priority("10"), Ok(10));
        assert_eq!(parse_priority(" -3 "), Ok(-3));
        assert_eq!(parse_priority("2147483647"), Ok(2147483647));
        assert!(parse_priority("2147483648").is_err());
        assert!(
            parse_priority("-2147483648").is_err(),
            "OpenKruise's range excludes i32::MIN"
        );
        assert!(parse_priority("high").is_err());
        assert!(parse_priority("1.5").is_err());
    }

    #[test]
    fn equal_priorities_leave_the_pod_alone() {
        let v = view(
            &[],
            &[
                ("a", None, State::Created),
                ("b", Some("0"), State::Created),
            ],
        );
        assert_eq!(priorities(&v), None);
    }

    #[test]
    fn env_priorities_gate_lower_ones() {
        let v = view(
            &[],
            &[
                ("main", None, State::Created),
                ("sidecar", Some("1"), State::Starting),
            ],
        );
        assert_eq!(
            decide_for(&v, "main"),
            Decision::Wait(vec!["sidecar".into()])
        );
        assert_eq!(decide_for(&v, "sidecar"), Decision::Pass);
        let v = view(
            &[],
            &[
                ("main", None, State::Created),
                ("sidecar", Some("1"), State::Created),
            ],
        );
        assert!(
            matches!(decide_for(&v, "main"), Decision::Refuse(m) if m.contains("created but not started"))
        );
        let v = view(
            &[],
            &[
                ("main", None, State::Created),
                ("sidecar", Some("1"), State::Running),
            ],
        );
        assert_eq!(decide_for(&v, "main"), Decision::Pass);
        let v = view(
            &[],
            &[
                ("main", None, State::Created),
                ("sidecar", Some("1"), State::Exited(1)),
            ],
        );
        assert!(
            matches!(decide_for(&v, "main"), Decision::Refuse(m) if m.contains("has exited (code 1)"))
        );
    }

    #[test]
    fn the_stamp_knows_siblings_not_created_yet() {
        let stamp = r#"{"main":0,"sidecar":"1"}"#;
        let v = view(
            &[(kruise::ANNOTATION_PRIORITIES, stamp)],
            &[("main", None, State::Created)],
        );
        match decide_for(&v, "main") {
            Decision::Refuse(m) => {
                assert!(
                    m.contains("\"sidecar\"") && m.contains("has not created yet"),
                    "{m}"
                );
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn ordered_means_spec_order() {
        let a = [(kruise::ANNOTATION_LAUNCH_PRIORITY, "Ordered")];
        let v = view(
            &a,
            &[
                ("first", None, State::Running),
                ("second", None, State::Starting),
                ("third", None, State::Created),
            ],
        );
        assert_eq!(decide_for(&v, "second"), Decision::Pass);
        assert_eq!(
            decide_for(&v, "third"),
            Decision::Wait(vec!["second".into()])
        );
        assert_eq!(decide_for(&v, "first"), Decision::Pass);
    }

    #[test]
    fn bad_values_count_as_zero_and_a_bad_stamp_falls_back() {
        let v = view(
            &[],
            &[
                ("main", Some("lots"), State::Created),
                ("sidecar", Some("1"), State::Created),
            ],
        );
        assert_eq!(priorities(&v).unwrap().by_name["main"], 0);
        let v = view(
            &[(kruise::ANNOTATION_PRIORITIES, "{not json")],
            &[
                ("main", None, State::Created),
                ("sidecar", Some("1"), State::Created),
            ],
        );
        assert_eq!(priorities(&v).unwrap().source, "env");
        let v = view(
            &[(
                kruise::ANNOTATION_PRIORITIES,
                r#"{"main":"x","sidecar":99999999999}"#,
            )],
            &[("main", None, State::Created)],
        );
        assert_eq!(priorities(&v), None, "both bad: both 0, all equal");
    }

    #[test]
    fn restarts_and_unlisted_containers_are_not_gated() {
        let v = view(
            &[],
            &[
                ("main", None, State::Exited(1)),
                ("sidecar", Some("1"), State::Created),
            ],
        );
        let main = v.latest("main").unwrap().0.clone();
        let p = priorities(&v).unwrap();
        assert_eq!(
            decide(&v, &main, &p, &RunningIsReady),
            Decision::Pass,
            "main ran before: a restart"
        );
        let stamp = r#"{"main":0,"sidecar":1}"#;
        let v = view(
            &[(kruise::ANNOTATION_PRIORITIES, stamp)],
            &[("init-proxy", None, State::Created)],
        );
        assert_eq!(decide_for(&v, "init-proxy"), Decision::Pass);
    }

    #[test]
    fn three_levels() {
        let v = view(
            &[],
            &[
                ("low", Some("-1"), State::Created),
                ("mid", Some("0"), State::Starting),
                ("high", Some("1"), State::Running),
            ],
        );
        assert_eq!(decide_for(&v, "mid"), Decision::Pass);
        assert_eq!(decide_for(&v, "low"), Decision::Wait(vec!["mid".into()]));
    }

    struct NotReady;
    impl Readiness for NotReady {
        fn ready(&self, _: &PodView, _: &str) -> Option<bool> {
            Some(false)
        }
    }

    #[test]
    fn readiness_source_is_honoured() {
        let v = view(
            &[],
            &[
                ("main", None, State::Created),
                ("sidecar", Some("1"), State::Running),
            ],
        );
        let main = v.latest("main").unwrap().0.clone();
        let mut v2 = v.clone();
        v2.ever_started.retain(|n| n != "main");
        let p = priorities(&v2).unwrap();
        match decide(&v2, &main, &p, &NotReady) {
            Decision::Refuse(msg) => assert!(
                msg.contains("\"sidecar\"") && msg.ends_with("running but not ready yet"),
                "{msg}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn with_the_spec_a_sibling_kubelet_has_not_created_counts() {
        // Kubelet created the lower one first (spec order); the higher one,
        // listed after it, exists only in the spec.
        let v = view(&[], &[("low", Some("1"), State::Created)]);
        let mut v2 = v.clone();
        v2.ever_started.clear();
        assert_eq!(priorities(&v2), None, "alone, nothing to order");
        let spec = [
            SpecContainer {
                name: "low".into(),
                priority: Some("1".into()),
                probed: false,
                pre_stop_exec: None,
            },
            SpecContainer {
                name: "high".into(),
                priority: Some("10".into()),
                probed: false,
                pre_stop_exec: None,
            },
        ];
        let p = priorities_with(&v2, Some(&spec)).unwrap();
        assert_eq!(p.by_name["high"], 10);
        let low = v2.latest("low").unwrap().0.clone();
        match decide(&v2, &low, &p, &RunningIsReady) {
            Decision::Refuse(msg) => assert!(msg.contains("not created yet"), "{msg}"),
            other => panic!("{other:?}"),
        }
        // Ordered goes by the spec's order, not by what was created.
        let ordered = view(
            &[(
                kruise::ANNOTATION_LAUNCH_PRIORITY,
                kruise::LAUNCH_PRIORITY_ORDERED,
            )],
            &[("second", None, State::Created)],
        );
        let spec = [
            SpecContainer {
                name: "first".into(),
                priority: None,
                probed: false,
                pre_stop_exec: None,
            },
            SpecContainer {
                name: "second".into(),
                priority: None,
                probed: false,
                pre_stop_exec: None,
            },
        ];
        let p = priorities_with(&ordered, Some(&spec)).unwrap();
        assert_eq!((p.by_name["first"], p.by_name["second"]), (0, -1));
    }
}
