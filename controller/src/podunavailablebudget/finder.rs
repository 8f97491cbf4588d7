//! Which pods a budget guards and how many it expects, read from the API
//! server as OpenKruise's controller finder reads them: a `targetRef`
//! workload's pods are the ones it (or, for a Deployment, its ReplicaSets)
//! controls, and its `spec.replicas` the total; a `selector`'s pods are
//! the active ones it matches, and the total the sum of their workloads'
//! replicas. Workloads of other kinds are read through their scale
//! subresource.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use keelson_api::policy::v1alpha1::podunavailablebudget::{
    ANNOTATION_PROTECT_TOTAL_REPLICAS, PodUnavailableBudget,
};
use kube::api::{Api, ListParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, ResourceExt};

use crate::selector;
use crate::workload::pods::is_active;

/// A workload as far as a budget cares.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub uid: String,
    pub replicas: i32,
    pub selector: Option<LabelSelector>,
    pub deleting: bool,
    /// Its own controller (a ReplicaSet's Deployment).
    pub controller: Option<OwnerReference>,
}

/// Why the pods could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("reading {kind} {name}: {source}")]
    Read {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} of {api_version} is not served: {source}")]
    Discovery {
        api_version: String,
        kind: String,
        #[source]
        source: kube::Error,
    },
}

/// The API group of `api_version` (`apps/v1` → `apps`, `v1` → ``).
pub fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn version(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or(api_version, |(_, v)| v)
}

/// Plurals of the kinds read without discovery.
fn known_plural(group: &str, kind: &str) -> Option<&'static str> {
    Some(match (group, kind) {
        ("apps", "ReplicaSet") => "replicasets",
        ("apps", "Deployment") => "deployments",
        ("apps", "StatefulSet") | ("apps.kruise.io", "StatefulSet") => "statefulsets",
        ("", "ReplicationController") => "replicationcontrollers",
        ("apps.kruise.io", "CloneSet") => "clonesets",
        _ => return None,
    })
}

/// Reads workload `kind/name` of `api_version` in `ns`; `None` when it
/// does not exist.
pub async fn workload(
    client: &Client,
    ns: &str,
    api_version: &str,
    kind: &str,
    name: &str,
) -> Result<Option<Workload>, FindError> {
    let gvk = GroupVersionKind::gvk(group(api_version), version(api_version), kind);
    let read = |source| FindError::Read {
        kind: kind.into(),
        name: name.into(),
        source,
    };
    let (ar, scale) = match known_plural(&gvk.group, kind) {
        Some(plural) => (ApiResource::from_gvk_with_plural(&gvk, plural), false),
        None => {
            let (ar, _) = kube::discovery::pinned_kind(client, &gvk)
                .await
                .map_err(|source| FindError::Discovery {
                    api_version: api_version.into(),
                    kind: kind.into(),
                    source,
                })?;
            (ar, true)
        }
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let Some(obj) = api.get_opt(name).await.map_err(read)? else {
        return Ok(None);
    };
    let spec = obj.data.get("spec");
    let mut replicas = spec
        .and_then(|s| s.get("replicas"))
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(1) as i32;
    if scale {
        match api.get_scale(name).await {
            Ok(s) => replicas = s.spec.and_then(|s| s.replicas).unwrap_or(0),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
            Err(e) => return Err(read(e)),
        }
    }
    let selector = spec
        .and_then(|s| s.get("selector"))
        .and_then(|s| serde_json::from_value::<LabelSelector>(s.clone()).ok());
    Ok(Some(Workload {
        uid: obj.uid().unwrap_or_default(),
        replicas,
        selector,
        deleting: obj.metadata.deletion_timestamp.is_some(),
        controller: obj
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true))
            .cloned(),
    }))
}

/// The pod's controller.
pub fn controller_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

fn owned_by(pods: &[Arc<Pod>], uids: &[String]) -> Vec<Arc<Pod>> {
    pods.iter()
        .filter(|p| controller_of(p).is_some_and(|r| uids.contains(&r.uid)))
        .cloned()
        .collect()
}

/// The pods of the budget (active ones only) and the total it expects,
/// from `pods` (every pod of the budget's namespace).
pub async fn pods_for(
    client: &Client,
    budget: &PodUnavailableBudget,
    pods: &[Arc<Pod>],
) -> Result<(Vec<Arc<Pod>>, i32), FindError> {
    let ns = budget.namespace().unwrap_or_default();
    let fixed_total = budget
        .annotations()
        .get(ANNOTATION_PROTECT_TOTAL_REPLICAS)
        .and_then(|v| v.parse::<i32>().ok());
    let active: Vec<Arc<Pod>> = pods.iter().filter(|p| is_active(p)).cloned().collect();
    if let Some(r) = &budget.spec.target_reference {
        let Some(w) = workload(client, &ns, &r.api_version, &r.kind, &r.name).await? else {
            return Ok((vec![], fixed_total.unwrap_or(0)));
        };
        if w.deleting || w.replicas == 0 {
            return Ok((vec![], fixed_total.unwrap_or(0)));
        }
        let mut uids = vec![w.uid.clone()];
        if group(&r.api_version) == "apps" && r.kind == "Deployment" {
            let rs: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
                Api::namespaced(client.clone(), &ns);
            let mut params = ListParams::default();
            if let Some(s) = &w.selector {
                params = params.labels(&selector::to_query(s));
            }
            let sets = rs.list(&params).await.map_err(|source| FindError::Read {
                kind: "ReplicaSet".into(),
                name: String::new(),
                source,
            })?;
            let owned: Vec<String> = sets
                .items
                .iter()
                .filter(|s| s.metadata.deletion_timestamp.is_none())
                .filter(|s| crate::api_call::controlled_by(&s.metadata, &w.uid))
                .filter_map(|s| s.uid())
                .collect();
            if !owned.is_empty() {
                uids = owned;
            }
        }
        let mut matched = owned_by(&active, &uids);
        if matched.is_empty()
            && known_plural(group(&r.api_version), &r.kind).is_none()
            && let Some(s) = &w.selector
        {
            matched = active
                .iter()
                .filter(|p| selector::matches(s, p.labels()))
                .cloned()
                .collect();
        }
        return Ok((matched, fixed_total.unwrap_or(w.replicas)));
    }
    let Some(s) = budget.spec.selector.as_ref().filter(|s| !is_empty(s)) else {
        return Ok((vec![], 0));
    };
    let matched: Vec<Arc<Pod>> = active
        .iter()
        .filter(|p| selector::matches(s, p.labels()))
        .cloned()
        .collect();
    if let Some(t) = fixed_total {
        return Ok((matched, t));
    }
    Ok((
        matched.clone(),
        expected_scale(client, &ns, &matched).await?,
    ))
}

fn is_empty(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
}

/// The top-level workload of a controller reference: a ReplicaSet's
/// Deployment, else the workload itself (checked against `uid`).
pub async fn top_level(
    client: &Client,
    ns: &str,
    r: &OwnerReference,
) -> Result<Option<(OwnerReference, Workload)>, FindError> {
    let Some(w) = workload(client, ns, &r.api_version, &r.kind, &r.name).await? else {
        return Ok(None);
    };
    if !r.uid.is_empty() && w.uid != r.uid {
        return Ok(None);
    }
    if r.kind == "ReplicaSet"
        && let Some(d) = w.controller.clone().filter(|d| d.kind == "Deployment")
        && let Some(dw) = workload(client, ns, &d.api_version, &d.kind, &d.name).await?
        && dw.uid == d.uid
    {
        return Ok(Some((d, dw)));
    }
    Ok(Some((r.clone(), w)))
}

/// The sum of the replicas of the workloads controlling `pods` (each
/// counted once; pods without a controller add nothing).
pub async fn expected_scale(
    client: &Client,
    ns: &str,
    pods: &[Arc<Pod>],
) -> Result<i32, FindError> {
    let mut seen_refs = std::collections::BTreeSet::new();
    let mut scale: BTreeMap<String, i32> = BTreeMap::new();
    for p in pods {
        let Some(r) = controller_of(p) else { continue };
        if !seen_refs.insert(r.uid.clone()) {
            continue;
        }
        if let Some((_, w)) = top_level(client, ns, r).await?
            && !w.deleting
        {
            scale.insert(w.uid, w.replicas);
        }
    }
    Ok(scale.values().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_versions_of_api_versions() {
        assert_eq!(group("apps/v1"), "apps");
        assert_eq!(group("v1"), "");
        assert_eq!(version("apps.kruise.io/v1beta1"), "v1beta1");
        assert_eq!(version("v1"), "v1");
        assert_eq!(
            known_plural("apps.kruise.io", "CloneSet"),
            Some("clonesets")
        );
        assert_eq!(known_plural("example.com", "Thing"), None);
    }

    #[test]
    fn pods_are_matched_to_their_controller_by_uid() {
        let pod = |name: &str, uid: &str| {
            Arc::new(
                serde_json::from_value::<Pod>(serde_json::json!({
                    "metadata": {"name": name, "ownerReferences": [
                        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                         "uid": uid, "controller": true}]}
                }))
                .unwrap(),
            )
        };
        let pods = vec![pod("a", "1"), pod("b", "2"), pod("c", "1")];
        let got: Vec<String> = owned_by(&pods, &["1".into()])
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(got, vec!["a", "c"]);
    }
}
