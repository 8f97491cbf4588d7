//! `apps.kruise.io/v1alpha1`.

pub mod broadcastjob;
pub mod cloneset;
pub mod containerrecreaterequest;
pub mod daemonset;
pub mod imagelistpulljob;
pub mod imagepulljob;
pub mod nodeimage;
pub mod resourcedistribution;
pub mod sidecarset;
pub mod statefulset;
pub mod uniteddeployment;
pub mod workloadspread;
