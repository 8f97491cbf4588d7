//! Durable node state: the agent's sled database under `--state-dir`.
//!
//! Each feature keeps what must survive an agent restart in a [`Table`] of
//! its own: string keys, JSON values, a bound on the number of entries.
//! Writes are flushed before they return, so anything a caller
//! acknowledged survives a crash of the agent process (sled's flush writes
//! with `sync_file_range`). Surviving a power loss additionally needs sled's
//! periodic fsync, which runs every [`FSYNC_EVERY_MS`] ms: a write
//! acknowledged within that window before a power cut can be lost.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// How often sled fsyncs in the background (power-loss window).
pub const FSYNC_EVERY_MS: u64 = 500;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening state database at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// Another process (another agent on the same state dir) holds it.
    #[error(
        "state database at {path} is in use by another process (another keelson-agent on this --state-dir?); waited 5 s for it"
    )]
    Locked { path: PathBuf },
    #[error("state database: {0}")]
    Db(#[from] sled::Error),
    #[error("table {table} is full ({limit} entries); not storing {key}")]
    Full {
        table: String,
        limit: usize,
        key: String,
    },
    #[error("table {table}, key {key}: stored value is unreadable: {source}")]
    Corrupt {
        table: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("table {table}, key {key}: cannot encode value: {source}")]
    Encode {
        table: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// sled's page cache, in bytes. sled's default is 1 GiB, which a busy
/// agent would grow towards while its pod (or unit) is limited to a few
/// hundred MiB; the agent's state is small (journals of pulls, restarts,
/// sidecar and pod records: kilobytes to a few MiB), so 16 MiB holds all
/// of it hot and bounds the cache's share of the agent's memory.
pub const CACHE_CAPACITY_BYTES: u64 = 16 << 20;

/// Whether `key` can be a caller's identity for a request
/// ([`keyed_id`]): 1 to 253 letters, digits and `-._/:`.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/:".contains(c))
}

/// The journal id of the request a caller submitted under `key`
/// (`<prefix>-k` and 24 hex digits of its SHA-256): the same key always
/// names the same record, so a caller that lost the answer (a crash, a
/// restarted client, another process) finds it again without keeping a
/// map of its own.
pub fn keyed_id(prefix: &str, key: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-k{hex}")
}

/// How the agent opens sled at `path`: the bounded cache, the fsync
/// period.
pub fn sled_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(CACHE_CAPACITY_BYTES)
        .flush_every_ms(Some(FSYNC_EVERY_MS))
}

/// The agent's state database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    flusher: Arc<Flusher>,
}

/// Group commit. Flushes run one at a time on a blocking thread (sled
/// 0.34's `flush_async` runs on its own small thread pool and deadlocks
/// when many flushes wait there at once, seen with concurrent pulls), and
/// a writer whose data a flush started after its write has already made
/// durable does not flush again: N concurrent writers cost about two
/// flushes, not N.
#[derive(Default)]
struct Flusher {
    one_at_a_time: tokio::sync::Mutex<()>,
    /// Flushes started so far (a flush's number is its start count).
    started: AtomicU64,
    /// Number of the last flush that finished.
    finished: AtomicU64,
}

impl Flusher {
    async fn flush(&self, tree: &sled::Tree) -> Result<(), StoreError> {
        // Every flush numbered above this one starts after our write.
        let written_before = self.started.load(Ordering::SeqCst);
        let _turn = self.one_at_a_time.lock().await;
        if self.finished.load(Ordering::SeqCst) > written_before {
            return Ok(());
        }
        let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let tree = tree.clone();
        tokio::task::spawn_blocking(move || tree.flush())
            .await
            .map_err(|e| StoreError::Db(sled::Error::Io(std::io::Error::other(e.to_string()))))??;
        self.finished.store(number, Ordering::SeqCst);
        Ok(())
    }
}

impl Store {
    /// Opens (or creates) the database in `state_dir/state`. While another
    /// holder (a previous agent still exiting, or sled's own flusher thread
    /// winding down) keeps the database locked, retries for up to 5 s.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join("state");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let opened = sled_config(&path).open();
            match opened {
                Ok(db) => {
                    return Ok(Self {
                        db,
                        flusher: Default::default(),
                    });
                }
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::Locked { path });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(source) => return Err(StoreError::Open { path, source }),
            }
        }
    }

    /// Deletes table `name` with everything in it (a table a newer version
    /// no longer keeps) and flushes; whether it existed.
    pub fn drop_table(&self, name: &str) -> Result<bool, StoreError> {
        let existed = self
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == name.as_bytes());
        if existed {
            self.db.drop_tree(name)?;
            self.db.flush()?;
        }
        Ok(existed)
    }

    /// The table `name`, holding at most `limit` entries. Open each name
    /// once: the entry count is kept per opened table.
    pub fn table<V: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Table<V>, StoreError> {
        let tree = self.db.open_tree(name)?;
        Ok(Table {
            flusher: self.flusher.clone(),
            count: AtomicUsize::new(tree.len()),
            tree,
            name: name.to_string(),
            limit,
            _value: PhantomData,
        })
    }
}

/// A bounded map from string keys to `V`, persisted as JSON.
pub struct Table<V> {
    flusher: Arc<Flusher>,
    /// Entries, counted once at opening and then kept up to date (sled's
    /// own `len` walks the whole tree).
    count: AtomicUsize,
    tree: sled::Tree,
    name: String,
    limit: usize,
    _value: PhantomData<fn() -> V>,
}

impl<V: Serialize + DeserializeOwned> Table<V> {
    /// Stores `value` under `key` and flushes. A new key is refused when
    /// the table is full (existing keys can always be updated).
    pub async fn put(&self, key: &str, value: &V) -> Result<(), StoreError> {
        self.put_lazy(key, value)?;
        self.flush().await?;
        Ok(())
    }

    /// Stores `value` under `key` without waiting for the flush: for data
    /// the runtime can tell again after a crash. Reaches disk within
    /// [`FSYNC_EVERY_MS`].
    pub fn put_lazy(&self, key: &str, value: &V) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Encode {
            table: self.name.clone(),
            key: key.to_string(),
            source,
        })?;
        if self.count.load(Ordering::Relaxed) >= self.limit && !self.tree.contains_key(key)? {
            return Err(StoreError::Full {
                table: self.name.clone(),
                limit: self.limit,
                key: key.to_string(),
            });
        }
        if self.tree.insert(key, bytes)?.is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Removes `key` without waiting for the flush (see [`Table::put_lazy`]).
    pub fn remove_lazy(&self, key: &str) -> Result<bool, StoreError> {
        self.forget(key)
    }

    /// Whether `key` is stored (no value decoded; a read error counts as
    /// absent).
    pub fn contains(&self, key: &str) -> bool {
        self.tree.contains_key(key).unwrap_or(false)
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Result<Option<V>, StoreError> {
        self.tree
            .get(key)?
            .map(|bytes| self.decode(key, &bytes))
            .transpose()
    }

    /// Removes `key` and flushes; returns whether it was there.
    pub async fn remove(&self, key: &str) -> Result<bool, StoreError> {
        let had = self.forget(key)?;
        if had {
            self.flush().await?;
        }
        Ok(had)
    }

    /// Every entry, in key order. Unreadable entries come back as errors.
    pub fn entries(&self) -> impl Iterator<Item = Result<(String, V), StoreError>> + '_ {
        self.tree.iter().map(move |item| {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let value = self.decode(&key, &v)?;
            Ok((key, value))
        })
    }

    /// Keeps the entries for which `keep` is true (and drops unreadable
    /// ones); returns how many were removed.
    pub async fn retain(
        &self,
        mut keep: impl FnMut(&str, &V) -> bool,
    ) -> Result<usize, StoreError> {
        let mut doomed = vec![];
        for item in self.tree.iter() {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            match self.decode(&key, &v) {
                Ok(value) if keep(&key, &value) => {}
                Ok(_) => doomed.push(k),
                Err(err) => {
                    tracing::warn!(error = %err, "dropping unreadable state entry");
                    doomed.push(k);
                }
            }
        }
        for k in &doomed {
            self.forget(k)?;
        }
        if !doomed.is_empty() {
            self.flush().await?;
        }
        Ok(doomed.len())
    }

    /// Makes every write so far durable against a process crash.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.flusher.flush(&self.tree).await
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn forget(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        let had = self.tree.remove(key)?.is_some();
        if had {
            let _ = self
                .count
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
        }
        Ok(had)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<V, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
            table: self.name.clone(),
            key: key.to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// sled's own default is 1 GiB (clamped only to a cgroup limit, i.e.
    /// all of the pod's memory).
    #[test]
    fn the_cache_is_bounded() {
        let c = sled_config(Path::new("/nonexistent"));
        assert_eq!(c.cache_capacity, 16 << 20);
        assert!(sled::Config::new().cache_capacity > c.cache_capacity);
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Rec {
        sandbox: String,
        code: i32,
    }

    fn rec(s: &str, code: i32) -> Rec {
        Rec {
            sandbox: s.into(),
            code,
        }
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let t = store.table::<Rec>("stopped", 10).unwrap();
            t.put("c1", &rec("s1", 0)).await.unwrap();
            t.put("c2", &rec("s1", 143)).await.unwrap();
            assert!(t.remove("c2").await.unwrap());
            assert!(!t.remove("c2").await.unwrap());
        }
        let store = Store::open(dir.path()).unwrap();
        let t = store.table::<Rec>("stopped", 10).unwrap();
        assert_eq!(t.get("c1").unwrap(), Some(rec("s1", 0)));
        assert_eq!(t.get("c2").unwrap(), None);
        assert_eq!(t.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_flushes_and_all_survive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let t = Arc::new(store.table::<Rec>("t", 1000).unwrap());
            let writers: Vec<_> = (0..64)
                .map(|i| {
                    let t = t.clone();
                    tokio::spawn(async move { t.put(&format!("k{i}"), &rec("s", i)).await })
                })
                .collect();
            for w in writers {
                w.await.unwrap().unwrap();
            }
            let flushes = store.flusher.started.load(Ordering::SeqCst);
            assert!(flushes < 64, "{flushes} flushes for 64 writers");
            assert_eq!(t.len(), 64);
        }
        let store = Store::open(dir.path()).unwrap();
        let t = store.table::<Rec>("t", 1000).unwrap();
        assert_eq!(t.len(), 64);
        for i in 0..64 {
            assert_eq!(t.get(&format!("k{i}")).unwrap(), Some(rec("s", i)));
        }
    }

    #[tokio::test]
    async fn bounded_but_updates_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = store.table::<Rec>("t", 2).unwrap();
        t.put("a", &rec("s", 1)).await.unwrap();
        t.put("b", &rec("s", 2)).await.unwrap();
        let err = t.put("c", &rec("s", 3)).await.unwrap_err();
        assert!(matches!(err, StoreError::Full { limit: 2, .. }), "{err}");
        t.put("a", &rec("s", 9)).await.unwrap();
        assert_eq!(t.get("a").unwrap().unwrap().code, 9);
    }

    #[tokio::test]
    async fn retain_collects_and_drops_corrupt_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = store.table::<Rec>("t", 10).unwrap();
        t.put("a", &rec("gone", 1)).await.unwrap();
        t.put("b", &rec("live", 2)).await.unwrap();
        t.tree.insert("junk", b"{not json".to_vec()).unwrap();
        assert!(matches!(t.get("junk"), Err(StoreError::Corrupt { .. })));
        assert_eq!(t.entries().filter(|e| e.is_err()).count(), 1);
        let removed = t.retain(|_, v| v.sandbox == "live").await.unwrap();
        assert_eq!(removed, 2);
        let left: Vec<_> = t.entries().map(|e| e.unwrap().0).collect();
        assert_eq!(left, vec!["b".to_string()]);
    }
}
