//! Advanced StatefulSet (`apps.kruise.io/v1beta1` `StatefulSet`): pods
//! `<name>-<ordinal>` with stable identity and claims, ordered or parallel
//! scaling, a custom first ordinal and reserved ordinals, and rolling
//! updates with partition, `maxUnavailable`, in-place updates and
//! lifecycle hooks — on the workload machinery CloneSet uses
//! ([`crate::workload`]). [`ordinals`] says which ordinals exist,
//! [`newpod`] what a pod looks like, [`plan`] what one reconcile does,
//! [`predownload`] which new images are pulled ahead of an in-place
//! update, [`status`] what it reports, [`controller`] carries it out.

pub mod controller;
pub mod newpod;
pub mod ordinals;
pub mod plan;
pub mod predownload;
pub mod status;
