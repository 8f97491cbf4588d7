//! The arithmetic of a budget, without any client: how many pods must stay
//! available, which operations it guards, whether one more disruption
//! fits (and recording it), and the status the controller computes from
//! the pods it sees. The same rules as OpenKruise's `pubcontrol`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use keelson_api::policy::v1alpha1::podunavailablebudget::{
    ANNOTATION_PROTECT_OPERATIONS, OPERATION_DELETE, OPERATION_EVICT, OPERATION_RESIZE,
    OPERATION_UPDATE, PodUnavailableBudget, PodUnavailableBudgetStatus,
};

use crate::workload::percent::{PercentError, scaled};

/// How long a pod the webhook let be deleted or evicted is counted as
/// disrupted while it still exists (then it is reported `NotDeleted`).
pub const DISRUPTED_FOR: SignedDuration = SignedDuration::from_secs(20);
/// How long a pod the webhook let be updated is counted as unavailable.
pub const UNAVAILABLE_FOR: SignedDuration = SignedDuration::from_secs(10);
/// More recorded pods than this and every further disruption is refused.
pub const MAX_RECORDED: usize = 2000;

/// An operation on a pod a budget may guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Update,
    Delete,
    Evict,
    Resize,
}

impl Operation {
    /// OpenKruise's name (the protect-operations annotation's vocabulary).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Update => OPERATION_UPDATE,
            Self::Delete => OPERATION_DELETE,
            Self::Evict => OPERATION_EVICT,
            Self::Resize => OPERATION_RESIZE,
        }
    }
}

/// The operations `budget` guards. Without the annotation (or with it
/// empty): DELETE, UPDATE and EVICT. Unless the pods' resources can be
/// resized in place (`vertical_scaling`), guarding UPDATE guards RESIZE.
pub fn protected(budget: &PodUnavailableBudget, vertical_scaling: bool) -> BTreeSet<String> {
    let value = budget
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_PROTECT_OPERATIONS))
        .map_or("", String::as_str);
    let mut ops: BTreeSet<String> = value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if value.is_empty() {
        ops.extend([OPERATION_DELETE, OPERATION_UPDATE, OPERATION_EVICT].map(String::from));
    }
    if !vertical_scaling && ops.contains(OPERATION_UPDATE) {
        ops.insert(OPERATION_RESIZE.into());
    }
    ops
}

/// Fewest pods that must stay available out of `total`: `total` less
/// `maxUnavailable` (rounded up, never below 0), or `minAvailable` (a
/// percentage rounded up).
pub fn desired_available(
    max_unavailable: Option<&IntOrString>,
    min_available: Option<&IntOrString>,
    total: i32,
) -> Result<i32, PercentError> {
    if let Some(m) = max_unavailable {
        return Ok((total - scaled(m, total, true)?).max(0));
    }
    match min_available {
        Some(IntOrString::Int(n)) => Ok(*n),
        Some(m) => scaled(m, total, true),
        None => Ok(0),
    }
}

/// Whether `pod` is already counted in the budget's status.
pub fn recorded(status: &PodUnavailableBudgetStatus, pod: &str) -> bool {
    status.disrupted_pods.contains_key(pod) || status.unavailable_pods.contains_key(pod)
}

/// Why one more disruption does not fit: the text OpenKruise answers
/// (a Kubernetes Forbidden error on the budget).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("podunavailablebudget.policy.kruise.io {name:?} is forbidden: {why}")]
pub struct Refusal {
    pub name: String,
    pub why: &'static str,
}

/// Takes one disruption for `pod` from the status: refused when none is
/// left or too many pods are recorded already; otherwise
/// `unavailableAllowed` drops by one and the pod is recorded at `now`
/// (under `unavailablePods` for an update, `disruptedPods` otherwise).
pub fn take(
    name: &str,
    status: &mut PodUnavailableBudgetStatus,
    pod: &str,
    op: Operation,
    now: Time,
) -> Result<(), Refusal> {
    if status.unavailable_allowed <= 0 {
        return Err(Refusal {
            name: name.into(),
            why: "pub unavailable allowed is negative",
        });
    }
    if status.disrupted_pods.len() + status.unavailable_pods.len() > MAX_RECORDED {
        return Err(Refusal {
            name: name.into(),
            why: "DisruptedPods and UnavailablePods map too big - too many unavailable not confirmed by PUB controller",
        });
    }
    status.unavailable_allowed -= 1;
    if op == Operation::Update {
        status.unavailable_pods.insert(pod.into(), now);
    } else {
        status.disrupted_pods.insert(pod.into(), now);
    }
    Ok(())
}

/// A pod as the controller sees it: its name, whether it is active, and
/// whether it counts as available (running, ready, no unavailable label,
/// no update in flight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub name: String,
    pub active: bool,
    pub available: bool,
}

/// What the controller writes, and when it must look again.
#[derive(Debug, Clone, PartialEq)]
pub struct Computed {
    pub status: PodUnavailableBudgetStatus,
    /// Recorded pods whose record expired while they still exist (each
    /// gets a `NotDeleted` warning).
    pub not_deleted: Vec<String>,
    /// The nearest expiry of a record kept.
    pub recheck_at: Option<Timestamp>,
}

/// The status from the pods seen now: records of pods that are gone or
/// expired are dropped, recorded pods do not count as available, and
/// `unavailableAllowed` is what is available beyond `desired`.
pub fn compute(
    old: &PodUnavailableBudgetStatus,
    pods: &[Seen],
    desired: i32,
    total: i32,
    generation: i64,
    now: Timestamp,
) -> Computed {
    let mut disrupted = BTreeMap::new();
    let mut unavailable = BTreeMap::new();
    let mut not_deleted = vec![];
    let mut recheck_at: Option<Timestamp> = None;
    let mut keep = |at: Timestamp| {
        recheck_at = Some(recheck_at.map_or(at, |r| r.min(at)));
    };
    for p in pods.iter().filter(|p| p.active) {
        if let Some(t) = old.disrupted_pods.get(&p.name) {
            let due = t.0.saturating_add(DISRUPTED_FOR).unwrap_or(t.0);
            if due < now {
                not_deleted.push(p.name.clone());
            } else {
                disrupted.insert(p.name.clone(), t.clone());
                keep(due);
            }
        }
        if let Some(t) = old.unavailable_pods.get(&p.name) {
            let due = t.0.saturating_add(UNAVAILABLE_FOR).unwrap_or(t.0);
            if due >= now {
                unavailable.insert(p.name.clone(), t.clone());
                keep(due);
            }
        }
    }
    let current = pods
        .iter()
        .filter(|p| {
            p.active
                && p.available
                && !disrupted.contains_key(&p.name)
                && !unavailable.contains_key(&p.name)
        })
        .count() as i32;
    Computed {
        status: PodUnavailableBudgetStatus {
            observed_generation: generation,
            disrupted_pods: disrupted,
            unavailable_pods: unavailable,
            unavailable_allowed: (current - desired).max(0),
            current_available: current,
            desired_available: desired,
            total_replicas: total,
        },
        not_deleted,
        recheck_at,
    }
}

/// The pod's name.
pub fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn budget(ops: Option<&str>) -> PodUnavailableBudget {
        PodUnavailableBudget {
            metadata: ObjectMeta {
                name: Some("web".into()),
                annotations: ops
                    .map(|o| [(ANNOTATION_PROTECT_OPERATIONS.to_string(), o.to_string())].into()),
                ..Default::default()
            },
            spec: Default::default(),
            status: None,
        }
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn guarded_operations_default_and_resize_follows_update() {
        assert_eq!(
            protected(&budget(None), false),
            set(&["DELETE", "EVICT", "RESIZE", "UPDATE"])
        );
        assert_eq!(
            protected(&budget(Some("")), true),
            set(&["DELETE", "EVICT", "UPDATE"])
        );
        assert_eq!(protected(&budget(Some("DELETE")), false), set(&["DELETE"]));
        assert_eq!(
            protected(&budget(Some("UPDATE,EVICT")), false),
            set(&["EVICT", "RESIZE", "UPDATE"])
        );
        assert_eq!(protected(&budget(Some("UPDATE")), true), set(&["UPDATE"]));
    }

    #[test]
    fn desired_from_max_unavailable_or_min_available() {
        let i = IntOrString::Int;
        let s = |v: &str| IntOrString::String(v.into());
        assert_eq!(desired_available(Some(&i(1)), None, 5), Ok(4));
        // 25% of 5 rounds up to 2 unavailable.
        assert_eq!(desired_available(Some(&s("25%")), None, 5), Ok(3));
        assert_eq!(desired_available(Some(&i(9)), None, 5), Ok(0));
        assert_eq!(desired_available(None, Some(&i(7)), 5), Ok(7));
        assert_eq!(desired_available(None, Some(&s("50%")), 5), Ok(3));
        assert_eq!(desired_available(None, None, 5), Ok(0));
        assert!(desired_available(Some(&s("x%")), None, 5).is_err());
    }

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn taking_a_disruption_records_the_pod_until_none_is_left() {
        let mut st = PodUnavailableBudgetStatus {
            unavailable_allowed: 1,
            ..Default::default()
        };
        take("web", &mut st, "a", Operation::Delete, at(10)).unwrap();
        assert_eq!(st.unavailable_allowed, 0);
        assert!(st.disrupted_pods.contains_key("a") && recorded(&st, "a"));
        let e = take("web", &mut st, "b", Operation::Evict, at(11)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "podunavailablebudget.policy.kruise.io \"web\" is forbidden: pub unavailable allowed is negative"
        );
        st.unavailable_allowed = 1;
        take("web", &mut st, "c", Operation::Update, at(12)).unwrap();
        assert!(st.unavailable_pods.contains_key("c") && !st.disrupted_pods.contains_key("c"));
        st.unavailable_allowed = 5;
        for i in 0..=MAX_RECORDED {
            st.disrupted_pods.insert(format!("p{i}"), at(1));
        }
        assert!(
            take("web", &mut st, "d", Operation::Delete, at(13))
                .unwrap_err()
                .to_string()
                .contains("map too big")
        );
    }

    fn seen(name: &str, available: bool) -> Seen {
        Seen {
            name: name.into(),
            active: true,
            available,
        }
    }

    #[test]
    fn status_drops_expired_and_gone_records_and_excludes_recorded_pods() {
        let old = PodUnavailableBudgetStatus {
            disrupted_pods: [
                ("a".to_string(), at(100)), // kept: due 120
                ("b".to_string(), at(50)),  // expired, still there
                ("gone".to_string(), at(100)),
            ]
            .into(),
            unavailable_pods: [("c".to_string(), at(95)), ("d".to_string(), at(80))].into(),
            ..Default::default()
        };
        let pods = [
            seen("a", true),
            seen("b", true),
            seen("c", false),
            seen("d", true),
            seen("e", true),
            Seen {
                name: "f".into(),
                active: false,
                available: true,
            },
        ];
        let now = Timestamp::from_second(101).unwrap();
        let c = compute(&old, &pods, 2, 5, 3, now);
        assert_eq!(c.not_deleted, vec!["b".to_string()]);
        assert_eq!(
            c.status.disrupted_pods.keys().collect::<Vec<_>>(),
            vec!["a"]
        );
        assert_eq!(
            c.status.unavailable_pods.keys().collect::<Vec<_>>(),
            vec!["c"]
        );
        // b, d, e available and not recorded.
        assert_eq!(c.status.current_available, 3);
        assert_eq!(c.status.unavailable_allowed, 1);
        assert_eq!(
            (
                c.status.desired_available,
                c.status.total_replicas,
                c.status.observed_generation
            ),
            (2, 5, 3)
        );
        assert_eq!(c.recheck_at, Some(Timestamp::from_second(105).unwrap()));
        // Never negative.
        let c = compute(&old, &pods, 9, 5, 3, now);
        assert_eq!(c.status.unavailable_allowed, 0);
    }
}
