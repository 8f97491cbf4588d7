//! Agent settings: command-line flags, an optional TOML file with the same
//! keys, and the runtime endpoint auto-detection.
//!
//! Precedence: flag, then file, then built-in default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default socket the agent serves the CRI on.
pub const DEFAULT_LISTEN: &str = "/run/keelson/cri.sock";
/// Default directory for the agent's persistent state.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/keelson";
/// Runtime sockets tried, in this order, when no endpoint is given.
pub const RUNTIME_CANDIDATES: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/run/cri-dockerd.sock",
    "/var/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/var/run/cri-dockerd.sock",
];

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `key=value` text lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting, as a flag and as a key of the TOML file (same names;
/// all optional, `None` where not given). Defined once: the command line
/// flattens it and the file deserialises into it.
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Unix socket to serve the CRI on [default: /run/keelson/cri.sock].
    #[arg(long)]
    pub listen: Option<PathBuf>,
    /// Runtime socket (unix:///path or /path) [default: auto-detect containerd, CRI-O, cri-dockerd].
    #[arg(long)]
    pub runtime_endpoint: Option<String>,
    /// Directory for persistent state [default: /var/lib/keelson].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    pub logging_format: Option<LogFormat>,
    /// Log level or filter directive [default: info].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Group allowed to use the CRI socket (mode 0660); root only (0600) when unset.
    #[arg(long)]
    pub socket_group: Option<String>,
    /// Seconds to let in-flight calls finish on SIGTERM [default: 30].
    #[arg(long)]
    pub shutdown_timeout_seconds: Option<u64>,
    /// Async worker threads; 1 runs on a single thread [default: 1].
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// Longest a container start is held for a higher-priority sibling that is starting [default: 30].
    #[arg(long)]
    pub launch_hold_seconds: Option<u64>,
    /// Restart policy of pods without the keelson.io/restart-policy annotation [default: Never].
    #[arg(long, value_enum)]
    pub default_restart_policy: Option<RestartPolicy>,
    /// Root-only socket of the local admin API [default: /run/keelson/admin.sock].
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
    /// Kubelet CredentialProviderConfig file (as kubelet's --image-credential-provider-config).
    #[arg(long)]
    pub credential_provider_config: Option<PathBuf>,
    /// Directory of credential provider plugins (as kubelet's --image-credential-provider-bin-dir).
    #[arg(long)]
    pub credential_provider_bin_dir: Option<PathBuf>,
    /// Most image pulls at once [default: 4].
    #[arg(long)]
    pub pull_parallelism: Option<usize>,
    /// Longest a credential provider plugin may run before it is killed [default: 60].
    #[arg(long)]
    pub credential_provider_timeout_seconds: Option<u64>,
    /// How long finished pulls keep their status [default: 86400].
    #[arg(long)]
    pub pull_status_ttl_seconds: Option<u64>,
    /// Pods whose in-place restarts run at the same time [default: 16].
    #[arg(long)]
    pub restart_parallelism: Option<usize>,
    /// How long finished restarts keep their status unless they set ttlSecondsAfterFinished [default: 86400].
    #[arg(long)]
    pub restart_status_ttl_seconds: Option<u64>,
    /// Cluster mode: this node's name (follows its NodeImage; standalone without it).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Kubeconfig for cluster mode [default: in-cluster service account].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// The log flags every role takes.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub logging_format: LogFormat,
    /// Log level or filter directive.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// Default socket of the local admin API.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/keelson/admin.sock";

/// A pod's restartPolicy (CRI does not carry it; see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    #[default]
    Never,
}

impl RestartPolicy {
    /// Parses the Kubernetes spelling (`Always`, `OnFailure`, `Never`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Always" => Some(Self::Always),
            "OnFailure" => Some(Self::OnFailure),
            "Never" => Some(Self::Never),
            _ => None,
        }
    }
}

/// Settings after merging flags, file and defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: PathBuf,
    /// `None`: auto-detect at start-up.
    pub runtime_endpoint: Option<String>,
    pub state_dir: PathBuf,
    pub logging_format: LogFormat,
    pub log_level: String,
    pub socket_group: Option<String>,
    pub shutdown_timeout: Duration,
    /// 1 runs everything on one thread (fewest cross-CPU hand-offs).
    pub worker_threads: usize,
    /// Longest a StartContainer is held for a higher-priority sibling.
    pub launch_hold: Duration,
    /// Restart policy assumed for pods without the webhook's stamp.
    pub default_restart_policy: RestartPolicy,
    /// Root-only socket of the local admin API.
    pub admin_socket: PathBuf,
    /// Kubelet-style credential provider config and plugin dir (both or
    /// neither).
    pub credential_providers: Option<(PathBuf, PathBuf)>,
    /// Most image pulls running at once.
    pub pull_parallelism: usize,
    /// Longest one credential provider plugin run may take.
    pub credential_provider_timeout: Duration,
    /// How long finished pulls keep their status.
    pub pull_status_ttl: Duration,
    /// Pods whose restart requests run at the same time.
    pub restart_parallelism: usize,
    /// How long finished restarts without their own TTL keep their status.
    pub restart_status_ttl: Duration,
    /// Cluster mode (with `node-name`); `None`: standalone only.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("runtime endpoint {0:?}: only unix sockets are supported (unix:///path or /path)")]
    Scheme(String),
    #[error("no container runtime socket found; tried {}", .tried.join(", "))]
    NoRuntime { tried: Vec<String> },
    #[error("runtime endpoint {path} does not exist or is not a socket")]
    MissingEndpoint { path: PathBuf },
    #[error("worker-threads must be at least 1")]
    Workers,
    #[error("credential-provider-config and credential-provider-bin-dir go together")]
    ProviderPair,
    #[error("credential-provider-timeout-seconds must be at least 1")]
    ZeroTimeout,
    #[error("kubeconfig needs node-name (cluster mode follows one node)")]
    KubeconfigWithoutNode,
}

impl Settings {
    /// Reads a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source: Box::new(source),
        })
    }
}

impl Config {
    /// Merges flags over the file over defaults.
    pub fn merge(flags: Settings, file: Settings) -> Result<Self, ConfigError> {
        let worker_threads = flags.worker_threads.or(file.worker_threads).unwrap_or(1);
        if worker_threads == 0 {
            return Err(ConfigError::Workers);
        }
        Ok(Self {
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.into()),
            runtime_endpoint: flags.runtime_endpoint.or(file.runtime_endpoint),
            state_dir: flags
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            logging_format: flags
                .logging_format
                .or(file.logging_format)
                .unwrap_or_default(),
            log_level: flags
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            socket_group: flags.socket_group.or(file.socket_group),
            shutdown_timeout: Duration::from_secs(
                flags
                    .shutdown_timeout_seconds
                    .or(file.shutdown_timeout_seconds)
                    .unwrap_or(30),
            ),
            worker_threads,
            launch_hold: Duration::from_secs(
                flags
                    .launch_hold_seconds
                    .or(file.launch_hold_seconds)
                    .unwrap_or(crate::priority::DEFAULT_HOLD.as_secs()),
            ),
            default_restart_policy: flags
                .default_restart_policy
                .or(file.default_restart_policy)
                .unwrap_or_default(),
            admin_socket: flags
                .admin_socket
                .or(file.admin_socket)
                .unwrap_or_else(|| DEFAULT_ADMIN_SOCKET.into()),
            credential_providers: match (
                flags
                    .credential_provider_config
                    .or(file.credential_provider_config),
                flags
                    .credential_provider_bin_dir
                    .or(file.credential_provider_bin_dir),
            ) {
                (Some(c), Some(b)) => Some((c, b)),
                (None, None) => None,
                _ => return Err(ConfigError::ProviderPair),
            },
            pull_parallelism: flags
                .pull_parallelism
                .or(file.pull_parallelism)
                .unwrap_or(4)
                .max(1),
            credential_provider_timeout: match flags
                .credential_provider_timeout_seconds
                .or(file.credential_provider_timeout_seconds)
            {
                Some(0) => return Err(ConfigError::ZeroTimeout),
                Some(s) => Duration::from_secs(s),
                None => crate::images::provider::DEFAULT_TIMEOUT,
            },
            pull_status_ttl: Duration::from_secs(
                flags
                    .pull_status_ttl_seconds
                    .or(file.pull_status_ttl_seconds)
                    .unwrap_or(24 * 3600),
            ),
            restart_parallelism: flags
                .restart_parallelism
                .or(file.restart_parallelism)
                .unwrap_or(16)
                .max(1),
            cluster: match (
                flags.node_name.or(file.node_name),
                flags.kubeconfig.or(file.kubeconfig),
            ) {
                (Some(node_name), kubeconfig) if !node_name.is_empty() => {
                    Some(crate::cluster::ClusterConfig {
                        node_name,
                        kubeconfig,
                    })
                }
                (_, Some(_)) => return Err(ConfigError::KubeconfigWithoutNode),
                _ => None,
            },
            restart_status_ttl: Duration::from_secs(
                flags
                    .restart_status_ttl_seconds
                    .or(file.restart_status_ttl_seconds)
                    .unwrap_or(24 * 3600),
            ),
        })
    }

    /// The runtime socket path: the configured one (which must exist), or
    /// the first candidate that is a socket.
    pub fn resolve_runtime(&self) -> Result<PathBuf, ConfigError> {
        match &self.runtime_endpoint {
            Some(ep) => {
                let path = endpoint_path(ep)?;
                if is_socket(&path) {
                    Ok(path)
                } else {
                    Err(ConfigError::MissingEndpoint { path })
                }
            }
            None => detect_runtime(RUNTIME_CANDIDATES),
        }
    }
}

/// Parses `unix:///path`, `unix:/path` or a plain path.
pub fn endpoint_path(endpoint: &str) -> Result<PathBuf, ConfigError> {
    if let Some(rest) = endpoint.strip_prefix("unix://") {
        return Ok(PathBuf::from(rest));
    }
    if let Some(rest) = endpoint.strip_prefix("unix:") {
        return Ok(PathBuf::from(rest));
    }
    if endpoint.contains("://") {
        return Err(ConfigError::Scheme(endpoint.into()));
    }
    Ok(PathBuf::from(endpoint))
}

/// The first of `candidates` that exists as a socket.
pub fn detect_runtime(candidates: &[&str]) -> Result<PathBuf, ConfigError> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| is_socket(p))
        .ok_or_else(|| ConfigError::NoRuntime {
            tried: candidates.iter().map(|s| s.to_string()).collect(),
        })
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            endpoint_path("unix:///run/c.sock").unwrap(),
            PathBuf::from("/run/c.sock")
        );
        assert_eq!(
            endpoint_path("unix:/run/c.sock").unwrap(),
            PathBuf::from("/run/c.sock")
        );
        assert_eq!(
            endpoint_path("/run/c.sock").unwrap(),
            PathBuf::from("/run/c.sock")
        );
        assert!(matches!(
            endpoint_path("tcp://1.2.3.4:5"),
            Err(ConfigError::Scheme(_))
        ));
    }

    #[test]
    fn flags_beat_file_beat_defaults() {
        let file: Settings = toml::from_str(
            "listen = \"/tmp/f.sock\"\nstate-dir = \"/tmp/state\"\nlogging-format = \"json\"\n",
        )
        .unwrap();
        let flags = Settings {
            listen: Some("/tmp/flag.sock".into()),
            ..Default::default()
        };
        let c = Config::merge(flags, file).unwrap();
        assert_eq!(c.listen, PathBuf::from("/tmp/flag.sock"));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/state"));
        assert_eq!(c.logging_format, LogFormat::Json);
        assert_eq!(c.log_level, "info");
        assert_eq!(c.worker_threads, 1);
    }

    #[test]
    fn the_shipped_example_parses() {
        let file: Settings = toml::from_str(include_str!("../keelson-agent.toml.example")).unwrap();
        let c = Config::merge(Settings::default(), file).unwrap();
        assert_eq!(c.listen, PathBuf::from(DEFAULT_LISTEN));
        assert_eq!(
            c.runtime_endpoint.as_deref(),
            Some("unix:///run/containerd/containerd.sock")
        );
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.launch_hold, Duration::from_secs(30));
        assert_eq!(c.default_restart_policy, RestartPolicy::Never);
        assert_eq!(c.credential_provider_timeout, Duration::from_secs(60));
        assert_eq!(c.pull_status_ttl, Duration::from_secs(86400));
    }

    #[test]
    fn cluster_mode_needs_a_node_name() {
        let c = Config::merge(
            Settings {
                node_name: Some("node-a".into()),
                ..Default::default()
            },
            Settings::default(),
        )
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(
            (cluster.node_name.as_str(), cluster.kubeconfig),
            ("node-a", None)
        );
        assert!(
            Config::merge(Settings::default(), Settings::default())
                .unwrap()
                .cluster
                .is_none()
        );
        let err = Config::merge(
            Settings {
                kubeconfig: Some("/k".into()),
                ..Default::default()
            },
            Settings::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::KubeconfigWithoutNode), "{err}");
    }

    #[test]
    fn a_zero_plugin_timeout_is_refused() {
        let flags = Settings {
            credential_provider_timeout_seconds: Some(0),
            ..Default::default()
        };
        let err = Config::merge(flags, Settings::default()).unwrap_err();
        assert!(matches!(err, ConfigError::ZeroTimeout), "{err}");
    }

    #[test]
    fn every_flag_is_a_file_key_of_the_same_name() {
        use clap::Args as _;
        let flags: Vec<String> = Settings::augment_args(clap::Command::new("t"))
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        // serde names the keys it expects when it meets an unknown one.
        let err = toml::from_str::<Settings>("not-a-key = 1")
            .unwrap_err()
            .to_string();
        let expected = err.split("expected one of").nth(1).unwrap_or_default();
        let keys: Vec<&str> = expected
            .split(',')
            .map(|k| k.trim().trim_matches('`'))
            .filter(|k| !k.is_empty())
            .collect();
        assert_eq!(flags.len(), 20, "{flags:?}");
        assert_eq!(flags, keys);
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let err = toml::from_str::<Settings>("listne = \"/x\"").unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn detection_names_what_it_tried() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sock");
        let plain = dir.path().join("plain.sock");
        std::fs::write(&plain, b"").unwrap();
        let sock = dir.path().join("real.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let (m, p, s) = (
            missing.to_str().unwrap(),
            plain.to_str().unwrap(),
            sock.to_str().unwrap(),
        );
        assert_eq!(detect_runtime(&[m, p, s]).unwrap(), sock);
        let err = detect_runtime(&[m, p]).unwrap_err().to_string();
        assert!(err.contains(m) && err.contains(p), "{err}");
    }
}
