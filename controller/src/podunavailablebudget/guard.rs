//! The admission-time check: may this pod be deleted, evicted or updated
//! now? A pod that is guarded, available and not yet counted takes one of
//! its budget's allowed disruptions, and that is written to the budget's
//! status under its resourceVersion before the answer is given, so two
//! requests racing for the last disruption cannot both pass, even on two
//! webhook replicas: the loser's write conflicts, it rereads the budget
//! and finds none left. Within one replica the requests for one budget are
//! serialised, and each starts from the newest copy it knows (its own last
//! write or the watch's, whichever is newer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keelson_api::policy::v1alpha1::podunavailablebudget::{
    ANNOTATION_POD_NO_PROTECTION, PodUnavailableBudget,
};
use kube::api::{Api, PostParams};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};

use super::availability;
use super::budget::{self, Operation};

/// The pod annotation naming its budget.
pub const ANNOTATION_RELATED_PUB: &str = "kruise.io/related-pub";
/// Conflicting status writes tried before giving up.
const ATTEMPTS: usize = 4;
/// Pause after a conflict.
const CONFLICT_PAUSE: Duration = Duration::from_millis(500);

pub use crate::follow::Watch;

/// A store of every PodUnavailableBudget, kept by a watch that runs while
/// the returned [`Watch`] lives.
pub fn watch_budgets(client: &Client) -> (Store<PodUnavailableBudget>, Watch) {
    crate::follow::follow(Api::all(client.clone()), "PodUnavailableBudgets")
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused with OpenKruise's text.
    Refused(String),
}

/// Why the budget could not be consulted.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("reading PodUnavailableBudget {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What the check needs, shared by every request of a webhook replica.
#[derive(Clone)]
pub struct Guard {
    client: Client,
    budgets: Store<PodUnavailableBudget>,
    recorder: Recorder,
    /// Whether pods resize in place (`InPlacePodVerticalScaling`).
    vertical_scaling: bool,
    /// The last status this replica wrote, per budget UID.
    written: Arc<Mutex<HashMap<String, PodUnavailableBudget>>>,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

fn rv(b: &PodUnavailableBudget) -> u64 {
    b.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Guard {
    pub fn new(
        client: Client,
        budgets: Store<PodUnavailableBudget>,
        recorder: Recorder,
        vertical_scaling: bool,
    ) -> Self {
        Self {
            client,
            budgets,
            recorder,
            vertical_scaling,
            written: Default::default(),
            locks: Default::default(),
        }
    }

    /// For a workload controller: a guard on its own watch of the
    /// budgets when `enabled` (`PodUnavailableBudgetUpdateGate`), which
    /// runs while the returned [`Watch`] lives.
    pub fn for_workloads(
        client: &Client,
        recorder: &Recorder,
        enabled: bool,
    ) -> (Option<Self>, Option<Watch>) {
        if !enabled {
            return (None, None);
        }
        let (store, watch) = watch_budgets(client);
        (
            Some(Self::new(client.clone(), store, recorder.clone(), false)),
            Some(watch),
        )
    }

    /// The budget `pod` names, from the watch.
    pub fn budget_of(&self, pod: &Pod) -> Option<Arc<PodUnavailableBudget>> {
        let name = pod.annotations().get(ANNOTATION_RELATED_PUB)?;
        let ns = pod.namespace().unwrap_or_default();
        self.budgets
            .get(&ObjectRef::new(name).within(&ns))
            .filter(|b| b.metadata.deletion_timestamp.is_none())
    }

    fn lock(&self, uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(uid.to_string()).or_default().clone()
    }

    fn newest(&self, cached: &PodUnavailableBudget) -> PodUnavailableBudget {
        let uid = cached.uid().unwrap_or_default();
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match written.get(&uid) {
            Some(w) if rv(w) > rv(cached) => w.clone(),
            _ => cached.clone(),
        }
    }

    /// May `pod` undergo `op`? Unguarded, unavailable and already counted
    /// pods may; otherwise one disruption is taken (and written, unless
    /// `dry_run`) or the request is refused.
    pub async fn check(
        &self,
        pod: &Pod,
        op: Operation,
        dry_run: bool,
    ) -> Result<Verdict, GuardError> {
        if pod
            .annotations()
            .get(ANNOTATION_POD_NO_PROTECTION)
            .is_some_and(|v| v == "true")
        {
            return Ok(Verdict::Allowed);
        }
        if !availability::is_available(pod) {
            return Ok(Verdict::Allowed);
        }
        let Some(cached) = self.budget_of(pod) else {
            return Ok(Verdict::Allowed);
        };
        let status = cached.status.clone().unwrap_or_default();
        if status.desired_available == 0
            || !budget::protected(&cached, self.vertical_scaling).contains(op.as_str())
        {
            return Ok(Verdict::Allowed);
        }
        let pod_name = budget::pod_name(pod).to_string();
        if budget::recorded(&status, &pod_name) {
            return Ok(Verdict::Allowed);
        }
        let uid = cached.uid().unwrap_or_default();
        let name = cached.name_any();
        let ns = cached.namespace().unwrap_or_default();
        let api: Api<PodUnavailableBudget> = Api::namespaced(self.client.clone(), &ns);
        let lock = self.lock(&uid);
        let _held = lock.lock().await;
        let mut current = self.newest(&cached);
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(CONFLICT_PAUSE).await;
                match api.get_opt(&name).await {
                    Ok(Some(b)) => current = b,
                    Ok(None) => return Ok(Verdict::Allowed),
                    Err(source) => {
                        return Err(GuardError::Read {
                            name: name.clone(),
                            source,
                        });
                    }
                }
            }
            let mut status = current.status.clone().unwrap_or_default();
            if budget::recorded(&status, &pod_name) {
                return Ok(Verdict::Allowed);
            }
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            if let Err(refusal) = budget::take(&name, &mut status, &pod_name, op, now) {
                self.refused_event(pod);
                crate::metrics::pub_refused(&ns, &name);
                return Ok(Verdict::Refused(refusal.to_string()));
            }
            if dry_run {
                return Ok(Verdict::Allowed);
            }
            let mut next = current.clone();
            next.status = Some(status);
            match api
                .replace_status(&name, &PostParams::default(), &next)
                .await
            {
                Ok(written) => {
                    tracing::debug!(namespace = %ns, pub_ = %name, pod = %pod_name, operation = op.as_str(), "disruption taken");
                    self.written
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(uid, written);
                    return Ok(Verdict::Allowed);
                }
                Err(e) if crate::api_call::status_code(&e) == Some(404) => {
                    return Ok(Verdict::Allowed);
                }
                Err(e) if crate::api_call::status_code(&e) == Some(409) => continue,
                Err(source) => {
                    return Err(GuardError::Read {
                        name: name.clone(),
                        source,
                    });
                }
            }
        }
        Ok(Verdict::Refused(format!(
            "Timeout: couldn't update PodUnavailableBudget {name} due to conflicts"
        )))
    }

    fn refused_event(&self, pod: &Pod) {
        crate::events::publish(
            &self.recorder,
            pod.object_ref(&()),
            true,
            "PubPreventPodDeletion",
            "openkruise pub prevents pod deletion".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{body_json, mock_client, reply};
    use kube::runtime::events::Reporter;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn budget(allowed: i32, rv: &str) -> serde_json::Value {
        json!({"apiVersion": "policy.kruise.io/v1alpha1", "kind": "PodUnavailableBudget",
            "metadata": {"name": "web-pub", "namespace": "shop", "uid": "u1", "resourceVersion": rv},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "maxUnavailable": 1},
            "status": {"observedGeneration": 1, "unavailableAllowed": allowed,
                "currentAvailable": 4 + allowed, "desiredAvailable": 4, "totalReplicas": 5}})
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-a", "namespace": "shop",
                "annotations": {ANNOTATION_RELATED_PUB: "web-pub"}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    fn guard(client: Client) -> Guard {
        let (store, mut writer) = kube::runtime::reflector::store::<PodUnavailableBudget>();
        writer.apply_watcher_event(&Event::Apply(
            serde_json::from_value(budget(1, "10")).unwrap(),
        ));
        std::mem::forget(writer);
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        );
        Guard::new(client, store, recorder, false)
    }

    #[tokio::test]
    async fn a_disruption_is_written_under_the_resource_version_before_it_is_allowed() {
        let (client, mut api) = mock_client();
        let g = guard(client);
        let server = tokio::spawn(async move {
            let (req, send) = api.next_request().await.unwrap();
            assert_eq!(req.method(), http::Method::PUT);
            assert!(
                req.uri()
                    .path()
                    .ends_with("/namespaces/shop/podunavailablebudgets/web-pub/status")
            );
            let body = body_json(req).await;
            assert_eq!(body["metadata"]["resourceVersion"], "10");
            assert_eq!(body["status"]["unavailableAllowed"], 0);
            assert!(
                body["status"]["disruptedPods"]["web-a"].is_string(),
                "{body}"
            );
            let mut written = budget(0, "11");
            written["status"] = body["status"].clone();
            send.send_response(reply(200, written));
        });
        let v = g.check(&pod(), Operation::Delete, false).await.unwrap();
        assert_eq!(v, Verdict::Allowed);
        server.await.unwrap();
        // The next request starts from what this replica wrote (newer than
        // the watch's copy): nothing left, refused without an API call.
        let mut other = pod();
        other.metadata.name = Some("web-b".into());
        let v = g.check(&other, Operation::Evict, false).await.unwrap();
        assert_eq!(
            v,
            Verdict::Refused(
                "podunavailablebudget.policy.kruise.io \"web-pub\" is forbidden: pub unavailable allowed is negative".into()
            )
        );
    }

    #[tokio::test]
    async fn a_conflict_rereads_the_budget_and_the_race_is_lost() {
        let (client, mut api) = mock_client();
        let g = guard(client);
        let server = tokio::spawn(async move {
            // Another replica took the last disruption meanwhile.
            let (req, send) = api.next_request().await.unwrap();
            assert_eq!(req.method(), http::Method::PUT);
            send.send_response(reply(
                409,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Conflict", "code": 409, "message": "the object has been modified"}),
            ));
            let (req, send) = api.next_request().await.unwrap();
            assert_eq!(req.method(), http::Method::GET);
            send.send_response(reply(200, budget(0, "12")));
        });
        let v = g.check(&pod(), Operation::Delete, false).await.unwrap();
        assert!(
            matches!(v, Verdict::Refused(ref m) if m.ends_with("pub unavailable allowed is negative")),
            "{v:?}"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn unguarded_unavailable_opted_out_and_dry_run_requests_write_nothing() {
        // No request reaches the API server in any of these.
        let (client, _api) = mock_client();
        let g = guard(client);
        let v = g.check(&pod(), Operation::Delete, true).await.unwrap();
        assert_eq!(v, Verdict::Allowed, "dry run");
        let mut p = pod();
        p.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_POD_NO_PROTECTION.into(), "true".into());
        assert_eq!(
            g.check(&p, Operation::Delete, false).await.unwrap(),
            Verdict::Allowed
        );
        let mut p = pod();
        p.status.as_mut().unwrap().phase = Some("Pending".into());
        assert_eq!(
            g.check(&p, Operation::Delete, false).await.unwrap(),
            Verdict::Allowed
        );
        let mut p = pod();
        p.metadata.annotations = None;
        assert_eq!(
            g.check(&p, Operation::Delete, false).await.unwrap(),
            Verdict::Allowed
        );
    }
}
