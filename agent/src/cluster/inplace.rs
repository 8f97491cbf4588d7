//! The node's half of in-place update (cluster mode), fed by the watch on
//! this node's pods:
//!
//! - **env from metadata**: while a pod is being updated in place
//!   (`InPlaceUpdateReady` False with reason `StartInPlaceUpdate`, as the
//!   workload controllers set it), the containers whose env reads a label
//!   or annotation that now resolves to another value than the container
//!   was created with are restarted (through the restart engine). Kubelet
//!   then creates them again with the current values: it resolves the
//!   downward API from its own copy of the pod, which has the new metadata
//!   long before the stopped container's exit reaches its next sync (one
//!   PLEG relist at least).
//! - **what runs**: for pods with the `InPlaceUpdateReady` readiness gate,
//!   the annotation `apps.kruise.io/runtime-containers-meta` lists each
//!   container's current instance — id, attempt, the image as the spec
//!   named it at creation and the hash of its env-from-metadata values —
//!   so the controller knows exactly when an update has taken effect (a
//!   retag that keeps the image ID included). Only instances that have
//!   started are listed, and while an update is in flight the annotation
//!   is written as soon as the runtime reports the new instance started
//!   ([`InPlaceSync::on_book_change`]), not when kubelet's next status
//!   carries it (a PLEG relist later): the controller can mark the pod
//!   `InPlaceUpdateReady` while kubelet is still catching up, and kubelet
//!   computes `Ready` in the same sync that reports the new container.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use keelson_api::apps::shared::{
    IN_PLACE_UPDATE_READY, InPlaceUpdateState, RUNTIME_CONTAINER_META_KEY, RuntimeContainerHashes,
    RuntimeContainerMeta, RuntimeContainerMetaSet, get_in_place_update_state,
};
use keelson_api::envmeta;
use keelson_api::inplace::{Progress, progress, record_is_current};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

use super::node::NodeClient;
use crate::envdeps::MetadataUpdate;
use crate::pods::{PodView, State};

/// Reason of `InPlaceUpdateReady=False` while an update is in flight.
const REASON_START: &str = "StartInPlaceUpdate";

fn condition<'a>(pod: &'a Pod, t: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
}

/// The pod is in the middle of an in-place update.
pub fn updating(pod: &Pod) -> bool {
    condition(pod, IN_PLACE_UPDATE_READY)
        .is_some_and(|c| c.status == "False" && c.reason.as_deref() == Some(REASON_START))
}

/// The pod carries the `InPlaceUpdateReady` readiness gate.
pub fn gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|g| g.iter().any(|g| g.condition_type == IN_PLACE_UPDATE_READY))
}

/// The pod's whole metadata as an update (every key set).
pub fn metadata_update(pod: &Pod) -> MetadataUpdate {
    let all = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect()
    };
    MetadataUpdate {
        annotations: all(&pod.metadata.annotations),
        labels: all(&pod.metadata.labels),
    }
}

/// A fingerprint of the metadata values the pod's env reads (what a
/// restart would make the containers run with).
pub fn env_target(pod: &Pod) -> u64 {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let values: BTreeMap<String, String> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| {
            envmeta::references(c).into_iter().map(move |(env, r)| {
                (
                    format!("{}/{env}", c.name),
                    r.resolve(labels, annotations).to_string(),
                )
            })
        })
        .collect();
    envmeta::values_hash(&values)
}

/// The instance has been started by the runtime (running or exited since).
fn started(state: State) -> bool {
    matches!(state, State::Running | State::Exited(_))
}

/// The runtime meta of `pod` from what the agent saw created and started
/// (`views`: the pod's sandboxes in the book): per container the newest
/// instance that has started; `None` when no container has.
pub fn runtime_meta(pod: &Pod, views: &[PodView]) -> Option<RuntimeContainerMetaSet> {
    let runtime = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| {
            cs.iter().find_map(|c| {
                c.container_id
                    .as_deref()?
                    .split_once("://")
                    .map(|(r, _)| r.to_string())
            })
        })
        .unwrap_or_else(|| "containerd".into());
    let mut containers = vec![];
    for spec in pod.spec.iter().flat_map(|s| &s.containers) {
        let latest = views
            .iter()
            .flat_map(|v| v.containers.iter())
            .filter(|(c, state)| c.name == spec.name && started(*state))
            .max_by_key(|(c, _)| c.seq);
        let Some((c, _)) = latest else { continue };
        let values: BTreeMap<String, String> = envmeta::references(spec)
            .keys()
            .filter_map(|env| c.env.get(env).map(|v| (env.clone(), v.clone())))
            .collect();
        containers.push(RuntimeContainerMeta {
            name: c.name.clone(),
            container_id: format!("{runtime}://{}", c.id),
            restart_count: i32::try_from(c.attempt).unwrap_or(i32::MAX),
            hashes: RuntimeContainerHashes {
                plain_hash: 0,
                extracted_env_from_metadata_hash: envmeta::values_hash(&values),
            },
            image: (!c.image.is_empty()).then(|| c.image.clone()),
        });
    }
    (!containers.is_empty()).then_some(RuntimeContainerMetaSet { containers })
}

/// Whether the in-place update in flight on `pod` has taken effect once
/// the runtime meta `report` is known: the pod is being updated, its
/// record is the one the condition names, and by the controllers' rule ([`keelson_api::inplace::progress`]) with the
/// report in place of the pod's annotation.
pub fn taken_effect(pod: &Pod, report: &str) -> bool {
    if !updating(pod) {
        return false;
    }
    let Some(state) = get_in_place_update_state(&pod.metadata)
        .and_then(|s| serde_json::from_str::<InPlaceUpdateState>(s).ok())
    else {
        return false;
    };
    // Between the controller's two writes the pod shows this update's
    // condition next to the previous update's (finished) record.
    if !record_is_current(pod, &state) {
        return false;
    }
    let mut seen = pod.clone();
    seen.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(RUNTIME_CONTAINER_META_KEY.to_string(), report.to_string());
    progress(&seen, &state) == Progress::Done
}

/// The status patch setting `InPlaceUpdateReady` True on `pod`, valid
/// only on the pod's current resourceVersion (the update it judged).
fn ready_patch(pod: &Pod) -> serde_json::Value {
    let now = k8s_openapi::jiff::Timestamp::now();
    let now = k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
    serde_json::json!({
        "metadata": {"resourceVersion": pod.metadata.resource_version},
        "status": {"conditions": [{
            "type": IN_PLACE_UPDATE_READY, "status": "True", "lastTransitionTime": now.to_string(),
            "reason": null, "message": null,
        }]},
    })
}

/// Acts on pod events and on the runtime's container events; remembers
/// per pod the env target it last restarted for, so repeated events
/// restart nothing twice, the pods being updated in place (to report a
/// started instance at once) and the runtime meta it last wrote.
pub struct InPlaceSync {
    client: Client,
    node: NodeClient,
    submitted: Mutex<HashMap<String, u64>>,
    in_flight: Mutex<HashMap<String, Pod>>,
    written: Mutex<HashMap<String, String>>,
}

impl InPlaceSync {
    pub fn new(client: Client, node: NodeClient) -> Self {
        Self {
            client,
            node,
            submitted: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
        }
    }

    /// The pod's sandboxes as the host agent's book has them (`None`
    /// while the agent does not answer: the next event tries again).
    async fn views(&self, uid: &str) -> Option<Vec<PodView>> {
        match self.node.views_of(uid).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!(pod_uid = %uid, error = %e, "reading the pod book failed");
                None
            }
        }
    }

    /// Takes in one pod event.
    pub async fn on_pod(&self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        if updating(pod) {
            let target = env_target(pod);
            let fresh = {
                let mut s = self.submitted.lock().unwrap_or_else(|e| e.into_inner());
                s.insert(uid.clone(), target) != Some(target)
            };
            if fresh {
                match self
                    .node
                    .update_metadata(&ns, &name, &metadata_update(pod))
                    .await
                {
                    Ok((containers, Some(id))) => {
                        tracing::info!(pod = %name, namespace = %ns, containers = ?containers, restart = %id, "in-place update: restarting containers for new env from metadata");
                    }
                    Ok((_, None)) => {}
                    Err(e) => {
                        tracing::debug!(pod = %name, namespace = %ns, error = %e, "in-place env restart not possible yet");
                        self.submitted
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&uid);
                    }
                }
            }
        }
        if !gated(pod) {
            return;
        }
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if updating(pod) {
                in_flight.insert(uid.clone(), pod.clone());
            } else {
                in_flight.remove(&uid);
            }
        }
        self.report(pod, &uid, true).await;
    }

    /// The runtime changed something on the node: reports newly started
    /// instances of the pods being updated in place without waiting for
    /// kubelet's status.
    pub async fn on_book_change(&self) {
        let pods: Vec<Pod> = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for pod in pods {
            if let Some(uid) = pod.metadata.uid.clone() {
                self.report(&pod, &uid, false).await;
            }
        }
    }

    /// Writes the pod's runtime meta if it differs from what the pod says
    /// (`fresh`: `pod` is what the API server just sent) or, for a cached
    /// copy, from this agent's last write. When the report shows the
    /// in-place update in flight has taken effect (by the rule the
    /// controllers use), marks the pod `InPlaceUpdateReady` first, in a
    /// status-only write: kubelet then computes `Ready` in the very sync
    /// that reports the new container, where a metadata write first would
    /// have it sync on that older copy and see the condition one PLEG
    /// relist later.
    async fn report(&self, pod: &Pod, uid: &str, fresh: bool) {
        let Some(views) = self.views(uid).await else {
            return;
        };
        let Some(meta) = runtime_meta(pod, &views) else {
            return;
        };
        let Ok(text) = serde_json::to_string(&meta) else {
            return;
        };
        let current = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RUNTIME_CONTAINER_META_KEY));
        let last = self
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned();
        let known = current == Some(&text) || (!fresh && last.as_ref() == Some(&text));
        let done = taken_effect(pod, &text);
        if known && !(done && fresh) {
            return;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if done {
            let patch = ready_patch(pod);
            match pods
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(pod = %name, namespace = %ns, "in-place update took effect on the node: InPlaceUpdateReady");
                    self.in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(uid);
                }
                // The pod moved on (a conflict) or is gone: its next event
                // is judged afresh, and the controller judges it too.
                Err(e) => {
                    tracing::debug!(pod = %name, namespace = %ns, error = %e, "marking InPlaceUpdateReady from the node skipped");
                }
            }
        }
        if known {
            return;
        }
        let patch =
            serde_json::json!({"metadata": {"annotations": {RUNTIME_CONTAINER_META_KEY: text}}});
        match pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::debug!(pod = %name, namespace = %ns, "runtime container meta written");
                self.written
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(uid.to_string(), text);
            }
            Err(e) => {
                tracing::warn!(pod = %name, namespace = %ns, error = %e, "writing runtime container meta failed");
            }
        }
    }

    /// Forgets a pod that left the node.
    pub fn remove(&self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            self.submitted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(uid);
            self.in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(uid);
            self.written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(uid);
        }
    }
}

#[cfg(test)]
mod tests;
