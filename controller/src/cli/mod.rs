//! `kubectl keelson` (also installed as `kubectl kruise`): rollout, set and
//! scale for OpenKruise workloads, with kubectl's and kubectl-kruise's
//! flags and messages. [`target`] reads which workload, [`rollout`]
//! decides (pure); this module talks to the API server.

pub mod rollout;
pub mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::{Client, Config};
use serde_json::{Value, json};

use rollout::RolloutState;
use target::Kind;

/// kubectl's global flags the plugin honours.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// The namespace [default: the kubeconfig context's, else "default"].
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Path to the kubeconfig file [default: $KUBECONFIG, else ~/.kube/config].
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
}

#[derive(clap::Parser, Debug)]
#[command(
    name = "kubectl-keelson",
    about = "Rollout, set and scale for OpenKruise workloads (CloneSet, Advanced StatefulSet, Advanced DaemonSet)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Manage the rollout of a workload.
    #[command(subcommand)]
    Rollout(Rollout),
    /// Update a workload's pod template.
    #[command(subcommand)]
    Set(SetCommand),
    /// Set a new size through the scale subresource.
    Scale {
        /// TYPE/NAME or TYPE NAME.
        #[arg(required = true)]
        target: Vec<String>,
        #[arg(long)]
        replicas: i32,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum Rollout {
    /// Follow the rollout until it is done.
    Status {
        #[arg(required = true)]
        target: Vec<String>,
        /// Follow until done (false: print the state once).
        #[arg(short = 'w', long, default_value = "true", action = clap::ArgAction::Set)]
        watch: bool,
        /// Give up after this long (`30s`, `5m`; 0: never).
        #[arg(long, default_value = "0s")]
        timeout: String,
    },
    /// List the revisions (or show one's pod template).
    History {
        #[arg(required = true)]
        target: Vec<String>,
        #[arg(long, default_value_t = 0)]
        revision: i64,
    },
    /// Go back to a revision (the previous one by default).
    Undo {
        #[arg(required = true)]
        target: Vec<String>,
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
    /// Stop updating pods.
    Pause {
        #[arg(required = true)]
        target: Vec<String>,
    },
    /// Go on updating pods.
    Resume {
        #[arg(required = true)]
        target: Vec<String>,
    },
    /// Replace every pod (a `RESTARTED_AT` env change, as kubectl-kruise).
    Restart {
        #[arg(required = true)]
        target: Vec<String>,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum SetCommand {
    /// `container=image` pairs (`*=image` for all containers).
    Image {
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// `KEY=value` sets, `KEY-` removes.
    Env {
        #[arg(required = true)]
        args: Vec<String>,
        /// Only these containers (comma-separated; default all).
        #[arg(short = 'c', long)]
        containers: Option<String>,
    },
}

async fn client(g: &Global) -> anyhow::Result<(Client, String)> {
    let options = kube::config::KubeConfigOptions {
        context: g.context.clone(),
        ..Default::default()
    };
    let config = match &g.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &options).await?
        }
        None => Config::from_kubeconfig(&options).await?,
    };
    let ns = g
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, ns))
}

/// `30s`, `5m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (n, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n
        .parse()
        .with_context(|| format!("invalid duration {s:?}"))?;
    Ok(Duration::from_secs(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("invalid duration {s:?}"),
    }))
}

fn owned_revisions(obj: &Value, all: Vec<ControllerRevision>) -> Vec<ControllerRevision> {
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    all.into_iter()
        .filter(|r| crate::api_call::controlled_by(&r.metadata, &uid))
        .collect()
}

/// The template's regular containers.
fn containers(obj: &Value) -> Vec<k8s_openapi::api::core::v1::Container> {
    serde_json::from_value(obj["spec"]["template"]["spec"]["containers"].clone())
        .unwrap_or_default()
}

/// Sets `image` on the containers `pairs` name (`*`: all); the JSON patch.
pub fn image_patch(obj: &Value, pairs: &[String]) -> anyhow::Result<Value> {
    let containers = containers(obj);
    let mut ops = vec![];
    for pair in pairs {
        let (name, image) = pair
            .split_once('=')
            .with_context(|| format!("expected container=image, got {pair:?}"))?;
        let mut found = false;
        for (i, c) in containers.iter().enumerate() {
            if name == "*" || c.name == name {
                found = true;
                ops.push(json!({"op": "replace", "path": format!("/spec/template/spec/containers/{i}/image"), "value": image}));
            }
        }
        if !found {
            bail!("unable to find container named {name:?}");
        }
    }
    Ok(Value::Array(ops))
}

/// `KEY=value` / `KEY-` applied to the containers `only` names (all when
/// `None`); the JSON patch.
pub fn env_patch(obj: &Value, args: &[String], only: Option<&str>) -> anyhow::Result<Value> {
    let containers = containers(obj);
    let wanted: Option<Vec<&str>> = only.map(|o| o.split(',').collect());
    let mut ops = vec![];
    for (i, c) in containers.iter().enumerate() {
        if wanted
            .as_ref()
            .is_some_and(|w| !w.contains(&c.name.as_str()))
        {
            continue;
        }
        let mut env = c.env.clone().unwrap_or_default();
        for a in args {
            if let Some(k) = a.strip_suffix('-') {
                env.retain(|e| e.name != k);
            } else if let Some((k, v)) = a.split_once('=') {
                match env.iter_mut().find(|e| e.name == k) {
                    Some(e) => {
                        e.value = Some(v.to_string());
                        e.value_from = None;
                    }
                    None => env.push(k8s_openapi::api::core::v1::EnvVar {
                        name: k.to_string(),
                        value: Some(v.to_string()),
                        value_from: None,
                    }),
                }
            } else {
                bail!("expected KEY=value or KEY-, got {a:?}");
            }
        }
        ops.push(json!({"op": "add", "path": format!("/spec/template/spec/containers/{i}/env"), "value": env}));
    }
    if ops.is_empty() {
        bail!("no container matches {only:?}");
    }
    Ok(Value::Array(ops))
}

async fn status(
    api: &Api<DynamicObject>,
    kind: Kind,
    name: &str,
    watch: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let obj = serde_json::to_value(api.get(name).await?)?;
        match rollout::state(kind, &obj).map_err(anyhow::Error::msg)? {
            RolloutState::Done(m) => {
                println!("{m}");
                return Ok(ExitCode::SUCCESS);
            }
            RolloutState::Waiting(m) => {
                if m != last {
                    println!("{m}");
                    last = m;
                }
                if !watch {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        if !timeout.is_zero() && start.elapsed() >= timeout {
            eprintln!("error: timed out waiting for the condition");
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (client, ns) = client(&cli.global).await?;
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let resolve =
        |t: &[String]| -> anyhow::Result<(Kind, String, Vec<String>, Api<DynamicObject>)> {
            let (kind, name, rest) = target::parse(t)?;
            let api = Api::namespaced_with(client.clone(), &ns, &kind.api_resource());
            Ok((kind, name, rest, api))
        };
    let get = |api: Api<DynamicObject>, name: String| async move {
        Ok::<Value, anyhow::Error>(serde_json::to_value(api.get(&name).await?)?)
    };
    let pp = PatchParams::default();
    match cli.command {
        Command::Rollout(Rollout::Status {
            target,
            watch,
            timeout,
        }) => {
            let (kind, name, _, api) = resolve(&target)?;
            status(&api, kind, &name, watch, parse_duration(&timeout)?).await
        }
        Command::Rollout(Rollout::History { target, revision }) => {
            let (_, name, _, api) = resolve(&target)?;
            let cs = get(api, name).await?;
            let owned = owned_revisions(&cs, revisions.list(&ListParams::default()).await?.items);
            if revision > 0 {
                let r = owned
                    .iter()
                    .find(|r| r.revision == revision)
                    .with_context(|| format!("unable to find the specified revision {revision}"))?;
                let t = crate::workload::revision::template_of(r)?;
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                print!("{}", rollout::history_table(&owned));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollout(Rollout::Undo {
            target,
            to_revision,
        }) => {
            let (kind, name, _, api) = resolve(&target)?;
            let cs = get(api.clone(), name.clone()).await?;
            let owned = owned_revisions(&cs, revisions.list(&ListParams::default()).await?.items);
            let r = rollout::undo_target(&owned, to_revision).map_err(anyhow::Error::msg)?;
            match rollout::undo_patch(&cs, r).map_err(anyhow::Error::msg)? {
                None => println!(
                    "{}/{name} skipped rollback (current template already matches revision {})",
                    kind.qualified(),
                    r.revision
                ),
                Some(p) => {
                    let patch: json_patch::Patch = serde_json::from_value(p)?;
                    api.patch(&name, &pp, &Patch::<()>::Json(patch)).await?;
                    println!("{}/{name} rolled back", kind.qualified());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollout(r @ (Rollout::Pause { .. } | Rollout::Resume { .. })) => {
            let (pause, target) = match r {
                Rollout::Pause { target } => (true, target),
                Rollout::Resume { target } => (false, target),
                _ => unreachable!("matched above"),
            };
            let (kind, name, _, api) = resolve(&target)?;
            let cs = get(api.clone(), name.clone()).await?;
            let paused = cs.pointer(kind.paused_pointer()).and_then(Value::as_bool) == Some(true);
            if paused == pause {
                bail!(
                    "{}/{name} is {}",
                    kind.qualified(),
                    if pause {
                        "already paused"
                    } else {
                        "not paused"
                    }
                );
            }
            let patch = match kind {
                Kind::CloneSet => json!({"spec": {"updateStrategy": {"paused": pause}}}),
                Kind::StatefulSet | Kind::DaemonSet => {
                    json!({"spec": {"updateStrategy": {"rollingUpdate": {"paused": pause}}}})
                }
            };
            api.patch(&name, &pp, &Patch::Merge(&patch)).await?;
            println!(
                "{}/{name} {}",
                kind.qualified(),
                if pause { "paused" } else { "resumed" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollout(Rollout::Restart { target }) => {
            let (kind, name, _, api) = resolve(&target)?;
            let cs = get(api.clone(), name.clone()).await?;
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let patch: json_patch::Patch =
                serde_json::from_value(env_patch(&cs, &[format!("RESTARTED_AT={now}")], None)?)?;
            api.patch(&name, &pp, &Patch::<()>::Json(patch)).await?;
            println!("{}/{name} restarted", kind.qualified());
            Ok(ExitCode::SUCCESS)
        }
        Command::Set(SetCommand::Image { args }) => {
            let (kind, name, rest, api) = resolve(&args)?;
            let cs = get(api.clone(), name.clone()).await?;
            let patch: json_patch::Patch = serde_json::from_value(image_patch(&cs, &rest)?)?;
            api.patch(&name, &pp, &Patch::<()>::Json(patch)).await?;
            println!("{}/{name} image updated", kind.qualified());
            Ok(ExitCode::SUCCESS)
        }
        Command::Set(SetCommand::Env { args, containers }) => {
            let (kind, name, rest, api) = resolve(&args)?;
            let cs = get(api.clone(), name.clone()).await?;
            let patch: json_patch::Patch =
                serde_json::from_value(env_patch(&cs, &rest, containers.as_deref())?)?;
            api.patch(&name, &pp, &Patch::<()>::Json(patch)).await?;
            println!("{}/{name} env updated", kind.qualified());
            Ok(ExitCode::SUCCESS)
        }
        Command::Scale { target, replicas } => {
            let (kind, name, _, api) = resolve(&target)?;
            let patch = json!({"spec": {"replicas": replicas}});
            api.patch_scale(&name, &pp, &Patch::Merge(&patch)).await?;
            println!("{}/{name} scaled", kind.qualified());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs() -> Value {
        let cs: keelson_api::apps::v1alpha1::cloneset::CloneSet = serde_saphyr::from_str(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: CloneSet\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: main, image: 'nginx:1', env: [{name: A, value: '1'}]}, {name: side, image: 'busybox'}]}\n",
        )
        .unwrap();
        serde_json::to_value(cs).unwrap()
    }

    #[test]
    fn image_and_env_patches() {
        let p = image_patch(&cs(), &["side=busybox:2".into()]).unwrap();
        assert_eq!(
            p,
            json!([{"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "busybox:2"}])
        );
        assert_eq!(
            image_patch(&cs(), &["*=x".into()])
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert!(
            image_patch(&cs(), &["nope=x".into()])
                .unwrap_err()
                .to_string()
                .contains("unable to find container named \"nope\"")
        );
        let e = env_patch(&cs(), &["A-".into(), "B=2".into()], Some("main")).unwrap();
        assert_eq!(
            e,
            json!([{"op": "add", "path": "/spec/template/spec/containers/0/env", "value": [{"name": "B", "value": "2"}]}])
        );
        assert!(env_patch(&cs(), &["bad".into()], None).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("x").is_err());
    }
}
