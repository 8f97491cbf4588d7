//! ResourceDistribution (`apps.kruise.io/v1alpha1`, cluster-scoped, gate
//! `ResourceDistributionGate`): one embedded Secret or ConfigMap copied
//! into a set of namespaces and kept in sync, as OpenKruise v1.9 does it.
//! Which namespaces ([`targets`]), what a copy looks like and when it is
//! rewritten ([`copy`]), the status ([`status`]), the webhook's rules
//! ([`validate`], with Go's value printing in [`gofmt`]), and the
//! reconciler doing the I/O ([`controller`]).

pub mod controller;
pub mod copy;
pub mod gofmt;
pub mod status;
pub mod targets;
pub mod validate;
