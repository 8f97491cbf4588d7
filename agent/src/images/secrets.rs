//! Pull secrets (`kubernetes.io/dockerconfigjson` content) as kubelet reads
//! them: `auths` entries with `auth` (base64 `user:password`) or
//! `username`/`password`, keys normalised (scheme dropped, a trailing `/`
//! and a `/v1` or `/v2` path removed) and tried most specific first.

use std::collections::HashMap;

use base64::Engine;
use serde::Deserialize;

use super::matching;

/// A username and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a pull secret is unusable. Never quotes secret material.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("pull secret is not valid dockerconfigjson: {0}")]
    Json(String),
    #[error("pull secret entry {key:?}: `auth` is not base64 of user:password")]
    BadAuth { key: String },
}

#[derive(Deserialize)]
struct DockerConfigJson {
    auths: HashMap<String, Entry>,
}

#[derive(Deserialize, Default)]
struct Entry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The credentials of one or more pull secrets, ready for lookups.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    /// (normalised key, credential), most specific key first.
    entries: Vec<(String, Credential)>,
}

impl Keyring {
    /// Adds the entries of one `.dockerconfigjson` document.
    pub fn add_dockerconfigjson(&mut self, bytes: &[u8]) -> Result<(), SecretError> {
        let doc: DockerConfigJson = serde_json::from_slice(bytes).map_err(|e| {
            // serde's message can quote input; keep only where it failed.
            SecretError::Json(format!("line {} column {}", e.line(), e.column()))
        })?;
        for (key, entry) in doc.auths {
            let (mut username, mut password) = (
                entry.username.unwrap_or_default(),
                entry.password.unwrap_or_default(),
            );
            if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| SecretError::BadAuth { key: key.clone() })?;
                let (u, p) = decoded
                    .split_once(':')
                    .ok_or_else(|| SecretError::BadAuth { key: key.clone() })?;
                username = u.to_string();
                password = p.to_string();
            }
            self.entries
                .push((normalise_key(&key), Credential { username, password }));
        }
        // Reverse lexical order puts longer keys before their prefixes and
        // literal labels before `*`, as kubelet does.
        self.entries.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(())
    }

    /// Credentials whose key matches `image` (a full reference with its
    /// registry host), best first.
    pub fn lookup(&self, image: &str) -> Vec<&Credential> {
        let image = normalise_image(image);
        let mut found: Vec<&Credential> = self
            .entries
            .iter()
            .filter(|(k, _)| matching::matches(k, &image))
            .map(|(_, c)| c)
            .collect();
        if found.is_empty()
            && let Some(rest) = image.strip_prefix("docker.io/")
        {
            // Docker Hub credentials are often keyed by its index host.
            let alt = format!("index.docker.io/{rest}");
            found = self
                .entries
                .iter()
                .filter(|(k, _)| matching::matches(k, &alt))
                .map(|(_, c)| c)
                .collect();
        }
        found
    }

    /// Whether no credential was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `reg.io/team/` →
/// `reg.io/team`.
pub fn normalise_key(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = path.trim_end_matches('/');
    let path = if path == "/v1" || path == "/v2" {
        ""
    } else {
        path
    };
    format!("{host}{path}")
}

/// Adds Docker Hub's host (and `library/`) to short references, as
/// container runtimes resolve them.
pub fn normalise_image(image: &str) -> String {
    let first = image.split('/').next().unwrap_or_default();
    let has_registry =
        image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        image.to_string()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(json: &str) -> Keyring {
        let mut k = Keyring::default();
        k.add_dockerconfigjson(json.as_bytes()).unwrap();
        k
    }

    #[test]
    fn auth_and_username_password_forms() {
        // "alice:s3cret:x" — the password may itself contain ':'.
        let k = keyring(
            r#"{"auths":{"127.0.0.1:5000":{"auth":"YWxpY2U6czNjcmV0Ong="},"reg.io":{"username":"bob","password":"pw"}}}"#,
        );
        let c = k.lookup("127.0.0.1:5000/private/busybox:1");
        assert_eq!(c[0].username, "alice");
        assert_eq!(c[0].password, "s3cret:x");
        assert_eq!(k.lookup("reg.io/app")[0].username, "bob");
        assert!(k.lookup("other.io/app").is_empty());
        assert!(!format!("{:?}", c[0]).contains("s3cret"), "Debug redacts");
    }

    #[test]
    fn keys_are_normalised_and_most_specific_first() {
        let k = keyring(
            r#"{"auths":{
                "https://index.docker.io/v1/":{"username":"hub","password":"p"},
                "*.reg.io":{"username":"wild","password":"p"},
                "a.reg.io":{"username":"exact","password":"p"},
                "a.reg.io/team/":{"username":"team","password":"p"}
            }}"#,
        );
        assert_eq!(
            k.lookup("busybox")[0].username,
            "hub",
            "docker.io images find index.docker.io keys"
        );
        let users: Vec<&str> = k
            .lookup("a.reg.io/team/app:1")
            .iter()
            .map(|c| c.username.as_str())
            .collect();
        assert_eq!(users, ["team", "exact", "wild"]);
        assert_eq!(k.lookup("b.reg.io/x")[0].username, "wild");
    }

    #[test]
    fn bad_secrets_are_clear_errors_without_secret_text() {
        let mut k = Keyring::default();
        let err = k
            .add_dockerconfigjson(br#"{"auths":{"r.io":{"auth":"!!notbase64!!"}}}"#)
            .unwrap_err();
        assert!(matches!(err, SecretError::BadAuth { .. }), "{err}");
        let err = k
            .add_dockerconfigjson(br#"{"auths": "password123"}"#)
            .unwrap_err();
        assert!(!err.to_string().contains("password123"), "{err}");
    }

    #[test]
    fn short_references_get_docker_hub() {
        assert_eq!(normalise_image("busybox"), "docker.io/library/busybox");
        assert_eq!(normalise_image("team/app:1"), "docker.io/team/app:1");
        assert_eq!(
            normalise_image("localhost/keelson/busybox:test"),
            "localhost/keelson/busybox:test"
        );
        assert_eq!(normalise_image("127.0.0.1:5000/a"), "127.0.0.1:5000/a");
    }
}
