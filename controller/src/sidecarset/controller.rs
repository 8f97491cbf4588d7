//! The SidecarSet controller: per SidecarSet, its ControllerRevision (in
//! the controller's namespace, labelled `kruise.io/sidecarset-name`), the
//! pods it manages, one round of in-place sidecar updates
//! ([`super::update`]), the `SidecarSetUpgradable` condition on pods that
//! cannot be updated in place, and the status counters. Woken by the
//! SidecarSet and by pods naming it in `kruise.io/sidecarset-injected-list`;
//! requeued every few seconds while a rollout is under way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::jiff::Timestamp;
use keelson_api::apps::v1alpha1::sidecarset as a1;
use keelson_api::apps::v1beta1::sidecarset::SidecarSet;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use super::{status, update};
use crate::workload::revision::{go_json, revision_hash};

/// Label on a SidecarSet's ControllerRevisions.
pub const LABEL_SIDECARSET_NAME: &str = "kruise.io/sidecarset-name";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// Where the ControllerRevisions live.
    pub namespace: String,
    pub recorder: Recorder,
}

/// The revision data: the parts of the spec a pod is injected from.
pub fn revision_data(set: &SidecarSet) -> Value {
    let spec = serde_json::to_value(&set.spec).unwrap_or_default();
    let mut out = serde_json::Map::new();
    for k in [
        "volumes",
        "containers",
        "initContainers",
        "imagePullSecrets",
        "patchPodMetadata",
    ] {
        if let Some(v) = spec.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    out.insert("$patch".into(), json!("replace"));
    json!({"spec": out})
}

/// `<set>-<hash>` of the revision data and collision count.
pub fn revision_name(set: &SidecarSet, data: &Value) -> String {
    let collisions = set.status.as_ref().and_then(|s| s.collision_count);
    format!(
        "{}-{}",
        set.name_any(),
        revision_hash(go_json(data).as_bytes(), collisions)
    )
}

/// Makes sure the current revision exists; its name.
async fn ensure_revision(set: &SidecarSet, ctx: &Context) -> Result<String, ReconcileError> {
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let data = revision_data(set);
    let name = revision_name(set, &data);
    if api.get_opt(&name).await?.is_some() {
        return Ok(name);
    }
    let existing = api
        .list(&ListParams::default().labels(&format!("{LABEL_SIDECARSET_NAME}={}", set.name_any())))
        .await?;
    let number = existing.items.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
    let mut labels = BTreeMap::from([(LABEL_SIDECARSET_NAME.to_string(), set.name_any())]);
    if !set.spec.custom_version.is_empty() {
        labels.insert(
            a1::LABEL_SIDECARSET_CUSTOM_VERSION.into(),
            set.spec.custom_version.clone(),
        );
    }
    let rev = ControllerRevision {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ctx.namespace.clone()),
            labels: Some(labels),
            annotations: set.metadata.annotations.clone(),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision: number,
    };
    match api.create(&PostParams::default(), &rev).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    // Keep `revisionHistoryLimit` revisions besides the current one.
    let limit = set.spec.revision_history_limit.unwrap_or(10).max(1) as usize;
    let mut old: Vec<ControllerRevision> = existing
        .items
        .into_iter()
        .filter(|r| r.metadata.name.as_deref() != Some(name.as_str()))
        .collect();
    old.sort_by_key(|r| r.revision);
    if old.len() > limit {
        for r in &old[..old.len() - limit] {
            let _ = api.delete(&r.name_any(), &Default::default()).await;
        }
    }
    Ok(name)
}

async fn reconcile(set: Arc<SidecarSet>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let revision = ensure_revision(&set, &ctx).await?;
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let listed = match set
        .spec
        .selector
        .as_ref()
        .filter(|s| !super::matching::is_empty(s))
    {
        Some(sel) => {
            pods.list(&ListParams::default().labels(&crate::selector::to_query(sel)))
                .await?
                .items
        }
        None => vec![],
    };
    let ns_labels: BTreeMap<String, BTreeMap<String, String>> =
        if set.spec.namespace_selector.is_some() {
            let nss: Api<Namespace> = Api::all(ctx.client.clone());
            nss.list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .map(|n| (n.name_any(), n.metadata.labels.unwrap_or_default()))
                .collect()
        } else {
            BTreeMap::new()
        };
    let managed: Vec<&Pod> = listed
        .iter()
        .filter(|p| {
            let ns = p.metadata.namespace.as_deref().unwrap_or("");
            status::manages(&set, p, ns_labels.get(ns))
        })
        .collect();
    let now = super::inject::timestamp_now();
    let round = update::plan(&set, &managed, &revision, &now);
    let name = set.name_any();
    for (ns, pod, patch) in &round.update {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        match api
            .patch(pod, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(sidecarset = %name, namespace = %ns, pod = %pod, "sidecars updated in place")
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Hot upgrade: reset the old container of a finished hand-over.
    let updating: Vec<(&String, &String)> = round.update.iter().map(|(n, p, _)| (n, p)).collect();
    for pod in &managed {
        let (ns, pod_name) = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        if updating.contains(&(&ns, &pod_name)) || !super::hotupgrade::needs_flip(&set, pod) {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = super::hotupgrade::flip_patch(&set, pod, &now);
        match api
            .patch(
                &pod_name,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(sidecarset = %name, namespace = %ns, pod = %pod_name, "reset sidecar container image empty successfully")
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                tracing::warn!(sidecarset = %name, pod = %pod_name, error = %e, "reset sidecar container image empty failed")
            }
        }
    }
    if !round.not_upgradable.is_empty() {
        crate::events::publish(
            &ctx.recorder,
            set.object_ref(&()),
            false,
            "NotUpgradablePods",
            format!(
                "SidecarSet in-place update detected {} not upgradable pod(s) in this round, will skip them.",
                round.not_upgradable.len()
            ),
        );
    }
    for (ns, pod) in &round.not_upgradable {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        let msg =
            serde_json::to_string(&BTreeMap::from([(name.clone(), false)])).unwrap_or_default();
        let body = json!({"status": {"conditions": [{
            "type": a1::POD_CONDITION_SIDECARSET_UPGRADABLE, "status": "False",
            "reason": "UpdateImmutableField", "message": msg,
            "lastTransitionTime": Time(Timestamp::now()),
        }]}});
        let already = listed.iter().any(|p| {
            p.metadata.name.as_deref() == Some(pod)
                && p.status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .any(|c| {
                        c.type_ == a1::POD_CONDITION_SIDECARSET_UPGRADABLE && c.status == "False"
                    })
        });
        if !already
            && let Err(e) = api
                .patch_status(pod, &PatchParams::default(), &Patch::Strategic(body))
                .await
        {
            tracing::warn!(sidecarset = %name, pod = %pod, error = %e, "marking a pod not upgradable failed");
        }
    }
    let mut st = status::counters(&set, &managed);
    st.observed_generation = set.metadata.generation.unwrap_or(0);
    st.latest_revision = revision;
    st.collision_count = set.status.as_ref().and_then(|s| s.collision_count);
    if set.status.as_ref() != Some(&st) {
        let api: Api<SidecarSet> = Api::all(ctx.client.clone());
        // Every counter explicitly: a merge patch leaves out what the
        // serialised status omits (zeros), which would keep stale values.
        let body = json!({"status": {
            "observedGeneration": st.observed_generation,
            "matchedPods": st.matched_pods,
            "updatedPods": st.updated_pods,
            "readyPods": st.ready_pods,
            "updatedReadyPods": st.updated_ready_pods,
            "latestRevision": st.latest_revision,
            "collisionCount": st.collision_count,
        }});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(body))
            .await?;
    }
    let busy =
        !round.update.is_empty() || round.waiting > 0 || st.updated_ready_pods < st.matched_pods;
    Ok(if busy {
        Action::requeue(Duration::from_secs(3))
    } else {
        Action::requeue(Duration::from_secs(300))
    })
}

fn on_error(set: Arc<SidecarSet>, error: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!(sidecarset = %set.name_any(), error = %error, "SidecarSet reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// The SidecarSets a pod names in its injected list.
fn sets_of(pod: Pod) -> Vec<ObjectRef<SidecarSet>> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(a1::ANNOTATION_SIDECARSET_INJECTED_LIST))
        .map(|l| {
            l.split(',')
                .filter(|n| !n.is_empty())
                .map(ObjectRef::new)
                .collect()
        })
        .unwrap_or_default()
}

/// Runs until the task is dropped.
pub async fn run(client: Client, namespace: String, identity: String) {
    crate::metrics::register_controller("sidecarset");
    let sets: Api<SidecarSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "sidecarset-controller".into(),
            instance: Some(identity),
        },
    );
    let ctx = Arc::new(Context {
        client,
        namespace,
        recorder,
    });
    Controller::new(sets, watcher::Config::default())
        .watches(pods, watcher::Config::default(), sets_of)
        .run(reconcile, on_error, ctx)
        .for_each(|r| async move {
            crate::metrics::reconciled("sidecarset", r.is_ok());
            if let Err(e) = r {
                tracing::debug!(error = %e, "SidecarSet controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(image: &str) -> SidecarSet {
        serde_json::from_value(
            json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "SidecarSet",
            "metadata": {"name": "s"},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                     "containers": [{"name": "c", "image": image}],
                     "updateStrategy": {"type": "NotUpdate"}}}),
        )
        .unwrap()
    }

    #[test]
    fn revisions_hold_the_injected_parts_and_name_by_their_hash() {
        let a = set("i:1");
        let data = revision_data(&a);
        assert_eq!(data["spec"]["$patch"], "replace");
        assert_eq!(data["spec"]["containers"][0]["image"], "i:1");
        assert!(data["spec"].get("updateStrategy").is_none());
        let name = revision_name(&a, &data);
        assert!(name.starts_with("s-"), "{name}");
        assert_eq!(name, revision_name(&a, &revision_data(&a)));
        let b = set("i:2");
        assert_ne!(name, revision_name(&b, &revision_data(&b)));
        // A strategy change is not a new revision.
        let mut c = set("i:1");
        c.spec.update_strategy.type_ = "RollingUpdate".into();
        assert_eq!(name, revision_name(&c, &revision_data(&c)));
    }

    #[test]
    fn pods_wake_the_sidecarsets_they_list() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"annotations": {
            a1::ANNOTATION_SIDECARSET_INJECTED_LIST: "a,b"}}}))
        .unwrap();
        let names: Vec<String> = sets_of(pod).into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(sets_of(Pod::default()).is_empty());
    }
}
