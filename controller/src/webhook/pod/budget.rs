//! Step 5 of pod mutation: name the pod's PodUnavailableBudget in
//! `kruise.io/related-pub`, so the validating webhook knows it is guarded
//! from its first moment. The budget is the one whose `targetRef` is the
//! pod's top-level workload (a ReplicaSet's Deployment), else the first
//! (by name) whose selector matches the pod's labels.

use k8s_openapi::api::core::v1::Pod;
use keelson_api::policy::v1alpha1::podunavailablebudget::PodUnavailableBudget;
use kube::ResourceExt;

use super::super::Context;
use crate::podunavailablebudget::finder::{self, FindError};
use crate::selector;

/// The name of the budget guarding `pod` (in namespace `ns`), if any.
pub async fn related(pod: &Pod, ns: &str, ctx: &Context) -> Result<Option<String>, FindError> {
    let mut budgets: Vec<std::sync::Arc<PodUnavailableBudget>> = ctx
        .caches
        .budgets
        .state()
        .into_iter()
        .filter(|b| b.namespace().as_deref() == Some(ns) && b.metadata.deletion_timestamp.is_none())
        .collect();
    if budgets.is_empty() {
        return Ok(None);
    }
    budgets.sort_by_key(|b| b.name_any());
    if let Some(r) = finder::controller_of(pod) {
        let by_ref: Vec<_> = budgets
            .iter()
            .filter_map(|b| b.spec.target_reference.as_ref().map(|t| (b, t)))
            .collect();
        if !by_ref.is_empty() {
            // A ReplicaSet's Deployment is read only if some budget names
            // a Deployment.
            let top =
                if r.kind == "ReplicaSet" && by_ref.iter().any(|(_, t)| t.kind == "Deployment") {
                    finder::top_level(&ctx.client, ns, r).await?.map(|(o, _)| o)
                } else {
                    Some(r.clone())
                };
            if let Some(top) = top {
                let hit = by_ref.iter().find(|(_, t)| {
                    finder::group(&t.api_version) == finder::group(&top.api_version)
                        && t.kind == top.kind
                        && t.name == top.name
                });
                if let Some((b, _)) = hit {
                    return Ok(Some(b.name_any()));
                }
            }
        }
    }
    let labels = pod.labels();
    Ok(budgets
        .iter()
        .find(|b| {
            b.spec.selector.as_ref().is_some_and(|s| {
                (s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                    || s.match_expressions.as_ref().is_some_and(|m| !m.is_empty()))
                    && selector::matches(s, labels)
            })
        })
        .map(|b| b.name_any()))
}
