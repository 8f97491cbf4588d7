//! The CRI proxy core: serves the CRI on the agent's socket and forwards
//! every call to the runtime, opaque by default, through hooks when a
//! feature registered for the method.
//!
//! The core knows HTTP/2 streams, gRPC framing and hooks; it knows nothing
//! of what any feature does.

pub mod authority;
pub mod grpc;
pub mod hook;
pub mod methods;
pub mod observe;
pub mod proxy;
pub mod relay;
pub mod server;
mod slot;
pub mod upstream;

pub use hook::{
    After, Before, Call, Hook, HookError, HookFuture, HookSet, Interest, Outcome, Reply,
};
pub use observe::CallObserver;
pub use proxy::Proxy;
pub use slot::AlreadyInstalled;
pub use upstream::Upstream;

/// HTTP/2 settings used on both sides. Windows are large enough that a big
/// list reply (thousands of containers) needs no WINDOW_UPDATE round trip.
pub(crate) mod window {
    pub const STREAM: u32 = 4 << 20;
    pub const CONNECTION: u32 = 16 << 20;
    pub const FRAME: u32 = 1 << 20;
    pub const HEADER_LIST: u32 = 1 << 20;
    pub const SEND_BUFFER: usize = 4 << 20;
    pub const MAX_STREAMS: u32 = 1024;
}
