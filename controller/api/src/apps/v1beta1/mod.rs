//! `apps.kruise.io/v1beta1`.

pub mod sidecarset;
pub mod statefulset;
