//! `policy.kruise.io/v1alpha1`.

pub mod podunavailablebudget;

/// Label on a protected object (a Namespace, a CustomResourceDefinition,
/// a workload such as a Deployment or CloneSet, ...) that makes the
/// webhook refuse its deletion; the value is [`DELETION_PROTECTION_ALWAYS`]
/// or [`DELETION_PROTECTION_CASCADING`].
pub const LABEL_DELETION_PROTECTION: &str = "policy.kruise.io/delete-protection";
/// Deletion protection: refuse deletion for as long as the label is there.
pub const DELETION_PROTECTION_ALWAYS: &str = "Always";
/// Deletion protection: refuse deletion while something still lives under
/// the object (active pods in a namespace, custom resources of a CRD,
/// replicas above 0 for a workload).
pub const DELETION_PROTECTION_CASCADING: &str = "Cascading";
