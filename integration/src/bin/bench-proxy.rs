//! Benchmark: what the agent's hop costs, measured side by side in one run.
//!
//! Starts a real containerd, the agent in front of it, and beside it the
//! floor of any extra process: a minimal HTTP/2 forwarder
//! ([`keelson_integration::forwarder`], this binary re-run as
//! `--serve-forwarder`, its own process, one current-thread runtime, no
//! hooks, no logging). Fills the node with containers, then interleaves
//! calls to the three targets call by call (the order rotating) so machine
//! drift hits all equally. Prints p50/p99 per method and target, the
//! ratios against direct, and the figure to drive down: what the agent
//! adds over direct ÷ what the forwarder adds (1.00 = the agent costs no
//! more than a process that does nothing). Then what one Version and one
//! ListContainers call cost the forwarder and the agent in the kernel's
//! accounting (context switches, CPU, syscalls) and, where `perf sched
//! record` works, where the whole chain's wall time went (each process's
//! runs, time on CPU, and wake-up-to-running delay, split by whether the
//! CPU had gone idle first), throughput with
//! concurrent callers (and each process's CPU per call), pod start
//! latency, and the agent's RSS and start-to-serving time, on an empty
//! state dir and again on the pod book it kept of every container.
//!
//! Run: `cargo run --release -p keelson-integration --bin bench-proxy`
//! (after `cargo build --release -p keelson-agent`). Options:
//! `--calls N` (unary calls per target and method, default 5000),
//! `--containers N` (default 100), `--pods N` (pod starts per target,
//! default 20), `--agent-arg ARG` (repeatable, passed to the agent).

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use cri_proto as cri;
use keelson_integration::accounting::{
    SchedProfile, SchedRecording, cpu_us, minor_faults, status_kib, strace_summary, switches,
    switches_per_call,
};
use keelson_integration::agent::{Agent, binary};
use keelson_integration::client::{Runtime, clients, raw_call};
use keelson_integration::containerd::Containerd;
use keelson_integration::image_cache;
use keelson_integration::kubelet::{ContainerSpec, Kubelet, PodSpec};
use keelson_integration::stats::{Summary, summarize};

struct Options {
    calls: usize,
    containers: usize,
    pods: usize,
    agent_args: Vec<String>,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        calls: 5000,
        containers: 100,
        pods: 20,
        agent_args: vec![],
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--calls" => o.calls = value("--calls")?.parse()?,
            "--containers" => o.containers = value("--containers")?.parse()?,
            "--pods" => o.pods = value("--pods")?.parse()?,
            "--agent-arg" => o.agent_args.push(value("--agent-arg")?),
            other => anyhow::bail!("unknown option {other}; see the doc comment of bench-proxy.rs"),
        }
    }
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    if let Some(served) = keelson_integration::forwarder::serve_if_asked() {
        return Ok(served?);
    }
    let o = options()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(o))
}

async fn run(o: Options) -> anyhow::Result<()> {
    let ctrd = Containerd::start(&image_cache())?;
    println!("agent binary: {}", binary()?.display());
    let on_empty = "agent start on an empty state dir";
    let startup = measure_startup(&ctrd.socket(), &o.agent_args, 10, None, on_empty).await?;

    let args: Vec<&str> = o.agent_args.iter().map(String::as_str).collect();
    let agent = Agent::start(&ctrd.socket(), &args)?;
    let pid = agent.pid().context("agent pid")?;
    let forwarder = keelson_integration::forwarder::Process::start(&ctrd.socket())?;
    let (mut via, mut direct, mut fwd) = (
        clients(&agent.socket()).await?.0,
        clients(&ctrd.socket()).await?.0,
        clients(forwarder.socket()).await?.0,
    );
    // One warm-up call each so the connections exist.
    via.version(cri::VersionRequest::default()).await?;
    direct.version(cri::VersionRequest::default()).await?;
    fwd.version(cri::VersionRequest::default()).await?;
    let rss_idle = status_kib(pid, "VmRSS")?;

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
    let listed = direct
        .list_containers(cri::ListContainersRequest::default())
        .await?
        .into_inner()
        .containers
        .len();
    let some_id = pods[0].id("c0").context("container c0")?.to_string();
    println!("containers present: {listed}");

    println!(
        "\nunary calls, interleaved call by call ({} per target), microseconds",
        o.calls
    );
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9}",
        "method",
        "direct50",
        "fwd50",
        "agent50",
        "direct99",
        "fwd99",
        "agent99",
        "fwd x",
        "agent x",
        "added/fwd"
    );
    let targets = [direct.clone(), fwd.clone(), via.clone()];
    let version = interleave(o.calls, &targets, |mut c| async move {
        c.version(cri::VersionRequest::default()).await.map(|_| ())
    })
    .await?;
    row("Version", &version);
    let status = interleave(o.calls, &targets, |mut c| {
        let id = some_id.clone();
        async move {
            c.container_status(cri::ContainerStatusRequest {
                container_id: id,
                verbose: false,
            })
            .await
            .map(|_| ())
        }
    })
    .await?;
    row("ContainerStatus", &status);
    let list = interleave(o.calls / 5, &targets, |mut c| async move {
        c.list_containers(cri::ListContainersRequest::default())
            .await
            .map(|_| ())
    })
    .await?;
    row(&format!("ListContainers({listed})"), &list);
    let sandboxes = interleave(o.calls / 5, &targets, |mut c| async move {
        c.list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .map(|_| ())
    })
    .await?;
    row("ListPodSandbox", &sandboxes);

    for (method, calls) in [
        (Costed::Version, o.calls),
        (Costed::ListContainers, o.calls / 5),
    ] {
        println!(
            "\nper {method:?} call on one connection ({calls} calls), forwarder vs agent: context switches (all threads, /proc/<pid>/task/*/status), CPU and minor page faults (/proc/<pid>/stat), syscalls (strace -f -c, attached for a second pass)",
        );
        for (name, client, p) in [("forwarder", &fwd, forwarder.pid()), ("agent", &via, pid)] {
            let chain = [
                ("caller", std::process::id()),
                (name, p),
                ("containerd", ctrd.pid()),
            ];
            let costs = kernel_costs(client, &chain, calls, method).await?;
            println!(
                "{name:<10} switches/call {:.2} (voluntary {:.2}; by thread: {})   CPU µs/call {:.1}   page faults/call {:.2}   syscalls/call {}",
                costs.switches,
                costs.voluntary,
                costs.threads,
                costs.cpu_us,
                costs.faults,
                costs.syscalls.map_or_else(
                    || "n/a (no strace)".to_string(),
                    |(n, top)| format!("{n:.2} ({top})")
                )
            );
            print_sched(costs.wall_us, &costs.sched);
        }
    }

    println!(
        "\nthroughput, Version with 16 callers in flight, alternating 250 ms blocks x 8 per target"
    );
    // The callers are this process: its CPU counts as much as the others'.
    let pids = [ctrd.pid(), forwarder.pid(), pid, std::process::id()];
    let (rates, cpu) = throughput(&targets, &pids, 16, Duration::from_millis(250), 8).await?;
    let (td, tf, ta) = (rates[0], rates[1], rates[2]);
    println!(
        "direct {td:>9.0} calls/s   forwarder {tf:>9.0} calls/s ({:.3})   agent {ta:>9.0} calls/s ({:.3})",
        tf / td,
        ta / td
    );
    // What each process spent per call while its target was being called
    // (user + system CPU from /proc/<pid>/stat): the cost that, with every
    // core busy, comes out of someone else's time.
    let per_call = |c: &[f64; 4], rate: f64, secs: f64| c.map(|us| us / (rate * secs));
    let secs = 0.25 * 8.0;
    let [d_ctrd, _, _, d_self] = per_call(&cpu[0], td, secs);
    let [f_ctrd, f_fwd, _, f_self] = per_call(&cpu[1], tf, secs);
    let [a_ctrd, _, a_agent, a_self] = per_call(&cpu[2], ta, secs);
    println!(
        "CPU per call, microseconds: containerd {d_ctrd:.1} (direct), {f_ctrd:.1} (via forwarder), {a_ctrd:.1} (via agent); forwarder {f_fwd:.1}; agent {a_agent:.1} (agent ÷ forwarder {:.2}); callers {d_self:.1} / {f_self:.1} / {a_self:.1}",
        a_agent / f_fwd
    );
    // With every core busy, calls per second are cores ÷ CPU per call: the
    // ratio of the totals is what an extra process must cost at the least.
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let total = [
        d_ctrd + d_self,
        f_ctrd + f_fwd + f_self,
        a_ctrd + a_agent + a_self,
    ];
    let busy: Vec<String> = [td, tf, ta]
        .iter()
        .zip(&total)
        .map(|(rate, us)| format!("{:.2}", rate * us / 1e6 / cores))
        .collect();
    println!(
        "CPU per call, all three processes: direct {:.1}, via forwarder {:.1}, via agent {:.1} µs; share of the {cores} cores busy {}; so with the cores saturated the best a forwarder can do is {:.3} of direct, the agent {:.3}",
        total[0],
        total[1],
        total[2],
        busy.join(" / "),
        total[0] / total[1],
        total[0] / total[2]
    );

    println!(
        "\npod start (RunPodSandbox + CreateContainer + StartContainer), interleaved, {} per target, ms",
        o.pods
    );
    let mut k_via = Kubelet::connect(&agent.socket(), ctrd.pod_env()).await?;
    let (pd, pa) = pod_starts(&mut kubelet, &mut k_via, o.pods).await?;
    println!(
        "direct p50 {:.1} p99 {:.1}   agent p50 {:.1} p99 {:.1}   p50 x {:.3}",
        pd.p50 / 1e3,
        pd.p99 / 1e3,
        pa.p50 / 1e3,
        pa.p99 / 1e3,
        pa.p50 / pd.p50
    );

    let rss_peak = status_kib(pid, "VmHWM")?;
    println!("\nagent RSS: idle {} KiB, peak {} KiB", rss_idle, rss_peak);
    startup.print(on_empty);

    // Start-up on a full pod book: the agent stopped, then started again on
    // its own state dir (the book it kept of every container above).
    // Its callers hang up first: a stop waits for open connections, and
    // a connection closes only once this runtime drives its end of the
    // agent's GOAWAY (a blocking wait on this thread would leave the
    // agent waiting for the ping it sends with it for its whole grace).
    drop((targets, via, k_via));
    let (agent, stopped) = tokio::task::spawn_blocking(move || {
        let mut agent = agent;
        let stopped = agent.stop();
        (agent, stopped)
    })
    .await?;
    stopped?;
    let what = format!("agent start on its pod book of {listed} containers");
    measure_startup(
        &ctrd.socket(),
        &o.agent_args,
        10,
        Some(&agent.state_dir()),
        &what,
    )
    .await?
    .print(&what);
    for p in &pods {
        kubelet.remove_pod(p).await?;
    }
    drop(agent);
    drop(forwarder);
    Ok(())
}

/// One table row: p50/p99 per target (direct, forwarder, agent), the
/// ratios to direct, and the agent's added p50 over the forwarder's.
fn row(name: &str, s: &[Summary]) {
    let (d, f, a) = (&s[0], &s[1], &s[2]);
    println!(
        "{:<24} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>7.3} {:>7.3} {:>9.2}",
        name,
        d.p50,
        f.p50,
        a.p50,
        d.p99,
        f.p99,
        a.p99,
        f.p50 / d.p50,
        a.p50 / d.p50,
        (a.p50 - d.p50) / (f.p50 - d.p50)
    );
}

/// Calls `f` on every target `n` times, call by call, rotating which
/// goes first.
async fn interleave<F, Fut>(n: usize, targets: &[Runtime], f: F) -> anyhow::Result<Vec<Summary>>
where
    F: Fn(Runtime) -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let mut samples: Vec<Vec<Duration>> = targets.iter().map(|_| Vec::with_capacity(n)).collect();
    for _ in 0..n / 10 {
        for t in targets {
            f(t.clone()).await?;
        }
    }
    for i in 0..n {
        for k in 0..targets.len() {
            let which = (i + k) % targets.len();
            let t = Instant::now();
            f(targets[which].clone()).await?;
            samples[which].push(t.elapsed());
        }
    }
    Ok(samples.iter_mut().map(|s| summarize(s)).collect())
}

/// Calls per second per target with `inflight` concurrent Version calls,
/// in blocks of `block`, the targets taking turns `rounds` times; and, per
/// target, the CPU microseconds each of `pids` spent during its blocks.
async fn throughput(
    targets: &[Runtime],
    pids: &[u32; 4],
    inflight: usize,
    block: Duration,
    rounds: usize,
) -> anyhow::Result<(Vec<f64>, Vec<[f64; 4]>)> {
    let mut totals = vec![(0u64, Duration::ZERO); targets.len()];
    let mut cpu = vec![[0.0f64; 4]; targets.len()];
    for r in 0..rounds * targets.len() {
        let which = (r + r / targets.len()) % targets.len();
        let client = targets[which].clone();
        let before = pids.map(|p| cpu_us(p).unwrap_or(0.0));
        let start = Instant::now();
        let mut tasks = vec![];
        for _ in 0..inflight {
            let mut c = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < block {
                    c.version(cri::VersionRequest::default()).await?;
                    n += 1;
                }
                Ok::<_, tonic::Status>(n)
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await??;
        }
        let slot = &mut totals[which];
        slot.0 += n;
        slot.1 += start.elapsed();
        for (k, p) in pids.iter().enumerate() {
            cpu[which][k] += cpu_us(*p).unwrap_or(0.0) - before[k];
        }
    }
    let rates = totals
        .into_iter()
        .map(|(n, t)| n as f64 / t.as_secs_f64())
        .collect();
    Ok((rates, cpu))
}

/// The calls whose kernel costs are counted: the smallest reply, and a
/// reply as long as the container list.
#[derive(Clone, Copy, Debug)]
enum Costed {
    Version,
    ListContainers,
}

/// What one call costs a process in the kernel's accounting.
struct KernelCosts {
    switches: f64,
    voluntary: f64,
    /// Switches per call of each thread that switched, by name.
    threads: String,
    cpu_us: f64,
    /// Minor page faults (memory the process touched for the first time,
    /// or again after giving it back).
    faults: f64,
    /// Syscalls per call and the commonest ones, when strace is there.
    syscalls: Option<(f64, String)>,
    /// Wall time per call of the first (unobserved) pass.
    wall_us: f64,
    /// The whole chain's scheduling in a third pass (`perf sched`), with
    /// its wall time per call; or why there is none.
    sched: Result<(SchedProfile, f64), String>,
}

/// Prints where a call's wall time went in [`KernelCosts::sched`]: per
/// process of the chain, how often its threads ran per call, for how long,
/// and how long their wake-ups waited for a CPU (of which, wake-ups that
/// found the CPU idle).
fn print_sched(wall_us: f64, sched: &Result<(SchedProfile, f64), String>) {
    let (profile, traced_wall) = match sched {
        Ok(s) => s,
        Err(why) => {
            println!("{:<10} scheduling: n/a ({why})", "");
            return;
        }
    };
    let rows: Vec<String> = profile
        .rows
        .iter()
        .map(|r| {
            format!(
                "{} runs {:.2} on-CPU {:.1} µs, wake-up to running {:.1} µs ({:.2} from idle, {:.1} µs)",
                r.name, r.runs, r.run_us, r.delay_us, r.from_idle, r.from_idle_delay_us
            )
        })
        .collect();
    println!(
        "{:<10} scheduling (perf sched, third pass; wall µs/call {:.1} unobserved, {:.1} recorded; CPUs idle {:.1} µs/call): {}",
        "",
        wall_us,
        traced_wall,
        profile.idle_us,
        rows.join("; ")
    );
}

/// Makes `n` calls one after another through `client` and reads what
/// they cost the proxy, `chain[1]` (caller, proxy, runtime); then, if
/// strace is installed, a second pass under `strace -f -c -p` counts its
/// syscalls (not timed: strace slows every syscall down); then, if `perf`
/// can record the scheduler, a third pass accounts the wall time of the
/// whole chain.
async fn kernel_costs(
    client: &Runtime,
    chain: &[(&str, u32); 3],
    n: usize,
    method: Costed,
) -> anyhow::Result<KernelCosts> {
    let pid = chain[1].1;
    let calls = |mut c: Runtime| async move {
        for _ in 0..n {
            match method {
                Costed::Version => {
                    c.version(cri::VersionRequest::default()).await?;
                }
                Costed::ListContainers => {
                    c.list_containers(cri::ListContainersRequest::default())
                        .await?;
                }
            }
        }
        Ok::<_, tonic::Status>(())
    };
    let s0 = switches(pid)?;
    let cpu0 = cpu_us(pid)?;
    let f0 = minor_faults(pid)?;
    let t = Instant::now();
    calls(client.clone()).await?;
    let wall_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let s1 = switches(pid)?;
    let cpu1 = cpu_us(pid)?;
    let f1 = minor_faults(pid)?;
    let per = |a: u64, b: u64| (b - a) as f64 / n as f64;
    let (switches, voluntary, threads) = switches_per_call(&s0, &s1, n);
    let syscalls = match std::process::Command::new("strace")
        .args(["-f", "-c", "-p", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(strace) => {
            // Attaching takes a moment; calls made before it count nothing.
            tokio::time::sleep(Duration::from_millis(500)).await;
            calls(client.clone()).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            keelson_integration::proc::signal(strace.id(), nix::sys::signal::Signal::SIGINT);
            let out = strace.wait_with_output()?;
            strace_summary(&String::from_utf8_lossy(&out.stderr), n)
        }
        Err(_) => None,
    };
    let sched = match SchedRecording::start() {
        Ok(recording) => {
            let t = Instant::now();
            calls(client.clone()).await?;
            let traced_wall = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            recording
                .finish(chain, n)
                .map(|p| (p, traced_wall))
                .map_err(|e| format!("{e:#}"))
        }
        Err(e) => Err(format!("{e:#}")),
    };
    Ok(KernelCosts {
        switches,
        voluntary,
        threads,
        cpu_us: (cpu1 - cpu0) / n as f64,
        faults: per(f0, f1),
        syscalls,
        wall_us,
        sched,
    })
}

async fn pod_starts(
    direct: &mut Kubelet,
    via: &mut Kubelet,
    n: usize,
) -> anyhow::Result<(Summary, Summary)> {
    let (mut d, mut a) = (vec![], vec![]);
    for i in 0..n * 2 {
        let agent = (i % 2 == 1) ^ (i / 2 % 2 == 1);
        let k = if agent { &mut *via } else { &mut *direct };
        let spec = PodSpec::new(
            &format!("start-{i}"),
            vec![ContainerSpec::shell("main", "exec sleep 3600")],
        );
        let t = Instant::now();
        let pod = k.run_pod(spec).await?;
        let e = t.elapsed();
        if let Some(err) = &pod.containers[0].error {
            anyhow::bail!("pod start failed: {err}");
        }
        k.remove_pod(&pod).await?;
        if agent { a.push(e) } else { d.push(e) }
    }
    Ok((summarize(&mut d), summarize(&mut a)))
}

/// How long the agent binary takes from spawn to each stage of its start.
struct Startup {
    /// Its CRI socket accepts.
    listening: Summary,
    /// A Version call (no hook takes it) is answered through it.
    version: Summary,
    /// A ContainerStatus call (a hooked method: held until the pod book
    /// and the features have loaded) is answered through it.
    hooked: Summary,
}

impl Startup {
    fn print(&self, what: &str) {
        let ms = |s: &Summary| format!("p50 {:.2} ms (max {:.2})", s.p50 / 1e3, s.p99 / 1e3);
        println!(
            "{what}, {} starts, from spawn: listening {}; first Version answered {}; first hooked call (ContainerStatus) answered {}",
            self.listening.n,
            ms(&self.listening),
            ms(&self.version),
            ms(&self.hooked)
        );
    }
}

/// Times the agent binary's start ([`Startup`]), on a fresh state dir each
/// time, or on `state` (a pod book kept there).
async fn measure_startup(
    runtime: &Path,
    extra: &[String],
    n: usize,
    state: Option<&Path>,
    what: &str,
) -> anyhow::Result<Startup> {
    let args: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (mut listening, mut answering, mut hooked) = (vec![], vec![], vec![]);
    // ContainerStatus { container_id: "keelson-bench-absent" }
    let mut status_request = vec![0x0a, 20];
    status_request.extend_from_slice(b"keelson-bench-absent");
    let (mut in_run, mut ready, mut store_open, mut features) = (vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let dir = tempfile::tempdir()?;
        let sock = dir.path().join("cri.sock");
        let state = state.map_or_else(|| dir.path().join("state"), Path::to_path_buf);
        let t = Instant::now();
        let mut child = std::process::Command::new(binary()?)
            .arg("--listen")
            .arg(&sock)
            .arg("--runtime-endpoint")
            .arg(runtime)
            .arg("--state-dir")
            .arg(&state)
            .arg("--admin-socket")
            .arg(dir.path().join("admin.sock"))
            .args(&args)
            .stderr(std::fs::File::create(dir.path().join("agent.log"))?)
            .spawn()?;
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if t.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                anyhow::bail!("agent did not listen within 10 s");
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        listening.push(t.elapsed());
        let answer = raw_call(&sock, "/runtime.v1.RuntimeService/Version", &[]).await?;
        anyhow::ensure!(
            answer.code == 0,
            "Version through the new agent: {}",
            answer.message
        );
        answering.push(t.elapsed());
        let answer = raw_call(
            &sock,
            "/runtime.v1.RuntimeService/ContainerStatus",
            &status_request,
        )
        .await?;
        // The runtime does not know the id: NOT_FOUND is its answer; the
        // agent's own UNAVAILABLE (features failed) is not.
        anyhow::ensure!(
            answer.code != 14,
            "ContainerStatus through the new agent: {}",
            answer.message
        );
        hooked.push(t.elapsed());
        keelson_integration::proc::stop_child(&mut child, Duration::from_secs(5));
        // The agent's own account of its start, from its "serving CRI" line.
        let log = std::fs::read_to_string(dir.path().join("agent.log"))?;
        for (field, into) in [
            ("startup_us", &mut in_run),
            ("ready_us", &mut ready),
            ("store_open_us", &mut store_open),
            ("features_us", &mut features),
        ] {
            if let Some(us) = log_field(&log, field) {
                into.push(Duration::from_micros(us));
            }
        }
    }
    if !in_run.is_empty() {
        let (r, d, s, f) = (
            summarize(&mut in_run),
            summarize(&mut ready),
            summarize(&mut store_open),
            summarize(&mut features),
        );
        println!(
            "{what}, as the agent logs it (p50), from its run(): serving CRI {:.2} ms; node features ready {:.2} ms (sled open {:.2} ms, then the features {:.2} ms, beside the serving)",
            r.p50 / 1e3,
            d.p50 / 1e3,
            s.p50 / 1e3,
            f.p50 / 1e3
        );
    }
    Ok(Startup {
        listening: summarize(&mut listening),
        version: summarize(&mut answering),
        hooked: summarize(&mut hooked),
    })
}

/// A numeric field of a text or JSON log line: `name=123` or `"name":123`.
fn log_field(log: &str, name: &str) -> Option<u64> {
    [format!("{name}="), format!("\"{name}\":")]
        .iter()
        .find_map(|key| {
            let at = log.find(key.as_str())? + key.len();
            let digits: String = log[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
}
