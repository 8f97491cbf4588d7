//! In-place container restart on the node, with OpenKruise's
//! ContainerRecreateRequest semantics: the request and its status
//! ([`spec`]), the decision without I/O ([`plan`]), what it asks of the
//! runtime ([`runtime`]), the crash-safe per-pod queue that runs it
//! ([`engine`]), and which containers an annotation change must restart
//! ([`envdeps`]).

pub mod engine;
pub mod envdeps;
pub mod plan;
pub mod runtime;
pub mod spec;
