//! `apps.kruise.io/v1alpha1`.

pub mod containerrecreaterequest;
pub mod imagelistpulljob;
pub mod imagepulljob;
pub mod nodeimage;
