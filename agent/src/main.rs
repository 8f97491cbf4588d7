//! `keelson-agent`: parses flags, sets up logging and runs the agent; or,
//! as `keelson-agent ctl …`, talks to a running agent's admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keelson_agent::config::{Config, LogArgs, Settings};
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
    #[command(flatten)]
    settings: Settings,
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
    #[command(flatten)]
    log: LogArgs,
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
    #[command(flatten)]
    log: LogArgs,
}

fn single_thread() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(&e))
}

fn cluster_role(a: ClusterArgs) -> ExitCode {
    if let Err(err) = keelson_agent::logging::init(a.log.logging_format, &a.log.log_level) {
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
    if let Err(err) = keelson_agent::logging::init(a.log.logging_format, &a.log.log_level) {
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
        Some(path) => match Settings::load(path) {
            Ok(f) => f,
            Err(err) => return fail(&err),
        },
        None => Settings::default(),
    };
    let config = match Config::merge(args.settings, file) {
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
