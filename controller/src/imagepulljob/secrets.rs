//! An ImagePullJob's pull secrets, copied where the agents may read them.
//!
//! Agents read Secrets only in `kruise-daemon-config` (their RBAC allows
//! nothing else), so before a job's NodeImage entries are written its
//! `pullSecrets` are copied there, as OpenKruise does: a copy is named
//! `<source>-<random>`, labelled with the source's uid
//! (`imagepulljobs.kruise.io/source-uid`), annotated with the source's
//! `namespace/name` (`imagepulljobs.kruise.io/source-key`) and with the
//! jobs using it (`imagepulljobs.kruise.io/references`, comma-separated
//! `namespace/name`). One copy serves every job using the same source; it
//! follows the source's data, and is deleted when its last job finishes,
//! is deleted, or stops naming it. A job holds the
//! `apps.kruise.io/deletion-protection` finalizer while it may have
//! copies, so deleting it releases them first. Jobs living in
//! `kruise-daemon-config` use their secrets in place.
//!
//! [`plan`] is the pure part; [`sync`] reads and writes through the API.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keelson_api::apps::v1alpha1::imagepulljob::ImagePullJob;
use keelson_api::apps::v1beta1::nodeimage::ReferenceObject;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};

use crate::api_call::{finalizer_patch, status_code};

/// Where agents read pull secrets.
pub const DAEMON_CONFIG_NAMESPACE: &str = "kruise-daemon-config";
/// Annotation on a copy: its source's `namespace/name`.
pub const SOURCE_KEY_ANNOTATION: &str = "imagepulljobs.kruise.io/source-key";
/// Label on a copy: its source's uid.
pub const SOURCE_UID_LABEL: &str = "imagepulljobs.kruise.io/source-uid";
/// Annotation on a copy: the jobs using it.
pub const REFERENCES_ANNOTATION: &str = "imagepulljobs.kruise.io/references";
/// Finalizer a job holds while it may have copies.
pub const PROTECTION_FINALIZER: &str = "apps.kruise.io/deletion-protection";

/// One write to a copy.
#[derive(Debug, Clone)]
pub enum CopyWrite {
    /// Create a copy (`generateName` set) of the source named `source`.
    Create { source: String, copy: Box<Secret> },
    /// Replace a copy (conditional on its resourceVersion).
    Replace(Box<Secret>),
    /// Delete a copy no job uses any more, conditional on its uid and on
    /// the resourceVersion it was planned from: a job that joined the copy
    /// meanwhile turns the delete into a 409, not a lost reference.
    Delete {
        name: String,
        uid: Option<String>,
        resource_version: Option<String>,
    },
}

/// What [`plan`] decides.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub writes: Vec<CopyWrite>,
    /// The copies the job's NodeImage entries name (created ones are added
    /// once their names are known).
    pub refs: Vec<ReferenceObject>,
    /// Pull secrets the job names that do not exist.
    pub missing: Vec<String>,
}

/// `namespace/name` of a job.
pub fn job_key(job: &ImagePullJob) -> String {
    format!(
        "{}/{}",
        job.metadata.namespace.as_deref().unwrap_or_default(),
        job.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether the job is still pulling (not finished, not being deleted).
pub fn is_running(job: &ImagePullJob) -> bool {
    job.metadata.deletion_timestamp.is_none()
        && job
            .status
            .as_ref()
            .is_none_or(|s| s.completion_time.is_none())
}

/// Whether the job needs the protection finalizer.
pub fn wants_finalizer(job: &ImagePullJob) -> bool {
    is_running(job)
        && !job.spec.template.pull_secrets.is_empty()
        && job.metadata.namespace.as_deref() != Some(DAEMON_CONFIG_NAMESPACE)
}

/// Whether the job holds the protection finalizer.
pub fn has_finalizer(job: &ImagePullJob) -> bool {
    job.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == PROTECTION_FINALIZER))
}

fn references(copy: &Secret) -> BTreeSet<String> {
    copy.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REFERENCES_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn with_references(mut copy: Secret, refs: &BTreeSet<String>) -> Secret {
    let joined = refs.iter().cloned().collect::<Vec<_>>().join(",");
    copy.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(REFERENCES_ANNOTATION.into(), joined);
    copy
}

fn source_uid(copy: &Secret) -> Option<&str> {
    copy.metadata
        .labels
        .as_ref()?
        .get(SOURCE_UID_LABEL)
        .map(String::as_str)
}

fn same_content(a: &Secret, b: &Secret) -> bool {
    a.data == b.data && a.string_data == b.string_data && a.type_ == b.type_
}

/// A new copy of `source` used by `job_key`.
fn copy_of(source: &Secret, job_key: &str) -> Secret {
    let name = source.metadata.name.clone().unwrap_or_default();
    let mut labels = source.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        SOURCE_UID_LABEL.into(),
        source.metadata.uid.clone().unwrap_or_default(),
    );
    let mut annotations = BTreeMap::new();
    annotations.insert(
        SOURCE_KEY_ANNOTATION.into(),
        format!(
            "{}/{name}",
            source.metadata.namespace.as_deref().unwrap_or_default()
        ),
    );
    annotations.insert(REFERENCES_ANNOTATION.into(), job_key.to_string());
    Secret {
        metadata: ObjectMeta {
            namespace: Some(DAEMON_CONFIG_NAMESPACE.into()),
            generate_name: Some(format!("{name}-")),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        data: source.data.clone(),
        string_data: source.string_data.clone(),
        type_: source.type_.clone(),
        immutable: None,
    }
}

/// The copies to write for `job`, given its pull secrets that exist
/// (`sources`, by name) and the Secrets in `kruise-daemon-config`.
pub fn plan(job: &ImagePullJob, sources: &BTreeMap<String, Secret>, copies: &[Secret]) -> Plan {
    let mut plan = Plan::default();
    let names = &job.spec.template.pull_secrets;
    if job.metadata.namespace.as_deref() == Some(DAEMON_CONFIG_NAMESPACE) {
        plan.refs = names
            .iter()
            .map(|n| ReferenceObject {
                namespace: DAEMON_CONFIG_NAMESPACE.into(),
                name: n.clone(),
                mode: String::new(),
            })
            .collect();
        return plan;
    }
    let me = job_key(job);
    let running = is_running(job);
    let mut wanted: Vec<&Secret> = vec![];
    if running {
        for n in names {
            match sources.get(n) {
                Some(s) if !wanted.iter().any(|w| w.metadata.uid == s.metadata.uid) => {
                    wanted.push(s)
                }
                Some(_) => {}
                None => plan.missing.push(n.clone()),
            }
        }
    }
    // Copies by name, so the same one is chosen every time when several
    // copies of one source exist.
    let mut live: Vec<&Secret> = copies
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none() && source_uid(c).is_some())
        .collect();
    live.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    for source in &wanted {
        let uid = source.metadata.uid.as_deref().unwrap_or_default();
        let same: Vec<&&Secret> = live.iter().filter(|c| source_uid(c) == Some(uid)).collect();
        // Prefer a copy this job already uses, then the first by name.
        let pick = same
            .iter()
            .find(|c| references(c).contains(&me))
            .or(same.first());
        let Some(copy) = pick else {
            plan.writes.push(CopyWrite::Create {
                source: source.metadata.name.clone().unwrap_or_default(),
                copy: Box::new(copy_of(source, &me)),
            });
            continue;
        };
        let name = copy.metadata.name.clone().unwrap_or_default();
        chosen.insert(name.clone());
        let mut refs = references(copy);
        if refs.insert(me.clone()) || !same_content(copy, source) {
            let mut updated = with_references((**copy).clone(), &refs);
            updated.data = source.data.clone();
            updated.string_data = source.string_data.clone();
            updated.type_ = source.type_.clone();
            plan.writes.push(CopyWrite::Replace(Box::new(updated)));
        }
        plan.refs.push(ReferenceObject {
            namespace: DAEMON_CONFIG_NAMESPACE.into(),
            name,
            mode: String::new(),
        });
    }
    // Copies this job used and no longer does.
    for copy in &live {
        let name = copy.metadata.name.clone().unwrap_or_default();
        let mut refs = references(copy);
        if chosen.contains(&name) || !refs.remove(&me) {
            continue;
        }
        if refs.is_empty() {
            plan.writes.push(CopyWrite::Delete {
                name,
                uid: copy.metadata.uid.clone(),
                resource_version: copy.metadata.resource_version.clone(),
            });
        } else {
            plan.writes
                .push(CopyWrite::Replace(Box::new(with_references(
                    (*copy).clone(),
                    &refs,
                ))));
        }
    }
    plan
}

/// How [`sync`] went.
#[derive(Debug)]
pub enum Synced {
    /// The references for the job's NodeImage entries.
    Refs(Vec<ReferenceObject>),
    /// A copy or the job changed meanwhile (409): reconcile again.
    Conflict,
}

/// Copies (or releases) `job`'s pull secrets and keeps its finalizer in
/// step: added while the job may have copies, removed once it has none.
pub async fn sync(client: &Client, job: &ImagePullJob) -> Result<Synced, kube::Error> {
    let needs = wants_finalizer(job);
    if !needs && !has_finalizer(job) {
        return Ok(Synced::Refs(plan(job, &BTreeMap::new(), &[]).refs));
    }
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let jobs: Api<ImagePullJob> = Api::namespaced(client.clone(), &ns);
    let name = job.metadata.name.clone().unwrap_or_default();
    if needs && !has_finalizer(job) {
        // The finalizer first: a job deleted from now on releases its copies.
        let patch = finalizer_patch(&job.metadata, PROTECTION_FINALIZER, true);
        match jobs
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(409) => return Ok(Synced::Conflict),
            Err(e) => return Err(e),
        }
    }
    let mut sources = BTreeMap::new();
    if is_running(job) {
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        for n in &job.spec.template.pull_secrets {
            if let Some(s) = api.get_opt(n).await? {
                sources.insert(n.clone(), s);
            }
        }
    }
    let copies_api: Api<Secret> = Api::namespaced(client.clone(), DAEMON_CONFIG_NAMESPACE);
    let copies = copies_api
        .list(&ListParams::default().labels(SOURCE_UID_LABEL))
        .await?
        .items;
    let mut plan = plan(job, &sources, &copies);
    for missing in &plan.missing {
        tracing::warn!(job = %job_key(job), secret = %missing, "pull secret not found; pulling without it");
    }
    for w in plan.writes {
        let result = match w {
            CopyWrite::Create { source, copy } => {
                match copies_api.create(&PostParams::default(), &copy).await {
                    Ok(created) => {
                        let copy_name = created.metadata.name.unwrap_or_default();
                        tracing::info!(job = %job_key(job), source = %source, copy = %copy_name, "pull secret copied to {DAEMON_CONFIG_NAMESPACE}");
                        plan.refs.push(ReferenceObject {
                            namespace: DAEMON_CONFIG_NAMESPACE.into(),
                            name: copy_name,
                            mode: String::new(),
                        });
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            CopyWrite::Replace(copy) => {
                let copy_name = copy.metadata.name.clone().unwrap_or_default();
                copies_api
                    .replace(&copy_name, &PostParams::default(), &copy)
                    .await
                    .map(|_| ())
            }
            CopyWrite::Delete {
                name: copy_name,
                uid,
                resource_version,
            } => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid,
                        resource_version,
                    }),
                    ..DeleteParams::default()
                };
                match copies_api.delete(&copy_name, &dp).await {
                    Ok(_) => {
                        tracing::info!(job = %job_key(job), copy = %copy_name, "pull secret copy deleted: no job uses it");
                        Ok(())
                    }
                    Err(e) if status_code(&e) == Some(404) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(()) => {}
            Err(e) if status_code(&e) == Some(409) => return Ok(Synced::Conflict),
            Err(e) => return Err(e),
        }
    }
    if !needs && has_finalizer(job) {
        // Released everything: let the job go.
        let patch = finalizer_patch(&job.metadata, PROTECTION_FINALIZER, false);
        match jobs
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(409) => return Ok(Synced::Conflict),
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(e),
        }
    }
    plan.refs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Synced::Refs(plan.refs))
}

#[cfg(test)]
mod tests;
