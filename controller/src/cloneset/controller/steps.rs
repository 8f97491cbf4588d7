//! Carrying out a CloneSet plan on the API server, step by step: pods
//! created (slow start) and deleted, metadata and status patches, in-place
//! updates (conflicts retried while the pod is unchanged) and the image
//! pre-download jobs.

use super::*;
use crate::workload::apply::{ApplyError, Started};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;

/// Instance ids in use, and ids whose claims have no pod (reused first).
pub(super) struct InstanceIds {
    pub taken: BTreeSet<String>,
    pub reusable: Vec<String>,
}

/// The CloneSet's claims for instance `id`, created where missing, owned
/// by the CloneSet like its pods.
async fn ensure_claims(ctx: &Context, cs: &CloneSet, id: &str) -> Result<(), ReconcileError> {
    if cs.spec.volume_claim_templates.is_empty() {
        return Ok(());
    }
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &cs.namespace().unwrap_or_default());
    for mut c in crate::cloneset::newpod::claims(cs, id) {
        c.metadata.owner_references = Some(vec![owner_of(cs)]);
        match api.create(&PostParams::default(), &c).await {
            Ok(_) => {}
            Err(e) if crate::api_call::status_code(&e) == Some(409) => {}
            Err(e) => {
                publish(
                    ctx,
                    cs,
                    true,
                    "FailedCreate",
                    format!("failed to create pvc {}: {e}", c.name_any()),
                )
                .await;
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Deletes the CloneSet's claims of instance `id`.
async fn delete_claims(ctx: &Context, cs: &CloneSet, id: &str) -> Result<(), ReconcileError> {
    if cs.spec.volume_claim_templates.is_empty() {
        return Ok(());
    }
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &cs.namespace().unwrap_or_default());
    for c in crate::cloneset::newpod::claims(cs, id) {
        match api.delete(&c.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if crate::api_call::status_code(&e) == Some(404) => {}
            Err(e) => {
                publish(
                    ctx,
                    cs,
                    true,
                    "FailedDelete",
                    format!("failed to delete pvc {}: {e}", c.name_any()),
                )
                .await;
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Carries out the claim clean-up (`disablePVCReuse`).
pub(super) async fn apply_claims(
    ctx: &Context,
    cs: &CloneSet,
    api: &Api<PersistentVolumeClaim>,
    steps: Vec<crate::cloneset::claims::ClaimStep>,
) -> Result<(), ReconcileError> {
    use crate::cloneset::claims::ClaimStep;
    let (cs_name, ns) = (cs.name_any(), cs.namespace().unwrap_or_default());
    for step in steps {
        match step {
            ClaimStep::Reown {
                claim,
                resource_version,
                owners,
            } => {
                let patch = json!({"metadata": {"resourceVersion": resource_version, "ownerReferences": owners}});
                match api
                    .patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(cloneset = %cs_name, namespace = %ns, pvc = %claim, "claim handed to its pod (disablePVCReuse)")
                    }
                    Err(e) if crate::api_call::status_code(&e) == Some(404) => {}
                    Err(e) => {
                        publish(
                            ctx,
                            cs,
                            true,
                            "FailedUpdate",
                            format!("failed to update PVC {claim}: {e}"),
                        )
                        .await;
                        return Err(e.into());
                    }
                }
            }
            ClaimStep::Delete { claim } => {
                match api.delete(&claim, &DeleteParams::default()).await {
                    Ok(_) => {
                        tracing::info!(cloneset = %cs_name, namespace = %ns, pvc = %claim, "claim without a pod deleted (disablePVCReuse)")
                    }
                    Err(e) if crate::api_call::status_code(&e) == Some(404) => {}
                    Err(e) => {
                        publish(
                            ctx,
                            cs,
                            true,
                            "FailedDelete",
                            format!("failed to clean up PVC {claim}: {e}"),
                        )
                        .await;
                        return Err(e.into());
                    }
                }
            }
        }
    }
    Ok(())
}

pub(super) async fn apply_step(
    ctx: &Context,
    cs: &CloneSet,
    pods_api: &Api<Pod>,
    templates: &BTreeMap<String, Value>,
    ids: &mut InstanceIds,
    step: Step,
    paced: &std::sync::atomic::AtomicBool,
) -> Result<(), ReconcileError> {
    let cs_name = cs.name_any();
    let ns = cs.namespace().unwrap_or_default();
    let now = Timestamp::now();
    match step {
        Step::MarkReady { pod } => {
            let patch =
                inplace::ready_patch(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
            ignore_gone(
                pods_api
                    .patch_status(&pod, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await,
            )?;
        }
        Step::Patch { pod, patch } => {
            ignore_gone(
                pods_api
                    .patch(&pod, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await,
            )?;
        }
        Step::Delete { pod } => match pods_api.delete(&pod, &DeleteParams::default()).await {
            Ok(_) => {
                publish(
                    ctx,
                    cs,
                    false,
                    "SuccessfulDelete",
                    format!("succeed to delete pod {pod}"),
                )
                .await;
                // Its claims go with it, as upstream.
                if let Some(id) = pod.strip_prefix(&format!("{cs_name}-")) {
                    delete_claims(ctx, cs, id).await?;
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                publish(
                    ctx,
                    cs,
                    true,
                    "FailedDelete",
                    format!("failed to delete pod {pod}: {e}"),
                )
                .await;
                return Err(e.into());
            }
        },
        Step::Create { revision, count } => {
            let Some(template) = templates.get(&revision) else {
                return Err(revision::RevisionError::Data {
                    name: revision,
                    reason: "no template".into(),
                }
                .into());
            };
            // Slow start: batches of 1, 2, 4, … stopping at the first failure.
            let owner = owner_of(cs);
            let label = revision_label(&revision, ctx.gates.short_hash);
            let of = PodOf {
                cs_name: &cs_name,
                namespace: &ns,
                owner: &owner,
                revision: &revision,
                revision_label: &label,
                claims: &cs.spec.volume_claim_templates,
            };
            let (mut left, mut batch) = (count, 1);
            while left > 0 {
                let n = batch.min(left);
                let mut made = Vec::new();
                for _ in 0..n {
                    // An id whose claims outlived their pod first, so a
                    // recreated pod gets its volumes back.
                    let id = ids
                        .reusable
                        .pop()
                        .unwrap_or_else(|| instance_id(&ids.taken));
                    ids.taken.insert(id.clone());
                    ensure_claims(ctx, cs, &id).await?;
                    let pod = new_pod(&of, template, &id, &now.to_string())?;
                    made.push(pod);
                }
                let results = {
                    let pp = PostParams::default();
                    futures_util::future::join_all(made.iter().map(|p| pods_api.create(&pp, p)))
                        .await
                };
                let mut failed = None;
                for r in results {
                    match r {
                        Ok(p) => {
                            let name = p.name_any();
                            publish(
                                ctx,
                                cs,
                                false,
                                "SuccessfulCreate",
                                format!("succeed to create pod {name}"),
                            )
                            .await;
                            // The gate's condition at once: the pod can turn Ready
                            // as soon as its containers are.
                            let ready = inplace::ready_patch(
                                &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
                            );
                            ignore_gone(
                                pods_api
                                    .patch_status(
                                        &name,
                                        &PatchParams::default(),
                                        &Patch::Strategic(&ready),
                                    )
                                    .await,
                            )?;
                        }
                        Err(e) => {
                            publish(
                                ctx,
                                cs,
                                true,
                                "FailedCreate",
                                format!("failed to create pod: {e}"),
                            )
                            .await;
                            failed = Some(e);
                        }
                    }
                }
                if let Some(e) = failed {
                    return Err(e.into());
                }
                left -= n;
                batch *= 2;
            }
        }
        Step::InPlace { pod, start } => {
            let at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
            match crate::workload::apply::in_place(pods_api, ctx.guard.as_ref(), &pod, &start, &at)
                .await
            {
                Ok(Started::Yes) => {
                    let rev = &start.state.revision;
                    publish(
                        ctx,
                        cs,
                        false,
                        "SuccessfulUpdatePodInPlace",
                        format!("successfully update pod {pod} in-place(revision {rev})"),
                    )
                    .await;
                }
                Ok(Started::Paced(why)) => {
                    tracing::debug!(cloneset = %cs_name, namespace = %ns, pod = %pod, reason = %why, "in-place update held back by its PodUnavailableBudget");
                    paced.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Started::Gone) => {}
                Err(e) => {
                    publish(
                        ctx,
                        cs,
                        true,
                        "FailedUpdatePodInPlace",
                        format!("failed to update pod {pod} in-place: {e}"),
                    )
                    .await;
                    return Err(match e {
                        ApplyError::Api(e) => e.into(),
                        ApplyError::Budget(e) => ReconcileError::Budget(e.to_string()),
                    });
                }
            }
        }
        Step::Event {
            warning,
            reason,
            message,
        } => publish(ctx, cs, warning, reason, message).await,
        Step::Readiness {
            pod,
            key,
            hold,
            then,
        } => {
            let holder = crate::workload::lifecycle::not_ready_holder(key);
            crate::podreadiness::set_held(pods_api, &pod, &holder, hold).await?;
            tracing::debug!(cloneset = %cs_name, namespace = %ns, pod = %pod, key = %key, hold, "lifecycle markPodNotReady");
            if let Some(patch) = then {
                ignore_gone(
                    pods_api
                        .patch(&pod, &PatchParams::default(), &Patch::Strategic(&patch))
                        .await,
                )?;
            }
        }
    }
    Ok(())
}

/// Carries out a pre-download decision.
pub(super) async fn apply_predownload(
    ctx: &Context,
    cs: &CloneSet,
    update: &ControllerRevision,
    decision: predownload::Decision,
) -> Result<(), kube::Error> {
    let ns = cs.namespace().unwrap_or_default();
    let uid = cs.metadata.uid.clone().unwrap_or_default();
    let target = crate::workload::predownload::Target {
        client: &ctx.client,
        recorder: &ctx.recorder,
        reference: cs.object_ref(&()),
        namespace: &ns,
        uid: &uid,
    };
    crate::workload::predownload::carry_out(&target, update, decision).await
}

pub(super) fn ignore_gone<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
