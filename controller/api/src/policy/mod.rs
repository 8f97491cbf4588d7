//! Group `policy.kruise.io`.

pub mod v1alpha1;
