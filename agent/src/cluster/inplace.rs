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
//!   retag that keeps the image ID included).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use keelson_api::apps::shared::{
    IN_PLACE_UPDATE_READY, RUNTIME_CONTAINER_META_KEY, RuntimeContainerHashes,
    RuntimeContainerMeta, RuntimeContainerMetaSet,
};
use keelson_api::envmeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

use crate::pods::{PodBook, PodView};
use crate::restart::engine::RestartEngine;
use crate::restart::envdeps::MetadataUpdate;

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

/// The runtime meta of `pod` from what the agent saw created (`views`:
/// the pod's sandboxes in the book); `None` when it knows no container.
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
            .filter(|(c, _)| c.name == spec.name)
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

/// Acts on pod events; remembers per pod the env target it last restarted
/// for, so repeated events restart nothing twice.
pub struct InPlaceSync {
    client: Client,
    restarts: Arc<RestartEngine>,
    book: Arc<PodBook>,
    submitted: Mutex<HashMap<String, u64>>,
}

impl InPlaceSync {
    pub fn new(client: Client, restarts: Arc<RestartEngine>, book: Arc<PodBook>) -> Self {
        Self {
            client,
            restarts,
            book,
            submitted: Mutex::new(HashMap::new()),
        }
    }

    fn views(&self, uid: &str) -> Vec<PodView> {
        self.book
            .sandbox_ids()
            .iter()
            .filter_map(|id| self.book.pod(id))
            .filter(|v| v.sandbox.uid == uid)
            .collect()
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
                    .restarts
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
        let Some(meta) = runtime_meta(pod, &self.views(&uid)) else {
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
        if current == Some(&text) {
            return;
        }
        let patch =
            serde_json::json!({"metadata": {"annotations": {RUNTIME_CONTAINER_META_KEY: text}}});
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(pod = %name, namespace = %ns, error = %e, "writing runtime container meta failed");
        }
    }

    /// Forgets a pod that left the node.
    pub fn remove(&self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            self.submitted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(uid);
        }
    }
}

#[cfg(test)]
mod tests;
