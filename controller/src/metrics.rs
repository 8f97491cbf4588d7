//! The controller's Prometheus metrics (prometheus-client, OpenMetrics
//! text on `/metrics`): counters the reconcilers and the webhook server
//! bump — `keelson_controller_reconciles_total{controller,result}` (result
//! `ok` or `error`; a controller's series exist from its start),
//! `keelson_controller_admissions_total{webhook,allowed}`,
//! `keelson_controller_pub_refusals_total{namespace,budget}` and
//! `keelson_controller_deletion_protection_refusals_total{kind}` — and the
//! health figures [`Health`] hands over at each scrape. Label values are
//! Kubernetes names and this server's webhook paths: prometheus-client
//! 0.24 writes label values unescaped, and these never hold a quote or a
//! backslash.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    webhook: String,
    allowed: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    namespace: String,
    budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Default)]
struct Counters {
    reconciles: Family<ReconcileLabels, Counter>,
    admissions: Family<AdmissionLabels, Counter>,
    pub_refused: Family<BudgetLabels, Counter>,
    deletion_refused: Family<KindLabel, Counter>,
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(Counters::default);

fn reconcile_labels(controller: &str, ok: bool) -> ReconcileLabels {
    ReconcileLabels {
        controller: controller.into(),
        result: if ok { "ok" } else { "error" },
    }
}

/// Makes `controller`'s series exist (at 0) before its first reconcile.
pub fn register_controller(controller: &str) {
    for ok in [true, false] {
        // Created at 0 (the guard is dropped at once).
        drop(
            COUNTERS
                .reconciles
                .get_or_create(&reconcile_labels(controller, ok)),
        );
    }
}

/// One reconcile of `controller` ended.
pub fn reconciled(controller: &str, ok: bool) {
    COUNTERS
        .reconciles
        .get_or_create(&reconcile_labels(controller, ok))
        .inc();
}

/// One admission review on `webhook` was answered.
pub fn admitted(webhook: &str, allowed: bool) {
    COUNTERS
        .admissions
        .get_or_create(&AdmissionLabels {
            webhook: webhook.into(),
            allowed: if allowed { "true" } else { "false" },
        })
        .inc();
}

/// A PodUnavailableBudget refused a disruption.
pub fn pub_refused(namespace: &str, budget: &str) {
    COUNTERS
        .pub_refused
        .get_or_create(&BudgetLabels {
            namespace: namespace.into(),
            budget: budget.into(),
        })
        .inc();
}

/// Deletion protection refused deleting an object of `kind`.
pub fn deletion_refused(kind: &str) {
    COUNTERS
        .deletion_refused
        .get_or_create(&KindLabel { kind: kind.into() })
        .inc();
}

/// The health figures of one scrape (read from the process's atomics).
#[derive(Debug, Default, Clone, Copy)]
pub struct Health {
    pub leader: bool,
    pub api_connected: bool,
    pub lease_rounds: u64,
    pub lease_errors: u64,
    pub writes_sent: u64,
    pub writes_refused: u64,
}

fn gauge(v: bool) -> Gauge {
    let g = Gauge::default();
    g.set(i64::from(v));
    g
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

/// Every metric, in the OpenMetrics text format.
pub fn render(health: Health) -> Result<String, std::fmt::Error> {
    let mut r = Registry::with_prefix("keelson_controller");
    r.register(
        "leader",
        "Whether this replica leads (1) or not (0)",
        gauge(health.leader),
    );
    r.register(
        "api_connected",
        "Whether the API server is reachable",
        gauge(health.api_connected),
    );
    r.register(
        "lease_rounds",
        "Leader-election rounds",
        counter(health.lease_rounds),
    );
    r.register(
        "lease_errors",
        "Leader-election rounds that failed",
        counter(health.lease_errors),
    );
    let writes = Family::<ResultLabel, Counter>::default();
    writes
        .get_or_create(&ResultLabel { result: "sent" })
        .inc_by(health.writes_sent);
    writes
        .get_or_create(&ResultLabel { result: "refused" })
        .inc_by(health.writes_refused);
    r.register(
        "reconciler_writes",
        "The reconcilers' writing requests: sent, or refused by the leadership fence",
        writes,
    );
    r.register(
        "reconciles",
        "Reconciles by controller and result",
        COUNTERS.reconciles.clone(),
    );
    r.register(
        "admissions",
        "Admission reviews answered, by webhook path and whether allowed",
        COUNTERS.admissions.clone(),
    );
    r.register(
        "pub_refusals",
        "Pod disruptions a PodUnavailableBudget refused, by namespace and budget",
        COUNTERS.pub_refused.clone(),
    );
    r.register(
        "deletion_protection_refusals",
        "Deletions refused by policy.kruise.io/delete-protection, by kind",
        COUNTERS.deletion_refused.clone(),
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_health_render_in_the_openmetrics_text_format() {
        register_controller("test-metrics");
        register_controller("test-idle");
        reconciled("test-metrics", true);
        reconciled("test-metrics", true);
        reconciled("test-metrics", false);
        admitted("/test-path", false);
        let text = render(Health {
            leader: true,
            writes_sent: 7,
            ..Default::default()
        })
        .unwrap();
        for line in [
            "# TYPE keelson_controller_reconciles counter\n",
            "keelson_controller_reconciles_total{controller=\"test-metrics\",result=\"ok\"} 2\n",
            "keelson_controller_reconciles_total{controller=\"test-metrics\",result=\"error\"} 1\n",
            "keelson_controller_reconciles_total{controller=\"test-idle\",result=\"ok\"} 0\n",
            "keelson_controller_admissions_total{webhook=\"/test-path\",allowed=\"false\"} 1\n",
            "keelson_controller_leader 1\n",
            "keelson_controller_api_connected 0\n",
            "keelson_controller_reconciler_writes_total{result=\"sent\"} 7\n",
            "keelson_controller_reconciler_writes_total{result=\"refused\"} 0\n",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
