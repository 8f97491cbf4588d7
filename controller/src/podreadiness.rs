//! The `KruisePodReady` readiness gate's first condition. The pod webhook
//! gives pods of Kruise workloads (all pods, under `KruisePodReadinessGate`)
//! that gate; a gated pod is never Ready until some condition of that type
//! exists. As OpenKruise's pod-readiness controller does, a gated pod
//! without the condition gets it `True`; afterwards only the ones that
//! take a pod out of service (lifecycle hooks, container restarts) flip
//! it. One watch over all pods, one status patch per new pod.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

/// The readiness gate and condition type (OpenKruise's).
pub use keelson_api::apps::shared::KRUISE_POD_READY_CONDITION_TYPE as KRUISE_POD_READY;

/// Whether `pod` carries the gate but no condition for it yet (and is not
/// being deleted).
pub fn needs_condition(pod: &Pod) -> bool {
    let gated = pod
        .spec
        .iter()
        .flat_map(|s| s.readiness_gates.iter().flatten())
        .any(|g| g.condition_type == KRUISE_POD_READY);
    let has = pod
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == KRUISE_POD_READY);
    gated && !has && pod.metadata.deletion_timestamp.is_none()
}

/// The status patch that adds the condition.
pub fn patch(now: Time) -> serde_json::Value {
    serde_json::json!({"status": {"conditions": [{
        "type": KRUISE_POD_READY, "status": "True", "lastTransitionTime": now,
    }]}})
}

/// Runs until dropped.
pub async fn run(client: Client) {
    let all: Api<Pod> = Api::all(client.clone());
    let stream = watcher(all, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures_util::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        let pod = match item {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                continue;
            }
        };
        if !needs_condition(&pod) {
            continue;
        }
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let body = patch(Time(k8s_openapi::jiff::Timestamp::now()));
        tokio::spawn(async move {
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(body))
                .await
            {
                Ok(_) => tracing::debug!(namespace = %ns, pod = %name, "KruisePodReady set"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(namespace = %ns, pod = %name, error = %e, "setting KruisePodReady failed")
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_gated_pods_without_the_condition() {
        let p = |v| serde_json::from_value::<Pod>(v).unwrap();
        let gate = json!([{"conditionType": KRUISE_POD_READY}]);
        assert!(needs_condition(&p(
            json!({"spec": {"containers": [], "readinessGates": gate}})
        )));
        assert!(!needs_condition(&p(json!({"spec": {"containers": []}}))));
        assert!(!needs_condition(&p(
            json!({"spec": {"containers": [], "readinessGates": gate},
            "status": {"conditions": [{"type": KRUISE_POD_READY, "status": "False"}]}})
        )));
        assert!(!needs_condition(&p(
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [], "readinessGates": gate}})
        )));
    }
}
