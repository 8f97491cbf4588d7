//! One Advanced DaemonSet reconcile as a pure decision, in upstream's
//! order: the refresh of in-place updates under way
//! ([`crate::workload::refresh`]); then placement ("manage"): a pod
//! created on every eligible node that has none (only
//! `desired − updated − partition` of them, node names ascending, with
//! partitioned scaling), extra pods, failed pods (per-node backoff),
//! pods on nodes that no longer fit and unscheduled pods of vanished nodes
//! deleted; and when placement has nothing to do and the rollout is not
//! paused, the rolling update ([`rolling`]). Deletions of pods a
//! `preDelete` hook holds become `PreparingDelete`; creations and
//! deletions are each capped at `burstReplicas`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use keelson_api::apps::shared::{IN_PLACE_UPDATE_READY, LIFECYCLE_STATE_PREPARING_DELETE};
use keelson_api::apps::v1beta1::daemonset::{
    DEFAULT_BURST_REPLICAS, DaemonSet, INPLACE_ROLLING_UPDATE_TYPE,
    ON_DELETE_DAEMON_SET_STRATEGY_TYPE, RollingUpdateDaemonSet,
};
use serde_json::Value;

use super::newpod::{daemon_spec, template_generation};
use super::placement::{Fit, fit, target_node};
use crate::workload::inplace;
use crate::workload::lifecycle::{hooked, state_patch};
use crate::workload::percent::scaled;
use crate::workload::pods::{self, condition};
use crate::workload::refresh::{self, Refresh};
use crate::workload::revision::POD_REVISION_LABEL;

pub mod rolling;

/// What a reconcile looks at.
pub struct Input<'a> {
    pub ds: &'a DaemonSet,
    pub nodes: &'a [Node],
    /// Every pod the DaemonSet controls (terminating and finished too).
    pub pods: &'a [Pod],
    /// The update revision's hash (the pods' `controller-revision-hash`).
    pub hash: &'a str,
    /// Revision hash → its pod template.
    pub templates: &'a BTreeMap<String, Value>,
    pub now: Timestamp,
    /// `InPlaceUpdateEnvFromMetadata`.
    pub env_from_metadata: bool,
    /// Nodes whose failed pods may not be deleted yet: node → seconds left.
    pub backoff: &'a BTreeMap<String, i64>,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Set the pod's `InPlaceUpdateReady` condition True.
    MarkReady {
        pod: String,
    },
    /// Merge-patch the pod's metadata.
    Patch {
        pod: String,
        patch: Value,
    },
    /// Create the update revision's pod for the node.
    Create {
        node: String,
    },
    Delete {
        pod: String,
    },
    /// Delete a failed pod (event `FailedDaemonPod`, backoff raised).
    DeleteFailed {
        pod: String,
        node: String,
    },
    /// Start an in-place update.
    InPlace {
        pod: String,
        start: Box<inplace::Start>,
    },
}

/// The decision of one reconcile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Look again after this many seconds even without events.
    pub requeue_after: Option<i64>,
}

impl Plan {
    fn again(&mut self, s: i64) {
        let s = s.max(1);
        self.requeue_after = Some(self.requeue_after.map_or(s, |r| r.min(s)));
    }
}

pub(crate) fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

pub(crate) fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// Condition Ready True (Kubernetes' `IsPodReady`).
pub fn ready(p: &Pod) -> bool {
    condition(p, "Ready").is_some_and(|c| c.status == "True")
}

/// Ready for more than `min_ready` seconds (Kubernetes' `IsPodAvailable`).
pub fn available(p: &Pod, min_ready: i32, now: Timestamp) -> bool {
    let Some(c) = condition(p, "Ready").filter(|c| c.status == "True") else {
        return false;
    };
    if min_ready <= 0 {
        return true;
    }
    c.last_transition_time
        .as_ref()
        .is_some_and(|t| t.0.as_second() + i64::from(min_ready) < now.as_second())
}

/// [`available`], and no in-place update in flight on a gated pod (what
/// the status counts).
pub fn daemon_available(p: &Pod, min_ready: i32, now: Timestamp) -> bool {
    available(p, min_ready, now)
        && (!gated(p) || condition(p, IN_PLACE_UPDATE_READY).is_none_or(|c| c.status == "True"))
}

/// The pod has the `InPlaceUpdateReady` readiness gate.
pub fn gated(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|g| g.iter().any(|g| g.condition_type == IN_PLACE_UPDATE_READY))
}

pub(crate) fn pre_deleting(p: &Pod) -> bool {
    pods::lifecycle_state(p) == LIFECYCLE_STATE_PREPARING_DELETE
}

/// Oldest first, scheduled pods before unscheduled ones (upstream's
/// `podByCreationTimestampAndPhase`).
pub fn sort_oldest_first(pods: &mut [&Pod]) {
    let key = |p: &Pod| {
        let unscheduled = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_none_or(str::is_empty);
        let created = p
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(i64::MIN, |t| t.0.as_second());
        (unscheduled, created, name(p))
    };
    pods.sort_by_key(|p| key(p));
}

impl Input<'_> {
    pub fn min_ready(&self) -> i32 {
        self.ds.spec.min_ready_seconds
    }

    /// `updateStrategy.type` is RollingUpdate (the default).
    pub fn rolling(&self) -> bool {
        self.ds.spec.update_strategy.type_.as_deref() != Some(ON_DELETE_DAEMON_SET_STRATEGY_TYPE)
    }

    /// The rolling update settings with the webhook's defaults applied in
    /// memory (for objects stored without them).
    pub fn rolling_update(&self) -> RollingUpdateDaemonSet {
        let mut ru = self
            .ds
            .spec
            .update_strategy
            .rolling_update
            .clone()
            .unwrap_or_default();
        if ru.max_unavailable.is_none() && ru.max_surge.is_none() {
            ru.max_unavailable = Some(IntOrString::Int(1));
        }
        ru
    }

    pub fn in_place(&self) -> bool {
        Self::in_place_of(self.ds)
    }

    /// RollingUpdate of type `InPlaceIfPossible`: pods get the
    /// `InPlaceUpdateReady` gate and are updated in place where possible.
    pub fn in_place_of(ds: &DaemonSet) -> bool {
        ds.spec.update_strategy.type_.as_deref() != Some(ON_DELETE_DAEMON_SET_STRATEGY_TYPE)
            && ds
                .spec
                .update_strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.rolling_update_type.as_deref())
                == Some(INPLACE_ROLLING_UPDATE_TYPE)
    }

    pub fn paused(&self) -> bool {
        self.rolling_update().paused == Some(true)
    }

    /// `maxSurge` against `desired` (rounded up); 0 for OnDelete.
    pub fn surge(&self, desired: i32) -> i32 {
        if !self.rolling() {
            return 0;
        }
        self.rolling_update()
            .max_surge
            .and_then(|v| scaled(&v, desired, true).ok())
            .unwrap_or(0)
            .max(0)
    }

    /// `maxUnavailable` against `desired` (rounded up); 0 for OnDelete.
    pub fn unavailable(&self, desired: i32) -> i32 {
        if !self.rolling() {
            return 0;
        }
        self.rolling_update()
            .max_unavailable
            .and_then(|v| scaled(&v, desired, true).ok())
            .unwrap_or(0)
            .max(0)
    }

    /// Surging: `maxSurge` is above 0.
    pub fn allow_surge(&self) -> bool {
        self.surge(1) > 0
    }

    /// `partition` against the last reported `desiredNumberScheduled`
    /// (rounded down), as upstream.
    pub fn partition(&self) -> i32 {
        let desired = self
            .ds
            .status
            .as_ref()
            .map_or(0, |s| s.desired_number_scheduled);
        self.rolling_update()
            .partition
            .and_then(|v| scaled(&v, desired, false).ok())
            .unwrap_or(0)
    }

    /// `burstReplicas` against the last reported `desiredNumberScheduled`
    /// (rounded down).
    pub fn burst(&self) -> usize {
        let desired = self
            .ds
            .status
            .as_ref()
            .map_or(0, |s| s.desired_number_scheduled);
        let v = self
            .ds
            .spec
            .burst_replicas
            .clone()
            .unwrap_or(IntOrString::Int(DEFAULT_BURST_REPLICAS));
        usize::try_from(scaled(&v, desired, false).unwrap_or(0)).unwrap_or(0)
    }

    /// Whether `p` is of the update revision (by hash, or by the
    /// deprecated template generation).
    pub fn updated(&self, p: &Pod) -> bool {
        let labels = p.metadata.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        let by_hash = !self.hash.is_empty() && label(POD_REVISION_LABEL) == Some(self.hash);
        let by_generation = template_generation(self.ds).is_some_and(|g| {
            label(super::newpod::TEMPLATE_GENERATION_LABEL) == Some(g.to_string().as_str())
        });
        by_hash || by_generation
    }

    /// Each node's fit, by name.
    pub fn fits(&self) -> BTreeMap<String, Fit> {
        let spec = daemon_spec(self.ds);
        self.nodes
            .iter()
            .map(|n| (n.metadata.name.clone().unwrap_or_default(), fit(&spec, n)))
            .collect()
    }

    /// The pods by the node they are for (pods naming no node left out).
    pub fn by_node(&self) -> BTreeMap<String, Vec<&Pod>> {
        let mut out: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
        for p in self.pods {
            if let Some(node) = p.spec.as_ref().and_then(target_node) {
                out.entry(node).or_default().push(p);
            }
        }
        out
    }

    /// The node's one new and one old live pod; `None` when it has more
    /// than one of either (upstream's `findUpdatedPodsOnNode`).
    #[allow(clippy::type_complexity)]
    pub fn new_and_old<'p>(
        &self,
        on_node: &[&'p Pod],
    ) -> Option<(Option<&'p Pod>, Option<&'p Pod>)> {
        let (mut new, mut old) = (None, None);
        for p in on_node.iter().filter(|p| !terminating(p)) {
            let slot = if self.updated(p) { &mut new } else { &mut old };
            if slot.is_some() {
                return None;
            }
            *slot = Some(*p);
        }
        Some((new, old))
    }
}

/// The reconcile's steps.
pub fn plan(input: &Input) -> Plan {
    let mut plan = Plan::default();
    let active: Vec<Pod> = input
        .pods
        .iter()
        .filter(|p| pods::is_active(p))
        .cloned()
        .collect();
    let hash_revision = input.hash.to_string();
    let (refreshed, again) = refresh::refresh(
        &active,
        input.ds.spec.lifecycle.as_ref(),
        &hash_revision,
        input.now,
    );
    if let Some(s) = again {
        plan.again(s);
    }
    for r in refreshed {
        plan.steps.push(match r {
            Refresh::MarkReady { pod } => Step::MarkReady { pod },
            Refresh::Patch { pod, patch } => Step::Patch { pod, patch },
        });
    }
    let (deletes, creates) = manage(input, &mut plan);
    let managed = !deletes.is_empty() || !creates.is_empty();
    sync(input, deletes, creates, &mut plan);
    if !managed && plan.steps.is_empty() && input.rolling() && !input.paused() {
        let (deletes, creates, in_place) = rolling::update(input, &mut plan);
        plan.steps.extend(in_place);
        sync(input, deletes, creates, &mut plan);
    }
    let soonest = input
        .pods
        .iter()
        .filter(|p| !terminating(p) && ready(p) && !available(p, input.min_ready(), input.now))
        .filter_map(|p| pods::seconds_until_available(p, input.min_ready(), input.now))
        .min();
    if let Some(s) = soonest {
        plan.again(s + 1);
    }
    plan
}

/// A pod to delete: plain, or failed on `node`.
#[derive(Debug, Clone, PartialEq)]
pub enum Deletion {
    Pod(String),
    Failed { pod: String, node: String },
}

/// Placement: the deletions and the nodes needing a pod.
fn manage(input: &Input, plan: &mut Plan) -> (Vec<Deletion>, Vec<String>) {
    let fits = input.fits();
    let by_node = input.by_node();
    let (mut deletes, mut creates) = (vec![], vec![]);
    let (mut desired, mut new_pods) = (0, 0);
    for (node, f) in &fits {
        let on_node = by_node.get(node);
        if f.should_run {
            desired += 1;
        }
        if let Some(Some((Some(_), _))) = on_node.map(|ps| input.new_and_old(ps)) {
            new_pods += 1;
        }
        match on_node {
            None if f.should_run => creates.push(node.clone()),
            Some(ps) if f.should_continue_running => {
                let mut running: Vec<&Pod> = vec![];
                for p in ps.iter().filter(|p| !terminating(p)) {
                    if phase(p) == Some("Failed") {
                        if let Some(left) = input.backoff.get(node).filter(|s| **s > 0) {
                            plan.again(*left);
                            continue;
                        }
                        deletes.push(Deletion::Failed {
                            pod: name(p),
                            node: node.clone(),
                        });
                    } else if pre_deleting(p) {
                        deletes.push(Deletion::Pod(name(p)));
                    } else {
                        running.push(p);
                    }
                }
                sort_oldest_first(&mut running);
                if !input.allow_surge() {
                    deletes.extend(running.iter().skip(1).map(|p| Deletion::Pod(name(p))));
                    continue;
                }
                if running.is_empty() && f.should_run {
                    creates.push(node.clone());
                    continue;
                }
                surge_extras(input, &running, &mut deletes, plan);
            }
            Some(ps) if !f.should_continue_running => deletes.extend(
                ps.iter()
                    .filter(|p| !terminating(p))
                    .map(|p| Deletion::Pod(name(p))),
            ),
            _ => {}
        }
    }
    // Unscheduled pods bound for nodes that are gone.
    for (node, ps) in &by_node {
        if !fits.contains_key(node) {
            deletes.extend(
                ps.iter()
                    .filter(|p| !pods::is_scheduled(p))
                    .map(|p| Deletion::Pod(name(p))),
            );
        }
    }
    // v1beta1 `scaleStrategy.partitionedScaling` (v1alpha1's annotation
    // arrives converted into it).
    let progressive = input.ds.partitioned_scaling();
    let partition = input.partition();
    if input.rolling() && input.ds.spec.update_strategy.rolling_update.is_some() && partition != 0 {
        creates = nodes_needing_pods(new_pods, desired, partition, progressive, creates);
    }
    (deletes, creates)
}

/// With surge, the running pods of one node beyond one old and one new
/// are deleted; the oldest old one goes once it is not ready or the
/// oldest new one is available.
fn surge_extras(input: &Input, running: &[&Pod], deletes: &mut Vec<Deletion>, plan: &mut Plan) {
    let (mut oldest_new, mut oldest_old) = (None, None);
    for p in running {
        let slot = if pods::revision(p) == Some(input.hash) {
            &mut oldest_new
        } else {
            &mut oldest_old
        };
        if slot.is_none() {
            *slot = Some(*p);
        } else {
            deletes.push(Deletion::Pod(name(p)));
        }
    }
    if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
        if !ready(old) || available(new, input.min_ready(), input.now) {
            deletes.push(Deletion::Pod(name(old)));
        } else if ready(new) && input.min_ready() > 0 {
            let left = pods::seconds_until_available(new, input.min_ready(), input.now);
            plan.again(left.unwrap_or(i64::from(input.min_ready())) + 1);
        }
    }
}

/// Partitioned scaling: only `desired − new_pods − partition` nodes get a
/// pod (names ascending); otherwise all of them, sorted.
pub fn nodes_needing_pods(
    new_pods: i32,
    desired: i32,
    partition: i32,
    progressive: bool,
    mut nodes: Vec<String>,
) -> Vec<String> {
    nodes.sort();
    if !progressive {
        return nodes;
    }
    let partition = partition.min(desired).max(0);
    let max_create = usize::try_from((desired - new_pods - partition).max(0)).unwrap_or(0);
    nodes.truncate(max_create);
    nodes
}

/// Carries out deletions (through `PreparingDelete` for pods a
/// `preDelete` hook holds) and creations, each capped at `burstReplicas`.
fn sync(input: &Input, deletes: Vec<Deletion>, creates: Vec<String>, plan: &mut Plan) {
    let hook = input
        .ds
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_delete.as_ref());
    let by_name: BTreeMap<String, &Pod> = input.pods.iter().map(|p| (name(p), p)).collect();
    let now = input.now.to_string();
    let mut can_delete = vec![];
    let mut seen = std::collections::BTreeSet::new();
    for d in deletes {
        let pod = match &d {
            Deletion::Pod(p) | Deletion::Failed { pod: p, .. } => p.clone(),
        };
        if !seen.insert(pod.clone()) {
            continue;
        }
        let Some(p) = by_name.get(&pod) else { continue };
        if hook.is_some() && hooked(p, hook) {
            if !pre_deleting(p) {
                plan.steps.push(Step::Patch {
                    pod,
                    patch: state_patch(LIFECYCLE_STATE_PREPARING_DELETE, &now),
                });
            }
            continue;
        }
        can_delete.push(d);
    }
    let burst = input.burst();
    for n in creates.into_iter().take(burst) {
        plan.steps.push(Step::Create { node: n });
    }
    for d in can_delete.into_iter().take(burst) {
        plan.steps.push(match d {
            Deletion::Pod(pod) => Step::Delete { pod },
            Deletion::Failed { pod, node } => Step::DeleteFailed { pod, node },
        });
    }
}

#[cfg(test)]
mod tests;
