//! Benchmark: instructions per CRI call, the agent beside the minimal
//! forwarder, counted by callgrind (repeatable where wall-clock times on a
//! shared machine are not).
//!
//! Starts a real containerd, then the agent and the forwarder of
//! `bench-proxy` ([`keelson_integration::forwarder`]) each under
//! `valgrind --tool=callgrind`, and fills the node with containers (the
//! agent follows them into its pod book, as in `bench-proxy`). For each
//! method and each of the two, it zeroes the process's counters, makes
//! the calls one after another, and dumps the counters; and it counts the
//! same process idle for as long, the background that runs whether calls
//! come or not (timers, flushes, watches). Prints instructions per call
//! (all threads of the process), the agent's ÷ the forwarder's, and the
//! idle share.
//!
//! The dumps are kept with `--keep DIR` for `callgrind_annotate` (an
//! agent built with symbols gives function names:
//! `CARGO_PROFILE_RELEASE_STRIP=false`, with `KEELSON_AGENT_BIN` pointing
//! at it). Run: `cargo run --release -p keelson-integration --bin
//! bench-proxy-instructions` (after `cargo build --release -p
//! keelson-agent`). Options: `--calls N` (per method and target, default
//! 300), `--containers N` (default 100), `--keep DIR`, `--cache-sim`
//! (callgrind's cache model too: first-level instruction and data misses
//! and last-level misses per call, a model of this machine's caches, not
//! a measurement of them), `--agent-arg ARG` (repeatable, passed to the
//! agent).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use cri_proto as cri;
use keelson_integration::agent::{Agent, binary};
use keelson_integration::client::{Runtime, clients};
use keelson_integration::containerd::Containerd;
use keelson_integration::forwarder;
use keelson_integration::image_cache;
use keelson_integration::kubelet::{ContainerSpec, Kubelet, PodSpec};

struct Options {
    calls: usize,
    containers: usize,
    keep: Option<PathBuf>,
    cache_sim: bool,
    agent_args: Vec<String>,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        calls: 300,
        containers: 100,
        keep: None,
        cache_sim: false,
        agent_args: vec![],
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--calls" => o.calls = value("--calls")?.parse()?,
            "--containers" => o.containers = value("--containers")?.parse()?,
            "--keep" => o.keep = Some(value("--keep")?.into()),
            "--cache-sim" => o.cache_sim = true,
            "--agent-arg" => o.agent_args.push(value("--agent-arg")?),
            other => anyhow::bail!(
                "unknown option {other}; see the doc comment of bench-proxy-instructions.rs"
            ),
        }
    }
    anyhow::ensure!(o.calls > 0, "--calls must be at least 1");
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    if let Some(served) = forwarder::serve_if_asked() {
        return Ok(served?);
    }
    let o = options()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(o))
}

/// The calls counted.
#[derive(Clone, Copy, Debug)]
enum Method {
    Version,
    ContainerStatus,
    ListContainers,
    ListPodSandbox,
}

impl Method {
    async fn call(self, c: &mut Runtime, container: &str) -> Result<(), tonic::Status> {
        match self {
            Method::Version => c.version(cri::VersionRequest::default()).await.map(drop),
            Method::ContainerStatus => c
                .container_status(cri::ContainerStatusRequest {
                    container_id: container.to_string(),
                    verbose: false,
                })
                .await
                .map(drop),
            Method::ListContainers => c
                .list_containers(cri::ListContainersRequest::default())
                .await
                .map(drop),
            Method::ListPodSandbox => c
                .list_pod_sandbox(cri::ListPodSandboxRequest::default())
                .await
                .map(drop),
        }
    }
}

/// A process running under callgrind, its dumps going to `dir/name.out.N`.
struct Counted {
    name: &'static str,
    pid: u32,
    dir: PathBuf,
}

impl Counted {
    fn wrapper(dir: &Path, name: &str, cache_sim: bool) -> Vec<OsString> {
        let mut w: Vec<OsString> = vec![
            "valgrind".into(),
            "-q".into(),
            "--tool=callgrind".into(),
            format!("--callgrind-out-file={}/{name}.out", dir.display()).into(),
        ];
        if cache_sim {
            w.push("--cache-sim=yes".into());
        }
        w
    }

    /// Sends `callgrind_control` option `flag` (`-z` zero, `-d` dump).
    fn control(&self, flag: &str) -> anyhow::Result<()> {
        let out = std::process::Command::new("callgrind_control")
            .arg(flag)
            .arg(self.pid.to_string())
            .output()
            .context("running callgrind_control (valgrind's package)")?;
        anyhow::ensure!(
            out.status.success(),
            "callgrind_control {flag} {} ({}): {}",
            self.pid,
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// The dumps written so far, by number.
    fn dumps(&self) -> anyhow::Result<Vec<(u32, PathBuf)>> {
        let prefix = format!("{}.out.", self.name);
        let mut found = vec![];
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let n = path
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.strip_prefix(&prefix))
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(n) = n {
                found.push((n, path));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Dumps the counters and returns the events since the last zero and
    /// the dump's path.
    async fn dump(&self) -> anyhow::Result<(Events, PathBuf)> {
        let before = self.dumps()?.last().map_or(0, |d| d.0);
        self.control("-d")?;
        // callgrind writes the file before it answers; allow for a slow disk.
        let t = Instant::now();
        loop {
            if let Some((n, path)) = self.dumps()?.pop()
                && n > before
            {
                let text = std::fs::read_to_string(&path)?;
                if let Some(events) = Events::parse(&text) {
                    return Ok((events, path));
                }
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "{}: no new callgrind dump in {}",
                self.name,
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The event totals of a callgrind dump, by event name (`Ir`, and with the
/// cache model `I1mr`, `D1mr`, `D1mw`, `ILmr`, `DLmr`, `DLmw`).
#[derive(Default)]
struct Events(Vec<(String, u64)>);

impl Events {
    /// The totals of a complete dump (its `events:` names and its
    /// `totals:` line, else `summary:`).
    fn parse(dump: &str) -> Option<Self> {
        let line = |key: &str| dump.lines().find_map(|l| l.strip_prefix(key));
        let names = line("events:")?;
        let values = line("totals:").or_else(|| line("summary:"))?;
        let values: Vec<u64> = values
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        Some(Self(
            names
                .split_whitespace()
                .map(str::to_string)
                .zip(values)
                .collect(),
        ))
    }

    fn get(&self, names: &[&str]) -> u64 {
        self.0
            .iter()
            .filter(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, v)| v)
            .sum()
    }
}

/// What `calls` calls of one method cost one process: instructions per
/// call, and instructions per call's worth of idle time.
struct Cost {
    per_call: f64,
    idle_per_call: f64,
    /// Per call, with the cache model: first-level instruction misses,
    /// first-level data misses (reads and writes), last-level misses.
    misses: [f64; 3],
    dump: PathBuf,
}

async fn count(
    p: &Counted,
    client: &Runtime,
    method: Method,
    calls: usize,
    container: &str,
) -> anyhow::Result<Cost> {
    let mut c = client.clone();
    for _ in 0..calls.div_ceil(10) {
        method.call(&mut c, container).await?;
    }
    p.control("-z")?;
    let t = Instant::now();
    for _ in 0..calls {
        method.call(&mut c, container).await?;
    }
    let took = t.elapsed();
    let (busy, dump) = p.dump().await?;
    p.control("-z")?;
    tokio::time::sleep(took).await;
    let (idle, _) = p.dump().await?;
    let per = |n: u64| n as f64 / calls as f64;
    Ok(Cost {
        per_call: per(busy.get(&["Ir"])),
        idle_per_call: per(idle.get(&["Ir"])),
        misses: [
            per(busy.get(&["I1mr"])),
            per(busy.get(&["D1mr", "D1mw"])),
            per(busy.get(&["ILmr", "DLmr", "DLmw"])),
        ],
        dump,
    })
}

async fn run(o: Options) -> anyhow::Result<()> {
    for tool in ["valgrind", "callgrind_control"] {
        anyhow::ensure!(
            std::process::Command::new(tool)
                .arg("--version")
                .output()
                .is_ok(),
            "{tool} is needed (Debian: apt-get install valgrind)"
        );
    }
    let scratch = tempfile::tempdir()?;
    let dir = match &o.keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => scratch.path().to_path_buf(),
    };
    let ctrd = Containerd::start(&image_cache())?;
    println!("agent binary: {}", binary()?.display());
    let args: Vec<&str> = o.agent_args.iter().map(String::as_str).collect();
    // Under callgrind a start takes seconds, not milliseconds.
    let wait = Duration::from_secs(120);
    let agent = Agent::start_under(
        &Counted::wrapper(&dir, "agent", o.cache_sim),
        &ctrd.socket(),
        &args,
        wait,
    )?;
    let fwd = forwarder::Process::start_under(
        &Counted::wrapper(&dir, "forwarder", o.cache_sim),
        &ctrd.socket(),
        wait,
    )?;
    let targets = [
        (
            Counted {
                name: "forwarder",
                pid: fwd.pid(),
                dir: dir.clone(),
            },
            clients(fwd.socket()).await?.0,
        ),
        (
            Counted {
                name: "agent",
                pid: agent.pid().context("agent pid")?,
                dir: dir.clone(),
            },
            clients(&agent.socket()).await?.0,
        ),
    ];

    let mut kubelet = Kubelet::connect(&ctrd.socket(), ctrd.pod_env()).await?;
    let per_pod = 25;
    let mut pods = vec![];
    for p in 0..o.containers.div_ceil(per_pod) {
        let n = per_pod.min(o.containers - p * per_pod);
        let containers = (0..n)
            .map(|i| ContainerSpec::shell(&format!("c{i}"), "exec sleep 3600"))
            .collect();
        pods.push(
            kubelet
                .run_pod(PodSpec::new(&format!("bench-{p}"), containers))
                .await?,
        );
    }
    let container = pods
        .first()
        .and_then(|p| p.id("c0"))
        .context("container c0")?
        .to_string();
    let mut direct = clients(&ctrd.socket()).await?.0;
    let listed = direct
        .list_containers(cri::ListContainersRequest::default())
        .await?
        .into_inner()
        .containers
        .len();
    println!(
        "containers present: {listed}\n\ninstructions per call (callgrind, every thread of the process), {} calls per method and target, one after another on one connection; idle: the same process's instructions over as long with no calls, per call",
        o.calls
    );
    println!(
        "{:<20} {:>12} {:>12} {:>9} {:>12} {:>12}",
        "method", "forwarder", "agent", "agent/fwd", "fwd idle", "agent idle"
    );
    for method in [
        Method::Version,
        Method::ContainerStatus,
        Method::ListContainers,
        Method::ListPodSandbox,
    ] {
        let mut costs = vec![];
        for (p, client) in &targets {
            costs.push(count(p, client, method, o.calls, &container).await?);
        }
        let (f, a) = (&costs[0], &costs[1]);
        println!(
            "{:<20} {:>12.0} {:>12.0} {:>9.2} {:>12.0} {:>12.0}",
            format!("{method:?}"),
            f.per_call,
            a.per_call,
            a.per_call / f.per_call,
            f.idle_per_call,
            a.idle_per_call
        );
        if o.cache_sim {
            let m = |c: &Cost| {
                format!(
                    "I1 {:.0}, D1 {:.0}, LL {:.0}",
                    c.misses[0], c.misses[1], c.misses[2]
                )
            };
            println!(
                "  cache misses per call (model): forwarder {}; agent {}",
                m(f),
                m(a)
            );
        }
        if o.keep.is_some() {
            println!("  dumps: {} {}", f.dump.display(), a.dump.display());
        }
    }
    for p in &pods {
        kubelet.remove_pod(p).await?;
    }
    drop(targets);
    drop(agent);
    drop(fwd);
    Ok(())
}
