//! The refresh phase ([`crate::workload::refresh`]) as CloneSet steps.

use super::*;
use crate::workload::refresh::Refresh;

/// Finished in-place updates, lifecycle moves (with the inPlaceUpdate
/// hook's `markPodNotReady`: the holder dropped at Updated — and at
/// Normal), and the `InPlaceUpdateReady` condition on pods that never had
/// it.
pub(super) fn refresh(input: &Input, plan: &mut Plan) {
    let (steps, requeue) = crate::workload::refresh::refresh(
        input.pods,
        input.cs.spec.lifecycle.as_ref(),
        input.update_revision,
        input.now,
    );
    let hook = input
        .cs
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l.in_place_update.as_ref());
    plan.steps.extend(steps.into_iter().map(|s| match s {
        Refresh::MarkReady { pod } => Step::MarkReady { pod },
        Refresh::Patch { pod, patch } => {
            let state = patch
                .pointer("/metadata/labels")
                .and_then(|l| l.get(keelson_api::apps::shared::LIFECYCLE_STATE_KEY))
                .and_then(Value::as_str)
                .map(str::to_string);
            match (state, input.pods.iter().find(|p| name(p) == pod)) {
                // A pod back to Normal drops the update hook's holder
                // even when the hook no longer asks for it.
                (Some(state), Some(p)) => {
                    let mark = marks(hook) || state == LIFECYCLE_STATE_NORMAL;
                    lifecycle_step(p, &state, patch, mark)
                }
                _ => Step::Patch { pod, patch },
            }
        }
    }));
    if let Some(r) = requeue {
        plan.requeue_after = Some(plan.requeue_after.map_or(r, |x| x.min(r)));
    }
}
