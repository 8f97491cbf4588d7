//! What the workload controllers (CloneSet now, Advanced StatefulSet and
//! DaemonSet next) share, each concept in its own module and none knowing
//! a particular workload: template revisions ([`revision`]), the
//! int-or-percent arithmetic ([`percent`]), pod availability and
//! lifecycle states ([`pods`]), in-place update ([`inplace`]), and the
//! priority/scatter update order ([`order`]).

pub mod defaults;
pub mod inplace;
pub mod lifecycle;
pub mod order;
pub mod percent;
pub mod pods;
pub mod revision;
