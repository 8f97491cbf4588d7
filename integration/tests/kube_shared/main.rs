//! The end-to-end tests that share one real single-node cluster: each
//! module was a test binary with a cluster of its own. Here the cluster
//! starts once for all of them; a module's tests still run together and
//! never beside another module's (`kube::shared_in`), so what one module
//! does cluster-wide (SidecarSets without a namespace selector, NodeImages,
//! ResourceDistributions to every namespace) cannot reach another's.
//!
//! Tests that break the cluster on purpose (kills, restarts, a webhook
//! down), start it with other options, or count what happens cluster-wide
//! keep binaries of their own.

mod agent;
mod cloneset;
mod cluster;
mod controller;
mod daemonset;
mod node;
mod podunavailablebudget;
mod resourcedistribution;
mod sidecarset;
mod statefulset;
