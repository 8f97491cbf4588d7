//! `apps.kruise.io/v1alpha1`.

pub mod containerrecreaterequest;
