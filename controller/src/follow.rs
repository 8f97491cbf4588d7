//! Objects kept in memory by a watch: a reflector store fed by a watcher
//! task (with backoff, for good), for controllers and webhooks that would
//! otherwise LIST from the API server on every reconcile or request.

use futures_util::StreamExt;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

/// A background watch, stopped when this is dropped (with the task that
/// holds it, e.g. when leadership is lost).
pub struct Watch(tokio::task::JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A store of every object `api` lists, kept current while the returned
/// [`Watch`] lives. `what` names the objects in the warning a failed watch
/// logs before it retries. Readers wait for the first full list with
/// [`Store::wait_until_ready`].
pub fn follow<K>(api: Api<K>, what: &'static str) -> (Store<K>, Watch)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let task = tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        futures_util::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                tracing::warn!(objects = what, error = %e, "watch failed; retrying");
            }
        }
    });
    (reader, Watch(task))
}
