//! PodUnavailableBudget (`policy.kruise.io/v1alpha1`): like a
//! PodDisruptionBudget, but guarding deletion and disruptive in-place
//! updates of pods as well as eviction. The [`controller`] keeps each
//! budget's status (how many of its pods are available, how many more may
//! go); the pod webhook asks the [`guard`] before a guarded pod is deleted,
//! evicted or updated, and the guard takes one allowed disruption per pod
//! it lets through. [`budget`] is the arithmetic, [`availability`] what
//! counts as an available pod, [`finder`] which pods a budget covers.

pub mod availability;
pub mod budget;
pub mod controller;
pub mod finder;
pub mod guard;
