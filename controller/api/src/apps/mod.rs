//! Group `apps.kruise.io`.

pub mod v1alpha1;
