//! Credentials for one pull, in kubelet's order: the request's pull
//! secrets, then exec credential provider plugins (earlier providers
//! first), then anonymous (the caller's last resort).
//!
//! Plugin responses are cached in sled per provider under the response's
//! `cacheKeyType` (Image: registry + repository; Registry: host[:port];
//! Global) until `cacheDuration` (absent → the provider's
//! `defaultCacheDuration`; `0` → not cached) runs out; entries survive an
//! agent restart. Concurrent lookups that would run the same plugin for
//! the same image run it once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::provider::{self, CacheKeyType, Provider, Response};
use super::secrets::{Credential, Keyring};
use crate::store::{Store, StoreError, Table};

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

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    cache: Table<Cached>,
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
        Ok(Self {
            providers,
            timeout,
            cache: store.table("images.credential-cache", 10_000)?,
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
                    self.remember(p, image, resp).await;
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
            if let Ok(Some(entry)) = self.cache.get(&key)
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

    async fn remember(&self, p: &Provider, image: &str, resp: &Response) {
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
        if let Err(e) = self.cache.put(&key, &entry).await {
            tracing::warn!(provider = %p.name, error = %e, "cannot cache credential provider response");
        }
        // Expired entries go when the cache is written to.
        let now = now_ms();
        let _ = self.cache.retain(|_, v| v.expires_unix_ms > now).await;
    }
}
