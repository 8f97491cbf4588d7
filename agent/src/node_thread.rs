//! The node thread: a second single-threaded runtime for everything that
//! is not a CRI call in flight (the features' background tasks, the admin
//! API, an in-process cluster side).
//!
//! The proxy keeps its own thread to itself, so a burst of background work
//! (a resync decoding thousands of containers, a cluster-side watch event,
//! a sled flush) never queues ahead of kubelet's calls, and the agent uses
//! the second core without paying a cross-CPU wake-up on every call: a
//! call starts and finishes on the proxy thread. Hooks run on the proxy
//! thread; what they hand to the background goes through channels and
//! shared state, as before.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The node thread; dropping it stops the thread's runtime, which
/// cancels every task still on it.
pub struct NodeThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeThread {
    /// Starts the thread (named `keelson-node`) and its runtime.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("keelson-node".into())
            .spawn(move || {
                // A current-thread runtime drives its tasks only inside
                // block_on: this is where they run until told to stop.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `future` on the node thread; what it spawns stays there.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }
}

impl Drop for NodeThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn work_runs_on_its_own_thread_and_stops_with_it() {
        let node = NodeThread::start().unwrap();
        let here = std::thread::current().id();
        let (name, there) = node
            .spawn(async {
                let t = std::thread::current();
                (t.name().map(str::to_string), t.id())
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("keelson-node"));
        assert_ne!(there, here);

        // What it spawns stays there, and ends when the thread stops.
        let (tx, rx) = oneshot::channel::<()>();
        let spawned = node
            .spawn(async move {
                tokio::spawn(async move {
                    let _keep = tx;
                    std::future::pending::<()>().await;
                });
                std::thread::current().id()
            })
            .await
            .unwrap();
        assert_eq!(spawned, there);
        drop(node);
        assert!(
            rx.await.is_err(),
            "the pending task was dropped with its runtime"
        );
    }
}
