//! What the workload controllers (CloneSet, Advanced StatefulSet and
//! DaemonSet) share, each concept in its own module and none knowing
//! a particular workload: template revisions ([`revision`]), the
//! int-or-percent arithmetic ([`percent`]), pod availability and
//! lifecycle states ([`pods`]), in-place update ([`inplace`]) and the
//! refresh of updates under way ([`refresh`]), the priority/scatter
//! update order ([`order`]) and image pre-download ([`predownload`]).

pub mod apply;
pub mod claims;
pub mod defaults;
pub mod inplace;
pub mod lifecycle;
pub mod order;
pub mod percent;
pub mod pods;
pub mod predownload;
pub mod quantity;
pub mod refresh;
pub mod revision;
