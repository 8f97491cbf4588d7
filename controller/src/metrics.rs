//! Counters the reconcilers and the webhook server bump, rendered in
//! Prometheus' text format next to the health gauges on `/metrics`:
//! `keelson_controller_reconciles_total{controller,result}` (result `ok` or
//! `error`; a controller's series exist from its start) and
//! `keelson_controller_admissions_total{webhook,allowed}`,
//! `keelson_controller_pub_refusals_total{namespace,budget}` and
//! `keelson_controller_deletion_protection_refusals_total{kind}`.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Per metric name: (help, per rendered label set: value).
type Families = BTreeMap<&'static str, (&'static str, BTreeMap<String, u64>)>;

static FAMILIES: Mutex<Families> = Mutex::new(BTreeMap::new());

const RECONCILES: (&str, &str) = (
    "keelson_controller_reconciles_total",
    "Reconciles by controller and result.",
);
const ADMISSIONS: (&str, &str) = (
    "keelson_controller_admissions_total",
    "Admission reviews answered, by webhook path and whether allowed.",
);

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn add(family: (&'static str, &'static str), labels: &[(&str, &str)], by: u64) {
    let rendered = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",");
    let mut all = FAMILIES.lock().unwrap_or_else(|e| e.into_inner());
    let (_, series) = all
        .entry(family.0)
        .or_insert_with(|| (family.1, BTreeMap::new()));
    *series.entry(rendered).or_insert(0) += by;
}

/// Makes `controller`'s series exist (at 0) before its first reconcile.
pub fn register_controller(controller: &str) {
    for result in ["ok", "error"] {
        add(
            RECONCILES,
            &[("controller", controller), ("result", result)],
            0,
        );
    }
}

/// One reconcile of `controller` ended.
pub fn reconciled(controller: &str, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    add(
        RECONCILES,
        &[("controller", controller), ("result", result)],
        1,
    );
}

/// One admission review on `webhook` was answered.
pub fn admitted(webhook: &str, allowed: bool) {
    let allowed = if allowed { "true" } else { "false" };
    add(ADMISSIONS, &[("webhook", webhook), ("allowed", allowed)], 1);
}

const PUB_REFUSED: (&str, &str) = (
    "keelson_controller_pub_refusals_total",
    "Pod disruptions a PodUnavailableBudget refused, by namespace and budget.",
);
const DELETION_PROTECTED: (&str, &str) = (
    "keelson_controller_deletion_protection_refusals_total",
    "Deletions refused by policy.kruise.io/delete-protection, by kind.",
);

/// A PodUnavailableBudget refused a disruption.
pub fn pub_refused(namespace: &str, budget: &str) {
    add(
        PUB_REFUSED,
        &[("namespace", namespace), ("budget", budget)],
        1,
    );
}

/// Deletion protection refused deleting an object of `kind`.
pub fn deletion_refused(kind: &str) {
    add(DELETION_PROTECTED, &[("kind", kind)], 1);
}

/// Every counter, in the text exposition format.
pub fn render() -> String {
    let all = FAMILIES.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::new();
    for (name, (help, series)) in all.iter() {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for (labels, v) in series {
            out.push_str(&format!("{name}{{{labels}}} {v}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_the_text_format() {
        register_controller("test-metrics");
        reconciled("test-metrics", true);
        reconciled("test-metrics", true);
        reconciled("test-metrics", false);
        admitted("/test-\"path", false);
        let text = render();
        assert!(
            text.contains("# TYPE keelson_controller_reconciles_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "keelson_controller_reconciles_total{controller=\"test-metrics\",result=\"ok\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("keelson_controller_reconciles_total{controller=\"test-metrics\",result=\"error\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("keelson_controller_admissions_total{webhook=\"/test-\\\"path\",allowed=\"false\"} 1\n"),
            "{text}"
        );
    }
}
