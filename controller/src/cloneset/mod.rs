//! CloneSet (apps.kruise.io/v1alpha1): interchangeable pods with in-place
//! update, partitioned rollouts, chosen-pod deletion and lifecycle hooks.
//! [`numbers`] and [`plan`] decide (pure), [`newpod`] shapes pods,
//! [`status`] reports, [`controller`] does the I/O. Revisions, pod facts
//! and in-place update come from [`crate::workload`].

pub mod controller;
pub mod newpod;
pub mod numbers;
pub mod plan;
pub mod predownload;
pub mod status;
