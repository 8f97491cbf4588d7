//! An Advanced DaemonSet's status, counted per node as upstream does:
//! over the nodes that should run the pod (`desiredNumberScheduled`),
//! those having one (`currentNumberScheduled`) — judged by the **oldest**
//! pod there — ready (`numberReady`), available for `minReadySeconds`
//! with no in-place update in flight (`numberAvailable`), on the update
//! revision (`updatedNumberScheduled`); nodes running a pod they should
//! not (`numberMisscheduled`); `numberUnavailable` = desired − available.

use keelson_api::apps::v1beta1::daemonset::DaemonSetStatus;

use super::plan::{Input, daemon_available, ready, sort_oldest_first};

/// The counters and hash (`observedGeneration`, `collisionCount` and
/// conditions are the caller's).
pub fn compute(input: &Input) -> DaemonSetStatus {
    let fits = input.fits();
    let by_node = input.by_node();
    let mut s = DaemonSetStatus {
        update_revision: Some(input.hash.to_string()),
        ..Default::default()
    };
    for (node, fit) in &fits {
        let mut on_node = by_node.get(node).cloned().unwrap_or_default();
        let scheduled = !on_node.is_empty();
        if !fit.should_run {
            s.number_misscheduled += i32::from(scheduled);
            continue;
        }
        s.desired_number_scheduled += 1;
        if !scheduled {
            continue;
        }
        s.current_number_scheduled += 1;
        sort_oldest_first(&mut on_node);
        let pod = on_node[0];
        if ready(pod) {
            s.number_ready += 1;
            s.number_available += i32::from(daemon_available(pod, input.min_ready(), input.now));
        }
        s.updated_number_scheduled += i32::from(input.updated(pod));
    }
    s.number_unavailable = s.desired_number_scheduled - s.number_available;
    s
}
