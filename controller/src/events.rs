//! Kubernetes Events from the reconcilers: best effort, published off the
//! reconcile path so a slow or failing events API never holds it up.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

/// Publishes `reason`/`note` about `reference` (Warning or Normal).
pub fn publish(
    recorder: &Recorder,
    reference: ObjectReference,
    warning: bool,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    let recorder = recorder.clone();
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&ev, &reference).await {
            tracing::debug!(error = %e, "event not recorded");
        }
    });
}
