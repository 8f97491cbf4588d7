//! The test cluster's certificates and kubeconfigs: one CA signs the API
//! server's serving certificate and every client certificate (admin,
//! controller-manager, scheduler, kubelet, the API server's kubelet
//! client), and a key pair signs ServiceAccount tokens.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;

/// A client identity: its certificate and key files.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every file the control plane needs, written under one directory.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
    pub admin: ClientCert,
    pub controller_manager: ClientCert,
    pub scheduler: ClientCert,
    pub kubelet: ClientCert,
    pub apiserver_kubelet_client: ClientCert,
}

impl Pki {
    /// Makes the CA and certificates in `dir`; the API server's serving
    /// certificate names `ips` (besides localhost and the in-cluster
    /// names) and kubelet's client certificate names node `node`.
    pub fn generate(dir: &Path, ips: &[IpAddr], node: &str) -> crate::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "keelson-test-cluster-ca");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let write = |name: &str, text: &str| -> crate::Result<PathBuf> {
            let p = dir.join(name);
            fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            Ok(p)
        };
        let ca_cert_path = write("ca.crt", &ca_cert.pem())?;
        let ca_key_path = write("ca.key", &ca_key.serialize_pem())?;
        let issuer = rcgen::Issuer::new(ca, &ca_key);

        let mut names = vec![
            "kubernetes".to_string(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
            "localhost".into(),
        ];
        names.extend(["127.0.0.1".to_string()]);
        names.extend(ips.iter().map(IpAddr::to_string));
        let mut serving = rcgen::CertificateParams::new(names)?;
        serving
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = rcgen::KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let client = |file: &str, cn: &str, org: Option<&str>| -> crate::Result<ClientCert> {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            if let Some(o) = org {
                p.distinguished_name
                    .push(rcgen::DnType::OrganizationName, o);
            }
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let key = rcgen::KeyPair::generate()?;
            let cert = p.signed_by(&key, &issuer)?;
            Ok(ClientCert {
                cert: write(&format!("{file}.crt"), &cert.pem())?,
                key: write(&format!("{file}.key"), &key.serialize_pem())?,
            })
        };
        let sa = rcgen::KeyPair::generate()?;
        Ok(Self {
            apiserver_cert: write("apiserver.crt", &serving_cert.pem())?,
            apiserver_key: write("apiserver.key", &serving_key.serialize_pem())?,
            sa_key: write("sa.key", &sa.serialize_pem())?,
            sa_pub: write("sa.pub", &sa.public_key_pem())?,
            admin: client("admin", "kubernetes-admin", Some("system:masters"))?,
            controller_manager: client(
                "controller-manager",
                "system:kube-controller-manager",
                None,
            )?,
            scheduler: client("scheduler", "system:kube-scheduler", None)?,
            kubelet: client(
                "kubelet",
                &format!("system:node:{node}"),
                Some("system:nodes"),
            )?,
            // In system:masters, so kubelet's webhook authorizer lets the
            // API server proxy logs, exec and port-forward.
            apiserver_kubelet_client: client(
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                Some("system:masters"),
            )?,
            ca_cert: ca_cert_path,
            ca_key: ca_key_path,
        })
    }
}

/// How a kubeconfig authenticates.
pub enum Credential<'a> {
    Cert(&'a ClientCert),
    Token(&'a str),
}

/// Writes a kubeconfig for `server` with the CA and `credential` embedded.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    credential: Credential<'_>,
) -> crate::Result<()> {
    let b64 = |p: &Path| -> crate::Result<String> {
        let bytes = fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    };
    let user = match credential {
        Credential::Cert(c) => serde_json::json!({
            "client-certificate-data": b64(&c.cert)?,
            "client-key-data": b64(&c.key)?,
        }),
        Credential::Token(t) => serde_json::json!({ "token": t }),
    };
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "keelson-test", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca)?,
        }}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "keelson-test", "context": {"cluster": "keelson-test", "user": "user"}}],
        "current-context": "keelson-test",
    });
    // JSON is YAML: every Kubernetes client reads it.
    fs::write(path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(())
}
