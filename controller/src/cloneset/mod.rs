//! CloneSet (apps.kruise.io/v1alpha1): interchangeable pods with in-place
//! update, partitioned rollouts, chosen-pod deletion and lifecycle hooks.
//! [`numbers`], [`plan`] and [`claims`] decide (pure), [`newpod`] shapes pods,
//! [`status`] reports, [`controller`] does the I/O. Revisions, pod facts
//! and in-place update come from [`crate::workload`].

pub mod claims;
pub mod controller;
pub mod newpod;
pub mod numbers;
pub mod plan;
pub mod predownload;
pub mod status;
pub mod vcthash;
