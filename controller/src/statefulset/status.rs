//! An Advanced StatefulSet's status from its pods, as upstream counts:
//! `replicas` every created pod (condemned ones too), `readyReplicas`
//! running and ready, `availableReplicas` also available for
//! `minReadySeconds` in lifecycle Normal, `currentReplicas` /
//! `updatedReplicas` (and their ready/available counts) the pods not
//! being deleted on each revision; the rollout is complete — the current
//! revision becomes the update revision — once every replica is updated
//! and ready.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use keelson_api::apps::v1beta1::statefulset::{StatefulSet, StatefulSetStatus};

use crate::workload::pods;

/// The new status (conditions and `collisionCount` are the caller's).
pub fn compute(
    sts: &StatefulSet,
    all: &[Pod],
    current_revision: &str,
    update_revision: &str,
    now: Timestamp,
) -> StatefulSetStatus {
    let min_ready = sts
        .spec
        .update_strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.min_ready_seconds)
        .unwrap_or(0);
    let mut s = StatefulSetStatus {
        observed_generation: sts.metadata.generation.unwrap_or(0),
        current_revision: current_revision.into(),
        update_revision: update_revision.into(),
        label_selector: crate::selector::to_query(&sts.spec.selector),
        ..Default::default()
    };
    for p in all {
        let created = p.status.as_ref().and_then(|s| s.phase.as_deref()).is_some();
        if !created {
            continue;
        }
        s.replicas += 1;
        let ready = pods::is_running_ready(p);
        let available =
            p.metadata.deletion_timestamp.is_none() && pods::is_available(p, min_ready, now);
        s.ready_replicas += i32::from(ready);
        s.available_replicas += i32::from(available);
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if pods::on_revision(p, current_revision) {
            s.current_replicas += 1;
        }
        if pods::on_revision(p, update_revision) {
            s.updated_replicas += 1;
            s.updated_ready_replicas += i32::from(ready);
            s.updated_available_replicas += i32::from(available);
        }
    }
    let replicas = sts.spec.replicas.unwrap_or(1);
    if current_revision != update_revision
        && s.updated_replicas >= replicas
        && s.ready_replicas >= replicas
    {
        s.current_revision = update_revision.into();
        s.current_replicas = s.updated_replicas;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(rev: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "labels": {"controller-revision-hash": rev}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}}))
        .unwrap()
    }

    #[test]
    fn counts_and_completion() {
        let sts: StatefulSet =
            serde_json::from_value(json!({"apiVersion": "apps.kruise.io/v1beta1",
            "kind": "StatefulSet", "metadata": {"name": "s", "generation": 4},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "s"}}, "template": {}}}))
            .unwrap();
        let now = Timestamp::from_second(1_900_000_000).unwrap();
        let s = compute(&sts, &[pod("r1", true), pod("r2", false)], "r1", "r2", now);
        assert_eq!(
            (
                s.replicas,
                s.ready_replicas,
                s.available_replicas,
                s.current_replicas,
                s.updated_replicas,
                s.updated_ready_replicas
            ),
            (2, 1, 1, 1, 1, 0)
        );
        assert_eq!(
            (s.current_revision.as_str(), s.observed_generation),
            ("r1", 4)
        );
        assert_eq!(s.label_selector, "app=s");
        let s = compute(&sts, &[pod("r2", true), pod("r2", true)], "r1", "r2", now);
        assert_eq!(
            (s.current_revision.as_str(), s.current_replicas),
            ("r2", 2),
            "complete"
        );
    }
}
