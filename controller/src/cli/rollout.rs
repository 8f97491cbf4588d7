//! What `rollout status|history|undo` decide, without a client: whether a
//! CloneSet's, Advanced StatefulSet's or Advanced DaemonSet's rollout is
//! done (and what to print while it is not, in kubectl's words), the
//! history table, which revision an undo goes back to and the patch that
//! restores it.

use k8s_openapi::api::apps::v1::ControllerRevision;
use keelson_api::apps::v1alpha1::cloneset::CloneSet;
use keelson_api::apps::v1beta1::statefulset::StatefulSet;
use serde_json::{Value, json};

use super::target::Kind;

use crate::cloneset::numbers;
use crate::workload::revision;

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutState {
    Done(String),
    Waiting(String),
}

/// A CloneSet's rollout: done when the controller has seen the latest
/// spec and every pod the partition lets through is updated and ready,
/// with no surplus pods left.
pub fn cloneset_state(cs: &CloneSet) -> RolloutState {
    let name = cs.metadata.name.clone().unwrap_or_default();
    let Some(s) = cs.status.as_ref() else {
        return RolloutState::Waiting("Waiting for CloneSet spec update to be observed...".into());
    };
    if s.observed_generation < cs.metadata.generation.unwrap_or(0) {
        return RolloutState::Waiting("Waiting for CloneSet spec update to be observed...".into());
    }
    let replicas = numbers::replicas(cs);
    let expected = replicas - numbers::partition(cs).unwrap_or(0);
    if s.updated_replicas < expected {
        return RolloutState::Waiting(format!(
            "Waiting for CloneSet \"{name}\" rollout to finish: {} out of {expected} new pods have been updated...",
            s.updated_replicas
        ));
    }
    if s.replicas > replicas {
        return RolloutState::Waiting(format!(
            "Waiting for CloneSet \"{name}\" rollout to finish: {} old pods are pending termination...",
            s.replicas - replicas
        ));
    }
    if s.updated_ready_replicas < expected || s.ready_replicas < replicas {
        return RolloutState::Waiting(format!(
            "Waiting for CloneSet \"{name}\" rollout to finish: {} of {expected} updated pods are ready...",
            s.updated_ready_replicas
        ));
    }
    let rev = s.update_revision.clone().unwrap_or_default();
    RolloutState::Done(format!(
        "CloneSet rolling update complete {replicas} pods at revision {rev}..."
    ))
}

/// The rollout state of `obj`, a workload of `kind` as JSON.
pub fn state(kind: Kind, obj: &Value) -> Result<RolloutState, String> {
    Ok(match kind {
        Kind::CloneSet => cloneset_state(
            &serde_json::from_value::<CloneSet>(obj.clone()).map_err(|e| e.to_string())?,
        ),
        Kind::StatefulSet => statefulset_state(
            &serde_json::from_value::<StatefulSet>(obj.clone()).map_err(|e| e.to_string())?,
        ),
        Kind::DaemonSet => daemonset_state(obj),
    })
}

/// An Advanced StatefulSet's rollout, as kubectl follows a StatefulSet's:
/// observed, every replica ready, the partition's share updated, then the
/// current revision caught up.
pub fn statefulset_state(sts: &StatefulSet) -> RolloutState {
    let Some(s) = sts.status.as_ref().filter(|s| {
        s.observed_generation != 0 && s.observed_generation >= sts.metadata.generation.unwrap_or(0)
    }) else {
        return RolloutState::Waiting(
            "Waiting for statefulset spec update to be observed...".into(),
        );
    };
    let replicas = sts.spec.replicas.unwrap_or(1);
    if s.ready_replicas < replicas {
        return RolloutState::Waiting(format!(
            "Waiting for {} pods to be ready...",
            replicas - s.ready_replicas
        ));
    }
    let partition = sts
        .spec
        .update_strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0);
    if sts.spec.update_strategy.type_.as_deref() != Some("OnDelete") && partition > 0 {
        let expected = (replicas - partition).max(0);
        if s.updated_replicas < expected {
            return RolloutState::Waiting(format!(
                "Waiting for partitioned roll out to finish: {} out of {expected} new pods have been updated...",
                s.updated_replicas
            ));
        }
        return RolloutState::Done(format!(
            "partitioned roll out complete: {} new pods have been updated...",
            s.updated_replicas
        ));
    }
    if s.update_revision != s.current_revision {
        return RolloutState::Waiting(format!(
            "waiting for statefulset rolling update to complete {} pods at revision {}...",
            s.updated_replicas, s.update_revision
        ));
    }
    RolloutState::Done(format!(
        "statefulset rolling update complete {} pods at revision {}...",
        s.current_replicas, s.current_revision
    ))
}

/// An Advanced DaemonSet's rollout, as kubectl follows a DaemonSet's
/// (nodes the partition holds back not expected).
pub fn daemonset_state(obj: &Value) -> RolloutState {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let s = &obj["status"];
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    if n(&obj["metadata"]["generation"]) > n(&s["observedGeneration"]) {
        return RolloutState::Waiting(
            "Waiting for daemon set spec update to be observed...".into(),
        );
    }
    let desired = n(&s["desiredNumberScheduled"]);
    let partition = n(&obj["spec"]["updateStrategy"]["rollingUpdate"]["partition"]);
    let expected = (desired - partition).max(0);
    if n(&s["updatedNumberScheduled"]) < expected {
        return RolloutState::Waiting(format!(
            "Waiting for daemon set {name:?} rollout to finish: {} out of {expected} new pods have been updated...",
            n(&s["updatedNumberScheduled"])
        ));
    }
    if n(&s["numberAvailable"]) < desired {
        return RolloutState::Waiting(format!(
            "Waiting for daemon set {name:?} rollout to finish: {} of {desired} updated pods are available...",
            n(&s["numberAvailable"])
        ));
    }
    RolloutState::Done(format!("daemon set {name:?} successfully rolled out"))
}

/// `rollout history`: REVISION and CHANGE-CAUSE per revision, oldest
/// first.
pub fn history_table(revisions: &[ControllerRevision]) -> String {
    let mut sorted: Vec<&ControllerRevision> = revisions.iter().collect();
    sorted.sort_by_key(|r| r.revision);
    let mut out = String::from("REVISION  CHANGE-CAUSE\n");
    for r in sorted {
        let cause = r
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/change-cause"))
            .map_or("<none>", String::as_str);
        out.push_str(&format!("{:<9} {cause}\n", r.revision));
    }
    out
}

/// The revision `rollout undo --to-revision=to` restores (0: the one
/// before the latest).
pub fn undo_target(
    revisions: &[ControllerRevision],
    to: i64,
) -> Result<&ControllerRevision, String> {
    let mut sorted: Vec<&ControllerRevision> = revisions.iter().collect();
    sorted.sort_by_key(|r| r.revision);
    if to == 0 {
        if sorted.len() < 2 {
            return Err("no last revision to roll back to".into());
        }
        return Ok(sorted[sorted.len() - 2]);
    }
    sorted
        .into_iter()
        .find(|r| r.revision == to)
        .ok_or_else(|| format!("unable to find specified revision {to} in history"))
}

/// `None` when the workload's template already is the revision's;
/// otherwise the JSON patch replacing the template with the revision's
/// (a whole replacement: a merge patch would keep keys added since).
pub fn undo_patch(obj: &Value, target: &ControllerRevision) -> Result<Option<Value>, String> {
    let template = revision::template_of(target).map_err(|e| e.to_string())?;
    let current = obj["spec"]["template"].clone();
    let (a, b) = (
        revision::revision_data(&current).map_err(|e| e.to_string())?,
        revision::revision_data(&template).map_err(|e| e.to_string())?,
    );
    if a == b {
        return Ok(None);
    }
    Ok(Some(
        json!([{"op": "replace", "path": "/spec/template", "value": template}]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cs(status: &str, generation: i64) -> CloneSet {
        serde_saphyr::from_str(&format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: CloneSet\nmetadata: {{name: web, generation: {generation}}}\nspec:\n  replicas: 3\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: main, image: 'nginx:1'}}]}}\n{status}"
        ))
        .unwrap()
    }

    #[test]
    fn done_only_when_observed_updated_and_ready() {
        assert!(matches!(
            cloneset_state(&cs("", 1)),
            RolloutState::Waiting(_)
        ));
        let stale = "status: {observedGeneration: 1, replicas: 3, readyReplicas: 3, updatedReplicas: 3, updatedReadyReplicas: 3}\n";
        assert!(
            matches!(cloneset_state(&cs(stale, 2)), RolloutState::Waiting(m) if m.contains("observed"))
        );
        let half = "status: {observedGeneration: 2, replicas: 3, readyReplicas: 3, updatedReplicas: 1, updatedReadyReplicas: 1}\n";
        assert!(
            matches!(cloneset_state(&cs(half, 2)), RolloutState::Waiting(m) if m.contains("1 out of 3 new pods"))
        );
        let done = "status: {observedGeneration: 2, replicas: 3, readyReplicas: 3, updatedReplicas: 3, updatedReadyReplicas: 3, updateRevision: web-abc}\n";
        assert_eq!(
            cloneset_state(&cs(done, 2)),
            RolloutState::Done(
                "CloneSet rolling update complete 3 pods at revision web-abc...".into()
            )
        );
    }

    fn rev(n: i64, image: &str, cause: Option<&str>) -> ControllerRevision {
        let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "main", "image": image}]}});
        let data: Value = serde_json::from_str(&revision::revision_data(&t).unwrap()).unwrap();
        ControllerRevision {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(format!("web-{n}")),
                annotations: cause.map(|c| {
                    BTreeMap::from([("kubernetes.io/change-cause".to_string(), c.to_string())])
                }),
                ..Default::default()
            },
            data: Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(data)),
            revision: n,
        }
    }

    #[test]
    fn history_and_undo() {
        let revs = [
            rev(2, "nginx:2", Some("set image")),
            rev(1, "nginx:1", None),
        ];
        assert_eq!(
            history_table(&revs),
            "REVISION  CHANGE-CAUSE\n1         <none>\n2         set image\n"
        );
        assert_eq!(undo_target(&revs, 0).unwrap().revision, 1);
        assert_eq!(undo_target(&revs, 2).unwrap().revision, 2);
        assert!(undo_target(&revs, 7).is_err());
        assert_eq!(
            undo_target(&revs[..1], 0).unwrap_err(),
            "no last revision to roll back to"
        );
        let c = serde_json::to_value(cs("", 1)).unwrap();
        assert_eq!(undo_patch(&c, &revs[1]).unwrap(), None, "already nginx:1");
        let p = undo_patch(&c, &revs[0]).unwrap().unwrap();
        assert_eq!(p[0]["value"]["spec"]["containers"][0]["image"], "nginx:2");
        assert!(p[0]["value"].get("$patch").is_none());
    }

    #[test]
    fn statefulset_and_daemonset_states_in_kubectls_words() {
        let sts = |status: Value, partition: i64| {
            serde_json::from_value::<StatefulSet>(json!({"apiVersion": "apps.kruise.io/v1beta1",
                "kind": "StatefulSet", "metadata": {"name": "s", "generation": 2},
                "spec": {"replicas": 3, "selector": {}, "template": {},
                    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}}},
                "status": status}))
            .unwrap()
        };
        let st = |v| statefulset_state(&v);
        assert_eq!(
            st(sts(json!({"observedGeneration": 1}), 0)),
            RolloutState::Waiting("Waiting for statefulset spec update to be observed...".into())
        );
        assert_eq!(
            st(sts(json!({"observedGeneration": 2, "readyReplicas": 2}), 0)),
            RolloutState::Waiting("Waiting for 1 pods to be ready...".into())
        );
        assert_eq!(
            st(sts(json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 1}), 1)),
            RolloutState::Waiting("Waiting for partitioned roll out to finish: 1 out of 2 new pods have been updated...".into())
        );
        assert_eq!(
            st(sts(
                json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3, "currentReplicas": 3,
                "currentRevision": "s-1", "updateRevision": "s-1"}),
                0
            )),
            RolloutState::Done(
                "statefulset rolling update complete 3 pods at revision s-1...".into()
            )
        );
        let ds = |status: Value| {
            json!({"metadata": {"name": "d", "generation": 1},
            "spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}, "status": status})
        };
        assert_eq!(
            daemonset_state(&ds(json!({"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 1}))),
            RolloutState::Waiting("Waiting for daemon set \"d\" rollout to finish: 1 out of 2 new pods have been updated...".into())
        );
        assert_eq!(
            daemonset_state(&ds(
                json!({"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 2})
            )),
            RolloutState::Done("daemon set \"d\" successfully rolled out".into())
        );
    }
}
