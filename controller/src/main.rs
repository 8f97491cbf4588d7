//! `keelson-controller`: the cluster side of Keelson.
//!
//! Built so far: the apps.kruise.io API types (crate `keelson-api`) and
//! `keelson-controller crds`, which writes their CRDs. The reconcilers,
//! leader election and webhooks come next; running the controller itself
//! says so and exits non-zero, so nothing mistakes it for a working one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use keelson_controller::crds;

/// Keelson cluster controller (apps.kruise.io).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
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
    match Args::parse().command {
        Some(Command::Crds { out }) => match crds::run(out.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("keelson-controller crds: {e:#}");
                ExitCode::FAILURE
            }
        },
        None => {
            eprintln!(
                "keelson-controller: no controllers are implemented in this release yet (try `crds`)"
            );
            ExitCode::from(2)
        }
    }
}
