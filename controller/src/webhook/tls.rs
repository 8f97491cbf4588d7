//! Keeping the served certificate current: the webhook server presents
//! whatever a [`Resolver`] holds, and a [`Keeper`] re-reads the source
//! every [`POLL`] (one GET of the Secret, or a read of the mounted
//! `tls.crt`/`tls.key`/`ca.crt`; polled rather than watched: one small
//! object, and kubelet's atomic symlink swap of a Secret volume needs no
//! special casing) and swaps in what changed, in this order:
//!
//! 1. the CA bundle of every webhook calling us gets the new CA next to
//!    the one served (self-made: written by us; external: waited for
//!    from whoever injects it, at most [`EXTERNAL_WAIT`]);
//! 2. [`PROPAGATION`] later (the API server's webhook and CRD informers
//!    see the new bundle), the new certificate is served;
//! 3. the old CA leaves the bundle [`RETAIN`] after the last replica
//!    stopped needing it ([`ca_bundle::Retention`]).
//!
//! A certificate whose CA the bundle already holds (a renewal by the same
//! issuer) is served at once. Self-made certificates due for renewal are
//! rotated through the Secret ([`certs::rotate_secret`]), so every replica
//! picks them up the same way.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;

use super::ca_bundle::{self, Retention};
use super::certs::{self, CertError, Certs, Resolver};

/// How often the Secret (or the directory) is read.
pub const POLL: Duration = Duration::from_secs(5);

/// How long after the bundle carries a new CA before a certificate it
/// signed is served.
pub const PROPAGATION: Duration = Duration::from_secs(5);

/// How long a CA no longer in use stays in the bundle.
pub const RETAIN: Duration = Duration::from_secs(10 * 60);

/// How often the bundle is checked (and repaired) with nothing changing.
pub const REINJECT: Duration = Duration::from_secs(60);

/// How long an external certificate waits for its CA to be injected
/// before it is served anyway (whoever injects may do it some other way).
pub const EXTERNAL_WAIT: Duration = Duration::from_secs(120);

/// Where the certificates come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Self-made, kept in Secret `namespace/name`; the CA is injected here.
    Secret { namespace: String, name: String },
    /// Mounted by cert-manager (`EnableExternalCerts`); the CA is injected
    /// by someone else.
    Dir(PathBuf),
}

/// What the keeper needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub source: Source,
    /// The webhook Service (`namespace/service`) whose callers get the CA.
    pub service: String,
    pub namespace: String,
    /// The names a self-made certificate is made for.
    pub names: Vec<String>,
}

/// A certificate read but not served yet, waiting for its CA in the
/// bundle.
struct Pending {
    certs: Certs,
    key: Arc<CertifiedKey>,
    since: Instant,
    /// When the bundle was first seen carrying its CA.
    bundled: Option<Instant>,
}

/// Keeps the served certificate and the CA bundle current.
pub struct Keeper {
    client: Client,
    settings: Settings,
    resolver: Arc<Resolver>,
    serving: Certs,
    pending: Option<Pending>,
    retention: Retention,
    injected: Option<Instant>,
    /// The last certificate found unusable, so it is reported once.
    refused: Option<Certs>,
}

/// The certificates of a PEM text.
fn cas(pem: &str) -> Vec<CertificateDer<'static>> {
    ca_bundle::certificates(pem.as_bytes())
}

/// A serving certificate's fingerprint, shortened for logs.
fn describe(certs: &Certs) -> String {
    cas(&certs.cert)
        .first()
        .map(|c| ca_bundle::short(c))
        .unwrap_or_default()
}

impl Keeper {
    /// Reads the certificates (retrying with backoff until they can be
    /// had), injects the CA once, and returns the keeper with the TLS
    /// configuration that serves them.
    pub async fn start(
        client: Client,
        settings: Settings,
    ) -> Result<(Self, Arc<rustls::ServerConfig>), CertError> {
        let mut backoff = Duration::from_millis(500);
        let (serving, key) = loop {
            match load(&client, &settings).await {
                Ok((c, _)) => match certs::certified_key(&c) {
                    Ok(k) => break (c, k),
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "webhook certificates not available yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        };
        let resolver = Arc::new(Resolver::new(key));
        let config = certs::resolver_config(resolver.clone())?;
        let mut keeper = Self {
            client,
            settings,
            resolver,
            serving,
            pending: None,
            retention: Retention::new(RETAIN),
            injected: None,
            refused: None,
        };
        tracing::info!(serving = %describe(&keeper.serving), "webhook certificate loaded");
        if keeper.inject().await.is_some_and(|n| n > 0) && keeper.self_made() {
            // A bundle just written: let the API server see it before
            // it calls a certificate only the new bundle vouches for.
            tokio::time::sleep(PROPAGATION).await;
        }
        Ok((keeper, config))
    }

    /// Rounds every [`POLL`], until dropped.
    pub async fn run(mut self) {
        loop {
            tokio::time::sleep(POLL).await;
            self.round().await;
        }
    }

    /// Whether the CA bundle is ours to write.
    fn self_made(&self) -> bool {
        matches!(self.settings.source, Source::Secret { .. })
    }

    /// The CAs every webhook of ours must carry: the source's newest and
    /// the one served.
    fn required(&self) -> Vec<CertificateDer<'static>> {
        let mut out = self
            .pending
            .as_ref()
            .map(|p| cas(&p.certs.ca_cert))
            .unwrap_or_default();
        out.extend(cas(&self.serving.ca_cert));
        out
    }

    /// Writes the bundle (self-made: how many objects were written) or
    /// checks it (external: how many lack a required CA); None if that
    /// failed. Self-made, Some means every webhook of ours now carries the
    /// required CAs.
    async fn inject(&mut self) -> Option<usize> {
        let required = self.required();
        if required.is_empty() {
            return Some(0);
        }
        let s = &self.settings;
        let got = if self.self_made() {
            ca_bundle::sync_bundle(
                &self.client,
                &s.service,
                &s.namespace,
                &required,
                &mut self.retention,
            )
            .await
        } else {
            ca_bundle::missing(&self.client, &s.service, &s.namespace, &required).await
        };
        match got {
            Ok(n) => {
                self.injected = Some(Instant::now());
                Some(n)
            }
            Err(e) => {
                tracing::warn!(error = %e, "writing the webhook caBundle failed; retrying");
                None
            }
        }
    }

    /// One round: read, rotate if due, inject, switch when the bundle
    /// allows.
    pub async fn round(&mut self) {
        let (read, secret) = match load(&self.client, &self.settings).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "reading the webhook certificates failed; serving the current ones");
                return;
            }
        };
        let read = match secret {
            Some(secret) if self.rotation_due(&read) => {
                match certs::rotate_secret(&self.client, &secret, &self.settings.names).await {
                    Ok(Some(made)) => made,
                    // Changed meanwhile: the next round reads what is there.
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "rotating the webhook certificates failed; retrying");
                        return;
                    }
                }
            }
            _ => read,
        };
        self.consider(read);
        let due = self.pending.is_some() || self.injected.is_none_or(|t| t.elapsed() >= REINJECT);
        if !due {
            return;
        }
        let covered = match self.inject().await {
            Some(_) if self.self_made() => true,
            Some(missing) => missing == 0,
            None => false,
        };
        self.maybe_switch(covered);
    }

    /// Whether self-made certificates are due for renewal; unreadable ones
    /// are (the serving side reports them).
    fn rotation_due(&self, read: &Certs) -> bool {
        match read.rotation_due(Timestamp::now()) {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "the webhook certificate's validity is unreadable; rotating it");
                true
            }
        }
    }

    /// Takes note of certificates read: nothing new, a new pending one,
    /// or an unusable one (reported once, the current one kept).
    fn consider(&mut self, read: Certs) {
        if read == self.serving {
            self.pending = None;
            return;
        }
        if self.pending.as_ref().is_some_and(|p| p.certs == read) {
            return;
        }
        match certs::certified_key(&read) {
            Ok(key) => {
                tracing::info!(serving = %describe(&self.serving), next = %describe(&read), "new webhook certificate read; injecting its CA before serving it");
                self.pending = Some(Pending {
                    certs: read,
                    key,
                    since: Instant::now(),
                    bundled: None,
                });
                self.refused = None;
            }
            Err(e) => {
                if self.refused.as_ref() != Some(&read) {
                    tracing::error!(error = %e, "the new webhook certificate is unusable; serving the current one");
                    self.refused = Some(read);
                }
            }
        }
    }

    /// Serves the pending certificate once the bundle has carried its CA
    /// for [`PROPAGATION`] (at once if the CA is the one served already).
    fn maybe_switch(&mut self, covered: bool) {
        let self_made = self.self_made();
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        let same_ca =
            ca_bundle::same_bundle(p.certs.ca_cert.as_bytes(), self.serving.ca_cert.as_bytes());
        let now = Instant::now();
        if covered {
            p.bundled.get_or_insert(now);
        }
        let ready = same_ca
            || p.bundled
                .is_some_and(|t| now.saturating_duration_since(t) >= PROPAGATION);
        let gave_up = !self_made && now.saturating_duration_since(p.since) >= EXTERNAL_WAIT;
        if !(ready || gave_up) {
            return;
        }
        if gave_up && !ready {
            tracing::warn!(
                waited_s = EXTERNAL_WAIT.as_secs(),
                "the webhook configurations do not carry the new certificate's CA; serving it anyway"
            );
        }
        let Some(p) = self.pending.take() else {
            return;
        };
        self.resolver.set(p.key);
        tracing::info!(previous = %describe(&self.serving), serving = %describe(&p.certs), "webhook certificate switched");
        self.serving = p.certs;
        // The next round writes the bundle without the CA no longer
        // needed by this replica (once [`RETAIN`] has passed).
        self.injected = None;
    }
}

/// The certificates as the source has them now (and the Secret, for a
/// conditional rotation).
async fn load(client: &Client, s: &Settings) -> Result<(Certs, Option<Secret>), CertError> {
    match &s.source {
        Source::Dir(dir) => Ok((certs::read_dir(dir)?, None)),
        Source::Secret { namespace, name } => {
            let (c, secret) = certs::load_secret(client, namespace, name, &s.names).await?;
            Ok((c, Some(secret)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::mock_client;

    fn names() -> Vec<String> {
        certs::dns_names("keelson-webhook", "keelson-system")
    }

    /// The certificate a TLS handshake with `addr` is answered with.
    async fn served(addr: std::net::SocketAddr, trusted: &[&Certs]) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        for c in trusted {
            for der in cas(&c.ca_cert) {
                roots.add(der).unwrap();
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name =
            rustls_pki_types::ServerName::try_from("keelson-webhook.keelson-system.svc").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    #[tokio::test]
    async fn the_next_handshake_gets_the_certificate_set_last() {
        let (a, b) = (
            certs::generate(&names()).unwrap(),
            certs::generate(&names()).unwrap(),
        );
        let resolver = Arc::new(Resolver::new(certs::certified_key(&a).unwrap()));
        let acceptor =
            tokio_rustls::TlsAcceptor::from(certs::resolver_config(resolver.clone()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        assert_eq!(served(addr, &[&a, &b]).await, cas(&a.cert)[0].to_vec());
        resolver.set(certs::certified_key(&b).unwrap());
        assert_eq!(served(addr, &[&a, &b]).await, cas(&b.cert)[0].to_vec());
    }

    fn keeper(serving: &Certs, source: Source) -> Keeper {
        let (client, _handle) = mock_client();
        Keeper {
            client,
            settings: Settings {
                source,
                service: "keelson-webhook".into(),
                namespace: "keelson-system".into(),
                names: names(),
            },
            resolver: Arc::new(Resolver::new(certs::certified_key(serving).unwrap())),
            serving: serving.clone(),
            pending: None,
            retention: Retention::new(RETAIN),
            injected: None,
            refused: None,
        }
    }

    fn secret() -> Source {
        Source::Secret {
            namespace: "keelson-system".into(),
            name: "keelson-webhook-certs".into(),
        }
    }

    fn serves(k: &Keeper, c: &Certs) -> bool {
        k.resolver.current().cert[0] == cas(&c.cert)[0]
    }

    #[tokio::test]
    async fn a_new_ca_is_served_only_after_the_bundle_has_carried_it_for_a_while() {
        let (a, b) = (
            certs::generate(&names()).unwrap(),
            certs::generate(&names()).unwrap(),
        );
        let mut k = keeper(&a, secret());
        k.consider(b.clone());
        // Both CAs must be in the bundle while switching.
        assert_eq!(k.required(), [cas(&b.ca_cert), cas(&a.ca_cert)].concat());
        k.maybe_switch(false);
        assert!(serves(&k, &a), "not before the bundle carries the new CA");
        k.maybe_switch(true);
        assert!(serves(&k, &a), "not before the API server can have seen it");
        let p = k.pending.as_mut().unwrap();
        p.bundled = Some(Instant::now() - PROPAGATION);
        k.maybe_switch(true);
        assert!(serves(&k, &b));
        assert_eq!(k.serving, b);
        assert!(k.pending.is_none());
        // Reading the same again changes nothing.
        k.consider(b.clone());
        assert!(k.pending.is_none());
        assert_eq!(k.required(), cas(&b.ca_cert));
    }

    #[tokio::test]
    async fn a_renewal_by_the_same_ca_is_served_at_once_and_a_broken_one_never() {
        let (a, other) = (
            certs::generate(&names()).unwrap(),
            certs::generate(&names()).unwrap(),
        );
        let renewed = Certs {
            ca_cert: a.ca_cert.clone(),
            ..other.clone()
        };
        let mut k = keeper(&a, secret());
        k.consider(renewed.clone());
        k.maybe_switch(false);
        assert!(serves(&k, &renewed));
        // A key that does not match its certificate: kept out, reported once.
        let broken = Certs {
            key: a.key.clone(),
            ..other
        };
        k.consider(broken.clone());
        assert!(k.pending.is_none());
        assert_eq!(k.refused, Some(broken));
        assert!(serves(&k, &renewed));
    }

    #[tokio::test]
    async fn an_external_certificate_waits_for_its_ca_only_so_long() {
        let (a, b) = (
            certs::generate(&names()).unwrap(),
            certs::generate(&names()).unwrap(),
        );
        let mut k = keeper(&a, Source::Dir("/nonexistent".into()));
        k.consider(b.clone());
        k.maybe_switch(false);
        assert!(serves(&k, &a));
        k.pending.as_mut().unwrap().since = Instant::now() - EXTERNAL_WAIT;
        k.maybe_switch(false);
        assert!(serves(&k, &b));
    }
}
