//! A CloneSet's status from its pods, as OpenKruise computes it: counts
//! over the active pods (ready, available for `minReadySeconds`, on the
//! update revision), the revisions, the selector for HPA, and the
//! `FailedScale`/`FailedUpdate` conditions of the last reconcile.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use keelson_api::apps::v1alpha1::cloneset::{
    CLONE_SET_AVAILABLE, CLONE_SET_CONDITION_FAILED_SCALE, CLONE_SET_CONDITION_FAILED_UPDATE,
    CLONE_SET_CONDITION_TYPE_PROGRESSING, CLONE_SET_PROGRESS_DEADLINE_EXCEEDED,
    CLONE_SET_PROGRESS_PARTITION_AVAILABLE, CLONE_SET_PROGRESS_PAUSED, CLONE_SET_PROGRESS_UPDATED,
    CloneSet, CloneSetCondition, CloneSetStatus,
};

use super::numbers;
use crate::workload::pods;

/// What the reconcile found, besides the pods.
pub struct Outcome<'a> {
    pub update_revision: &'a str,
    pub current_revision: &'a str,
    pub collision_count: Option<i32>,
    pub failed_scale: Option<&'a str>,
    pub failed_update: Option<&'a str>,
}

fn set_condition(
    conditions: &mut Vec<CloneSetCondition>,
    type_: &str,
    message: &str,
    now: Timestamp,
) {
    let t = Some(Time(now));
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != "True" {
            c.last_transition_time = t.clone();
        }
        c.status = "True".into();
        c.message = Some(message.into());
        c.last_update_time = t;
        return;
    }
    conditions.push(CloneSetCondition {
        type_: type_.into(),
        status: "True".into(),
        last_update_time: t.clone(),
        last_transition_time: t,
        reason: None,
        message: Some(message.into()),
    });
}

/// The status for `cs` with its active `pods`.
pub fn compute(cs: &CloneSet, active: &[Pod], outcome: &Outcome, now: Timestamp) -> CloneSetStatus {
    let old = cs.status.clone().unwrap_or_default();
    let min_ready = cs.spec.min_ready_seconds;
    let count = |f: &dyn Fn(&Pod) -> bool| active.iter().filter(|p| f(p)).count() as i32;
    let updated = |p: &Pod| pods::on_revision(p, outcome.update_revision);
    let replicas = active.len() as i32;
    let spec_replicas = numbers::replicas(cs);
    let updated_replicas = count(&updated);
    let partition = numbers::partition(cs).unwrap_or(0);
    let all_updated = updated_replicas == replicas && replicas == spec_replicas;
    let current_revision = if all_updated || outcome.current_revision.is_empty() {
        outcome.update_revision.to_string()
    } else {
        outcome.current_revision.to_string()
    };
    let mut conditions = old.conditions.clone();
    if let Some(m) = outcome.failed_scale {
        set_condition(&mut conditions, CLONE_SET_CONDITION_FAILED_SCALE, m, now);
    }
    if let Some(m) = outcome.failed_update {
        set_condition(&mut conditions, CLONE_SET_CONDITION_FAILED_UPDATE, m, now);
    }
    let mut status = CloneSetStatus {
        observed_generation: cs.metadata.generation.unwrap_or_default(),
        replicas,
        ready_replicas: count(&pods::is_ready),
        available_replicas: count(&|p| pods::is_available(p, min_ready, now)),
        updated_replicas,
        updated_ready_replicas: count(&|p| updated(p) && pods::is_ready(p)),
        updated_available_replicas: count(&|p| updated(p) && pods::is_available(p, min_ready, now)),
        expected_updated_replicas: spec_replicas - partition,
        update_revision: Some(outcome.update_revision.to_string()),
        current_revision: Some(current_revision),
        collision_count: outcome.collision_count.or(old.collision_count),
        conditions,
        label_selector: Some(crate::selector::to_query(&cs.spec.selector)),
    };
    progressing(cs, &mut status, now);
    status
}

/// The `Progressing` condition (only with `progressDeadlineSeconds`, as
/// OpenKruise): available, paused, held at the partition, timed out, or
/// progressing. Its `lastUpdateTime` moves only when status or reason
/// change, which is what the deadline counts from.
fn progressing(cs: &CloneSet, status: &mut CloneSetStatus, now: Timestamp) {
    let deadline = match cs.spec.progress_deadline_seconds {
        Some(d) if d != i32::MAX => d,
        _ => {
            status
                .conditions
                .retain(|c| c.type_ != CLONE_SET_CONDITION_TYPE_PROGRESSING);
            return;
        }
    };
    let replicas = numbers::replicas(cs);
    let existing = status
        .conditions
        .iter()
        .find(|c| c.type_ == CLONE_SET_CONDITION_TYPE_PROGRESSING)
        .cloned();
    let revision = status.update_revision.clone().unwrap_or_default();
    let (state, reason, message) = if status.updated_available_replicas >= replicas
        && status.updated_replicas == replicas
        && status.replicas == replicas
    {
        (
            "True",
            CLONE_SET_AVAILABLE,
            "CloneSet is available".to_string(),
        )
    } else if cs.spec.update_strategy.paused {
        (
            "True",
            CLONE_SET_PROGRESS_PAUSED,
            "CloneSet is paused".to_string(),
        )
    } else if status.expected_updated_replicas < replicas
        && status.expected_updated_replicas <= status.updated_available_replicas
    {
        (
            "True",
            CLONE_SET_PROGRESS_PARTITION_AVAILABLE,
            "CloneSet has been paused due to partition ready".to_string(),
        )
    } else if existing.as_ref().is_some_and(|c| {
        c.reason.as_deref() == Some(CLONE_SET_PROGRESS_DEADLINE_EXCEEDED)
            || (c.reason.as_deref() == Some(CLONE_SET_PROGRESS_UPDATED)
                && c.last_update_time
                    .as_ref()
                    .is_some_and(|t| now.as_second() - t.0.as_second() > i64::from(deadline)))
    }) {
        (
            "False",
            CLONE_SET_PROGRESS_DEADLINE_EXCEEDED,
            format!("CloneSet revision {revision} has timed out progressing"),
        )
    } else {
        (
            "True",
            CLONE_SET_PROGRESS_UPDATED,
            "CloneSet is progressing".to_string(),
        )
    };
    let same = existing
        .as_ref()
        .is_some_and(|c| c.status == state && c.reason.as_deref() == Some(reason));
    let t = Some(Time(now));
    let cond = CloneSetCondition {
        type_: CLONE_SET_CONDITION_TYPE_PROGRESSING.into(),
        status: state.into(),
        last_update_time: if same {
            existing.as_ref().and_then(|c| c.last_update_time.clone())
        } else {
            t.clone()
        },
        last_transition_time: match &existing {
            Some(c) if c.status == state => c.last_transition_time.clone(),
            _ => t,
        },
        reason: Some(reason.into()),
        message: Some(message),
    };
    status
        .conditions
        .retain(|c| c.type_ != CLONE_SET_CONDITION_TYPE_PROGRESSING);
    status.conditions.push(cond);
}

/// Seconds until a progressing CloneSet's deadline passes (to look again
/// then), if it has one running.
pub fn seconds_to_deadline(cs: &CloneSet, status: &CloneSetStatus, now: Timestamp) -> Option<i64> {
    let deadline = cs
        .spec
        .progress_deadline_seconds
        .filter(|d| *d != i32::MAX)?;
    let c = status.conditions.iter().find(|c| {
        c.type_ == CLONE_SET_CONDITION_TYPE_PROGRESSING
            && c.reason.as_deref() == Some(CLONE_SET_PROGRESS_UPDATED)
    })?;
    let since = c.last_update_time.as_ref()?.0.as_second();
    Some((i64::from(deadline) - (now.as_second() - since)).max(1) + 1)
}

/// Whether a newly computed status differs from the stored one in
/// anything but the conditions' timestamps.
pub fn changed(old: Option<&CloneSetStatus>, new: &CloneSetStatus) -> bool {
    let strip = |s: &CloneSetStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_update_time = None;
            c.last_transition_time = None;
        }
        s
    };
    old.is_none_or(|o| strip(o) != strip(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(extra: &str) -> CloneSet {
        serde_saphyr::from_str(&format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: CloneSet\nmetadata: {{name: web, generation: 2}}\nspec:\n  replicas: 2\n  progressDeadlineSeconds: 60\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: main, image: 'nginx:1'}}]}}\n{extra}"
        ))
        .unwrap()
    }

    fn progressing_of(s: &CloneSetStatus) -> (String, String) {
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == CLONE_SET_CONDITION_TYPE_PROGRESSING)
            .unwrap();
        (c.status.clone(), c.reason.clone().unwrap_or_default())
    }

    #[test]
    fn progressing_times_out_after_the_deadline_and_clears_when_available() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let outcome = Outcome {
            update_revision: "web-b",
            current_revision: "web-a",
            collision_count: None,
            failed_scale: None,
            failed_update: None,
        };
        let mut c = cs("");
        let s = compute(&c, &[], &outcome, t0);
        assert_eq!(
            progressing_of(&s),
            ("True".into(), CLONE_SET_PROGRESS_UPDATED.into())
        );
        assert_eq!(seconds_to_deadline(&c, &s, t0), Some(61));
        c.status = Some(s);
        let later: Timestamp = "2026-01-01T00:01:01Z".parse().unwrap();
        let s = compute(&c, &[], &outcome, later);
        assert_eq!(
            progressing_of(&s),
            ("False".into(), CLONE_SET_PROGRESS_DEADLINE_EXCEEDED.into())
        );
        let paused = cs("  updateStrategy: {paused: true}\n");
        assert_eq!(
            progressing_of(&compute(&paused, &[], &outcome, t0)).1,
            CLONE_SET_PROGRESS_PAUSED
        );
        let mut none = cs("");
        none.spec.progress_deadline_seconds = None;
        assert!(compute(&none, &[], &outcome, t0).conditions.is_empty());
    }
}
