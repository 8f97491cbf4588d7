//! What the workload controllers (CloneSet now, Advanced StatefulSet and
//! DaemonSet next) share, each concept in its own module and none knowing
//! a particular workload: template revisions ([`revision`]), the
//! int-or-percent arithmetic ([`percent`]), pod availability and
//! lifecycle states ([`pods`]), and in-place update ([`inplace`]).

pub mod defaults;
pub mod inplace;
pub mod lifecycle;
pub mod percent;
pub mod pods;
pub mod revision;
