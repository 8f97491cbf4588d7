//! The Kubernetes Container Runtime Interface (`runtime.v1`) as Rust types.
//!
//! The definition lives in `proto/runtime/v1/api.proto` and matches the
//! cri-api release named in this crate's README. Messages are prost structs;
//! `runtime_service_client` / `image_service_client` and the matching
//! `*_server` modules are tonic's generated clients and servers.

/// Generated code for package `runtime.v1`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    rustdoc::all,
    non_camel_case_types
)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

pub use v1::*;

include!(concat!(env!("OUT_DIR"), "/methods.rs"));

/// gRPC service names as they appear in request paths (`/<service>/<method>`).
pub mod service {
    /// `runtime.v1.RuntimeService`
    pub const RUNTIME: &str = "runtime.v1.RuntimeService";
    /// `runtime.v1.ImageService`
    pub const IMAGE: &str = "runtime.v1.ImageService";
}
