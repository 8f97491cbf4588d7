//! `ctl restart`, `restarts`, `restart-status`, `set-metadata`: in-place
//! restarts through the admin API.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::admin::client::{api_error, call, fetch, print_id, submit};
use crate::envdeps::MetadataUpdate;
use crate::restart::spec::{
    FailurePolicy, Phase, PodRef, RestartContainer, RestartSpec, RestartStatus, Strategy,
};

/// `ctl restart` options (the CRR spec's fields).
#[derive(clap::Args, Debug)]
pub struct RestartArgs {
    /// The pod: NAMESPACE/NAME, uid:UID or sandbox:ID.
    pod: String,
    /// Containers to recreate, in order (comma-separated or repeated).
    #[arg(
        long = "container",
        short = 'c',
        value_delimiter = ',',
        required = true
    )]
    containers: Vec<String>,
    /// Recreate the next container only once the previous one runs again.
    #[arg(long)]
    ordered: bool,
    /// Stop containers even if they were recreated since the request.
    #[arg(long)]
    force: bool,
    /// Grace period in seconds (preStop plus stop) [default: the pod's, or 30].
    #[arg(long)]
    grace: Option<i64>,
    /// Seconds a recreated container must run to count as recreated.
    #[arg(long, default_value_t = 0)]
    min_started: i32,
    /// Seconds after which whatever is unfinished fails.
    #[arg(long)]
    deadline: Option<i64>,
    /// Seconds to wait (pod marked unready) before the first stop.
    #[arg(long)]
    unready_grace: Option<i64>,
    /// Fail: stop at the first failed container; Ignore: go on.
    #[arg(long, value_parser = ["Fail", "Ignore"], default_value = "Fail")]
    failure_policy: String,
    /// preStop command run in each container before it is stopped (`sh -c`).
    #[arg(long)]
    pre_stop: Option<String>,
    /// Seconds the finished request keeps its status.
    #[arg(long)]
    ttl: Option<i32>,
    /// Return the request id at once instead of waiting.
    #[arg(long)]
    no_wait: bool,
}

/// `ctl set-metadata` options.
#[derive(clap::Args, Debug)]
pub struct MetadataArgs {
    /// The pod: NAMESPACE/NAME.
    pod: String,
    /// KEY=VALUE annotation to set (repeatable).
    #[arg(long = "annotation")]
    annotations: Vec<String>,
    /// KEY=VALUE label to set (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Annotation to remove (repeatable).
    #[arg(long)]
    remove_annotation: Vec<String>,
    /// Label to remove (repeatable).
    #[arg(long)]
    remove_label: Vec<String>,
    /// Return at once instead of waiting for the restart.
    #[arg(long)]
    no_wait: bool,
}

fn pod_ref(s: &str) -> anyhow::Result<PodRef> {
    if let Some(uid) = s.strip_prefix("uid:") {
        return Ok(PodRef {
            uid: Some(uid.to_string()),
            ..Default::default()
        });
    }
    if let Some(id) = s.strip_prefix("sandbox:") {
        return Ok(PodRef {
            sandbox_id: Some(id.to_string()),
            ..Default::default()
        });
    }
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(PodRef {
                namespace: Some(ns.to_string()),
                name: Some(name.to_string()),
                ..Default::default()
            })
        }
        _ => anyhow::bail!("pod {s:?}: expected NAMESPACE/NAME, uid:UID or sandbox:ID"),
    }
}

fn pairs(items: &[String], what: &str) -> anyhow::Result<HashMap<String, Option<String>>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), Some(v.to_string()))),
            _ => anyhow::bail!("{what} {kv:?}: expected KEY=VALUE"),
        })
        .collect()
}

fn human(s: &RestartStatus) -> String {
    let took = match (s.started_unix_ms, s.completion_unix_ms) {
        (Some(a), Some(b)) => format!("{:.1}s", b.saturating_sub(a) as f64 / 1000.0),
        _ => "-".into(),
    };
    let mut out = format!(
        "{:<28} {:<10} {:>7}  {}/{}  {}",
        s.id,
        format!("{:?}", s.phase),
        took,
        s.pod.namespace,
        s.pod.name,
        s.message
    );
    for c in &s.container_recreate_states {
        out.push_str(&format!(
            "\n    {:<16} {:<10} {:<7} {}",
            c.name,
            format!("{:?}", c.phase),
            if c.is_killed { "stopped" } else { "" },
            c.message
        ));
    }
    out
}

fn print(s: &RestartStatus, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        println!("{}", human(s));
    }
    Ok(())
}

async fn status(socket: &Path, id: &str) -> anyhow::Result<RestartStatus> {
    fetch(socket, "GET", &format!("/v1/restarts/{id}"), 200).await
}

/// Polls until request `id` completes, progress on stderr; exit 0 when
/// every container was recreated.
async fn wait(socket: &Path, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut last = None;
    let done = loop {
        let s = status(socket, id).await?;
        let now: Vec<(Phase, String)> = s
            .container_recreate_states
            .iter()
            .map(|c| (c.phase, c.message.clone()))
            .collect();
        let shown = (s.phase, now);
        if last.as_ref() != Some(&shown) && !json {
            let containers: Vec<String> = s
                .container_recreate_states
                .iter()
                .map(|c| format!("{}={:?}", c.name, c.phase))
                .collect();
            eprintln!(
                "{} {:?} after {:.1}s: {}",
                s.id,
                s.phase,
                started.elapsed().as_secs_f64(),
                containers.join(" ")
            );
            last = Some(shown);
        }
        if s.phase == Phase::Completed {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    print(&done, json)?;
    let all_ok = done
        .container_recreate_states
        .iter()
        .all(|c| c.phase == Phase::Succeeded);
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `ctl restart`.
pub async fn restart(socket: &Path, a: RestartArgs, json: bool) -> anyhow::Result<ExitCode> {
    let pre_stop = a
        .pre_stop
        .as_ref()
        .map(|cmd| crate::restart::spec::PreStop {
            exec: Some(crate::restart::spec::ExecAction {
                command: vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
            }),
            http_get: None,
            tcp_socket: None,
        });
    let spec = RestartSpec {
        key: None,
        pod: pod_ref(&a.pod)?,
        containers: a
            .containers
            .iter()
            .map(|name| RestartContainer {
                name: name.clone(),
                pre_stop: pre_stop.clone(),
                status_context: None,
            })
            .collect(),
        strategy: Strategy {
            failure_policy: if a.failure_policy == "Ignore" {
                FailurePolicy::Ignore
            } else {
                FailurePolicy::Fail
            },
            ordered_recreate: a.ordered,
            force_recreate: a.force,
            termination_grace_period_seconds: a.grace,
            unready_grace_period_seconds: a.unready_grace,
            min_started_seconds: a.min_started,
        },
        active_deadline_seconds: a.deadline,
        ttl_seconds_after_finished: a.ttl,
    };
    let id = submit(socket, "/v1/restarts", &spec).await?;
    if a.no_wait {
        print_id(&id, json);
        return Ok(ExitCode::SUCCESS);
    }
    wait(socket, &id, json).await
}

/// `ctl restarts`.
pub async fn list(socket: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let all: Vec<RestartStatus> = fetch(socket, "GET", "/v1/restarts", 200).await?;
    if json {
        println!("{}", serde_json::to_string(&all)?);
    } else {
        println!(
            "{:<28} {:<10} {:>7}  POD  MESSAGE\n    CONTAINER        PHASE",
            "ID", "PHASE", "TOOK"
        );
        for s in &all {
            println!("{}", human(s));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ctl restart-status`.
pub async fn show_one(socket: &Path, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    print(&status(socket, id).await?, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `ctl set-metadata`.
pub async fn set_metadata(socket: &Path, a: MetadataArgs, json: bool) -> anyhow::Result<ExitCode> {
    let pod = pod_ref(&a.pod)?;
    let (Some(ns), Some(name)) = (pod.namespace, pod.name) else {
        anyhow::bail!("set-metadata needs NAMESPACE/NAME");
    };
    let mut update = MetadataUpdate {
        annotations: pairs(&a.annotations, "annotation")?,
        labels: pairs(&a.labels, "label")?,
    };
    for k in a.remove_annotation {
        update.annotations.insert(k, None);
    }
    for k in a.remove_label {
        update.labels.insert(k, None);
    }
    let (code, body) = call(
        socket,
        "POST",
        &format!("/v1/pods/{ns}/{name}/metadata"),
        Some(serde_json::to_vec(&update)?),
    )
    .await?;
    if code != 200 {
        return Err(api_error(code, &body));
    }
    let answer: serde_json::Value = serde_json::from_slice(&body)?;
    let restart = answer["restart"].as_str().map(str::to_string);
    match restart {
        Some(id) if !a.no_wait => {
            if !json {
                eprintln!("restarting {} ({id})", answer["containers"]);
            }
            wait(socket, &id, json).await
        }
        _ => {
            if json {
                println!("{answer}");
            } else if restart.is_none() {
                println!("no container reads a changed key; nothing restarted");
            } else {
                println!("{}", answer["restart"].as_str().unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
