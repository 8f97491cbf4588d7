//! The webhook server's TLS material. By default the controller makes its
//! own: a CA and a serving certificate for the webhook Service's DNS
//! names, kept in a Secret (`keelson-webhook-certs`, with OpenKruise's key
//! names) so every replica serves the same certificate, and the CA is
//! written into the webhook configurations' `caBundle`. Under the
//! `EnableExternalCerts` gate the certificate comes from a directory
//! (`tls.crt`, `tls.key`, as cert-manager mounts them) and the caBundle is
//! left to whoever injects it.
//!
//! Self-made certificates live a year ([`LIFETIME`]) and are made anew
//! once a third of their life is left ([`rotation_due`]); [`rotate_secret`]
//! writes the new ones conditionally (resourceVersion), so of two replicas
//! deciding at once only one rotates and the other picks up its result.
//! How the served certificate follows the Secret is [`super::tls`]'s.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Secret keys, as OpenKruise names them.
pub const CA_KEY: &str = "ca-key.pem";
pub const CA_CERT: &str = "ca-cert.pem";
pub const SERVER_KEY: &str = "key.pem";
pub const SERVER_CERT: &str = "cert.pem";
pub const SERVER_KEY_2: &str = "tls.key";
pub const SERVER_CERT_2: &str = "tls.crt";

/// How long a generated CA and serving certificate are valid.
pub const LIFETIME: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// How far back a generated certificate's validity starts, for API
/// servers whose clock is behind ours.
const BACKDATE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Why TLS material could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: no usable PEM ({detail})")]
    Pem { what: String, detail: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the certificate Secret: {0}")]
    Api(#[from] kube::Error),
    #[error("{what}: not a readable X.509 certificate ({detail})")]
    Der { what: String, detail: String },
}

/// A serving certificate and key, and the CA that signed it (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certs {
    pub ca_cert: String,
    /// Empty for external certificates.
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

/// The names the webhook Service answers to.
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// A new CA and a serving certificate it signed for `names`, both valid
/// for [`LIFETIME`] from now.
pub fn generate(names: &[String]) -> Result<Certs, CertError> {
    generate_valid(names, k8s_openapi::jiff::Timestamp::now(), LIFETIME)
}

/// A new CA and a serving certificate it signed for `names`, valid from a
/// little before `now` for `lifetime`.
pub fn generate_valid(
    names: &[String],
    now: Timestamp,
    lifetime: std::time::Duration,
) -> Result<Certs, CertError> {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let secs = u64::try_from(now.as_second()).unwrap_or(0);
    let from = epoch + std::time::Duration::from_secs(secs) - BACKDATE;
    let until = epoch + std::time::Duration::from_secs(secs) + lifetime;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Each CA's own name (as kubeadm's self-signed `name@time`): during a
    // rotation the bundle carries two CAs, and a verifier that picks the
    // issuer by subject (OpenSSL does) must not take the other one.
    let ca_key = rcgen::KeyPair::generate()?;
    let key_id = super::ca_bundle::short(ca_key.public_key_raw());
    ca.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("keelson-webhook-ca@{}-{key_id}", now.as_second()),
    );
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = from;
    ca.not_after = until;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, &ca_key);
    let mut leaf = rcgen::CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    // Names its CA's key, too, for verifiers choosing among several.
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = from;
    leaf.not_after = until;
    let key = rcgen::KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Certs {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

/// Whether a certificate valid over `v` is to be replaced at `now`: once
/// less than a third of its lifetime is left (cert-manager's default
/// renewal point), or when it is not valid at all.
pub fn rotation_due(v: &Validity, now: Timestamp) -> bool {
    let life = v.not_after.as_second() - v.not_before.as_second();
    if life <= 0 {
        return true;
    }
    now.as_second() >= v.not_after.as_second() - life / 3
}

/// The validity of the first certificate in `pem` (`what` names it in
/// errors).
pub fn validity(pem: &str, what: &str) -> Result<Validity, CertError> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| CertError::Pem {
            what: what.into(),
            detail: "no CERTIFICATE block".into(),
        })?
        .map_err(|e| CertError::Pem {
            what: what.into(),
            detail: e.to_string(),
        })?;
    der::validity(der.as_ref()).map_err(|detail| CertError::Der {
        what: what.into(),
        detail,
    })
}

/// The validity of a DER-encoded certificate.
pub fn validity_der(der: &[u8]) -> Result<Validity, CertError> {
    der::validity(der).map_err(|detail| CertError::Der {
        what: "a certificate".into(),
        detail,
    })
}

impl Certs {
    /// Whether the serving certificate or the CA is due for replacement at
    /// `now` ([`rotation_due`]).
    pub fn rotation_due(&self, now: Timestamp) -> Result<bool, CertError> {
        let cert = validity(&self.cert, "the serving certificate")?;
        let ca = validity(&self.ca_cert, "the CA certificate")?;
        Ok(rotation_due(&cert, now) || rotation_due(&ca, now))
    }
}

/// Just enough DER to find an X.509 certificate's validity (RFC 5280
/// §4.1: `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0]
/// version OPTIONAL, serialNumber, signature, issuer, validity, … } … }`).
mod der {
    use k8s_openapi::jiff::Timestamp;

    use super::Validity;

    /// One element: (tag, contents, what follows it).
    fn element(buf: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
        let (&tag, rest) = buf.split_first().ok_or("truncated element")?;
        let (&first, rest) = rest.split_first().ok_or("truncated length")?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(format!("unsupported length form {first:#x}"));
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return Err("element longer than its container".into());
        }
        Ok((tag, &rest[..len], &rest[len..]))
    }

    fn expect<'a>(buf: &'a [u8], want: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
        let (tag, body, rest) = element(buf)?;
        if tag != want {
            return Err(format!("{what}: tag {tag:#x}, expected {want:#x}"));
        }
        Ok((body, rest))
    }

    /// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime
    /// (`YYYYMMDDHHMMSSZ`).
    fn time(tag: u8, body: &[u8]) -> Result<Timestamp, String> {
        let text = std::str::from_utf8(body).map_err(|_| "time is not ASCII".to_string())?;
        let digits = text
            .strip_suffix('Z')
            .ok_or_else(|| format!("time {text:?} is not in UTC"))?;
        let (year, rest) = match (tag, digits.len()) {
            (0x17, 12) => {
                let yy: i16 = digits[..2]
                    .parse()
                    .map_err(|_| format!("bad time {text:?}"))?;
                (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
            }
            (0x18, 14) => (
                digits[..4]
                    .parse()
                    .map_err(|_| format!("bad time {text:?}"))?,
                &digits[4..],
            ),
            _ => return Err(format!("unsupported time {text:?} (tag {tag:#x})")),
        };
        let part = |i: usize| -> Result<i8, String> {
            rest.get(i..i + 2)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad time {text:?}"))
        };
        let at = k8s_openapi::jiff::civil::DateTime::new(
            year,
            part(0)?,
            part(2)?,
            part(4)?,
            part(6)?,
            part(8)?,
            0,
        )
        .map_err(|e| format!("bad time {text:?}: {e}"))?;
        at.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|e| format!("bad time {text:?}: {e}"))
    }

    pub(super) fn validity(cert: &[u8]) -> Result<Validity, String> {
        let (certificate, _) = expect(cert, 0x30, "Certificate")?;
        let (tbs, _) = expect(certificate, 0x30, "tbsCertificate")?;
        let (mut tag, _, mut rest) = element(tbs)?;
        if tag == 0xa0 {
            // [0] version: the serial number follows.
            (tag, _, rest) = element(rest)?;
        }
        if tag != 0x02 {
            return Err(format!("serialNumber: tag {tag:#x}"));
        }
        let (_, rest) = expect(rest, 0x30, "signature")?;
        let (_, rest) = expect(rest, 0x30, "issuer")?;
        let (validity, _) = expect(rest, 0x30, "validity")?;
        let (t1, b1, rest) = element(validity)?;
        let (t2, b2, _) = element(rest)?;
        Ok(Validity {
            not_before: time(t1, b1)?,
            not_after: time(t2, b2)?,
        })
    }
}

/// The certificates in a Secret written by [`to_secret_data`], if complete.
pub fn from_secret(secret: &Secret) -> Option<Certs> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .filter(|s| !s.trim().is_empty())
    };
    Some(Certs {
        ca_cert: text(CA_CERT)?,
        ca_key: text(CA_KEY)?,
        cert: text(SERVER_CERT)?,
        key: text(SERVER_KEY)?,
    })
}

/// The Secret data for `certs`.
pub fn to_secret_data(certs: &Certs) -> BTreeMap<String, ByteString> {
    let b = |s: &str| ByteString(s.as_bytes().to_vec());
    BTreeMap::from([
        (CA_CERT.into(), b(&certs.ca_cert)),
        (CA_KEY.into(), b(&certs.ca_key)),
        (SERVER_CERT.into(), b(&certs.cert)),
        (SERVER_CERT_2.into(), b(&certs.cert)),
        (SERVER_KEY.into(), b(&certs.key)),
        (SERVER_KEY_2.into(), b(&certs.key)),
    ])
}

/// The certificates in Secret `namespace/name`, made (and stored) if the
/// Secret is missing or incomplete. Replicas racing to make them agree on
/// whichever was stored first.
pub async fn ensure_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    names: &[String],
) -> Result<Certs, CertError> {
    Ok(load_secret(client, namespace, name, names).await?.0)
}

/// [`ensure_secret`], with the Secret as stored (for a conditional
/// [`rotate_secret`]).
pub async fn load_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    names: &[String],
) -> Result<(Certs, Secret), CertError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..3 {
        let existing = api.get_opt(name).await?;
        if let Some((certs, secret)) = existing
            .as_ref()
            .and_then(|s| Some((from_secret(s)?, s.clone())))
        {
            return Ok((certs, secret));
        }
        let certs = generate(names)?;
        let result = match existing {
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        namespace: Some(namespace.into()),
                        ..Default::default()
                    },
                    data: Some(to_secret_data(&certs)),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &secret).await
            }
            Some(mut secret) => {
                secret.data = Some(to_secret_data(&certs));
                api.replace(name, &PostParams::default(), &secret).await
            }
        };
        match result {
            Ok(stored) => {
                tracing::info!(namespace = %namespace, secret = %name, "webhook certificates generated");
                return Ok((certs, stored));
            }
            // Another replica stored its own first: use that one.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CertError::Pem {
        what: format!("Secret {namespace}/{name}"),
        detail: "kept changing while being written".into(),
    })
}

/// External certificates from `dir` (`tls.crt`, `tls.key`; `ca.crt` if
/// present).
pub fn read_dir(dir: &Path) -> Result<Certs, CertError> {
    let read = |f: &str| {
        let path = dir.join(f);
        std::fs::read_to_string(&path).map_err(|source| CertError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    Ok(Certs {
        ca_cert: read("ca.crt").unwrap_or_default(),
        ca_key: String::new(),
        cert: read(SERVER_CERT_2)?,
        key: read(SERVER_KEY_2)?,
    })
}

/// The serving certificate chain and key of `certs`, checked to belong
/// together, as rustls serves them.
pub fn certified_key(certs: &Certs) -> Result<Arc<CertifiedKey>, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(certs.cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Pem {
            what: "the serving certificate".into(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::Pem {
            what: "the serving certificate".into(),
            detail: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(certs.key.as_bytes()).map_err(|e| CertError::Pem {
        what: "the serving key".into(),
        detail: e.to_string(),
    })?;
    Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider())?))
}

/// The crypto provider the webhook server uses.
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A TLS server configuration serving whatever `resolver` holds.
pub fn resolver_config(resolver: Arc<Resolver>) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS server configuration serving `certs` (and nothing else, ever).
pub fn server_config(certs: &Certs) -> Result<Arc<rustls::ServerConfig>, CertError> {
    resolver_config(Arc::new(Resolver::new(certified_key(certs)?)))
}

/// The certificate the webhook server presents: one at a time, replaced
/// whole ([`Resolver::set`]) while connections keep being accepted; a
/// handshake already under way finishes with the one it started with.
#[derive(Debug)]
pub struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Resolver {
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(key),
        }
    }

    /// Serve `key` from the next handshake on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        // A panic elsewhere while holding the lock cannot leave a
        // half-written Arc: take the value regardless.
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
    }

    /// What is served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Replaces the certificates in Secret `secret` (as read, with its
/// resourceVersion) with new ones for `names`: Ok(Some(new)) if written,
/// Ok(None) if the Secret changed since it was read (another replica
/// rotated, or someone replaced it: read it again).
pub async fn rotate_secret(
    client: &Client,
    secret: &Secret,
    names: &[String],
) -> Result<Option<Certs>, CertError> {
    let (Some(namespace), Some(name)) = (
        secret.metadata.namespace.as_deref(),
        secret.metadata.name.as_deref(),
    ) else {
        return Err(CertError::Pem {
            what: "the certificate Secret".into(),
            detail: "has no namespace or name".into(),
        });
    };
    let certs = generate(names)?;
    let mut next = secret.clone();
    let data = next.data.get_or_insert_with(BTreeMap::new);
    data.extend(to_secret_data(&certs));
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    // `replace` sends the resourceVersion read: a Secret changed since is
    // a 409, not overwritten.
    match api.replace(name, &PostParams::default(), &next).await {
        Ok(_) => {
            tracing::info!(namespace = %namespace, secret = %name, "webhook certificates rotated");
            Ok(Some(certs))
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_round_trip_through_the_secret_and_serve() {
        let names = dns_names("keelson-webhook", "keelson-system");
        assert_eq!(names[2], "keelson-webhook.keelson-system.svc");
        let certs = generate(&names).unwrap();
        assert!(certs.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.key.contains("PRIVATE KEY"));
        let secret = Secret {
            data: Some(to_secret_data(&certs)),
            ..Default::default()
        };
        assert_eq!(from_secret(&secret), Some(certs.clone()));
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data[SERVER_CERT_2], data[SERVER_CERT]);
        server_config(&certs).unwrap();
        // A Secret missing a key is incomplete.
        let mut partial = secret.clone();
        partial.data.as_mut().unwrap().remove(CA_KEY);
        assert_eq!(from_secret(&partial), None);
    }

    #[test]
    fn external_certificates_are_read_from_a_directory_with_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let certs = generate(&["x".into()]).unwrap();
        let err = read_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("tls.crt"), "{err}");
        std::fs::write(dir.join("tls.crt"), &certs.cert).unwrap();
        std::fs::write(dir.join("tls.key"), &certs.key).unwrap();
        let read = read_dir(&dir).unwrap();
        assert_eq!(
            (read.cert.as_str(), read.ca_cert.as_str()),
            (certs.cert.as_str(), "")
        );
        server_config(&read).unwrap();
        std::fs::write(dir.join("tls.key"), "not a key").unwrap();
        let err = server_config(&read_dir(&dir).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("serving key"), "{err}");
    }

    #[test]
    fn generated_certificates_live_a_year_and_are_rotated_with_a_third_left() {
        use k8s_openapi::jiff::ToSpan as _;
        let now = Timestamp::now();
        let certs = generate(&["x".into()]).unwrap();
        let leaf = validity(&certs.cert, "leaf").unwrap();
        let ca = validity(&certs.ca_cert, "ca").unwrap();
        assert_eq!(leaf, ca);
        // Backdated an hour, valid for LIFETIME (to the second).
        assert!((leaf.not_before.as_second() - (now.as_second() - 3600)).abs() <= 2);
        let life = leaf.not_after.as_second() - leaf.not_before.as_second();
        assert_eq!(life, LIFETIME.as_secs() as i64 + 3600);
        assert!(!certs.rotation_due(now).unwrap());
        // Due once a third of the lifetime is left, not a second before.
        let due_at = Timestamp::from_second(leaf.not_after.as_second() - life / 3).unwrap();
        assert!(!rotation_due(&leaf, due_at - 1.second()));
        assert!(rotation_due(&leaf, due_at));
        assert!(certs.rotation_due(due_at).unwrap());
        // A certificate issued long ago for a short life is due now.
        let old = generate_valid(
            &["x".into()],
            now - 2.hours(),
            std::time::Duration::from_secs(3 * 3600),
        )
        .unwrap();
        assert!(old.rotation_due(now).unwrap());
        // Inverted or empty validity is always due.
        let broken = Validity {
            not_before: leaf.not_after,
            not_after: leaf.not_before,
        };
        assert!(rotation_due(&broken, now));
    }

    #[test]
    fn validity_is_read_from_utc_and_generalized_times_and_garbage_is_an_error() {
        // A certificate expiring after 2049 carries GeneralizedTime.
        let far = generate_valid(
            &["x".into()],
            Timestamp::from_second(2_500_000_000).unwrap(),
            std::time::Duration::from_secs(24 * 3600),
        )
        .unwrap();
        let v = validity(&far.cert, "far").unwrap();
        assert_eq!(v.not_after.as_second(), 2_500_000_000 + 24 * 3600);
        assert_eq!(v.not_before.as_second(), 2_500_000_000 - 3600);
        let err = validity("nothing here", "the thing")
            .unwrap_err()
            .to_string();
        assert!(err.contains("the thing"), "{err}");
        let err = validity_der(&[0x30, 0x82, 0xff]).unwrap_err().to_string();
        assert!(err.contains("not a readable X.509"), "{err}");
    }

    #[test]
    fn every_ca_has_a_name_of_its_own_and_its_certificates_name_its_key() {
        // Two CAs share a bundle during a rotation; OpenSSL looks an
        // issuer up by subject, so equal subjects would make it check a
        // certificate against the wrong one.
        let subject = |c: &Certs| {
            let pem = &c.ca_cert;
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            let text = String::from_utf8_lossy(der.as_ref()).into_owned();
            let at = text.find("keelson-webhook-ca@").unwrap();
            text[at..at + 40].to_string()
        };
        let (a, b) = (
            generate(&["x".into()]).unwrap(),
            generate(&["x".into()]).unwrap(),
        );
        assert_ne!(subject(&a), subject(&b));
        // The authority key identifier extension (2.5.29.35) is in the leaf.
        let leaf = CertificateDer::from_pem_slice(a.cert.as_bytes()).unwrap();
        let aki_oid = [0x06, 0x03, 0x55, 0x1d, 0x23];
        assert!(leaf.as_ref().windows(5).any(|w| w == aki_oid));
    }

    #[test]
    fn a_certificate_and_a_key_that_do_not_belong_together_are_refused() {
        let a = generate(&["x".into()]).unwrap();
        let b = generate(&["x".into()]).unwrap();
        let mixed = Certs {
            key: b.key.clone(),
            ..a.clone()
        };
        let err = certified_key(&mixed).unwrap_err().to_string();
        assert!(err.contains("TLS configuration"), "{err}");
        certified_key(&a).unwrap();
    }
}
