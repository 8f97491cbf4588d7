//! The webhook server's TLS material. By default the controller makes its
//! own: a CA and a serving certificate for the webhook Service's DNS
//! names, kept in a Secret (`keelson-webhook-certs`, with OpenKruise's key
//! names) so every replica serves the same certificate, and the CA is
//! written into the webhook configurations' `caBundle`. Under the
//! `EnableExternalCerts` gate the certificate comes from a directory
//! (`tls.crt`, `tls.key`, as cert-manager mounts them) and the caBundle is
//! left to whoever injects it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Secret keys, as OpenKruise names them.
pub const CA_KEY: &str = "ca-key.pem";
pub const CA_CERT: &str = "ca-cert.pem";
pub const SERVER_KEY: &str = "key.pem";
pub const SERVER_CERT: &str = "cert.pem";
pub const SERVER_KEY_2: &str = "tls.key";
pub const SERVER_CERT_2: &str = "tls.crt";

/// Years a generated certificate is valid.
const VALID_YEARS: i16 = 10;

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

/// A new CA and a serving certificate it signed for `names`.
pub fn generate(names: &[String]) -> Result<Certs, CertError> {
    let year = k8s_openapi::jiff::Zoned::now().year();
    let until = rcgen::date_time_ymd(i32::from(year + VALID_YEARS), 1, 1);
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "keelson-webhook-ca");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_after = until;
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, &ca_key);
    let mut leaf = rcgen::CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
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
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..3 {
        let existing = api.get_opt(name).await?;
        if let Some(certs) = existing.as_ref().and_then(from_secret) {
            return Ok(certs);
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
            Ok(_) => {
                tracing::info!(namespace = %namespace, secret = %name, "webhook certificates generated");
                return Ok(certs);
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

/// A TLS server configuration serving `certs`.
pub fn server_config(certs: &Certs) -> Result<Arc<rustls::ServerConfig>, CertError> {
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
}
