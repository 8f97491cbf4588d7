//! `keelson-controller`: the cluster side of Keelson.
//!
//! Not built yet: the apps.kruise.io API types, reconcilers and webhooks
//! arrive with the controller issue. Until then the binary only states so
//! and exits non-zero, so nothing can mistake it for a working controller.

use clap::Parser;

/// Keelson cluster controller (apps.kruise.io).
#[derive(Parser)]
#[command(version, about)]
struct Args {}

fn main() -> std::process::ExitCode {
    let _ = Args::parse();
    eprintln!("keelson-controller: no controllers are implemented in this release yet");
    std::process::ExitCode::from(2)
}
