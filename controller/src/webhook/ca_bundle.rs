//! Writing the webhook CA into Keelson's webhook configurations: every
//! webhook in them that calls Keelson's webhook Service gets `caBundle` =
//! the CA, so the API server trusts the self-made serving certificate.
//! Webhooks calling anything else are left alone. Conditional writes
//! (resourceVersion); a conflict is retried on the next round.
//!
//! During a rotation the bundle carries the new CA *and* the old one
//! ([`Retention`]): a replica still serving the old certificate keeps
//! being trusted while it switches, and no replica switches before the
//! bundle carries the CA of its new certificate ([`super::tls`]). Every
//! replica computes the same bundle from the Secret and what the bundle
//! already holds, so two replicas never write back and forth.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use kube::Client;
use kube::api::{Api, PostParams};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::Digest as _;

/// Keelson's webhook configurations (deploy/webhooks.yaml).
pub const MUTATING: &str = "keelson-mutating-webhook-configuration";
pub const VALIDATING: &str = "keelson-validating-webhook-configuration";

/// Sets `ca` on a client config that calls `namespace/service`; whether it
/// changed.
pub fn inject(config: &mut WebhookClientConfig, service: &str, namespace: &str, ca: &[u8]) -> bool {
    inject_with(config, service, namespace, &mut |_| ca.to_vec())
}

/// Sets `desired(current bundle)` on a client config that calls
/// `namespace/service`; whether it changed ([`same_bundle`] counts as
/// unchanged).
fn inject_with(
    config: &mut WebhookClientConfig,
    service: &str,
    namespace: &str,
    desired: &mut (dyn FnMut(Option<&[u8]>) -> Vec<u8> + Send),
) -> bool {
    let ours = config
        .service
        .as_ref()
        .is_some_and(|s| s.name == service && s.namespace == namespace);
    if !ours {
        return false;
    }
    let current = config.ca_bundle.as_ref().map(|b| b.0.as_slice());
    let want = desired(current);
    if current.is_some_and(|c| same_bundle(c, &want)) {
        return false;
    }
    config.ca_bundle = Some(ByteString(want));
    true
}

/// The certificates of a PEM bundle (blocks that do not parse are
/// skipped: the API server skips them too).
pub fn certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// A certificate's SHA-256 fingerprint.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(der).into()
}

/// Whether two bundles hold the same certificates (in any order), or are
/// the same bytes.
pub fn same_bundle(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    let set = |p: &[u8]| {
        certificates(p)
            .iter()
            .map(|c| fingerprint(c))
            .collect::<std::collections::BTreeSet<_>>()
    };
    let sa = set(a);
    !sa.is_empty() && sa == set(b)
}

/// Whether `bundle` holds every certificate of `required`.
pub fn contains_all(bundle: &[u8], required: &[CertificateDer<'_>]) -> bool {
    let have: Vec<[u8; 32]> = certificates(bundle)
        .iter()
        .map(|c| fingerprint(c))
        .collect();
    required.iter().all(|r| have.contains(&fingerprint(r)))
}

/// One certificate as PEM.
pub fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Which CAs stay in a bundle besides the required ones: a CA this
/// replica has needed (served, or found in the Secret) or first found in
/// a bundle less than `keep_for` ago, and not expired. A replica that
/// (re)starts mid-rotation keeps the CA it finds for `keep_for` too, so
/// it never drops one another replica may still serve.
#[derive(Debug)]
pub struct Retention {
    keep_for: Duration,
    /// CA fingerprint → when it was last needed (or first seen). Grows by
    /// one entry per CA this process meets: a handful per year.
    needed: HashMap<[u8; 32], Instant>,
}

impl Retention {
    pub fn new(keep_for: Duration) -> Self {
        Self {
            keep_for,
            needed: HashMap::new(),
        }
    }

    /// The bundle to write over `existing`: `required` first, then the
    /// certificates of `existing` still retained at `now` (wall clock
    /// `wall`, for expiry), as PEM.
    pub fn bundle(
        &mut self,
        existing: Option<&[u8]>,
        required: &[CertificateDer<'_>],
        now: Instant,
        wall: k8s_openapi::jiff::Timestamp,
    ) -> Vec<u8> {
        let mut out = String::new();
        let mut written: Vec<[u8; 32]> = vec![];
        for r in required {
            let fp = fingerprint(r);
            self.needed.insert(fp, now);
            if !written.contains(&fp) {
                written.push(fp);
                out.push_str(&pem(r));
            }
        }
        for c in existing.map(certificates).unwrap_or_default() {
            let fp = fingerprint(&c);
            if written.contains(&fp) {
                continue;
            }
            let since = *self.needed.entry(fp).or_insert(now);
            let expired = super::certs::validity_der(&c)
                .map(|v| v.not_after <= wall)
                .unwrap_or(false);
            if now.saturating_duration_since(since) < self.keep_for && !expired {
                written.push(fp);
                out.push_str(&pem(&c));
            }
        }
        out.into_bytes()
    }
}

/// The CA as the caBundle carries it (base64 of the PEM, once serialised).
pub fn describe(ca: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca);
    format!("{}…", &b64[..b64.len().min(16)])
}

/// One round over both configurations and the CRDs, setting `ca` as is;
/// how many were updated. A missing configuration is not an error
/// (nothing to inject into).
pub async fn sync(
    client: &Client,
    service: &str,
    namespace: &str,
    ca: &[u8],
) -> Result<usize, kube::Error> {
    let updated = round(client, service, namespace, true, &mut |_| ca.to_vec()).await?;
    if updated > 0 {
        tracing::info!(configurations = updated, ca = %describe(ca), "webhook caBundle written");
    }
    Ok(updated)
}

/// One round writing, wherever Keelson's Service is called, the bundle
/// `retention` makes of `required` (the Secret's CA and the one served)
/// and what is there; how many objects were updated. Once it returns Ok,
/// every webhook of ours carries `required`.
pub async fn sync_bundle(
    client: &Client,
    service: &str,
    namespace: &str,
    required: &[CertificateDer<'_>],
    retention: &mut Retention,
) -> Result<usize, kube::Error> {
    let wall = k8s_openapi::jiff::Timestamp::now();
    let updated = round(client, service, namespace, true, &mut |existing| {
        retention.bundle(existing, required, Instant::now(), wall)
    })
    .await?;
    if updated > 0 {
        let fps: Vec<String> = required.iter().map(|c| short(c)).collect();
        tracing::info!(objects = updated, required = ?fps, "webhook caBundle written");
    }
    Ok(updated)
}

/// How many objects with webhooks of ours lack some of `required` (read
/// only: for bundles someone else injects, e.g. cert-manager's).
pub async fn missing(
    client: &Client,
    service: &str,
    namespace: &str,
    required: &[CertificateDer<'_>],
) -> Result<usize, kube::Error> {
    round(client, service, namespace, false, &mut |existing| {
        match existing {
            Some(b) if contains_all(b, required) => b.to_vec(),
            // Anything different from what is there: counted, not written.
            _ => Vec::new(),
        }
    })
    .await
}

/// A certificate's fingerprint, shortened for logs.
pub fn short(der: &[u8]) -> String {
    fingerprint(der)[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Applies `desired` to every client config of ours in both
/// configurations and the shipped CRDs' conversion webhooks; how many
/// objects changed (written when `write`).
async fn round(
    client: &Client,
    service: &str,
    namespace: &str,
    write: bool,
    desired: &mut (dyn FnMut(Option<&[u8]>) -> Vec<u8> + Send),
) -> Result<usize, kube::Error> {
    let mut updated = 0;
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(mut c) = mutating.get_opt(MUTATING).await? {
        let mut changed = false;
        for w in c.webhooks.iter_mut().flatten() {
            changed |= inject_with(&mut w.client_config, service, namespace, desired);
        }
        if changed {
            if write {
                mutating
                    .replace(MUTATING, &PostParams::default(), &c)
                    .await?;
            }
            updated += 1;
        }
    }
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(mut c) = validating.get_opt(VALIDATING).await? {
        let mut changed = false;
        for w in c.webhooks.iter_mut().flatten() {
            changed |= inject_with(&mut w.client_config, service, namespace, desired);
        }
        if changed {
            if write {
                validating
                    .replace(VALIDATING, &PostParams::default(), &c)
                    .await?;
            }
            updated += 1;
        }
    }
    updated += sync_conversions(client, service, namespace, write, desired).await?;
    Ok(updated)
}

/// The CRDs Keelson ships with a conversion webhook calling
/// `namespace/service` get the bundle too; how many changed.
async fn sync_conversions(
    client: &Client,
    service: &str,
    namespace: &str,
    write: bool,
    desired: &mut (dyn FnMut(Option<&[u8]>) -> Vec<u8> + Send),
) -> Result<usize, kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut updated = 0;
    for shipped in keelson_api::crds() {
        if shipped
            .spec
            .conversion
            .as_ref()
            .is_none_or(|c| c.webhook.is_none())
        {
            continue;
        }
        let name = shipped.metadata.name.clone().unwrap_or_default();
        let Some(mut crd) = api.get_opt(&name).await? else {
            continue;
        };
        let Some(cfg) = crd
            .spec
            .conversion
            .as_mut()
            .and_then(|c| c.webhook.as_mut())
            .and_then(|w| w.client_config.as_mut())
        else {
            continue;
        };
        let ours = cfg
            .service
            .as_ref()
            .is_some_and(|s| s.name == service && s.namespace == namespace);
        if !ours {
            continue;
        }
        let current = cfg.ca_bundle.as_ref().map(|b| b.0.as_slice());
        let want = desired(current);
        if current.is_some_and(|c| same_bundle(c, &want)) {
            continue;
        }
        cfg.ca_bundle = Some(ByteString(want));
        if write {
            api.replace(&name, &PostParams::default(), &crd).await?;
        }
        updated += 1;
    }
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::certs;

    fn ca() -> CertificateDer<'static> {
        let made = certs::generate(&["x".into()]).unwrap();
        certificates(made.ca_cert.as_bytes()).remove(0)
    }

    fn fps(bundle: &[u8]) -> Vec<[u8; 32]> {
        certificates(bundle)
            .iter()
            .map(|c| fingerprint(c))
            .collect()
    }

    #[test]
    fn a_rotation_keeps_the_old_ca_beside_the_new_until_it_is_no_longer_needed() {
        let (old, new) = (ca(), ca());
        let wall = k8s_openapi::jiff::Timestamp::now();
        let t0 = Instant::now();
        let keep = Duration::from_secs(600);
        let mut r = Retention::new(keep);
        // Serving the old one: the bundle is exactly it.
        let b0 = r.bundle(None, std::slice::from_ref(&old), t0, wall);
        assert_eq!(fps(&b0), vec![fingerprint(&old)]);
        // Mid-rotation both are required: new first, then old, once each.
        let b1 = r.bundle(Some(&b0), &[new.clone(), old.clone()], t0, wall);
        assert_eq!(fps(&b1), vec![fingerprint(&new), fingerprint(&old)]);
        // Switched: only the new one required; the old one stays while
        // it was needed less than `keep` ago...
        let t1 = t0 + Duration::from_secs(599);
        let b2 = r.bundle(Some(&b1), std::slice::from_ref(&new), t1, wall);
        assert!(same_bundle(&b1, &b2));
        // ... and goes after.
        let t2 = t0 + Duration::from_secs(601);
        let b3 = r.bundle(Some(&b2), std::slice::from_ref(&new), t2, wall);
        assert_eq!(fps(&b3), vec![fingerprint(&new)]);
    }

    #[test]
    fn a_replica_that_starts_mid_rotation_keeps_a_ca_it_finds_for_a_while() {
        let (old, new) = (ca(), ca());
        let wall = k8s_openapi::jiff::Timestamp::now();
        let existing = format!("{}{}", pem(&new), pem(&old)).into_bytes();
        let t0 = Instant::now();
        let mut r = Retention::new(Duration::from_secs(600));
        // It never served `old` but another replica may still: kept.
        let b = r.bundle(Some(&existing), std::slice::from_ref(&new), t0, wall);
        assert!(same_bundle(&b, &existing));
        // Two such replicas agree: neither would rewrite the other's.
        let mut other = Retention::new(Duration::from_secs(600));
        let b2 = other.bundle(Some(&b), std::slice::from_ref(&new), t0, wall);
        assert!(same_bundle(&b, &b2));
        let later = t0 + Duration::from_secs(601);
        assert_eq!(
            fps(&r.bundle(Some(&b), std::slice::from_ref(&new), later, wall)),
            vec![fingerprint(&new)]
        );
    }

    #[test]
    fn expired_cas_and_garbage_leave_the_bundle() {
        use k8s_openapi::jiff::ToSpan as _;
        let new = ca();
        let now = k8s_openapi::jiff::Timestamp::now();
        let gone = certs::generate_valid(&["x".into()], now - 3.hours(), Duration::from_secs(3600))
            .unwrap();
        let existing = format!("{}not a certificate\n", gone.ca_cert).into_bytes();
        let mut r = Retention::new(Duration::from_secs(600));
        let b = r.bundle(
            Some(&existing),
            std::slice::from_ref(&new),
            Instant::now(),
            now,
        );
        assert_eq!(fps(&b), vec![fingerprint(&new)]);
    }

    #[test]
    fn bundles_compare_by_their_certificates() {
        let (a, b) = (ca(), ca());
        let ab = format!("{}{}", pem(&a), pem(&b));
        let ba = format!("{}{}", pem(&b), pem(&a));
        assert!(same_bundle(ab.as_bytes(), ba.as_bytes()));
        assert!(!same_bundle(ab.as_bytes(), pem(&a).as_bytes()));
        // Not PEM: only equal bytes are the same.
        assert!(same_bundle(b"CA PEM", b"CA PEM"));
        assert!(!same_bundle(b"CA PEM", b"other"));
        assert!(contains_all(ab.as_bytes(), std::slice::from_ref(&b)));
        assert!(!contains_all(pem(&a).as_bytes(), std::slice::from_ref(&b)));
        // The PEM written parses back to the same certificate.
        assert_eq!(certificates(pem(&a).as_bytes()), vec![a]);
    }

    #[test]
    fn the_bundle_goes_only_into_webhooks_calling_our_service() {
        let mut ours = WebhookClientConfig {
            service: Some(
                k8s_openapi::api::admissionregistration::v1::ServiceReference {
                    name: "keelson-webhook".into(),
                    namespace: "keelson-system".into(),
                    ..Default::default()
                },
            ),
            ..Default::default()
        };
        let mut theirs = WebhookClientConfig {
            url: Some("https://example.com".into()),
            ..Default::default()
        };
        assert!(inject(&mut ours, "keelson-webhook", "keelson-system", b"A"));
        assert!(!inject(
            &mut ours,
            "keelson-webhook",
            "keelson-system",
            b"A"
        ));
        assert!(!inject(
            &mut theirs,
            "keelson-webhook",
            "keelson-system",
            b"A"
        ));
        assert_eq!(theirs.ca_bundle, None);
        assert_eq!(ours.ca_bundle, Some(ByteString(b"A".to_vec())));
    }
}
