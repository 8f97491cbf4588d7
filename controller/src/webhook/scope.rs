//! Which pod creations must wait for the pod webhook, and which may go
//! ahead without it. OpenKruise registers `mpod.kb.io` for every pod with
//! `failurePolicy: Fail`, so while its manager is down no pod anywhere can
//! be created. Keelson registers the same path twice
//! (`deploy/webhooks.yaml`):
//!
//! * `mpod.kb.io`, `Fail`, for the pods Keelson concerns: controlled by an
//!   `apps.kruise.io` workload, asking for a launch order (annotation or
//!   `KRUISE_CONTAINER_PRIORITY`), carrying a Job sidecar
//!   (`KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT`), or labelled so that an
//!   existing SidecarSet's selector matches;
//! * `mpod-unscoped.keelson.io`, `Ignore`, for every other pod (so a
//!   SidecarSet created a moment ago still injects while the controller
//!   runs, and nothing is blocked while it does not).
//!
//! Both carry one CEL `matchConditions` entry; the second is the negation
//! of the first. The static part is in the shipped manifest; the webhook
//! server rewrites both from the SidecarSets it watches ([`keep`]).
//! Namespace selectors cannot be read in CEL, so a SidecarSet counts for
//! every namespace (more pods wait, never fewer). Past [`MAX_SELECTORS`]
//! SidecarSets, or under `KruisePodReadinessGate`, every pod is concerned.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{MatchCondition, MutatingWebhookConfiguration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use keelson_api::apps::v1beta1::sidecarset::SidecarSet;
use kube::Client;
use kube::api::{Api, PostParams};

use super::ca_bundle::MUTATING;
use super::cache::Caches;
use crate::sidecarset::matching::is_empty;

/// The `Fail` webhook.
pub const SCOPED: &str = "mpod.kb.io";
/// The `Ignore` webhook.
pub const UNSCOPED: &str = "mpod-unscoped.keelson.io";
/// The matchCondition's name in both.
pub const CONDITION: &str = "keelson-concerned";
/// More SidecarSets than this and every pod is concerned (bounds the CEL
/// expression's size and cost).
pub const MAX_SELECTORS: usize = 200;

/// The pods Keelson concerns whatever SidecarSets exist.
pub const STATIC: &str = "(has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, has(r.controller) && r.controller && r.apiVersion.startsWith('apps.kruise.io/'))) || (has(object.metadata.annotations) && 'apps.kruise.io/container-launch-priority' in object.metadata.annotations) || object.spec.containers.exists(c, has(c.env) && c.env.exists(e, e.name == 'KRUISE_CONTAINER_PRIORITY' || e.name == 'KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT'))";

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn has_label(key: &str) -> String {
    format!(
        "(has(object.metadata.labels) && {} in object.metadata.labels)",
        quote(key)
    )
}

fn label_in(key: &str, values: &[String]) -> String {
    let list: Vec<String> = values.iter().map(|v| quote(v)).collect();
    format!(
        "(has(object.metadata.labels) && {k} in object.metadata.labels && object.metadata.labels[{k}] in [{}])",
        list.join(", "),
        k = quote(key)
    )
}

/// A label selector as CEL over the pod; `None` for one that matches
/// nothing (empty, or an unknown operator).
pub fn selector_cel(s: &LabelSelector) -> Option<String> {
    if is_empty(s) {
        return None;
    }
    let mut terms = vec![];
    for (k, v) in s.match_labels.iter().flatten() {
        terms.push(label_in(k, std::slice::from_ref(v)));
    }
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        terms.push(match e.operator.as_str() {
            "In" => label_in(&e.key, &values),
            "NotIn" => format!("!{}", label_in(&e.key, &values)),
            "Exists" => has_label(&e.key),
            "DoesNotExist" => format!("!{}", has_label(&e.key)),
            _ => return None,
        });
    }
    Some(format!("({})", terms.join(" && ")))
}

/// The scoped webhook's condition for these SidecarSets.
pub fn expression<'a>(sets: impl IntoIterator<Item = &'a SidecarSet>, all_pods: bool) -> String {
    if all_pods {
        return "true".into();
    }
    let mut selectors: Vec<String> = sets
        .into_iter()
        .filter_map(|s| s.spec.selector.as_ref().and_then(selector_cel))
        .collect();
    if selectors.len() > MAX_SELECTORS {
        return "true".into();
    }
    selectors.sort();
    selectors.dedup();
    let mut out = STATIC.to_string();
    for s in selectors {
        out.push_str(" || ");
        out.push_str(&s);
    }
    out
}

/// The unscoped webhook's condition: everything else.
pub fn negation(expr: &str) -> String {
    format!("!({expr})")
}

/// Writes `expr` into both webhooks; whether the configuration changed.
/// Webhooks that are absent (an install without them) are left so.
pub async fn write(client: &Client, expr: &str) -> Result<bool, kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(mut c) = api.get_opt(MUTATING).await? else {
        return Ok(false);
    };
    let mut changed = false;
    for w in c.webhooks.iter_mut().flatten() {
        let want = match w.name.as_str() {
            SCOPED => expr.to_string(),
            UNSCOPED => negation(expr),
            _ => continue,
        };
        let cond = vec![MatchCondition {
            name: CONDITION.into(),
            expression: want,
        }];
        if w.match_conditions.as_ref() != Some(&cond) {
            w.match_conditions = Some(cond);
            changed = true;
        }
    }
    if changed {
        api.replace(MUTATING, &PostParams::default(), &c).await?;
    }
    Ok(changed)
}

/// Keeps both webhooks' conditions in step with the watched SidecarSets,
/// checking every `period`; runs until dropped.
pub async fn keep(client: Client, caches: Caches, all_pods: bool, period: Duration) {
    let mut written: Option<String> = None;
    loop {
        let sets = caches.sidecarsets();
        let expr = expression(sets.iter().map(|s| s.as_ref()), all_pods);
        if written.as_deref() != Some(expr.as_str()) {
            match write(&client, &expr).await {
                Ok(changed) => {
                    if changed {
                        tracing::info!(
                            sidecarsets = sets.len(),
                            bytes = expr.len(),
                            "pod webhook scope updated"
                        );
                    }
                    written = Some(expr);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "updating the pod webhook scope failed; retrying")
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn selectors_become_guarded_cel() {
        assert_eq!(
            selector_cel(&sel(json!({"matchLabels": {"app": "web"}}))).unwrap(),
            "((has(object.metadata.labels) && 'app' in object.metadata.labels && object.metadata.labels['app'] in ['web']))"
        );
        let e = selector_cel(&sel(json!({"matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["db"]},
            {"key": "mesh", "operator": "Exists"},
        ]})))
        .unwrap();
        assert!(
            e.starts_with("(!(has(object.metadata.labels) && 'tier'"),
            "{e}"
        );
        assert!(
            e.ends_with("&& (has(object.metadata.labels) && 'mesh' in object.metadata.labels))"),
            "{e}"
        );
        assert_eq!(selector_cel(&sel(json!({}))), None);
        assert_eq!(quote("a'b\\"), "'a\\'b\\\\'");
    }

    #[test]
    fn expression_is_static_plus_sorted_selectors() {
        let set = |name: &str, app: &str| -> SidecarSet {
            serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"selector": {"matchLabels": {"app": app}}}}))
            .unwrap()
        };
        let sets = [set("b", "web"), set("a", "api"), set("c", "web")];
        let e = expression(&sets, false);
        assert!(e.starts_with(STATIC));
        assert_eq!(e.matches(" || ((has(").count(), 2, "{e}");
        assert!(e.find("'api'").unwrap() < e.find("'web'").unwrap());
        assert_eq!(expression(&sets, true), "true");
        assert_eq!(negation("x"), "!(x)");
    }
}
