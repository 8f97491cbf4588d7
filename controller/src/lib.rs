//! Keelson's cluster controller, as a library: the CRD generator and the
//! reconcilers (pure: state in → decision out; the binary does the I/O).

pub mod api_call;
pub mod cli;
pub mod cloneset;
pub mod crds;
pub mod crr;
pub mod daemonset;
pub mod events;
pub mod follow;
pub mod gates;
pub mod imagelistpulljob;
pub mod imagepulljob;
pub mod leader;
pub mod metrics;
pub mod nodeimage;
pub mod podreadiness;
pub mod podunavailablebudget;
pub mod resourcedistribution;
pub mod run;
pub mod selector;
pub mod sidecarset;
pub mod statefulset;
#[cfg(test)]
mod testing;
pub mod webhook;
pub mod workload;
