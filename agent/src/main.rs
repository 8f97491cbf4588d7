//! `keelson-agent`: parses flags, sets up logging and runs the agent; or,
//! as `keelson-agent ctl …`, talks to a running agent's admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keelson_agent::config::{Config, FileConfig, LogFormat, Overrides, RestartPolicy};
use keelson_agent::ctl;

/// Keelson node agent: a CRI proxy between kubelet and the container runtime.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML file with the same keys as these flags (flags win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Unix socket to serve the CRI on [default: /run/keelson/cri.sock].
    #[arg(long)]
    listen: Option<PathBuf>,
    /// Runtime socket (unix:///path or /path) [default: auto-detect containerd, CRI-O, cri-dockerd].
    #[arg(long)]
    runtime_endpoint: Option<String>,
    /// Directory for persistent state [default: /var/lib/keelson].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    logging_format: Option<LogFormat>,
    /// Log level or filter directive [default: info].
    #[arg(long)]
    log_level: Option<String>,
    /// Group allowed to use the CRI socket (mode 0660); root only (0600) when unset.
    #[arg(long)]
    socket_group: Option<String>,
    /// Seconds to let in-flight calls finish on SIGTERM [default: 30].
    #[arg(long)]
    shutdown_timeout_seconds: Option<u64>,
    /// Async worker threads; 1 runs on a single thread [default: 1].
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Longest a container start is held for a higher-priority sibling that is starting [default: 30].
    #[arg(long)]
    launch_hold_seconds: Option<u64>,
    /// Restart policy of pods without the keelson.io/restart-policy annotation [default: Never].
    #[arg(long, value_enum)]
    default_restart_policy: Option<RestartPolicy>,
    /// Root-only socket of the local admin API [default: /run/keelson/admin.sock].
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// Kubelet CredentialProviderConfig file (as kubelet's --image-credential-provider-config).
    #[arg(long)]
    credential_provider_config: Option<PathBuf>,
    /// Directory of credential provider plugins (as kubelet's --image-credential-provider-bin-dir).
    #[arg(long)]
    credential_provider_bin_dir: Option<PathBuf>,
    /// Most image pulls at once [default: 4].
    #[arg(long)]
    pull_parallelism: Option<usize>,
    /// Longest a credential provider plugin may run before it is killed [default: 60].
    #[arg(long)]
    credential_provider_timeout_seconds: Option<u64>,
    /// How long finished pulls keep their status [default: 86400].
    #[arg(long)]
    pull_status_ttl_seconds: Option<u64>,
    /// Pods whose in-place restarts run at the same time [default: 16].
    #[arg(long)]
    restart_parallelism: Option<usize>,
    /// How long finished restarts keep their status unless they set ttlSecondsAfterFinished [default: 86400].
    #[arg(long)]
    restart_status_ttl_seconds: Option<u64>,
    /// Cluster mode: this node's name (follows its NodeImage; standalone without it).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Kubeconfig for cluster mode [default: in-cluster service account].
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Talk to a running agent through its admin API.
    Ctl(ctl::CtlArgs),
    /// Run only the cluster side (the DaemonSet pod's role): follow this
    /// node's NodeImage, ContainerRecreateRequests and pods with the pod's
    /// credentials, driving the host agent through its admin socket.
    Cluster(ClusterArgs),
    /// Install this binary and the systemd units on the host under
    /// --root, and move a running host agent onto it (the DaemonSet's
    /// init container).
    Install(InstallArgs),
}

#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// The host agent's admin socket.
    #[arg(long, default_value = keelson_agent::config::DEFAULT_ADMIN_SOCKET)]
    admin_socket: PathBuf,
    /// Kubeconfig [default: in-cluster service account].
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    logging_format: LogFormat,
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(clap::Args, Debug)]
struct InstallArgs {
    /// The host's root as mounted here.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// The binary to install [default: this one].
    #[arg(long)]
    binary: Option<PathBuf>,
    /// The host agent's admin socket.
    #[arg(long, default_value = keelson_agent::config::DEFAULT_ADMIN_SOCKET)]
    admin_socket: PathBuf,
    /// Longest to wait for the host agent to come back on the new binary.
    #[arg(long, default_value_t = 120)]
    wait_seconds: u64,
    #[arg(long, value_enum, default_value = "text")]
    logging_format: LogFormat,
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn single_thread() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(&e))
}

fn cluster_role(a: ClusterArgs) -> ExitCode {
    if let Err(err) = keelson_agent::logging::init(a.logging_format, &a.log_level) {
        return fail(&err);
    }
    let rt = match single_thread() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let config = keelson_agent::cluster::ClusterConfig {
        node_name: a.node_name,
        kubeconfig: a.kubeconfig,
    };
    let node = keelson_agent::cluster::node::NodeClient::new(&a.admin_socket);
    rt.block_on(async {
        tokio::select! {
            () = keelson_agent::cluster::run_beside_host(config, node) => {}
            () = keelson_agent::stop_signal() => {}
        }
    });
    ExitCode::SUCCESS
}

fn install(a: InstallArgs) -> ExitCode {
    if let Err(err) = keelson_agent::logging::init(a.logging_format, &a.log_level) {
        return fail(&err);
    }
    let binary = match a.binary.map_or_else(std::env::current_exe, Ok) {
        Ok(b) => b,
        Err(e) => return fail(&format!("locating this binary: {e}")),
    };
    let rt = match single_thread() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let node = keelson_agent::cluster::node::NodeClient::new(&a.admin_socket);
    match rt.block_on(keelson_agent::install::install(
        &a.root,
        &binary,
        &node,
        std::time::Duration::from_secs(a.wait_seconds),
    )) {
        Ok(done) => {
            println!(
                "{}",
                serde_json::to_string(&done).unwrap_or_else(|_| format!("{done:?}"))
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "install failed");
            fail(&e)
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Ctl(ctl_args)) => return ctl::main(ctl_args),
        Some(Command::Cluster(a)) => return cluster_role(a),
        Some(Command::Install(a)) => return install(a),
        None => {}
    }
    let file = match &args.config {
        Some(path) => match FileConfig::load(path) {
            Ok(f) => f,
            Err(err) => return fail(&err),
        },
        None => FileConfig::default(),
    };
    let flags = Overrides {
        listen: args.listen,
        runtime_endpoint: args.runtime_endpoint,
        state_dir: args.state_dir,
        logging_format: args.logging_format,
        log_level: args.log_level,
        socket_group: args.socket_group,
        shutdown_timeout_seconds: args.shutdown_timeout_seconds,
        worker_threads: args.worker_threads,
        launch_hold_seconds: args.launch_hold_seconds,
        default_restart_policy: args.default_restart_policy,
        admin_socket: args.admin_socket,
        credential_provider_config: args.credential_provider_config,
        credential_provider_bin_dir: args.credential_provider_bin_dir,
        pull_parallelism: args.pull_parallelism,
        credential_provider_timeout_seconds: args.credential_provider_timeout_seconds,
        pull_status_ttl_seconds: args.pull_status_ttl_seconds,
        restart_parallelism: args.restart_parallelism,
        restart_status_ttl_seconds: args.restart_status_ttl_seconds,
        node_name: args.node_name,
        kubeconfig: args.kubeconfig,
    };
    let config = match Config::merge(flags, file) {
        Ok(c) => c,
        Err(err) => return fail(&err),
    };
    if let Err(err) = keelson_agent::logging::init(config.logging_format, &config.log_level) {
        eprintln!("keelson-agent: {err}");
        return ExitCode::from(2);
    }
    let runtime = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(err) => return fail(&err),
    };
    match runtime.block_on(keelson_agent::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "agent failed");
            eprintln!("keelson-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn fail(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("keelson-agent: {err}");
    ExitCode::from(2)
}
