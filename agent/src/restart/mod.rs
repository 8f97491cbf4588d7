//! In-place container restart on the node, with OpenKruise's
//! ContainerRecreateRequest semantics: the request and its status
//! ([`spec`]), the decision without I/O ([`plan`]), what it asks of the
//! runtime ([`runtime`]), the crash-safe per-pod queue that runs it
//! ([`engine`]). Which containers an annotation change must restart is
//! [`crate::envdeps`] (the pod book reads it too).

pub mod engine;
pub mod plan;
pub mod runtime;
pub mod spec;
