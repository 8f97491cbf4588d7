//! Carrying out an in-place start ([`super::inplace::Start`]) on the API
//! server, the same for every workload: the PodUnavailableBudget is asked
//! first (a pod it holds back is not touched, not even marked not-ready),
//! then the status write (`InPlaceUpdateReady` False), then the pod patch
//! under its resourceVersion — retried on conflicts as long as the pod is
//! still what the update was planned on — and on failure the not-ready
//! mark is undone so the pod does not stay out of service.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::{inplace, pods};
use crate::podunavailablebudget::budget::Operation;
use crate::podunavailablebudget::guard::{Guard, Verdict};

/// How an in-place start went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// Written; the pod updates now.
    Yes,
    /// Its budget holds it back (the reason); nothing was written.
    Paced(String),
    /// The pod is gone.
    Gone,
}

/// Why an in-place start failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("consulting the PodUnavailableBudget: {0}")]
    Budget(#[from] crate::podunavailablebudget::guard::GuardError),
}

/// Starts `start` on pod `pod`, asking `guard` first when given.
pub async fn in_place(
    pods_api: &Api<Pod>,
    guard: Option<&Guard>,
    pod: &str,
    start: &inplace::Start,
    now: &Time,
) -> Result<Started, ApplyError> {
    if let Some(guard) = guard {
        let Some(current) = pods_api.get_opt(pod).await? else {
            return Ok(Started::Gone);
        };
        if let Verdict::Refused(why) = guard.check(&current, Operation::Update, false).await? {
            return Ok(Started::Paced(why));
        }
    }
    pods_api
        .patch_status(
            pod,
            &PatchParams::default(),
            &Patch::Strategic(&start.status_patch),
        )
        .await?;
    if let Err(e) = patch(pods_api, pod, start).await {
        let ready = inplace::ready_patch(now);
        let _ = pods_api
            .patch_status(pod, &PatchParams::default(), &Patch::Strategic(&ready))
            .await;
        return Err(e.into());
    }
    Ok(Started::Yes)
}

/// The in-place pod patch, preconditioned on the pod's resourceVersion.
/// Kubelet and the agent write the pod too (status, runtime meta), so a
/// conflict is retried on a fresh read — as long as the pod is still what
/// the update was planned on: not on the target revision yet, and running
/// the container instances the record names.
async fn patch(pods_api: &Api<Pod>, pod: &str, start: &inplace::Start) -> Result<(), kube::Error> {
    let mut body = start.pod_patch.clone();
    let mut tries = 0;
    loop {
        tries += 1;
        match pods_api
            .patch(pod, &PatchParams::default(), &Patch::Strategic(&body))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if tries < 5 && crate::api_call::status_code(&e) == Some(409) => {
                let fresh = pods_api.get(pod).await?;
                let unchanged = !pods::on_revision(&fresh, &start.state.revision)
                    && inplace::same_instances(&fresh, &start.state);
                if !unchanged {
                    return Err(e);
                }
                body["metadata"]["resourceVersion"] = json!(fresh.metadata.resource_version);
            }
            Err(e) => return Err(e),
        }
    }
}
