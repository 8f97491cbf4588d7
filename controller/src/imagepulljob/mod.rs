//! ImagePullJob → NodeImage, as a pure reconcile: from the job, the
//! NodeImages of its target nodes and the time, the job's next status and
//! the NodeImage entries to write (the API calls are the caller's).
//!
//! Semantics follow OpenKruise's controller: a target node is *not synced*
//! until its NodeImage has a tag entry for the job's image naming the job
//! as an owner (and the job's pull secrets); a synced node is pulling,
//! succeeded or failed per the NodeImage status of that tag at the entry's
//! version. New nodes are synced only while fewer than `parallelism`
//! (default 1; 0 pauses) are pulling. Writing an entry changes only this
//! image's tags: another job's tag keeps its owners and version, a tag this
//! job joins gets a new version (a new round of pulls), so concurrent jobs
//! never clobber each other (OpenKruise #1517). With completionPolicy
//! `Always` the job completes when every target finished or
//! `activeDeadlineSeconds` passed (unfinished nodes then count as failed),
//! and is deleted `ttlSecondsAfterFinished` after that; `Never` keeps it
//! running and syncing new nodes.

pub mod apply;
pub mod controller;
pub mod image_ref;
pub mod secrets;
pub mod targets;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keelson_api::apps::v1alpha1::imagepulljob::{ImagePullJob, ImagePullJobStatus};
use keelson_api::apps::v1beta1::nodeimage::{
    ImageSpec, ImageTagPullPolicy, ImageTagSpec, NodeImage, ReferenceObject,
};

/// Nodes synced at once when the job gives no `parallelism`.
pub const DEFAULT_PARALLELISM: i32 = 1;
/// Pull deadline written for `Never` jobs, per node round.
pub const NEVER_ACTIVE_DEADLINE_SECONDS: i64 = 1800;
/// How long a `Never` job's node entries live (before jitter).
pub const NEVER_TTL_SECONDS: i32 = 24 * 3600;

/// What the caller supplies besides the objects.
#[derive(Debug, Clone)]
pub struct Context {
    pub now: Time,
    /// The job's pull secrets as the nodes will read them (after the
    /// caller copied them where the agents can read them).
    pub secrets: Vec<ReferenceObject>,
    /// Random seconds in [0, 600), spreading entry expiry across nodes.
    pub jitter_seconds: i32,
}

/// A NodeImage entry to write: `spec.images[image]` of node `node`,
/// computed from the object at `resource_version` (write with that
/// precondition; on conflict, reconcile again).
#[derive(Debug, Clone, PartialEq)]
pub struct EntryWrite {
    pub node: String,
    pub resource_version: Option<String>,
    pub image: String,
    pub spec: ImageSpec,
}

/// The outcome of one reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The job is gone or malformed beyond repair: nothing to do.
    Ignore { reason: String },
    /// Finished and past its TTL: delete the job.
    Delete,
    /// Write `status` (when it changed) and the entries, then look again
    /// after `requeue_after_seconds` (or on the next watch event).
    Sync {
        status: ImagePullJobStatus,
        writes: Vec<EntryWrite>,
        requeue_after_seconds: Option<i64>,
    },
}

fn seconds(t: &Time) -> i64 {
    t.0.as_second()
}

fn is_never(job: &ImagePullJob) -> bool {
    job.spec.template.completion_policy.type_.as_deref() == Some("Never")
}

/// The owner reference a job puts on NodeImage tags.
pub fn owner_ref(job: &ImagePullJob) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps.kruise.io/v1alpha1".into()),
        kind: Some("ImagePullJob".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        ..Default::default()
    }
}

fn pull_policy(job: &ImagePullJob, jitter: i32) -> ImageTagPullPolicy {
    let t = &job.spec.template;
    let timeout = t.pull_policy.as_ref().and_then(|p| p.timeout_seconds);
    let backoff = t.pull_policy.as_ref().and_then(|p| p.backoff_limit);
    let c = &t.completion_policy;
    let (ttl, deadline) = if is_never(job) {
        (
            NEVER_TTL_SECONDS + jitter * 2 - 600,
            Some(NEVER_ACTIVE_DEADLINE_SECONDS),
        )
    } else {
        let base = c
            .ttl_seconds_after_finished
            .or(c
                .active_deadline_seconds
                .map(|d| d.min(i32::MAX as i64) as i32))
            .unwrap_or_else(|| timeout.unwrap_or(600).saturating_mul(backoff.unwrap_or(3)));
        (
            base.saturating_add(300 + jitter / 2),
            c.active_deadline_seconds,
        )
    };
    ImageTagPullPolicy {
        timeout_seconds: timeout,
        backoff_limit: backoff,
        ttl_seconds_after_finished: Some(ttl),
        active_deadline_seconds: deadline,
    }
}

/// Where a target node stands for this job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    NotSynced,
    Pulling,
    Succeeded,
    Failed,
}

fn node_state(
    job: &ImagePullJob,
    node: &NodeImage,
    name: &str,
    tag: &str,
    secrets: &[ReferenceObject],
) -> NodeState {
    let uid = job.metadata.uid.as_deref();
    let Some(spec) = node.spec.images.get(name) else {
        return NodeState::NotSynced;
    };
    if secrets.iter().any(|s| !spec.pull_secrets.contains(s)) {
        return NodeState::NotSynced;
    }
    let Some(version) = spec
        .tags
        .iter()
        .find(|t| t.tag == tag)
        .filter(|t| t.owner_references.iter().any(|r| r.uid.as_deref() == uid))
        .map(|t| t.version)
    else {
        return NodeState::NotSynced;
    };
    let status = node
        .status
        .as_ref()
        .and_then(|s| s.image_statuses.get(name))
        .and_then(|s| s.tags.iter().find(|t| t.tag == tag));
    match status {
        Some(s) if s.version == version => match s.phase.as_str() {
            "Succeeded" => NodeState::Succeeded,
            "Failed" => NodeState::Failed,
            _ => NodeState::Pulling,
        },
        _ => NodeState::Pulling,
    }
}

/// The entry `node` gets so that it pulls the job's image for the job.
/// `None` when it already carries the job (nothing to write).
pub fn entry_for(
    job: &ImagePullJob,
    node: &NodeImage,
    name: &str,
    tag: &str,
    ctx: &Context,
) -> Option<ImageSpec> {
    let owner = owner_ref(job);
    let mut spec = node.spec.images.get(name).cloned().unwrap_or_default();
    spec.sandbox_config = job.spec.template.sandbox_config.clone();
    let mut changed = false;
    for s in &ctx.secrets {
        if !spec.pull_secrets.contains(s) {
            spec.pull_secrets.push(s.clone());
            changed = true;
        }
    }
    match spec.tags.iter_mut().find(|t| t.tag == tag) {
        Some(t) if t.owner_references.iter().any(|r| r.uid == owner.uid) => {
            if !changed {
                return None;
            }
        }
        Some(t) => {
            // Joining another job's tag starts a new round of pulls.
            t.version += 1;
            t.owner_references.push(owner);
            t.created_at = Some(ctx.now.clone());
            t.image_pull_policy = job.spec.template.image_pull_policy.clone();
        }
        None => {
            let seen = node
                .status
                .as_ref()
                .and_then(|s| s.image_statuses.get(name))
                .and_then(|s| s.tags.iter().find(|t| t.tag == tag))
                .map_or(-1, |t| t.version);
            spec.tags.push(ImageTagSpec {
                tag: tag.to_string(),
                created_at: Some(ctx.now.clone()),
                pull_policy: Some(pull_policy(job, ctx.jitter_seconds)),
                owner_references: vec![owner],
                version: seen + 1,
                image_pull_policy: job.spec.template.image_pull_policy.clone(),
            });
        }
    }
    // Oldest request first, as OpenKruise orders them.
    spec.tags.sort_by(|a, b| {
        let key = |t: &ImageTagSpec| t.created_at.as_ref().map(seconds).unwrap_or(i64::MIN);
        key(a).cmp(&key(b)).then_with(|| a.tag.cmp(&b.tag))
    });
    Some(spec)
}

fn parallelism(job: &ImagePullJob) -> i32 {
    match &job.spec.template.parallelism {
        None => DEFAULT_PARALLELISM,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => s.parse().unwrap_or(DEFAULT_PARALLELISM),
    }
}

/// One reconcile of `job` whose target NodeImages are `targets`.
pub fn reconcile(job: &ImagePullJob, targets: &[&NodeImage], ctx: &Context) -> Decision {
    let now = seconds(&ctx.now);
    let old = job.status.clone().unwrap_or_default();
    if let Some(done) = &old.completion_time {
        return match job
            .spec
            .template
            .completion_policy
            .ttl_seconds_after_finished
        {
            Some(ttl) if now - seconds(done) >= i64::from(ttl) => Decision::Delete,
            Some(ttl) => Decision::Sync {
                status: old.clone(),
                writes: vec![],
                requeue_after_seconds: Some(seconds(done) + i64::from(ttl) - now),
            },
            None => Decision::Sync {
                status: old.clone(),
                writes: vec![],
                requeue_after_seconds: None,
            },
        };
    }
    let (name, tag) = match image_ref::familiar_name_and_tag(&job.spec.image) {
        Ok(nt) => nt,
        Err(e) => {
            return Decision::Ignore {
                reason: format!("invalid image {:?}: {e}", job.spec.image),
            };
        }
    };
    let mut by_state: BTreeMap<&str, NodeState> = BTreeMap::new();
    for n in targets {
        let node = n.metadata.name.as_deref().unwrap_or_default();
        by_state.insert(node, node_state(job, n, &name, &tag, &ctx.secrets));
    }
    let nodes_in = |s: NodeState| -> Vec<String> {
        by_state
            .iter()
            .filter(|(_, st)| **st == s)
            .map(|(n, _)| n.to_string())
            .collect()
    };
    let (pulling, succeeded, mut failed, not_synced) = (
        nodes_in(NodeState::Pulling),
        nodes_in(NodeState::Succeeded),
        nodes_in(NodeState::Failed),
        nodes_in(NodeState::NotSynced),
    );
    let start = old.start_time.clone().unwrap_or_else(|| ctx.now.clone());
    let desired = targets.len() as i32;
    let never = is_never(job);
    let deadline = job.spec.template.completion_policy.active_deadline_seconds;
    let mut status = ImagePullJobStatus {
        start_time: Some(start.clone()),
        completion_time: None,
        desired,
        active: pulling.len() as i32,
        succeeded: succeeded.len() as i32,
        failed: 0,
        message: None,
        failed_nodes: vec![],
    };
    let unfinished = desired as usize - succeeded.len() - failed.len();
    if !never
        && unfinished > 0
        && let Some(d) = deadline
        && now - seconds(&start) >= d
    {
        failed.extend(pulling);
        failed.extend(not_synced);
        failed.sort();
        status.active = 0;
        status.failed = failed.len() as i32;
        status.failed_nodes = failed;
        status.completion_time = Some(ctx.now.clone());
        status.message = Some("job exceeds activeDeadlineSeconds".into());
        return Decision::Sync {
            status,
            writes: vec![],
            requeue_after_seconds: None,
        };
    }
    status.failed = failed.len() as i32;
    status.failed_nodes = failed;
    if !never && unfinished == 0 {
        status.completion_time = Some(ctx.now.clone());
        status.message = Some("job has completed".into());
    } else if desired == 0 {
        status.message = Some("job is running, no progress".into());
    } else {
        let done = f64::from(status.succeeded + status.failed);
        status.message = Some(format!(
            "job is running, progress {:.1}%",
            100.0 * done / f64::from(desired)
        ));
    }
    // Sync more nodes while fewer than `parallelism` are pulling.
    let room = (parallelism(job) - status.active).max(0) as usize;
    let mut writes = vec![];
    if status.completion_time.is_none() {
        for n in targets {
            if writes.len() == room {
                break;
            }
            let node = n.metadata.name.clone().unwrap_or_default();
            if by_state.get(node.as_str()) != Some(&NodeState::NotSynced) {
                continue;
            }
            if let Some(spec) = entry_for(job, n, &name, &tag, ctx) {
                writes.push(EntryWrite {
                    node,
                    resource_version: n.metadata.resource_version.clone(),
                    image: name.clone(),
                    spec,
                });
            }
        }
    }
    let requeue_after_seconds = match deadline {
        Some(d) if !never && status.completion_time.is_none() => {
            Some((seconds(&start) + d - now).max(1))
        }
        _ => None,
    };
    Decision::Sync {
        status,
        writes,
        requeue_after_seconds,
    }
}

#[cfg(test)]
mod tests;
