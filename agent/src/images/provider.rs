//! Kubelet-compatible exec credential provider plugins: the
//! `CredentialProviderConfig` file (`kubelet.config.k8s.io/v1`, also
//! v1beta1/v1alpha1), the plugin bin dir, and one exec of a plugin with a
//! `CredentialProviderRequest` on stdin and a `CredentialProviderResponse`
//! on stdout (`credentialprovider.kubelet.k8s.io/v1`, also v1beta1).
//!
//! A plugin that hangs is killed after the timeout; one that crashes,
//! prints garbage or answers with another apiVersion yields an error naming
//! the plugin and the image, never its output (it may hold secrets).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::duration;
use super::matching;
use super::secrets::Credential;

/// Kubelet's limit on one plugin run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes read from a plugin's stdout.
const MAX_RESPONSE: usize = 1 << 20;

const CONFIG_VERSIONS: &[&str] = &[
    "kubelet.config.k8s.io/v1",
    "kubelet.config.k8s.io/v1beta1",
    "kubelet.config.k8s.io/v1alpha1",
];
const PLUGIN_VERSIONS: &[&str] = &[
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
];

/// Why the provider configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Why one plugin run gave no credentials.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("credential provider {plugin:?} for {image}: cannot start {path}: {source}")]
    Spawn {
        plugin: String,
        image: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("credential provider {plugin:?} for {image}: no answer within {timeout:?}; killed")]
    Timeout {
        plugin: String,
        image: String,
        timeout: Duration,
    },
    #[error("credential provider {plugin:?} for {image}: exited with {status}")]
    Failed {
        plugin: String,
        image: String,
        status: std::process::ExitStatus,
    },
    #[error(
        "credential provider {plugin:?} for {image}: response is not a CredentialProviderResponse ({detail})"
    )]
    Garbage {
        plugin: String,
        image: String,
        detail: String,
    },
    #[error(
        "credential provider {plugin:?} for {image}: response apiVersion {got:?}, configured {want:?}"
    )]
    WrongVersion {
        plugin: String,
        image: String,
        got: String,
        want: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    api_version: String,
    kind: String,
    #[serde(default)]
    providers: Vec<RawProvider>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProvider {
    name: String,
    #[serde(default)]
    match_images: Vec<String>,
    default_cache_duration: Option<String>,
    api_version: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<RawEnv>,
}

#[derive(Deserialize)]
struct RawEnv {
    name: String,
    value: String,
}

/// One configured plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    pub match_images: Vec<String>,
    pub default_cache_duration: Duration,
    pub api_version: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `bin_dir/name`.
    pub path: PathBuf,
}

impl Provider {
    /// Whether this plugin is asked for `image`.
    pub fn matches(&self, image: &str) -> bool {
        self.match_images
            .iter()
            .any(|m| matching::matches(m, image))
    }
}

/// Reads and validates a `CredentialProviderConfig` (YAML or JSON) whose
/// plugins live in `bin_dir`, as kubelet's `--image-credential-provider-config`
/// and `--image-credential-provider-bin-dir`. Providers keep file order
/// (earlier ones win).
pub fn load(config: &Path, bin_dir: &Path) -> Result<Vec<Provider>, ConfigError> {
    let text = std::fs::read_to_string(config).map_err(|source| ConfigError::Read {
        path: config.into(),
        source,
    })?;
    let raw: RawConfig = serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
        path: config.into(),
        message: e.to_string(),
    })?;
    let invalid = |message: String| ConfigError::Invalid {
        path: config.into(),
        message,
    };
    if !CONFIG_VERSIONS.contains(&raw.api_version.as_str()) {
        return Err(invalid(format!(
            "apiVersion {:?} is not one of {CONFIG_VERSIONS:?}",
            raw.api_version
        )));
    }
    if raw.kind != "CredentialProviderConfig" {
        return Err(invalid(format!(
            "kind {:?} is not CredentialProviderConfig",
            raw.kind
        )));
    }
    if raw.providers.is_empty() {
        return Err(invalid("at least one provider is required".into()));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = vec![];
    for p in raw.providers {
        let name = p.name.trim().to_string();
        if name.is_empty()
            || name.contains('/')
            || name == "."
            || name == ".."
            || name.contains(' ')
        {
            return Err(invalid(format!(
                "provider name {:?} is not a plain file name",
                p.name
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(invalid(format!("provider {name:?} is listed twice")));
        }
        if p.match_images.is_empty() {
            return Err(invalid(format!(
                "provider {name:?}: matchImages is required"
            )));
        }
        for m in &p.match_images {
            if m.contains("://") || m.trim().is_empty() {
                return Err(invalid(format!(
                    "provider {name:?}: matchImages entry {m:?} is not host[:port][/path]"
                )));
            }
        }
        let dcd = p.default_cache_duration.ok_or_else(|| {
            invalid(format!(
                "provider {name:?}: defaultCacheDuration is required"
            ))
        })?;
        let default_cache_duration = duration::parse(&dcd)
            .map_err(|e| invalid(format!("provider {name:?}: defaultCacheDuration: {e}")))?;
        if !PLUGIN_VERSIONS.contains(&p.api_version.as_str()) {
            return Err(invalid(format!(
                "provider {name:?}: apiVersion {:?} is not one of {PLUGIN_VERSIONS:?}",
                p.api_version
            )));
        }
        let path = bin_dir.join(&name);
        if !path.is_file() {
            return Err(invalid(format!(
                "provider {name:?}: plugin {} does not exist",
                path.display()
            )));
        }
        out.push(Provider {
            name,
            match_images: p.match_images,
            default_cache_duration,
            api_version: p.api_version,
            args: p.args,
            env: p.env.into_iter().map(|e| (e.name, e.value)).collect(),
            path,
        });
    }
    Ok(out)
}

/// How a response may be cached (plugin's `cacheKeyType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub enum CacheKeyType {
    Image,
    Registry,
    Global,
}

/// A validated plugin response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub cache_key_type: CacheKeyType,
    /// `None`: use the provider's default; `Some(0)`: do not cache.
    pub cache_duration: Option<Duration>,
    /// (key, credential), most specific key first.
    pub auth: Vec<(String, Credential)>,
}

impl Response {
    /// Credentials whose key matches `image`, best first.
    pub fn lookup(&self, image: &str) -> Vec<&Credential> {
        self.auth
            .iter()
            .filter(|(k, _)| matching::matches(k, image))
            .map(|(_, c)| c)
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResponse {
    api_version: String,
    kind: String,
    cache_key_type: CacheKeyType,
    cache_duration: Option<String>,
    #[serde(default)]
    auth: HashMap<String, RawAuth>,
}

#[derive(Deserialize)]
struct RawAuth {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// The cache key of a response for `image` (registry + repository without
/// tag or digest for Image, `host[:port]` for Registry, one key for Global).
pub fn cache_key(kind: CacheKeyType, image: &str) -> String {
    let repo = strip_tag(image);
    match kind {
        CacheKeyType::Image => format!("image:{repo}"),
        CacheKeyType::Registry => {
            format!("registry:{}", repo.split('/').next().unwrap_or_default())
        }
        CacheKeyType::Global => "global".into(),
    }
}

/// `reg.io/a/b:tag` → `reg.io/a/b`; `reg.io/a@sha256:…` → `reg.io/a`.
pub fn strip_tag(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    }
}

/// Runs `provider` for `image` once.
pub async fn run(
    provider: &Provider,
    image: &str,
    timeout: Duration,
) -> Result<Response, PluginError> {
    let plugin = provider.name.clone();
    let img = image.to_string();
    let mut child = tokio::process::Command::new(&provider.path)
        .args(&provider.args)
        .envs(provider.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| PluginError::Spawn {
            plugin: plugin.clone(),
            image: img.clone(),
            path: provider.path.clone(),
            source,
        })?;
    let request = serde_json::json!({
        "apiVersion": provider.api_version,
        "kind": "CredentialProviderRequest",
        "image": image,
    });
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let exchange = async {
        if let Some(mut s) = stdin.take() {
            // A plugin that does not read stdin is not an error.
            let _ = s.write_all(request.to_string().as_bytes()).await;
        }
        let mut out = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(MAX_RESPONSE as u64).read_to_end(&mut out).await;
        }
        let status = child.wait().await;
        (out, status)
    };
    let (out, status) = match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => {
            return Err(PluginError::Timeout {
                plugin,
                image: img,
                timeout,
            });
        }
    };
    let status = status.map_err(|e| PluginError::Garbage {
        plugin: plugin.clone(),
        image: img.clone(),
        detail: e.to_string(),
    })?;
    if !status.success() {
        return Err(PluginError::Failed {
            plugin,
            image: img,
            status,
        });
    }
    parse_response(&provider.api_version, &plugin, image, &out)
}

/// A plugin's answer on stdout (`out`) for `image`, checked against the
/// `api_version` the provider is configured with.
pub fn parse_response(
    api_version: &str,
    plugin: &str,
    image: &str,
    out: &[u8],
) -> Result<Response, PluginError> {
    let plugin = plugin.to_string();
    let img = image.to_string();
    let raw: RawResponse = serde_json::from_slice(out).map_err(|e| PluginError::Garbage {
        plugin: plugin.clone(),
        image: img.clone(),
        detail: format!("invalid JSON at line {} column {}", e.line(), e.column()),
    })?;
    if raw.kind != "CredentialProviderResponse" {
        return Err(PluginError::Garbage {
            plugin,
            image: img,
            detail: format!("kind {:?}", raw.kind),
        });
    }
    if raw.api_version != api_version {
        return Err(PluginError::WrongVersion {
            plugin,
            image: img,
            got: raw.api_version,
            want: api_version.to_string(),
        });
    }
    let cache_duration = raw
        .cache_duration
        .map(|d| duration::parse(&d))
        .transpose()
        .map_err(|detail| PluginError::Garbage {
            plugin: plugin.clone(),
            image: img.clone(),
            detail,
        })?;
    let mut auth: Vec<(String, Credential)> = raw
        .auth
        .into_iter()
        .map(|(k, a)| {
            (
                k,
                Credential {
                    username: a.username,
                    password: a.password,
                },
            )
        })
        .collect();
    auth.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(Response {
        cache_key_type: raw.cache_key_type,
        cache_duration,
        auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    const CONFIG: &str = r#"
apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: ecr-credential-provider
    matchImages:
      - "*.dkr.ecr.*.amazonaws.com"
      - "127.0.0.1:5000"
    defaultCacheDuration: "12h"
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args: [get-credentials]
    env:
      - name: AWS_PROFILE
        value: temp
"#;

    #[test]
    fn loads_kubelet_config() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(dir.path(), "config.yaml", CONFIG);
        write(dir.path(), "ecr-credential-provider", "#!/bin/sh\n");
        let providers = load(&cfg, dir.path()).unwrap();
        assert_eq!(providers.len(), 1);
        let p = &providers[0];
        assert_eq!(p.default_cache_duration, Duration::from_secs(12 * 3600));
        assert_eq!(p.args, ["get-credentials"]);
        assert_eq!(p.env, [("AWS_PROFILE".to_string(), "temp".to_string())]);
        assert!(p.matches("123.dkr.ecr.eu-west-1.amazonaws.com/app:1"));
        assert!(p.matches("127.0.0.1:5000/private/app:1"));
        assert!(!p.matches("docker.io/library/busybox"));
    }

    #[test]
    fn rejects_bad_configs_clearly() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ecr-credential-provider", "#!/bin/sh\n");
        let cases = [
            (
                CONFIG.replace("kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v9"),
                "apiVersion",
            ),
            (
                CONFIG.replace("    defaultCacheDuration: \"12h\"\n", ""),
                "defaultCacheDuration is required",
            ),
            (
                CONFIG.replace("\"12h\"", "\"12 hours\""),
                "defaultCacheDuration",
            ),
            (
                CONFIG.replace(
                    "credentialprovider.kubelet.k8s.io/v1",
                    "credentialprovider.kubelet.k8s.io/v2",
                ),
                "apiVersion",
            ),
            (
                CONFIG.replace("name: ecr-credential-provider", "name: ../evil"),
                "plain file name",
            ),
            (
                CONFIG.replace("name: ecr-credential-provider", "name: missing-plugin"),
                "does not exist",
            ),
        ];
        for (text, want) in cases {
            let cfg = write(dir.path(), "config.yaml", &text);
            let err = load(&cfg, dir.path()).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn cache_keys() {
        assert_eq!(
            cache_key(CacheKeyType::Image, "reg.io:5000/a/b:1"),
            "image:reg.io:5000/a/b"
        );
        assert_eq!(
            cache_key(CacheKeyType::Image, "reg.io/a@sha256:abc"),
            "image:reg.io/a"
        );
        assert_eq!(
            cache_key(CacheKeyType::Registry, "reg.io:5000/a/b:1"),
            "registry:reg.io:5000"
        );
        assert_eq!(cache_key(CacheKeyType::Global, "x/y"), "global");
    }
}
