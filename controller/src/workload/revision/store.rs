//! Storing the update revision: the one I/O step of [`super`]. The
//! revision a template selects is created (or an older one renumbered, a
//! rollback); a name clash with different data bumps the collision count
//! and tries the next name, as the Kubernetes history library does.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{Parent, RevisionChange, RevisionError, equal_revision, select_update_revision};

/// Why the update revision could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Revision(#[from] RevisionError),
}

/// The update revision's name after storing what it needs, and whether
/// anything was stored.
pub async fn sync(
    revisions: &Api<ControllerRevision>,
    parent: &Parent,
    template: &Value,
    existing: &[ControllerRevision],
    collision_count: &mut i32,
    extra_annotations: &BTreeMap<String, String>,
) -> Result<(String, bool), StoreError> {
    loop {
        let (name, change) = select_update_revision(
            parent,
            template,
            existing,
            Some(*collision_count),
            extra_annotations,
        )?;
        match change {
            RevisionChange::Unchanged => return Ok((name, false)),
            RevisionChange::Renumber { name, revision } => {
                // The caller's annotations follow the reused revision (the
                // CloneSet's claim-template hash may have changed since).
                let patch = if extra_annotations.is_empty() {
                    json!({"revision": revision})
                } else {
                    json!({"revision": revision, "metadata": {"annotations": extra_annotations}})
                };
                revisions
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                return Ok((name, true));
            }
            RevisionChange::Create(new) => {
                match revisions.create(&PostParams::default(), &new).await {
                    Ok(_) => return Ok((name, true)),
                    Err(e) if crate::api_call::status_code(&e) == Some(409) => {
                        let stored = revisions.get(&name).await?;
                        let ours =
                            crate::api_call::controlled_by(&stored.metadata, &parent.owner.uid);
                        if equal_revision(&stored, &new) && ours {
                            return Ok((name, true));
                        }
                        *collision_count += 1;
                        tracing::info!(workload = %parent.name, collision_count = *collision_count, "revision name collision");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

/// A workload's revisions, the update revision among them stored.
#[derive(Debug, Clone)]
pub struct History {
    /// The revisions the workload controls.
    pub revisions: Vec<ControllerRevision>,
    /// Revision name → its pod template.
    pub templates: BTreeMap<String, Value>,
    pub update_revision: String,
    /// After any name collisions of this round.
    pub collision_count: i32,
}

/// Lists the revisions `parent` controls, stores the one `template`
/// selects ([`sync`]) and reads their templates.
pub async fn load(
    revisions: &Api<ControllerRevision>,
    parent: &Parent,
    template: &Value,
    collision_count: i32,
    extra_annotations: &BTreeMap<String, String>,
) -> Result<History, StoreError> {
    let owned = || crate::api_call::list_controlled(revisions, "", &parent.owner.uid);
    let mut list = owned().await?;
    let mut collision_count = collision_count;
    let (update_revision, stored) = sync(
        revisions,
        parent,
        template,
        &list,
        &mut collision_count,
        extra_annotations,
    )
    .await?;
    if stored {
        list = owned().await?;
    }
    let templates = list
        .iter()
        .filter_map(|r| Some((r.metadata.name.clone()?, super::template_of(r).ok()?)))
        .collect();
    Ok(History {
        revisions: list,
        templates,
        update_revision,
        collision_count,
    })
}
