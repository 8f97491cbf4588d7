//! The webhook server's AdmissionReview parsing and the reviews that need
//! no API server (defaulting and validation of CloneSet, Advanced
//! StatefulSet and DaemonSet, SidecarSet, ImagePullJob), plus the
//! conversion webhook's ConversionReview: whatever the body, an answer,
//! never a panic.
#![no_main]

use keelson_controller::gates::FeatureGates;
use keelson_controller::webhook::{self, cloneset, convert, daemonset, imagepulljob, sidecarset, statefulset};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = convert::answer(data);
    let Ok(req) = webhook::parse_review(data) else {
        return;
    };
    let gates = FeatureGates::parse("AllAlpha=true").expect("gates");
    let _ = cloneset::mutate_review(&req, &gates);
    let _ = statefulset::mutate_review(&req, &gates);
    let _ = statefulset::validate_review(&req);
    let _ = daemonset::mutate_review(&req);
    let _ = daemonset::validate_review(&req);
    let _ = sidecarset::mutate_review(&req);
    let _ = imagepulljob::mutate_review(&req, false);
    let _ = imagepulljob::review(&req, &gates, false);
    let _ = imagepulljob::review(&req, &gates, true);
});
