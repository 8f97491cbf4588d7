//! `kubectl-keelson` (and `kubectl-kruise`, the same binary under
//! OpenKruise's plugin name): a thin shell over [`keelson_controller::cli`].

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = keelson_controller::cli::Cli::parse();
    match keelson_controller::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
