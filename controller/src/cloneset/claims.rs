//! A CloneSet's PersistentVolumeClaims after their creation, decided
//! without I/O as OpenKruise does: which instance ids new pods take first
//! (those whose claims outlived their pod, so a recreated pod gets its
//! volumes back), and — with `scaleStrategy.disablePVCReuse` — the
//! clean-up before each sync instead: a claim of a pod that is terminal
//! or being deleted is handed to that pod (its owner reference moves from
//! the CloneSet to the pod, so it goes with the pod), a claim with no pod
//! at all is deleted, and no id is reused.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use keelson_api::apps::v1alpha1::cloneset::{CLONE_SET_INSTANCE_ID, CloneSet};

/// One write on a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimStep {
    /// Replace the claim's owner references (written under its
    /// `resource_version`).
    Reown {
        claim: String,
        resource_version: Option<String>,
        owners: Vec<OwnerReference>,
    },
    Delete {
        claim: String,
    },
}

/// What to do with the claims, and the ids new pods take first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimPlan {
    pub steps: Vec<ClaimStep>,
    pub reusable: Vec<String>,
}

fn instance_id(labels: Option<&BTreeMap<String, String>>) -> Option<&str> {
    labels?
        .get(CLONE_SET_INSTANCE_ID)
        .map(String::as_str)
        .filter(|id| !id.is_empty())
}

/// The claim's owners with the CloneSet `cs_uid`'s reference replaced by
/// a controller reference to `pod`.
fn owners_to_pod(claim: &PersistentVolumeClaim, cs_uid: &str, pod: &Pod) -> Vec<OwnerReference> {
    let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut owners: Vec<OwnerReference> = claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.uid != cs_uid)
        .cloned()
        .collect();
    if !owners.iter().any(|o| o.uid == pod_uid) {
        owners.push(OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod_uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        });
    }
    owners
}

/// The plan for `claims` (those the CloneSet controls, not being
/// deleted), given its `active` pods and the `inactive` ones (terminal or
/// being deleted).
pub fn plan(
    cs: &CloneSet,
    active: &[Pod],
    inactive: &[Pod],
    claims: &[PersistentVolumeClaim],
) -> ClaimPlan {
    let live: BTreeSet<&str> = active
        .iter()
        .filter_map(|p| instance_id(p.metadata.labels.as_ref()))
        .collect();
    let unused = claims.iter().filter_map(|c| {
        let id = instance_id(c.metadata.labels.as_ref())?;
        (!live.contains(id)).then_some((id, c))
    });
    if !cs.spec.scale_strategy.disable_pvc_reuse {
        let ids: BTreeSet<&str> = unused.map(|(id, _)| id).collect();
        return ClaimPlan {
            steps: vec![],
            reusable: ids.into_iter().map(String::from).collect(),
        };
    }
    let gone: BTreeMap<&str, &Pod> = inactive
        .iter()
        .filter_map(|p| Some((instance_id(p.metadata.labels.as_ref())?, p)))
        .collect();
    let cs_uid = cs.metadata.uid.as_deref().unwrap_or_default();
    let steps = unused
        .map(|(id, c)| {
            let claim = c.metadata.name.clone().unwrap_or_default();
            match gone.get(id) {
                Some(pod) => ClaimStep::Reown {
                    claim,
                    resource_version: c.metadata.resource_version.clone(),
                    owners: owners_to_pod(c, cs_uid, pod),
                },
                None => ClaimStep::Delete { claim },
            }
        })
        .collect();
    ClaimPlan {
        steps,
        reusable: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cs(disable: bool) -> CloneSet {
        serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "metadata": {"name": "web", "uid": "cs-uid"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}},
                "scaleStrategy": {"disablePVCReuse": disable}}
        }))
        .unwrap()
    }

    fn pod(id: &str) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": format!("web-{id}"), "uid": format!("pod-{id}"),
            "labels": {CLONE_SET_INSTANCE_ID: id}}}),
        )
        .unwrap()
    }

    fn claim(id: &str) -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": format!("data-web-{id}"), "resourceVersion": "9",
            "labels": {CLONE_SET_INSTANCE_ID: id},
            "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
                "name": "web", "uid": "cs-uid", "controller": true, "blockOwnerDeletion": true}]}}),
        )
        .unwrap()
    }

    #[test]
    fn claims_without_a_live_pod_are_reused_by_default() {
        let claims = [claim("aaaaa"), claim("bbbbb"), claim("ccccc")];
        let p = plan(&cs(false), &[pod("aaaaa")], &[pod("bbbbb")], &claims);
        assert_eq!(p.steps, vec![]);
        assert_eq!(p.reusable, ["bbbbb", "ccccc"]);
    }

    #[test]
    fn disable_pvc_reuse_hands_claims_to_their_pod_or_deletes_them() {
        let claims = [claim("aaaaa"), claim("bbbbb"), claim("ccccc")];
        let p = plan(&cs(true), &[pod("aaaaa")], &[pod("bbbbb")], &claims);
        assert!(p.reusable.is_empty());
        assert_eq!(p.steps.len(), 2, "the live pod's claim is left alone");
        let ClaimStep::Reown {
            claim,
            resource_version,
            owners,
        } = &p.steps[0]
        else {
            panic!("{:?}", p.steps)
        };
        assert_eq!(
            (claim.as_str(), resource_version.as_deref()),
            ("data-web-bbbbb", Some("9"))
        );
        assert_eq!(owners.len(), 1, "the CloneSet's reference is gone");
        assert_eq!(
            (
                owners[0].kind.as_str(),
                owners[0].uid.as_str(),
                owners[0].controller
            ),
            ("Pod", "pod-bbbbb", Some(true))
        );
        assert_eq!(
            p.steps[1],
            ClaimStep::Delete {
                claim: "data-web-ccccc".into()
            }
        );
    }
}
