//! The admin API's change feed: a generation number that moves whenever a
//! pull's or a restart's status or the pod book changes, and a boot id
//! that is new each time the agent starts. A client long-polling
//! `GET /v1/changes` (the cluster side in the DaemonSet pod) learns from
//! the first "something changed: read again", and from the second "the
//! agent restarted: what it kept in memory from you (pod readiness) is
//! gone, send it again".

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::images::pulls::PullEngine;
use crate::pods::PodBook;
use crate::restart::engine::RestartEngine;

/// Longest a `GET /v1/changes` is held.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Where the feed stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Changes {
    /// New each time the agent starts.
    pub boot: String,
    /// Moves on every change (starts at 0 each boot).
    pub generation: u64,
}

/// The feed; dropping it stops its task.
pub struct Feed {
    boot: String,
    generation: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Feed {
    /// Follows the engines' and the book's changes.
    pub fn start(pulls: &PullEngine, restarts: &RestartEngine, book: Arc<PodBook>) -> Self {
        let (tx, rx) = watch::channel(0u64);
        let (mut pulls, mut restarts) = (pulls.changes(), restarts.changes());
        let task = tokio::spawn(async move {
            loop {
                let changed = book.changed();
                tokio::pin!(changed);
                // Armed before waiting, so a change between two rounds
                // is not missed.
                changed.as_mut().enable();
                tokio::select! {
                    r = pulls.changed() => if r.is_err() { return },
                    r = restarts.changed() => if r.is_err() { return },
                    () = changed => {}
                }
                tx.send_modify(|g| *g += 1);
            }
        });
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            boot: format!("{:x}-{now:x}", std::process::id()),
            generation: rx,
            task,
        }
    }

    /// Where the feed stands now.
    pub fn now(&self) -> Changes {
        Changes {
            boot: self.boot.clone(),
            generation: *self.generation.borrow(),
        }
    }

    /// Answers at once when the feed is elsewhere than `seen` (another
    /// generation, or another boot); otherwise when it moves, or after
    /// `wait` (at most [`MAX_WAIT`]).
    pub async fn wait(&self, seen: Option<&Changes>, wait: Duration) -> Changes {
        let mut rx = self.generation.clone();
        let current = *rx.borrow_and_update();
        let unchanged = seen.is_some_and(|s| s.boot == self.boot && s.generation == current);
        if unchanged {
            let _ = tokio::time::timeout(wait.min(MAX_WAIT), rx.changed()).await;
        }
        self.now()
    }
}
