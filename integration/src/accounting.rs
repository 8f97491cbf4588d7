//! What a process costs in the kernel's own accounting, for the
//! benchmarks: context switches by thread, CPU time, minor page faults and
//! resident memory from `/proc`, and (with `perf`) where a chain of
//! processes spends a call's wall time: running, or woken and waiting for
//! a CPU — split by whether the CPU it ran on had gone idle first.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// Context switches of each thread of `pid` so far, by thread name
/// (threads of one name summed): (all, voluntary).
pub fn switches(pid: u32) -> crate::Result<BTreeMap<String, (u64, u64)>> {
    let mut by_name = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?.path();
        // A thread that ended between the listing and the read is skipped.
        let (Ok(status), Ok(name)) = (
            std::fs::read_to_string(task.join("status")),
            std::fs::read_to_string(task.join("comm")),
        ) else {
            continue;
        };
        let slot: &mut (u64, u64) = by_name.entry(name.trim().to_string()).or_default();
        for line in status.lines() {
            let n = |l: &str| l.split_whitespace().nth(1)?.parse::<u64>().ok();
            if line.starts_with("voluntary_ctxt_switches") {
                let v = n(line).unwrap_or(0);
                slot.0 += v;
                slot.1 += v;
            } else if line.starts_with("nonvoluntary_ctxt_switches") {
                slot.0 += n(line).unwrap_or(0);
            }
        }
    }
    Ok(by_name)
}

/// Switches per call between two [`switches`] readings: the totals
/// (all, voluntary) and the threads that switched at least once in 20
/// calls, busiest first.
pub fn switches_per_call(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
    n: usize,
) -> (f64, f64, String) {
    let mut rows: Vec<(f64, &str)> = vec![];
    let (mut all, mut voluntary) = (0u64, 0u64);
    for (name, (a1, v1)) in after {
        let (a0, v0) = before.get(name).copied().unwrap_or_default();
        all += a1.saturating_sub(a0);
        voluntary += v1.saturating_sub(v0);
        let per = a1.saturating_sub(a0) as f64 / n as f64;
        if per >= 0.05 {
            rows.push((per, name));
        }
    }
    rows.sort_by(|x, y| y.0.total_cmp(&x.0));
    let threads = rows
        .iter()
        .map(|(per, name)| format!("{name} {per:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    (all as f64 / n as f64, voluntary as f64 / n as f64, threads)
}

/// Calls per `n` and the three commonest syscalls from `strace -c`'s table.
pub fn strace_summary(table: &str, n: usize) -> Option<(f64, String)> {
    // Rows: % time, seconds, usecs/call, calls, [errors,] syscall.
    let rows: Vec<(u64, &str)> = table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.last()?;
            let calls = f.get(3)?.parse::<u64>().ok()?;
            Some((calls, name))
        })
        .collect();
    let total = rows.iter().find(|(_, name)| *name == "total")?.0;
    let mut top: Vec<_> = rows.iter().filter(|(_, name)| *name != "total").collect();
    top.sort_by_key(|r| std::cmp::Reverse(r.0));
    let top = top
        .iter()
        .take(3)
        .map(|(c, name)| format!("{name} {:.2}", *c as f64 / n as f64))
        .collect::<Vec<_>>()
        .join(", ");
    Some((total as f64 / n as f64, top))
}

/// The fields of `/proc/<pid>/stat` after the command name (which may
/// hold spaces, in parens): `state` is the first.
fn stat_fields(pid: u32) -> crate::Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("/proc/<pid>/stat")?.1;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// Minor page faults of `pid` (all threads) so far.
pub fn minor_faults(pid: u32) -> crate::Result<u64> {
    stat_fields(pid)?
        .get(7)
        .and_then(|f| f.parse().ok())
        .context("minflt in /proc/<pid>/stat")
}

/// User + system CPU time of `pid` so far, in microseconds.
pub fn cpu_us(pid: u32) -> crate::Result<f64> {
    let fields = stat_fields(pid)?;
    let ticks: f64 = fields
        .get(11..13)
        .context("utime/stime in /proc/<pid>/stat")?
        .iter()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks * 1e6 / hz)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, `RssAnon`, …).
pub fn status_kib(pid: u32, field: &str) -> crate::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}

/// A system-wide recording of the scheduler (`perf sched record -a`),
/// stopped and read by [`SchedRecording::finish`].
pub struct SchedRecording {
    child: Child,
    perf: PathBuf,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl SchedRecording {
    /// Starts recording; an error says why it cannot (no `perf`, or no
    /// tracepoints: `mount -t tracefs nodev /sys/kernel/tracing`).
    pub fn start() -> crate::Result<Self> {
        let perf = crate::proc::which("perf").context("perf is not installed")?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("sched.data");
        let mut child = Command::new(&perf)
            .args(["sched", "record", "-a", "-o"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        // perf writes its header once its events are open.
        let opened = crate::proc::wait_until(std::time::Duration::from_secs(5), || {
            std::fs::metadata(&file).is_ok_and(|m| m.len() > 0)
        });
        if !opened || child.try_wait()?.is_some() {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            anyhow::bail!(
                "perf sched record did not start: {}",
                crate::proc::last_lines(&String::from_utf8_lossy(&out.stderr), 3)
            );
        }
        Ok(Self {
            child,
            perf,
            file,
            _dir: dir,
        })
    }

    /// Stops the recording and accounts what it saw to each process in
    /// `pids` (its threads together), per call of `calls`.
    pub fn finish(mut self, pids: &[(&str, u32)], calls: usize) -> crate::Result<SchedProfile> {
        crate::proc::signal(self.child.id(), nix::sys::signal::Signal::SIGINT);
        let status = self.child.wait()?;
        // perf ends on SIGINT by raising it again once the data is written.
        anyhow::ensure!(
            status.success() || status.signal() == Some(libc::SIGINT),
            "perf sched record: {status}"
        );
        let text = crate::proc::run(
            Command::new(&self.perf)
                .args(["sched", "timehist", "-i"])
                .arg(&self.file)
                .stderr(Stdio::null()),
        )?;
        Ok(SchedProfile::from_timehist(&text, pids, calls))
    }
}

/// What a recording saw, per call, for each process asked about.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SchedProfile {
    pub rows: Vec<SchedRow>,
    /// Time the CPUs spent idle, summed over all CPUs, µs per call.
    pub idle_us: f64,
}

/// One process's scheduling per call: how often its threads ran, for how
/// long, and how long they waited from their wake-up to running — in all,
/// and for the runs that found their CPU idle (the wake-up had to bring
/// the CPU back first).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SchedRow {
    pub name: String,
    pub runs: f64,
    pub run_us: f64,
    pub delay_us: f64,
    pub from_idle: f64,
    pub from_idle_delay_us: f64,
}

/// One line of `perf sched timehist`: a task switched out.
#[derive(Debug, PartialEq)]
struct Switch {
    cpu: u32,
    /// None for the idle task.
    pid: Option<u32>,
    delay_ms: f64,
    run_ms: f64,
}

/// Parses `   41714.562054 [0000]  name[tid/pid]  wait  delay  run`
/// (a thread that leads its process shows `name[pid]`; the idle task
/// `<idle>`; the name may hold spaces).
fn parse_switch(line: &str) -> Option<Switch> {
    let line = line.trim();
    let (_time, rest) = line.split_once(' ')?;
    let rest = rest.trim_start();
    let cpu = rest.strip_prefix('[')?;
    let (cpu, rest) = cpu.split_once(']')?;
    let cpu = cpu.parse().ok()?;
    let mut fields = rest.split_whitespace().rev();
    let run_ms = fields.next()?.parse().ok()?;
    let delay_ms = fields.next()?.parse().ok()?;
    let _wait: f64 = fields.next()?.parse().ok()?;
    let task = rest.trim();
    let pid = if task.starts_with("<idle>") {
        None
    } else {
        let ids = &task[task.rfind('[')? + 1..];
        let ids = &ids[..ids.find(']')?];
        let pid = ids.rsplit('/').next()?;
        Some(pid.parse().ok()?)
    };
    Some(Switch {
        cpu,
        pid,
        delay_ms,
        run_ms,
    })
}

impl SchedProfile {
    fn from_timehist(text: &str, pids: &[(&str, u32)], calls: usize) -> Self {
        let mut rows: Vec<SchedRow> = pids
            .iter()
            .map(|(name, _)| SchedRow {
                name: (*name).to_string(),
                ..SchedRow::default()
            })
            .collect();
        let mut idle_ms = 0.0;
        // What ran last on each CPU: Some(true) = the idle task.
        let mut last_idle: BTreeMap<u32, bool> = BTreeMap::new();
        for s in text.lines().filter_map(parse_switch) {
            let after_idle = last_idle.insert(s.cpu, s.pid.is_none()) == Some(true);
            let Some(pid) = s.pid else {
                idle_ms += s.run_ms;
                continue;
            };
            let Some(k) = pids.iter().position(|(_, p)| *p == pid) else {
                continue;
            };
            let row = &mut rows[k];
            row.runs += 1.0;
            row.run_us += s.run_ms * 1e3;
            row.delay_us += s.delay_ms * 1e3;
            if after_idle {
                row.from_idle += 1.0;
                row.from_idle_delay_us += s.delay_ms * 1e3;
            }
        }
        let n = calls.max(1) as f64;
        for row in &mut rows {
            row.runs /= n;
            row.run_us /= n;
            row.delay_us /= n;
            row.from_idle /= n;
            row.from_idle_delay_us /= n;
        }
        Self {
            rows,
            idle_us: idle_ms * 1e3 / n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timehist_lines_parse_with_spaces_and_idle() {
        assert_eq!(
            parse_switch(
                "   41714.560653 [0000]  opt cgu.08[29275/29199]             0.000      0.000      3.980 "
            ),
            Some(Switch {
                cpu: 0,
                pid: Some(29199),
                delay_ms: 0.0,
                run_ms: 3.98
            })
        );
        assert_eq!(
            parse_switch("   41714.562054 [0001]  sleep[29276]    0.000      3.865      1.401"),
            Some(Switch {
                cpu: 1,
                pid: Some(29276),
                delay_ms: 3.865,
                run_ms: 1.401
            })
        );
        assert_eq!(
            parse_switch("   41714.556672 [0000]  <idle>      0.000      0.000      4.393 "),
            Some(Switch {
                cpu: 0,
                pid: None,
                delay_ms: 0.0,
                run_ms: 4.393
            })
        );
        assert_eq!(parse_switch("           time    cpu  task name"), None);
        assert_eq!(parse_switch("--------------- ------  ------"), None);
    }

    #[test]
    fn runs_after_idle_are_told_apart() {
        let text = "\
   1.000000 [0000]  <idle>                 0.000  0.000  0.500
   1.000100 [0000]  agent[11/10]           0.000  0.020  0.080
   1.000200 [0001]  ctrd[21/20]            0.000  0.005  0.100
   1.000300 [0000]  agent[12/10]           0.000  0.003  0.010
   1.000400 [0001]  other[30]              0.000  0.001  0.010
";
        let p = SchedProfile::from_timehist(text, &[("agent", 10), ("containerd", 20)], 2);
        assert_eq!(p.idle_us, 250.0);
        let agent = &p.rows[0];
        assert_eq!(agent.runs, 1.0);
        assert!((agent.run_us - 45.0).abs() < 1e-9);
        assert!((agent.delay_us - 11.5).abs() < 1e-9);
        assert_eq!(agent.from_idle, 0.5);
        assert!((agent.from_idle_delay_us - 10.0).abs() < 1e-9);
        // The first line on a CPU has nothing before it: not after idle.
        assert_eq!(p.rows[1].from_idle, 0.0);
        assert!((p.rows[1].delay_us - 2.5).abs() < 1e-9);
    }
}
