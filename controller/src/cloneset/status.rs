//! A CloneSet's status from its pods, as OpenKruise computes it: counts
//! over the active pods (ready, available for `minReadySeconds`, on the
//! update revision), the revisions, the selector for HPA, and the
//! `FailedScale`/`FailedUpdate` conditions of the last reconcile.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use keelson_api::apps::v1alpha1::cloneset::{
    CLONE_SET_CONDITION_FAILED_SCALE, CLONE_SET_CONDITION_FAILED_UPDATE, CloneSet,
    CloneSetCondition, CloneSetStatus,
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
    CloneSetStatus {
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
    }
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
