//! What the proxy tells about its calls, for metrics kept outside the
//! core: the core calls a [`CallObserver`] and knows nothing of how (or
//! whether) it records.

use std::time::Duration;

/// Told about every call the proxy served and every hook fault.
pub trait CallObserver: Send + Sync {
    /// A call to `method` (its request path, whatever the caller sent)
    /// ended `elapsed` after it arrived.
    fn call(&self, method: &str, elapsed: Duration);
    /// A phase of the hook named `hook` failed or panicked.
    fn hook_fault(&self, hook: &str);
}
