//! The hook interface: how node features look at, hold, answer or rewrite
//! CRI calls without the proxy core knowing what they are for.
//!
//! A hook names the unary methods it wants (full gRPC paths such as
//! `/runtime.v1.RuntimeService/StartContainer`) for the *before* phase
//! (request seen, may pass, delay, rewrite or answer) and for the *after*
//! phase (runtime's reply seen, may keep, replace or append to it). Hooks run
//! in registration order. A hook that fails or panics is skipped: the call
//! goes on as if the hook were not there, and the fault is logged and
//! counted ([`HookSet::faults`]).

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::HeaderMap;

use super::grpc::Status;

/// What a hook's future resolves to.
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, HookError>> + Send + 'a>>;

/// A hook's own failure. The proxy logs it and lets the call through.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The request or reply could not be decoded as the expected message.
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    /// Anything else that went wrong inside the hook.
    #[error("{0}")]
    Internal(String),
}

/// A unary call as the hook sees it.
#[derive(Debug, Clone)]
pub struct Call {
    method: Arc<str>,
    metadata: HeaderMap,
    message: Bytes,
}

impl Call {
    /// A call on `method` (full gRPC path) with its request metadata and the
    /// request message's protobuf bytes.
    pub fn new(method: impl Into<Arc<str>>, metadata: HeaderMap, message: Bytes) -> Self {
        Self {
            method: method.into(),
            metadata,
            message,
        }
    }

    /// Full gRPC path, e.g. `/runtime.v1.RuntimeService/Version`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Request headers (gRPC metadata) as the caller sent them.
    pub fn metadata(&self) -> &HeaderMap {
        &self.metadata
    }

    /// Protobuf bytes of the request message (after earlier hooks' rewrites).
    pub fn message(&self) -> &Bytes {
        &self.message
    }

    /// Decodes the request to look at it. The proxy forwards the original
    /// bytes, so fields the decoded type lacks are not lost.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, HookError> {
        M::decode(self.message.clone()).map_err(|source| HookError::Decode {
            what: "request",
            source,
        })
    }
}

/// What a hook decides before the call reaches the runtime.
#[derive(Debug)]
pub enum Before {
    /// Forward (possibly after the hook has waited).
    Pass,
    /// Forward these protobuf bytes instead of the request.
    Rewrite(Bytes),
    /// Do not call the runtime; answer the caller with this.
    Answer(Reply),
}

/// A reply to the caller: a message (status OK) or an error status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Message(Bytes),
    Status(Status),
}

/// The runtime's answer as after-hooks see it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The gRPC status the runtime returned.
    pub status: Status,
    /// Protobuf bytes of the reply message (`None` on an error status).
    pub message: Option<Bytes>,
}

impl Outcome {
    /// Decodes the reply to look at it (`None` when there is no message).
    pub fn decode<M: prost::Message + Default>(&self) -> Result<Option<M>, HookError> {
        self.message
            .clone()
            .map(M::decode)
            .transpose()
            .map_err(|source| HookError::Decode {
                what: "reply",
                source,
            })
    }
}

/// What a hook decides about the runtime's answer.
#[derive(Debug)]
pub enum After {
    /// Pass the answer on unchanged.
    Keep,
    /// Replace the answer.
    Replace(Reply),
    /// Append encoded fields to the reply message. Protobuf merges appended
    /// fields into the message (last scalar wins, embedded messages merge),
    /// so this changes exactly those fields and keeps every other byte,
    /// including fields this build does not know.
    Append(Bytes),
}

/// Which methods a hook wants, per phase.
#[derive(Debug, Clone, Default)]
pub struct Interest {
    pub before: Vec<&'static str>,
    pub after: Vec<&'static str>,
}

/// A feature plugged into the CRI path.
pub trait Hook: Send + Sync + 'static {
    /// Short name used in logs and fault counts.
    fn name(&self) -> &str;

    /// The methods this hook wants to see, per phase.
    fn interest(&self) -> Interest;

    /// Whether the hook has anything to do right now. A call whose
    /// method's hooks are all disengaged takes the opaque path, exactly as
    /// if no hook were registered for it (nothing buffered or decoded).
    /// Must be quick (an atomic load, say): it runs on every call of the
    /// hook's methods.
    fn engaged(&self) -> bool {
        true
    }

    /// Called before the request is forwarded.
    fn before<'a>(&'a self, _call: &'a Call) -> HookFuture<'a, Before> {
        Box::pin(async { Ok(Before::Pass) })
    }

    /// Whether this hook's after phase needs to see the reply to `call`.
    /// When no after-hook wants it, the reply is relayed as it streams in,
    /// without being buffered (cheaper). Must be quick: it runs on every
    /// call of the hook's methods.
    fn wants_reply(&self, _call: &Call) -> bool {
        true
    }

    /// Called with the runtime's answer before it goes back to the caller.
    fn after<'a>(&'a self, _call: &'a Call, _outcome: &'a Outcome) -> HookFuture<'a, After> {
        Box::pin(async { Ok(After::Keep) })
    }
}

/// The hooks registered for one method.
#[derive(Default, Clone)]
pub struct Chain {
    pub(crate) before: Vec<Arc<dyn Hook>>,
    pub(crate) after: Vec<Arc<dyn Hook>>,
}

impl Chain {
    /// Whether any hook of the chain is engaged ([`Hook::engaged`]).
    pub fn engaged(&self) -> bool {
        self.before.iter().chain(&self.after).any(|h| h.engaged())
    }
}

/// All registered hooks, indexed by method, plus the fault counter.
#[derive(Default)]
pub struct HookSet {
    chains: HashMap<Box<str>, Chain>,
    faults: AtomicU64,
}

impl HookSet {
    /// An empty set: the proxy forwards everything opaquely.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `hook` for the methods it names.
    pub fn register(&mut self, hook: Arc<dyn Hook>) {
        let interest = hook.interest();
        for m in interest.before {
            self.chains
                .entry(m.into())
                .or_default()
                .before
                .push(hook.clone());
        }
        for m in interest.after {
            self.chains
                .entry(m.into())
                .or_default()
                .after
                .push(hook.clone());
        }
    }

    /// The chain for `method`, if any hook wants it and is engaged now.
    pub fn chain(&self, method: &str) -> Option<&Chain> {
        self.chains.get(method).filter(|c| c.engaged())
    }

    /// The methods some hook is registered for (engaged or not).
    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.chains.keys().map(|m| &**m)
    }

    /// Whether no hook is registered at all.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// How many times a hook failed or panicked since start.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    /// Runs one hook phase, turning an error or a panic into `None` (logged
    /// and counted).
    pub(crate) async fn guard<T>(
        &self,
        hook: &dyn Hook,
        phase: &'static str,
        method: &str,
        fut: HookFuture<'_, T>,
        observer: Option<&dyn super::CallObserver>,
    ) -> Option<T> {
        let outcome = AssertUnwindSafe(fut).catch_unwind().await;
        if !matches!(outcome, Ok(Ok(_))) {
            self.faults.fetch_add(1, Ordering::Relaxed);
            if let Some(o) = observer {
                o.hook_fault(hook.name());
            }
        }
        match outcome {
            Ok(Ok(v)) => Some(v),
            Ok(Err(err)) => {
                tracing::warn!(hook = hook.name(), phase, method, error = %err, "hook failed; call passes through unchanged");
                None
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(hook = hook.name(), phase, method, panic = %what, "hook panicked; call passes through unchanged");
                None
            }
        }
    }
}

/// Concatenates a message and appended fields (protobuf merge semantics).
pub fn append_fields(message: &Bytes, extra: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + extra.len());
    out.extend_from_slice(message);
    out.extend_from_slice(extra);
    out.freeze()
}
