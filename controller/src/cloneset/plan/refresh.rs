//! The refresh phase ([`crate::workload::refresh`]) as CloneSet steps.

use super::*;
use crate::workload::refresh::Refresh;

/// Finished in-place updates, lifecycle moves, and the
/// `InPlaceUpdateReady` condition on pods that never had it.
pub(super) fn refresh(input: &Input, plan: &mut Plan) {
    let (steps, requeue) = crate::workload::refresh::refresh(
        input.pods,
        input.cs.spec.lifecycle.as_ref(),
        input.update_revision,
        input.now,
    );
    plan.steps.extend(steps.into_iter().map(|s| match s {
        Refresh::MarkReady { pod } => Step::MarkReady { pod },
        Refresh::Patch { pod, patch } => Step::Patch { pod, patch },
    }));
    if let Some(r) = requeue {
        plan.requeue_after = Some(plan.requeue_after.map_or(r, |x| x.min(r)));
    }
}
