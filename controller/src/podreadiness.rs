//! The `KruisePodReady` readiness gate's first condition. The pod webhook
//! gives pods of Kruise workloads (all pods, under `KruisePodReadinessGate`)
//! that gate; a gated pod is never Ready until some condition of that type
//! exists. As OpenKruise's pod-readiness controller does, a gated pod
//! without the condition gets it `True`; afterwards only the ones that
//! take a pod out of service (lifecycle hooks, container restarts) flip
//! it. One watch over all pods, one status patch per new pod.
//!
//! Those writers share the condition as OpenKruise's `pkg/util/podreadiness`
//! does: its message is a JSON list of holders (`{userAgent, key}`, sorted),
//! each taking the pod out of service; the condition is False while the list
//! is not empty and True again when the last holder lets go
//! ([`hold_patch`], [`release_patch`], [`set_held`]).

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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

/// One holder of the condition False (an entry of its message list).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    pub user_agent: String,
    pub key: String,
}

fn condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

/// Whether the pod has the `KruisePodReady` readiness gate.
pub fn has_gate(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.readiness_gates.iter().flatten())
        .any(|g| g.condition_type == KRUISE_POD_READY)
}

/// The holders named in the condition's message (none when unreadable).
pub fn holders(pod: &Pod) -> Vec<Holder> {
    condition(pod, KRUISE_POD_READY)
        .and_then(|c| c.message.as_deref())
        .filter(|m| !m.is_empty())
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default()
}

/// Whether `holder` holds the pod not-ready now (the condition is False
/// and names it).
pub fn holds(pod: &Pod, holder: &Holder) -> bool {
    condition(pod, KRUISE_POD_READY).is_some_and(|c| c.status != "True")
        && holders(pod).contains(holder)
}

fn dump(mut list: Vec<Holder>) -> String {
    list.sort();
    serde_json::to_string(&list).unwrap_or_default()
}

fn conditions_patch(pod: &Pod, conditions: Vec<Value>) -> Value {
    json!({
        "metadata": {"resourceVersion": pod.metadata.resource_version},
        "status": {"conditions": conditions},
    })
}

/// The pod status patch (preconditioned on the pod's resourceVersion)
/// that adds `holder` and turns the condition False — and `Ready` with it
/// when the containers are ready, as kubelet would on its next sync.
/// `None` when there is nothing to write (no gate, or already held).
pub fn hold_patch(pod: &Pod, holder: &Holder, now: &Time) -> Option<Value> {
    if !has_gate(pod) || holds(pod, holder) {
        return None;
    }
    let mut list = holders(pod);
    if !list.contains(holder) {
        list.push(holder.clone());
    }
    let mut out = vec![json!({
        "type": KRUISE_POD_READY,
        "status": "False",
        "message": dump(list),
        "lastTransitionTime": now,
    })];
    let containers_ready = condition(pod, "ContainersReady").is_some_and(|c| c.status == "True");
    if condition(pod, "Ready").is_some() && containers_ready {
        out.push(json!({
            "type": "Ready",
            "status": "False",
            "reason": "ReadinessGatesNotReady",
            "message": format!("the status of pod readiness gate \"{KRUISE_POD_READY}\" is not \"True\", but False"),
            "lastTransitionTime": now,
        }));
    }
    Some(conditions_patch(pod, out))
}

/// The pod status patch that takes `holder` off the list (the condition
/// True again when nobody else holds it); `None` when it is not on it.
pub fn release_patch(pod: &Pod, holder: &Holder, now: &Time) -> Option<Value> {
    if !has_gate(pod) {
        return None;
    }
    condition(pod, KRUISE_POD_READY)?;
    let mut list = holders(pod);
    if !list.contains(holder) {
        return None;
    }
    list.retain(|m| m != holder);
    let status = if list.is_empty() { "True" } else { "False" };
    Some(conditions_patch(
        pod,
        vec![json!({
            "type": KRUISE_POD_READY,
            "status": status,
            "message": dump(list),
            "lastTransitionTime": now,
        })],
    ))
}

/// Holds (`hold`) or releases pod `name` for `holder` on the API server:
/// read, write the patch under the read's resourceVersion, and on a
/// conflict (kubelet and other holders write the status too) read again,
/// a few times, as OpenKruise retries on conflict. A pod that is gone
/// needs nothing.
pub async fn set_held(
    api: &Api<Pod>,
    name: &str,
    holder: &Holder,
    hold: bool,
) -> Result<(), kube::Error> {
    let mut tries = 0;
    loop {
        tries += 1;
        let Some(pod) = api.get_opt(name).await? else {
            return Ok(());
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let body = if hold {
            hold_patch(&pod, holder, &now)
        } else {
            release_patch(&pod, holder, &now)
        };
        let Some(body) = body else { return Ok(()) };
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&body))
            .await
        {
            Ok(_) => {
                tracing::debug!(pod = %name, user_agent = %holder.user_agent, key = %holder.key, hold, "KruisePodReady holder written");
                return Ok(());
            }
            Err(e) if tries < 5 && crate::api_call::status_code(&e) == Some(409) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
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
    fn holders_share_the_condition() {
        let me = Holder {
            user_agent: "Lifecycle".into(),
            key: "preDeleteHook".into(),
        };
        let other = Holder {
            user_agent: "ContainerRecreateRequest".into(),
            key: "ns/r".into(),
        };
        let now = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let pod = |status: &str, message: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "resourceVersion": "7"},
                "spec": {"containers": [], "readinessGates": [{"conditionType": KRUISE_POD_READY}]},
                "status": {"conditions": [
                    {"type": KRUISE_POD_READY, "status": status, "message": message},
                    {"type": "ContainersReady", "status": "True"},
                    {"type": "Ready", "status": "True"},
                ]}
            }))
            .unwrap()
        };
        let free = pod("True", "");
        let p = hold_patch(&free, &me, &now).unwrap();
        assert_eq!(p["metadata"]["resourceVersion"], "7");
        let c = &p["status"]["conditions"];
        assert_eq!(c[0]["status"], "False");
        assert_eq!(
            c[0]["message"],
            r#"[{"userAgent":"Lifecycle","key":"preDeleteHook"}]"#
        );
        assert_eq!(
            (&c[1]["type"], &c[1]["status"]),
            (&json!("Ready"), &json!("False"))
        );
        assert_eq!(release_patch(&free, &me, &now), None, "not on the list");

        let both = pod(
            "False",
            r#"[{"userAgent":"ContainerRecreateRequest","key":"ns/r"},{"userAgent":"Lifecycle","key":"preDeleteHook"}]"#,
        );
        assert!(holds(&both, &me) && holds(&both, &other));
        assert_eq!(hold_patch(&both, &me, &now), None, "already held");
        let p = release_patch(&both, &me, &now).unwrap();
        let c = &p["status"]["conditions"][0];
        assert_eq!(c["status"], "False", "the other holder keeps it");
        assert_eq!(
            c["message"],
            r#"[{"userAgent":"ContainerRecreateRequest","key":"ns/r"}]"#
        );
        let mine = pod(
            "False",
            r#"[{"userAgent":"Lifecycle","key":"preDeleteHook"}]"#,
        );
        assert_eq!(
            release_patch(&mine, &me, &now).unwrap()["status"]["conditions"][0]["status"],
            "True"
        );
        let ungated: Pod = serde_json::from_value(json!({"spec": {"containers": []}})).unwrap();
        assert_eq!(hold_patch(&ungated, &me, &now), None);
    }

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
