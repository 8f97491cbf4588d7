//! `keelson-agent ctl`: the command-line client of the admin API.
//! Human-readable output by default, `-o json` for scripts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod restarts;

use crate::admin::client::{fetch, print_id, submit};
use crate::config::DEFAULT_ADMIN_SOCKET;
use crate::images::pulls::{Phase, PullPolicy, PullSpec, PullStatus};

/// `ctl` options.
#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// Admin socket of the agent (before or after the subcommand).
    #[arg(long, global = true, default_value = DEFAULT_ADMIN_SOCKET)]
    admin_socket: PathBuf,
    /// Output format (before or after the subcommand, as kubectl users
    /// type it: `ctl pulls -o json`).
    #[arg(short = 'o', long, global = true, value_enum, default_value = "text")]
    output: Output,
    #[command(subcommand)]
    op: Op,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

#[derive(clap::Subcommand, Debug)]
enum Op {
    /// Pull an image on this node and wait for the result (progress on stderr).
    Pull {
        image: String,
        /// A `.dockerconfigjson` file with pull credentials (repeatable).
        #[arg(long)]
        secret: Vec<PathBuf>,
        /// Seconds one attempt may take.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Always or IfNotPresent.
        #[arg(long, value_parser = ["Always", "IfNotPresent"], default_value = "IfNotPresent")]
        policy: String,
        /// Retries after the first attempt.
        #[arg(long, default_value_t = 3)]
        backoff_limit: u32,
        /// Return the pull id at once instead of waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// List pulls with their status.
    Pulls,
    /// Show one pull.
    PullStatus { id: String },
    /// Cancel an unfinished pull.
    Cancel { id: String },
    /// Restart containers of a pod in place and wait for the result.
    Restart(restarts::RestartArgs),
    /// List in-place restarts with their status.
    Restarts,
    /// Show one in-place restart.
    RestartStatus { id: String },
    /// Give a pod new annotations/labels: restarts the containers whose env
    /// reads a changed key (env from pod metadata).
    SetMetadata(restarts::MetadataArgs),
    /// Print the agent's metrics (OpenMetrics text: CRI calls by method,
    /// hook faults, pulls and restarts by phase).
    Metrics,
}

/// Runs a `ctl` command; exit 0 on success, 1 on a failed pull or error.
pub fn main(args: CtlArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keelson-agent ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keelson-agent ctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn human(s: &PullStatus) -> String {
    let elapsed = match (s.started_unix_ms, s.completed_unix_ms) {
        (Some(a), Some(b)) => format!("{:.1}s", (b.saturating_sub(a)) as f64 / 1000.0),
        _ => "-".into(),
    };
    format!(
        "{:<28} {:<10} {:>8} {:>3}  {}  {}{}",
        s.id,
        format!("{:?}", s.phase),
        elapsed,
        s.attempts,
        s.image,
        s.message,
        s.image_id
            .as_ref()
            .map(|i| format!(" ({i})"))
            .unwrap_or_default()
    )
}

async fn status(socket: &Path, id: &str) -> anyhow::Result<PullStatus> {
    fetch(socket, "GET", &format!("/v1/pulls/{id}"), 200).await
}

/// Prints one pull as JSON or as a table row.
fn show(s: &PullStatus, json: bool) -> anyhow::Result<()> {
    println!(
        "{}",
        if json {
            serde_json::to_string(s)?
        } else {
            human(s)
        }
    );
    Ok(())
}

async fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let socket = args.admin_socket.as_path();
    let json = args.output == Output::Json;
    match args.op {
        Op::Pull {
            image,
            secret,
            timeout,
            policy,
            backoff_limit,
            no_wait,
        } => {
            let mut spec = PullSpec::new(&image);
            spec.timeout_seconds = timeout;
            spec.backoff_limit = backoff_limit;
            spec.policy = if policy == "Always" {
                PullPolicy::Always
            } else {
                PullPolicy::IfNotPresent
            };
            for f in secret {
                spec.secrets.push(
                    std::fs::read_to_string(&f)
                        .map_err(|e| anyhow::anyhow!("reading secret {}: {e}", f.display()))?,
                );
            }
            let id = submit(socket, "/v1/pulls", &spec).await?;
            if no_wait {
                print_id(&id, json);
                return Ok(ExitCode::SUCCESS);
            }
            let started = Instant::now();
            let mut last = (None, 0);
            let done = loop {
                let s = status(socket, &id).await?;
                if last != (Some(s.phase), s.attempts) && !json {
                    eprintln!(
                        "{} {:?} attempt {} after {:.1}s: {}",
                        s.id,
                        s.phase,
                        s.attempts,
                        started.elapsed().as_secs_f64(),
                        s.message
                    );
                    last = (Some(s.phase), s.attempts);
                }
                if matches!(s.phase, Phase::Succeeded | Phase::Failed) {
                    break s;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            show(&done, json)?;
            Ok(if done.phase == Phase::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Op::Metrics => {
            let (code, body) = crate::admin::client::call(socket, "GET", "/metrics", None).await?;
            if code != 200 {
                return Err(crate::admin::client::api_error(code, &body));
            }
            print!("{}", String::from_utf8_lossy(&body));
            Ok(ExitCode::SUCCESS)
        }
        Op::Pulls => {
            let all: Vec<PullStatus> = fetch(socket, "GET", "/v1/pulls", 200).await?;
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                println!(
                    "{:<28} {:<10} {:>8} {:>3}  IMAGE  MESSAGE",
                    "ID", "PHASE", "TOOK", "TRY"
                );
                for s in &all {
                    println!("{}", human(s));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Op::PullStatus { id } => {
            show(&status(socket, &id).await?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Op::Restart(a) => restarts::restart(socket, a, json).await,
        Op::Restarts => restarts::list(socket, json).await,
        Op::RestartStatus { id } => restarts::show_one(socket, &id, json).await,
        Op::SetMetadata(a) => restarts::set_metadata(socket, a, json).await,
        Op::Cancel { id } => {
            show(
                &fetch(socket, "DELETE", &format!("/v1/pulls/{id}"), 200).await?,
                json,
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
