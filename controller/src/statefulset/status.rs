//! An Advanced StatefulSet's status from its pods, as upstream counts:
//! `replicas` every created pod (condemned ones too), `readyReplicas`
//! running and ready, `availableReplicas` also available for
//! `minReadySeconds` in lifecycle Normal, `currentReplicas` /
//! `updatedReplicas` (and their ready/available counts) the pods not
//! being deleted on each revision; the rollout is complete — the current
//! revision becomes the update revision — once every replica is updated
//! and ready; `volumeClaims` per claim template how many of the replicas'
//! claims match it ([`volume_claims`]); the `FailedCreatePod` /
//! `FailedUpdatePod` conditions of the reconcile's failures
//! ([`conditions`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSetCondition;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use keelson_api::apps::v1beta1::statefulset::{
    FAILED_CREATE_POD, FAILED_UPDATE_POD, StatefulSet, StatefulSetStatus, VolumeClaimStatus,
};

use super::newpod::claim_name;
use crate::workload::{pods, quantity};

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

fn storage(
    q: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Option<i128> {
    q.and_then(|m| m.get("storage"))
        .and_then(|q| quantity::nanos(&q.0))
}

/// Upstream's "compatible and ready": same storage class when both name
/// one, the same access modes in the same order, a request at least the
/// template's (compatible); capacity at least the claim's request (ready).
fn compatible_and_ready(
    claim: &PersistentVolumeClaim,
    template: &PersistentVolumeClaim,
) -> (bool, bool) {
    let (Some(c), Some(t)) = (claim.spec.as_ref(), template.spec.as_ref()) else {
        return (false, false);
    };
    if let (Some(a), Some(b)) = (&c.storage_class_name, &t.storage_class_name)
        && a != b
    {
        return (false, false);
    }
    if c.access_modes.clone().unwrap_or_default() != t.access_modes.clone().unwrap_or_default() {
        return (false, false);
    }
    let request = storage(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
    let wanted = storage(t.resources.as_ref().and_then(|r| r.requests.as_ref()));
    let compatible = matches!((request, wanted), (Some(r), Some(w)) if r >= w);
    let capacity = storage(claim.status.as_ref().and_then(|s| s.capacity.as_ref()));
    let ready = matches!((capacity, request), (Some(c), Some(r)) if c >= r);
    (compatible, ready)
}

/// `status.volumeClaims`: per claim template, of the claims of the wanted
/// ordinals (`claims` by name; missing and terminating ones skipped), how
/// many are compatible with the template and how many of those are ready.
pub fn volume_claims(
    sts: &StatefulSet,
    wanted: &[i32],
    claims: &BTreeMap<String, PersistentVolumeClaim>,
) -> Vec<VolumeClaimStatus> {
    let set = sts.metadata.name.as_deref().unwrap_or("");
    sts.spec
        .volume_claim_templates
        .iter()
        .map(|t| {
            let vct = t.metadata.name.clone().unwrap_or_default();
            let mut s = VolumeClaimStatus {
                volume_claim_name: vct.clone(),
                ..Default::default()
            };
            for n in wanted {
                let Some(c) = claims.get(&claim_name(&vct, set, *n)) else {
                    continue;
                };
                if c.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let (compatible, ready) = compatible_and_ready(c, t);
                s.compatible_replicas += i32::from(compatible);
                s.compatible_ready_replicas += i32::from(compatible && ready);
            }
            s
        })
        .collect()
}

/// What failed this reconcile, as upstream reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failures {
    /// A pod (or its claims) could not be created.
    pub create: Option<String>,
    /// A replica's pod could not be updated.
    pub update: Option<String>,
}

/// The conditions after this reconcile: `FailedCreatePod` /
/// `FailedUpdatePod` True with upstream's message for what failed now,
/// gone when it did not (upstream builds them afresh each reconcile); the
/// transition time kept while a condition stays True; other conditions
/// untouched.
pub fn conditions(
    old: &[StatefulSetCondition],
    failures: &Failures,
    now: Timestamp,
) -> Vec<StatefulSetCondition> {
    let mut out: Vec<StatefulSetCondition> = old
        .iter()
        .filter(|c| c.type_ != FAILED_CREATE_POD && c.type_ != FAILED_UPDATE_POD)
        .cloned()
        .collect();
    let failed = [
        (
            FAILED_CREATE_POD,
            failures
                .create
                .as_ref()
                .map(|e| format!("StatefulPodControl failed to create Pod error: {e}")),
        ),
        (
            FAILED_UPDATE_POD,
            failures
                .update
                .as_ref()
                .map(|e| format!("StatefulPodControl failed to update Pod error: {e}")),
        ),
    ];
    for (type_, message) in failed {
        let Some(message) = message else { continue };
        let since = old
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        out.push(StatefulSetCondition {
            type_: type_.into(),
            status: "True".into(),
            last_transition_time: Some(since),
            reason: None,
            message: Some(message),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(
        name: &str,
        request: &str,
        capacity: Option<&str>,
        class: Option<&str>,
    ) -> PersistentVolumeClaim {
        let mut v = json!({"metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": request}}}});
        if let Some(c) = capacity {
            v["status"] = json!({"capacity": {"storage": c}});
        }
        if let Some(c) = class {
            v["spec"]["storageClassName"] = json!(c);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn volume_claims_count_compatible_and_ready_claims_of_wanted_ordinals() {
        let sts: StatefulSet =
            serde_json::from_value(json!({"apiVersion": "apps.kruise.io/v1beta1",
            "kind": "StatefulSet", "metadata": {"name": "s"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "s"}}, "template": {},
                "volumeClaimTemplates": [
                    {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                        "storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}},
                    {"metadata": {"name": "logs"}, "spec": {"accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "10Mi"}}}}]}}))
            .unwrap();
        let mut terminating = claim("data-s-3", "1Gi", Some("1Gi"), None);
        terminating.metadata.deletion_timestamp =
            Some(Time(Timestamp::from_second(1_900_000_000).unwrap()));
        let claims: BTreeMap<String, PersistentVolumeClaim> = [
            // Bigger and bound: compatible and ready.
            claim("data-s-0", "2Gi", Some("2Gi"), Some("fast")),
            // Pending (no capacity): compatible only.
            claim("data-s-1", "1024Mi", None, None),
            // Another storage class: neither.
            claim("data-s-2", "1Gi", Some("1Gi"), Some("slow")),
            terminating,
            // Smaller than the template: not compatible.
            claim("logs-s-0", "5Mi", Some("5Mi"), None),
            claim("logs-s-1", "10Mi", Some("10Mi"), None),
            // Ordinal not wanted: not counted.
            claim("logs-s-9", "10Mi", Some("10Mi"), None),
        ]
        .into_iter()
        .map(|c| (c.metadata.name.clone().unwrap(), c))
        .collect();
        let s = volume_claims(&sts, &[0, 1, 2, 3], &claims);
        let got: Vec<(&str, i32, i32)> = s
            .iter()
            .map(|v| {
                (
                    v.volume_claim_name.as_str(),
                    v.compatible_replicas,
                    v.compatible_ready_replicas,
                )
            })
            .collect();
        assert_eq!(got, vec![("data", 2, 1), ("logs", 1, 1)]);
    }

    #[test]
    fn failure_conditions_come_and_go_as_upstream() {
        let t0 = Timestamp::from_second(1_900_000_000).unwrap();
        let t1 = Timestamp::from_second(1_900_000_100).unwrap();
        let other = StatefulSetCondition {
            type_: "Other".into(),
            status: "True".into(),
            last_transition_time: None,
            reason: None,
            message: None,
        };
        let c = conditions(
            std::slice::from_ref(&other),
            &Failures {
                create: Some("quota".into()),
                update: None,
            },
            t0,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].type_, FAILED_CREATE_POD);
        assert_eq!(c[1].status, "True");
        assert_eq!(
            c[1].message.as_deref(),
            Some("StatefulPodControl failed to create Pod error: quota")
        );
        // Still failing: the transition time stays, the message is new.
        let c = conditions(
            &c,
            &Failures {
                create: Some("quota again".into()),
                update: Some("conflict".into()),
            },
            t1,
        );
        assert_eq!(c[1].last_transition_time, Some(Time(t0)));
        assert_eq!(c[2].type_, FAILED_UPDATE_POD);
        assert_eq!(c[2].last_transition_time, Some(Time(t1)));
        // A reconcile without failures drops them.
        assert_eq!(conditions(&c, &Failures::default(), t1), vec![other]);
    }

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
