//! The agent's Prometheus metrics, served as OpenMetrics text on the admin
//! socket's `GET /metrics` (root-only, off the CRI path):
//!
//! - `keelson_agent_cri_call_duration_seconds{method}`: every CRI call
//!   through the proxy, from its arrival to the end of its reply (a
//!   histogram, so its `_count` is the number of calls); `method` is the
//!   gRPC path of a CRI method, or `other` for any path the CRI does not
//!   define (the label set stays bounded whatever a caller sends);
//! - `keelson_agent_hook_faults_total{hook}`: hook phases that failed or
//!   panicked (the call went on unchanged);
//! - `keelson_agent_pulls{phase}` and `keelson_agent_restarts{phase}`: the
//!   pull and restart requests the agent keeps, by phase (`Waiting` /
//!   `Pending` are the queues);
//! - `keelson_agent_pod_book_containers`: containers in the pod book.
//!
//! The proxy core only sees [`CallObserver`]; recording a call is a binary
//! search over the CRI's method names and one histogram observation.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cri::CallObserver;
use crate::images::pulls::{self, PullEngine};
use crate::pods::PodBook;
use crate::restart::engine::RestartEngine;
use crate::restart::spec;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label for calls to paths the CRI does not define.
const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabel {
    hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

fn call_histogram() -> Histogram {
    // 50 µs … ~26 s: CRI calls through a local proxy to a long ExecSync.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// The agent's metrics (one per process).
pub struct Metrics {
    registry: Registry,
    /// Per CRI method path (sorted, as `cri_proto::METHODS`), its histogram.
    calls: Vec<(&'static str, Histogram)>,
    other: Histogram,
    hook_faults: Family<HookLabel, Counter>,
    pulls: Family<PhaseLabel, Gauge>,
    restarts: Family<PhaseLabel, Gauge>,
    containers: Gauge,
}

impl Metrics {
    /// Every series registered (the CRI methods' at zero).
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("keelson_agent");
        let call_family = Family::<MethodLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            call_histogram,
        );
        registry.register(
            "cri_call_duration_seconds",
            "CRI calls through the proxy, arrival to end of reply, by method",
            call_family.clone(),
        );
        let mut methods: Vec<&'static str> = cri_proto::METHODS.to_vec();
        methods.sort_unstable();
        let calls = methods
            .into_iter()
            .map(|method| {
                let h = call_family.get_or_create(&MethodLabel { method }).clone();
                (method, h)
            })
            .collect();
        let other = call_family
            .get_or_create(&MethodLabel { method: OTHER })
            .clone();
        let hook_faults = Family::<HookLabel, Counter>::default();
        registry.register(
            "hook_faults",
            "Hook phases that failed or panicked (the call went on unchanged)",
            hook_faults.clone(),
        );
        let pulls = Family::<PhaseLabel, Gauge>::default();
        registry.register("pulls", "Image pulls kept, by phase", pulls.clone());
        let restarts = Family::<PhaseLabel, Gauge>::default();
        registry.register(
            "restarts",
            "In-place restart requests kept, by phase",
            restarts.clone(),
        );
        let containers = Gauge::default();
        registry.register(
            "pod_book_containers",
            "Containers in the pod book",
            containers.clone(),
        );
        Arc::new(Self {
            registry,
            calls,
            other,
            hook_faults,
            pulls,
            restarts,
            containers,
        })
    }

    fn histogram(&self, method: &str) -> &Histogram {
        match self.calls.binary_search_by(|(m, _)| (*m).cmp(method)) {
            Ok(i) => &self.calls[i].1,
            Err(_) => &self.other,
        }
    }

    /// The registry's text, with the queue gauges read from the engines now.
    pub fn render(
        &self,
        pulls: &PullEngine,
        restarts: &RestartEngine,
        book: &PodBook,
    ) -> Result<String, std::fmt::Error> {
        let mut by_phase = [0i64; 4];
        for p in pulls.list() {
            by_phase[match p.phase {
                pulls::Phase::Waiting => 0,
                pulls::Phase::Pulling => 1,
                pulls::Phase::Succeeded => 2,
                pulls::Phase::Failed => 3,
            }] += 1;
        }
        set_phases(
            &self.pulls,
            ["Waiting", "Pulling", "Succeeded", "Failed"],
            by_phase,
        );
        let mut by_phase = [0i64; 5];
        for r in restarts.list() {
            by_phase[match r.phase {
                spec::Phase::Pending => 0,
                spec::Phase::Recreating => 1,
                spec::Phase::Succeeded => 2,
                spec::Phase::Failed => 3,
                spec::Phase::Completed => 4,
            }] += 1;
        }
        set_phases(
            &self.restarts,
            ["Pending", "Recreating", "Succeeded", "Failed", "Completed"],
            by_phase,
        );
        self.containers
            .set(i64::try_from(book.container_count()).unwrap_or(i64::MAX));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Sets each phase's gauge to its count.
fn set_phases<const N: usize>(
    family: &Family<PhaseLabel, Gauge>,
    phases: [&'static str; N],
    counts: [i64; N],
) {
    for (phase, n) in phases.into_iter().zip(counts) {
        family.get_or_create(&PhaseLabel { phase }).set(n);
    }
}

impl CallObserver for Metrics {
    fn call(&self, method: &str, elapsed: Duration) {
        self.histogram(method).observe(elapsed.as_secs_f64());
    }

    fn hook_fault(&self, hook: &str) {
        self.hook_faults
            .get_or_create(&HookLabel { hook: hook.into() })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_cri_method_and_unknown_paths_share_one_label() {
        let m = Metrics::new();
        m.call(
            "/runtime.v1.RuntimeService/Version",
            Duration::from_micros(300),
        );
        m.call(
            "/runtime.v1.RuntimeService/Version",
            Duration::from_millis(2),
        );
        m.call("/runtime.v1.ImageService/PullImage", Duration::from_secs(3));
        m.call("/made.up/Path1", Duration::from_micros(10));
        m.call("/made.up/Path2", Duration::from_micros(10));
        m.hook_fault("sidecar");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        let line = |prefix: &str| {
            out.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in:\n{out}"))
                .rsplit_once(' ')
                .unwrap()
                .1
                .to_string()
        };
        assert_eq!(
            line(
                "keelson_agent_cri_call_duration_seconds_count{method=\"/runtime.v1.RuntimeService/Version\"}"
            ),
            "2"
        );
        assert_eq!(
            line(
                "keelson_agent_cri_call_duration_seconds_count{method=\"/runtime.v1.ImageService/PullImage\"}"
            ),
            "1"
        );
        assert_eq!(
            line("keelson_agent_cri_call_duration_seconds_count{method=\"other\"}"),
            "2"
        );
        assert_eq!(
            line(
                "keelson_agent_cri_call_duration_seconds_count{method=\"/runtime.v1.RuntimeService/ListContainers\"}"
            ),
            "0",
            "every CRI method's series exists from the start"
        );
        assert_eq!(
            line("keelson_agent_hook_faults_total{hook=\"sidecar\"}"),
            "1"
        );
        // 300 µs is in the 400 µs bucket, 2 ms is not.
        assert_eq!(
            line(
                "keelson_agent_cri_call_duration_seconds_bucket{le=\"0.0004\",method=\"/runtime.v1.RuntimeService/Version\"}"
            ),
            "1"
        );
        assert!(out.ends_with("# EOF\n"), "{out}");
    }
}
