//! `keelson-controller`: the cluster side of Keelson (thin binary over the
//! `keelson_controller` library).
//!
//! `keelson-controller [flags]` runs the controller (leader election, the
//! reconcilers the feature gates enable; so far ImagePullJob → NodeImage);
//! `keelson-controller crds [--out DIR]` writes the CRDs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keelson_controller::{crds, run};

/// Keelson cluster controller (apps.kruise.io).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: run::RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CRDs as YAML, or write one file per CRD into a directory.
    Crds {
        /// Directory to write `<group>_<plural>.yaml` files into (replacing
        /// the generated ones there).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Crds { out }) = args.command {
        return match crds::run(out.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("keelson-controller crds: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = keelson_controller::gates::FeatureGates::parse(&args.run.feature_gates) {
        eprintln!("keelson-controller: --feature-gates: {e}");
        return ExitCode::from(2);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.run.logging_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keelson-controller: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run::run(args.run)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keelson-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}
