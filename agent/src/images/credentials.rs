//! Credentials for one pull, in kubelet's order: the request's pull
//! secrets, then exec credential provider plugins (earlier providers
//! first), then anonymous (the caller's last resort).
//!
//! Plugin responses are cached per provider under the response's
//! `cacheKeyType` (Image: registry + repository; Registry: host[:port];
//! Global) until `cacheDuration` (absent → the provider's
//! `defaultCacheDuration`; `0` → not cached) runs out — in memory only, as
//! kubelet keeps them: credentials never reach the disk through the cache,
//! and an agent restart costs one plugin run per image. (Earlier versions
//! kept the cache in sled; that table is dropped when the agent opens.)
//! At most [`CACHE_LIMIT`] entries; expired ones go first. Concurrent
//! lookups that would run the same plugin for the same image run it once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::OnceCell;

use super::provider::{self, CacheKeyType, Provider, Response};
use super::secrets::{Credential, Keyring};
use crate::store::{Store, StoreError};

/// Most cached plugin responses kept.
pub const CACHE_LIMIT: usize = 10_000;

/// The sled table earlier versions cached responses in.
const LEGACY_CACHE_TABLE: &str = "images.credential-cache";

/// Where a credential came from (for status messages; never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    PullSecret,
    Provider(String),
}

/// The credentials to try for an image, best first, and what went wrong
/// on the way (plugin errors, without secret material).
#[derive(Debug, Default)]
pub struct Lookup {
    pub candidates: Vec<(Source, Credential)>,
    pub errors: Vec<String>,
}

#[derive(Clone)]
struct Cached {
    expires_unix_ms: u64,
    cache_key_type: CacheKeyType,
    auth: Vec<(String, String, String)>,
}

type Flight = Arc<OnceCell<Result<Response, String>>>;

/// Provider plugins with their cache.
pub struct Credentials {
    providers: Vec<Provider>,
    timeout: Duration,
    cache: Mutex<HashMap<String, Cached>>,
    flights: Mutex<HashMap<String, Flight>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Credentials {
    /// `providers` in config order; each plugin run is bounded by `timeout`.
    pub fn new(
        providers: Vec<Provider>,
        timeout: Duration,
        store: &Store,
    ) -> Result<Self, StoreError> {
        if store.drop_table(LEGACY_CACHE_TABLE)? {
            tracing::info!(
                table = LEGACY_CACHE_TABLE,
                "dropped the on-disk credential cache of an earlier version"
            );
        }
        Ok(Self {
            providers,
            timeout,
            cache: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
        })
    }

    /// Everything to try for `image` (a full reference).
    pub async fn lookup(&self, image: &str, secrets: &Keyring) -> Lookup {
        let mut out = Lookup::default();
        for c in secrets.lookup(image) {
            out.candidates.push((Source::PullSecret, c.clone()));
        }
        for p in self.providers.iter().filter(|p| p.matches(image)) {
            match self.provide(p, image).await {
                Ok(creds) => out.candidates.extend(
                    creds
                        .into_iter()
                        .map(|c| (Source::Provider(p.name.clone()), c)),
                ),
                Err(e) => out.errors.push(e),
            }
        }
        out
    }

    /// Credentials from one provider: from the cache, or from one shared
    /// plugin run.
    async fn provide(&self, p: &Provider, image: &str) -> Result<Vec<Credential>, String> {
        if let Some(hit) = self.cached(p, image) {
            return Ok(hit);
        }
        let key = format!("{}\u{0}{}", p.name, provider::strip_tag(image));
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            flights.entry(key.clone()).or_default().clone()
        };
        let result = flight
            .get_or_init(|| async {
                let r = provider::run(p, image, self.timeout)
                    .await
                    .map_err(|e| e.to_string());
                if let Ok(resp) = &r {
                    self.remember(p, image, resp);
                }
                r
            })
            .await
            .clone();
        self.flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        let resp = result?;
        Ok(resp.lookup(image).into_iter().cloned().collect())
    }

    fn cached(&self, p: &Provider, image: &str) -> Option<Vec<Credential>> {
        let now = now_ms();
        for kind in [
            CacheKeyType::Image,
            CacheKeyType::Registry,
            CacheKeyType::Global,
        ] {
            let key = format!("{}/{}", p.name, provider::cache_key(kind, image));
            let entry = self.cache().get(&key).cloned();
            if let Some(entry) = entry
                && entry.cache_key_type == kind
                && entry.expires_unix_ms > now
            {
                let resp = Response {
                    cache_key_type: kind,
                    cache_duration: None,
                    auth: entry
                        .auth
                        .into_iter()
                        .map(|(k, username, password)| (k, Credential { username, password }))
                        .collect(),
                };
                return Some(resp.lookup(image).into_iter().cloned().collect());
            }
        }
        None
    }

    fn remember(&self, p: &Provider, image: &str, resp: &Response) {
        let ttl = resp.cache_duration.unwrap_or(p.default_cache_duration);
        if ttl.is_zero() {
            return;
        }
        let key = format!(
            "{}/{}",
            p.name,
            provider::cache_key(resp.cache_key_type, image)
        );
        let entry = Cached {
            expires_unix_ms: now_ms() + ttl.as_millis() as u64,
            cache_key_type: resp.cache_key_type,
            auth: resp
                .auth
                .iter()
                .map(|(k, c)| (k.clone(), c.username.clone(), c.password.clone()))
                .collect(),
        };
        let mut cache = self.cache();
        // Expired entries go when the cache is written to; when it is
        // still full, the entry closest to expiry.
        let now = now_ms();
        cache.retain(|_, v| v.expires_unix_ms > now);
        if cache.len() >= CACHE_LIMIT && !cache.contains_key(&key) {
            let soonest = cache
                .iter()
                .min_by_key(|(_, v)| v.expires_unix_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = soonest {
                cache.remove(&k);
            }
        }
        cache.insert(key, entry);
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}
