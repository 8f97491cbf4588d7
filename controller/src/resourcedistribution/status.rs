//! A ResourceDistribution's status as OpenKruise v1.9 writes it: `desired`
//! (matched namespaces), `succeeded`, `failed = desired − succeeded`,
//! `observedGeneration`, and always the six conditions in a fixed order,
//! each `True` with the last error text as `reason` and the namespaces it
//! happened in, or `False` with reason `Succeeded`; `lastTransitionTime`
//! moves only when a condition's status flips. Conflicts and missing
//! namespaces are reported but not retried; the other failures are.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keelson_api::apps::v1alpha1::resourcedistribution::{
    CONDITION_CONFLICT_OCCURRED, CONDITION_CREATE_RESOURCE_FAILED,
    CONDITION_DELETE_RESOURCE_FAILED, CONDITION_GET_RESOURCE_FAILED,
    CONDITION_NAMESPACE_NOT_EXISTS, CONDITION_STATUS_FALSE, CONDITION_STATUS_TRUE,
    CONDITION_UPDATE_RESOURCE_FAILED, ResourceDistributionCondition, ResourceDistributionStatus,
};
use serde_json::{Value, json};

/// Reason of a condition without failures.
pub const REASON_SUCCEEDED: &str = "Succeeded";

/// The text of a conflict.
pub const CONFLICT_MESSAGE: &str =
    "conflict with existing resources because of the same namespace, group, version, kind and name";
/// The text of a missing or terminating namespace.
pub const NOT_EXISTS_MESSAGE: &str = "namespace not found or is terminating";

/// The conditions, in upstream's order.
pub const ORDER: [&str; 6] = [
    CONDITION_GET_RESOURCE_FAILED,
    CONDITION_CREATE_RESOURCE_FAILED,
    CONDITION_UPDATE_RESOURCE_FAILED,
    CONDITION_DELETE_RESOURCE_FAILED,
    CONDITION_CONFLICT_OCCURRED,
    CONDITION_NAMESPACE_NOT_EXISTS,
];

/// Which condition a failure goes to (its index in [`ORDER`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Get = 0,
    Create = 1,
    Update = 2,
    Delete = 3,
    Conflict = 4,
    NotExists = 5,
}

impl Kind {
    /// Whether the reconcile is retried for it.
    pub fn retried(self) -> bool {
        !matches!(self, Kind::Conflict | Kind::NotExists)
    }
}

/// One namespace that could not be brought in line.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: Kind,
    pub namespace: String,
    pub message: String,
}

/// The new status, from the old one, the distribution's generation, the
/// matched count, the successes, and the failures in the order they
/// happened.
pub fn compute(
    old: Option<&ResourceDistributionStatus>,
    generation: i64,
    desired: i32,
    succeeded: i32,
    failures: &[Failure],
    now: &Time,
) -> ResourceDistributionStatus {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = ORDER
        .iter()
        .enumerate()
        .map(|(i, type_)| {
            let mine: Vec<&Failure> = failures.iter().filter(|f| f.kind as usize == i).collect();
            let (status, reason) = match mine.last() {
                Some(last) => (CONDITION_STATUS_TRUE, last.message.clone()),
                None => (CONDITION_STATUS_FALSE, REASON_SUCCEEDED.to_string()),
            };
            let before = old_conditions.iter().find(|c| c.type_ == *type_);
            let last_transition_time = match before {
                Some(b) if b.status == status => b.last_transition_time.clone(),
                _ => Some(now.clone()),
            };
            ResourceDistributionCondition {
                type_: type_.to_string(),
                status: status.into(),
                last_transition_time,
                reason,
                failed_namespaces: mine.iter().map(|f| f.namespace.clone()).collect(),
            }
        })
        .collect();
    ResourceDistributionStatus {
        desired,
        succeeded,
        failed: desired - succeeded,
        observed_generation: generation,
        conditions,
    }
}

/// The status as a merge patch with every field written (zeros and empty
/// lists too, which the serialised status would leave out).
pub fn patch(status: &ResourceDistributionStatus) -> Value {
    let conditions: Vec<Value> = status
        .conditions
        .iter()
        .map(|c| {
            json!({
                "type": c.type_,
                "status": c.status,
                "lastTransitionTime": c.last_transition_time,
                "reason": c.reason,
                "failedNamespace": c.failed_namespaces,
            })
        })
        .collect();
    json!({"status": {
        "desired": status.desired,
        "succeeded": status.succeeded,
        "failed": status.failed,
        "observedGeneration": status.observed_generation,
        "conditions": conditions,
    }})
}

/// The retried failures as upstream reports them (one internal field
/// error per failing condition, with its last reason); empty: none.
pub fn retried_errors(status: &ResourceDistributionStatus) -> Vec<String> {
    status
        .conditions
        .iter()
        .zip(ORDER)
        .enumerate()
        .filter(|(i, (c, _))| {
            !c.failed_namespaces.is_empty()
                && *i != Kind::Conflict as usize
                && *i != Kind::NotExists as usize
        })
        .map(|(_, (c, t))| format!("{t}: Internal error: {}", c.reason))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::at;

    fn failure(kind: Kind, ns: &str, msg: &str) -> Failure {
        Failure {
            kind,
            namespace: ns.into(),
            message: msg.into(),
        }
    }

    #[test]
    fn all_six_conditions_in_order_with_the_last_reason() {
        let fs = [
            failure(Kind::NotExists, "ns-4", NOT_EXISTS_MESSAGE),
            failure(Kind::Conflict, "a", CONFLICT_MESSAGE),
            failure(Kind::Create, "b", "first"),
            failure(Kind::Create, "c", "second"),
        ];
        let st = compute(None, 3, 5, 1, &fs, &at(100));
        assert_eq!((st.desired, st.succeeded, st.failed), (5, 1, 4));
        assert_eq!(st.observed_generation, 3);
        let types: Vec<&str> = st.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ORDER);
        let create = &st.conditions[1];
        assert_eq!(
            (create.status.as_str(), create.reason.as_str()),
            ("True", "second")
        );
        assert_eq!(create.failed_namespaces, ["b", "c"]);
        assert_eq!(st.conditions[4].failed_namespaces, ["a"]);
        assert_eq!(st.conditions[5].reason, NOT_EXISTS_MESSAGE);
        let get = &st.conditions[0];
        assert_eq!(
            (get.status.as_str(), get.reason.as_str()),
            ("False", "Succeeded")
        );
        assert!(get.failed_namespaces.is_empty());
        assert!(
            st.conditions
                .iter()
                .all(|c| c.last_transition_time == Some(at(100)))
        );
        assert_eq!(
            retried_errors(&st),
            ["CreateResourceFailed: Internal error: second"]
        );
    }

    #[test]
    fn transition_times_move_only_on_a_flip() {
        let first = compute(
            None,
            1,
            2,
            1,
            &[failure(Kind::Conflict, "a", CONFLICT_MESSAGE)],
            &at(100),
        );
        assert!(retried_errors(&first).is_empty());
        let second = compute(Some(&first), 2, 2, 2, &[], &at(200));
        assert_eq!(second.conditions[4].status, "False");
        assert_eq!(second.conditions[4].last_transition_time, Some(at(200)));
        assert_eq!(second.conditions[0].last_transition_time, Some(at(100)));
        // Nothing changed: the same status, so nothing to write.
        assert_eq!(compute(Some(&second), 2, 2, 2, &[], &at(300)), second);
    }

    #[test]
    fn the_patch_writes_zeros_and_empty_lists() {
        let st = compute(None, 0, 0, 0, &[], &at(1));
        let p = patch(&st);
        assert_eq!(p["status"]["desired"], 0);
        assert_eq!(p["status"]["succeeded"], 0);
        assert_eq!(p["status"]["failed"], 0);
        assert_eq!(p["status"]["observedGeneration"], 0);
        assert_eq!(p["status"]["conditions"][5]["failedNamespace"], json!([]));
        assert_eq!(p["status"]["conditions"][5]["reason"], "Succeeded");
    }
}
