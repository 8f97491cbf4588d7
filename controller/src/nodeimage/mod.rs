//! One NodeImage per Node, as a pure reconcile: from the Node, its
//! NodeImage, which ImagePullJobs still exist and the time, what to do
//! (the API calls are the caller's).
//!
//! Semantics follow OpenKruise's NodeImage controller: a NodeImage is
//! created for a Node once the Node has been Ready for the creation delay
//! (30 s by default; virtual-kubelet nodes get none), carries the Node's
//! labels (ImagePullJobs select nodes by them), and is deleted with its
//! Node (unless labelled `apps.kruise.io/fake-nodeimage`). In the spec, a
//! tag loses owners that are ImagePullJobs which no longer exist (or were
//! recreated under another uid), goes when no owner is left or its
//! `ttlSecondsAfterFinished` has passed since the node finished it, and an
//! image goes with its last tag. In the status, a tag the node has not
//! answered for 10 minutes after it was written, or one still unfinished
//! 10 minutes past its `activeDeadlineSeconds`, is marked Failed.
//!
//! Who writes what in the status: the node's agent writes every entry
//! (and drops those of tags gone from the spec) until the entry is
//! finished for its version; this controller only finishes (as Failed)
//! entries the node left unanswered or unfinished past their deadline. A
//! finished entry is never rewritten for the same version, by either side,
//! and both compute the counters with `NodeImageStatus::recount`, so the
//! two writers cannot undo each other and a settled status is not written
//! again.
//!
//! One deliberate difference: OpenKruise's webhook stamps `createdAt` on
//! tags written by hand and its controller deletes tags without it; with
//! no webhook in front of NodeImage here, a tag without `createdAt` gets
//! it (the time it was first seen) instead of being dropped.

pub mod controller;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keelson_api::apps::v1beta1::nodeimage::{ImageTagStatus, NodeImage, NodeImageStatus};

/// How long a node has to answer a new tag before it is marked Failed.
pub const RESPONSE_TIMEOUT_SECONDS: i64 = 600;
/// Default wait between a Node turning Ready and its NodeImage.
pub const DEFAULT_CREATION_DELAY_SECONDS: i64 = 30;
/// A NodeImage with this label outlives its (absent) Node.
pub const FAKE_LABEL: &str = "apps.kruise.io/fake-nodeimage";
/// The Node label (and value) of virtual-kubelet nodes, which pull nothing.
pub const VIRTUAL_KUBELET_LABEL: (&str, &str) = ("type", "virtual-kubelet");

/// The message of a tag the node never answered.
pub const NOT_RESPONDED: &str = "node has not responded for a long time";
/// The message of a tag still pulling past its deadline.
pub const DEADLINE_EXCEEDED: &str = "pulling exceeds the activeDeadlineSeconds";

/// What the reconcile sees.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub node: Option<&'a Node>,
    pub image: Option<&'a NodeImage>,
    /// For each ImagePullJob named as a tag owner, by (namespace, name):
    /// its uid, or `None` when it does not exist. A job missing from the
    /// map could not be read, and its references are kept.
    pub jobs: &'a BTreeMap<(String, String), Option<String>>,
    pub now: Time,
    pub creation_delay_seconds: i64,
}

/// What to do.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Nothing to write; look again after this many seconds (if any).
    Wait { after_seconds: Option<i64> },
    /// Create the NodeImage (named as the Node) with these labels.
    Create { labels: BTreeMap<String, String> },
    /// Delete the NodeImage: its Node is gone.
    Delete,
    /// Replace the NodeImage's labels and spec with `object`'s (a write
    /// conditional on the resourceVersion it carries); `changes` says why.
    Update {
        object: Box<NodeImage>,
        changes: Vec<String>,
    },
    /// Replace the status with `object`'s (conditional on its
    /// resourceVersion), then look again after `after_seconds`.
    UpdateStatus {
        object: Box<NodeImage>,
        after_seconds: Option<i64>,
    },
}

/// Equal when they would write the same (kube kinds have no `PartialEq`,
/// so objects compare as JSON).
impl PartialEq for Decision {
    fn eq(&self, other: &Self) -> bool {
        let json = |o: &NodeImage| serde_json::to_value(o).ok();
        match (self, other) {
            (Self::Wait { after_seconds: a }, Self::Wait { after_seconds: b }) => a == b,
            (Self::Create { labels: a }, Self::Create { labels: b }) => a == b,
            (Self::Delete, Self::Delete) => true,
            (
                Self::Update {
                    object: a,
                    changes: x,
                },
                Self::Update {
                    object: b,
                    changes: y,
                },
            ) => x == y && json(a) == json(b),
            (
                Self::UpdateStatus {
                    object: a,
                    after_seconds: x,
                },
                Self::UpdateStatus {
                    object: b,
                    after_seconds: y,
                },
            ) => x == y && json(a) == json(b),
            _ => false,
        }
    }
}

fn seconds(t: &Time) -> i64 {
    t.0.as_second()
}

/// Whether the Node is one that gets no NodeImage.
pub fn is_virtual(node: &Node) -> bool {
    let (k, v) = VIRTUAL_KUBELET_LABEL;
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(k))
        .map(String::as_str)
        == Some(v)
}

/// `None` when the Node is not Ready; else the seconds still to wait before
/// its NodeImage may be created (0: now).
pub fn ready_delay(node: &Node, now: &Time, delay: i64) -> Option<i64> {
    let ready = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    let since = ready.last_transition_time.as_ref().map_or(0, seconds);
    Some((delay - (seconds(now) - since)).max(0))
}

/// The soonest of the waits seen.
#[derive(Debug, Default)]
struct Soonest(Option<i64>);

impl Soonest {
    fn add(&mut self, s: i64) {
        let s = s.max(1);
        self.0 = Some(self.0.map_or(s, |o| o.min(s)));
    }
}

/// The reconcile.
pub fn reconcile(o: &Observed) -> Decision {
    let node = o
        .node
        .filter(|n| n.metadata.deletion_timestamp.is_none() && !is_virtual(n));
    let Some(image) = o.image else {
        let Some(node) = node else {
            return Decision::Wait {
                after_seconds: None,
            };
        };
        return match ready_delay(node, &o.now, o.creation_delay_seconds) {
            None => Decision::Wait {
                after_seconds: None,
            },
            Some(0) => Decision::Create {
                labels: node.metadata.labels.clone().unwrap_or_default(),
            },
            Some(s) => Decision::Wait {
                after_seconds: Some(s),
            },
        };
    };
    if image.metadata.deletion_timestamp.is_some() {
        return Decision::Wait {
            after_seconds: None,
        };
    }
    let fake = image
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(FAKE_LABEL));
    if node.is_none() && !fake {
        return Decision::Delete;
    }
    let mut wait = Soonest::default();
    let mut updated = image.clone();
    let changes = tidy_spec(&mut updated, node, o, &mut wait);
    if !changes.is_empty() {
        return Decision::Update {
            object: Box::new(updated),
            changes,
        };
    }
    if let Some(status) = expire_status(image, &o.now, &mut wait) {
        let mut object = image.clone();
        object.status = Some(status);
        return Decision::UpdateStatus {
            object: Box::new(object),
            after_seconds: wait.0,
        };
    }
    Decision::Wait {
        after_seconds: wait.0,
    }
}

/// Labels from the Node, owners that still exist, TTLs; returns what changed.
fn tidy_spec(
    image: &mut NodeImage,
    node: Option<&Node>,
    o: &Observed,
    wait: &mut Soonest,
) -> Vec<String> {
    let mut changes = vec![];
    if let Some(node) = node {
        let want = node.metadata.labels.clone().unwrap_or_default();
        if image.metadata.labels.clone().unwrap_or_default() != want {
            changes.push("node labels changed".to_string());
            image.metadata.labels = Some(want);
        }
    }
    let statuses = image
        .status
        .as_ref()
        .map(|s| s.image_statuses.clone())
        .unwrap_or_default();
    let now = seconds(&o.now);
    image.spec.images.retain(|name, spec| {
        spec.tags.retain_mut(|tag| {
            let full = format!("{name}:{}", tag.tag);
            if tag.created_at.is_none() {
                changes.push(format!("image {full} had no createdAt"));
                tag.created_at = Some(o.now.clone());
            }
            let before = tag.owner_references.len();
            tag.owner_references.retain(|r| {
                if r.kind.as_deref() != Some("ImagePullJob")
                    || !r
                        .api_version
                        .as_deref()
                        .unwrap_or_default()
                        .starts_with("apps.kruise.io/")
                {
                    return true;
                }
                let key = (
                    r.namespace.clone().unwrap_or_default(),
                    r.name.clone().unwrap_or_default(),
                );
                match o.jobs.get(&key) {
                    None => true,
                    Some(None) => false,
                    Some(Some(uid)) => r.uid.as_deref() == Some(uid.as_str()),
                }
            });
            if tag.owner_references.len() != before {
                changes.push(format!(
                    "image {full}: {} owner(s) no longer exist",
                    before - tag.owner_references.len()
                ));
                if tag.owner_references.is_empty() {
                    return false;
                }
            }
            let ttl = tag
                .pull_policy
                .as_ref()
                .and_then(|p| p.ttl_seconds_after_finished);
            let done = statuses
                .get(name)
                .and_then(|s| {
                    s.tags
                        .iter()
                        .find(|t| t.tag == tag.tag && t.version == tag.version)
                })
                .and_then(|t| t.completion_time.as_ref());
            if let (Some(ttl), Some(done)) = (ttl, done) {
                let left = i64::from(ttl) - (now - seconds(done));
                if left <= 0 {
                    changes.push(format!(
                        "image {full} is past its ttlSecondsAfterFinished ({ttl}s)"
                    ));
                    return false;
                }
                wait.add(left);
            }
            true
        });
        if spec.tags.is_empty() {
            changes.push(format!("image {name} has no tags left"));
        }
        !spec.tags.is_empty()
    });
    changes
}

/// The status with unanswered and overdue tags marked Failed; `None` when
/// nothing changes.
fn expire_status(image: &NodeImage, now: &Time, wait: &mut Soonest) -> Option<NodeImageStatus> {
    let old = image.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let t = seconds(now);
    for (name, spec) in &image.spec.images {
        let mut entry = status.image_statuses.get(name).cloned().unwrap_or_default();
        for tag in &spec.tags {
            let Some(created) = tag.created_at.as_ref().map(seconds) else {
                continue;
            };
            let pos = entry.tags.iter().position(|s| s.tag == tag.tag);
            let answered = pos.is_some_and(|i| entry.tags[i].version == tag.version);
            if !answered {
                let left = RESPONSE_TIMEOUT_SECONDS - (t - created);
                if left > 0 {
                    wait.add(left);
                    continue;
                }
                let failed = ImageTagStatus {
                    tag: tag.tag.clone(),
                    phase: "Failed".into(),
                    completion_time: Some(now.clone()),
                    version: tag.version,
                    message: Some(NOT_RESPONDED.into()),
                    ..Default::default()
                };
                match pos {
                    Some(i) => entry.tags[i] = failed,
                    None => entry.tags.push(failed),
                }
                continue;
            }
            let Some(i) = pos else { continue };
            let deadline = tag
                .pull_policy
                .as_ref()
                .and_then(|p| p.active_deadline_seconds);
            if let (false, Some(deadline)) = (entry.tags[i].is_finished(), deadline) {
                let left = deadline + RESPONSE_TIMEOUT_SECONDS - (t - created);
                if left > 0 {
                    wait.add(left);
                    continue;
                }
                let s = &mut entry.tags[i];
                s.phase = "Failed".into();
                s.completion_time = Some(now.clone());
                s.message = Some(DEADLINE_EXCEEDED.into());
            }
        }
        if !entry.tags.is_empty() {
            status.image_statuses.insert(name.clone(), entry);
        }
    }
    if status.image_statuses == old.image_statuses {
        return None;
    }
    // Statuses of tags no longer asked for go; the counters are the same
    // function of the entries the agent uses, so the two never disagree.
    status.image_statuses.retain(|name, entry| {
        let Some(spec) = image.spec.images.get(name) else {
            return false;
        };
        entry
            .tags
            .retain(|s| spec.tags.iter().any(|t| t.tag == s.tag));
        !entry.tags.is_empty()
    });
    status.recount_tags(image.spec.tags());
    Some(status)
}

#[cfg(test)]
mod tests;
