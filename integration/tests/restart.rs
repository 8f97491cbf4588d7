//! Agent restarts under socket activation: the socket is owned by the
//! service manager (here `systemd-socket-activate` and a restart loop
//! standing in for systemd's `Restart=always`), so a caller that keeps
//! calling through SIGTERM restarts sees no failed call.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use cri_proto as cri;
use keelson_integration::agent::binary;
use keelson_integration::client::{clients, transparently};
use keelson_integration::proc::{pids_with_arg, signal, wait_until};
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_under_socket_activation_fail_no_call() {
    let node = Node::start();
    let mut via = node.via_agent().await;
    let pod = via.run_pod(sleeper("restart")).await.unwrap();
    let cid = pod.id("main").unwrap().to_string();

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("cri.sock");
    let state = dir.path().join("state");
    let stop = dir.path().join("stop");
    let log = dir.path().join("agent.log");
    // What systemd does with keelson-agent.socket + Restart=always: keep the
    // listening socket and start the service again when it exits.
    let exec = dir.path().join("exec.sh");
    fs::write(
        &exec,
        "#!/bin/sh\nexport LISTEN_PID=$$\nexec \"$AGENT\" --listen \"$SOCK\" --runtime-endpoint \"$RT\" --state-dir \"$STATE\" --admin-socket \"$STATE.admin.sock\" --shutdown-timeout-seconds 10\n",
    )
    .unwrap();
    let restart_loop = dir.path().join("loop.sh");
    fs::write(
        &restart_loop,
        // Bounded, like systemd's StartLimitBurst, so a broken agent cannot spin.
        "#!/bin/sh\nn=0\nwhile [ ! -e \"$STOP\" ] && [ $n -lt 20 ]; do n=$((n+1)); /bin/sh \"$EXEC\" >>\"$LOG\" 2>&1; echo \"agent exited: $?\" >>\"$LOG\"; done\n",
    )
    .unwrap();
    fs::set_permissions(&restart_loop, fs::Permissions::from_mode(0o755)).unwrap();
    // systemd-socket-activate passes only the environment given with -E.
    let env = [
        ("AGENT", binary().unwrap()),
        ("SOCK", sock.clone()),
        ("RT", node.containerd.socket()),
        ("STATE", state.clone()),
        ("STOP", stop.clone()),
        ("EXEC", exec.clone()),
        ("LOG", log.clone()),
    ];
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l").arg(&sock);
    for (k, v) in &env {
        cmd.arg("-E").arg(format!("{k}={}", v.display()));
    }
    let activator = cmd
        .arg("--")
        .arg(&restart_loop)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate (package systemd)");
    let mut activator = Activator {
        child: activator,
        stop: stop.clone(),
        state: state.display().to_string(),
    };
    // The file appears at bind(), before listen(): wait until it accepts.
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        }),
        "activation socket accepts"
    );

    let running = Arc::new(AtomicBool::new(true));
    let (ok, failed, retried) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let driver = {
        let (running, ok, failed, retried, errors, sock, cid) = (
            running.clone(),
            ok.clone(),
            failed.clone(),
            retried.clone(),
            errors.clone(),
            sock.clone(),
            cid.clone(),
        );
        tokio::spawn(async move {
            let (rt, _) = clients(&sock).await.unwrap();
            while running.load(Ordering::Relaxed) {
                // Kubelet's gRPC client retries calls that never left it
                // (GOAWAY before the request was written); so does this one.
                let results = [
                    transparently(|| {
                        let mut rt = rt.clone();
                        async move { rt.version(cri::VersionRequest::default()).await.map(|_| ()) }
                    })
                    .await,
                    transparently(|| {
                        let mut rt = rt.clone();
                        async move {
                            rt.list_containers(cri::ListContainersRequest::default())
                                .await
                                .map(|_| ())
                        }
                    })
                    .await,
                    transparently(|| {
                        let mut rt = rt.clone();
                        let id = cid.clone();
                        async move {
                            rt.container_status(cri::ContainerStatusRequest {
                                container_id: id,
                                verbose: false,
                            })
                            .await
                            .map(|_| ())
                        }
                    })
                    .await,
                ];
                for (r, n) in results {
                    retried.fetch_add(n as u64, Ordering::Relaxed);
                    match r {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            errors.lock().unwrap().push(format!("{e:?}"));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }
        })
    };

    let state_arg = state.display().to_string();
    let agent_pid = || pids_with_arg(&state_arg).into_iter().find(|p| is_agent(*p));
    assert!(
        wait_until(Duration::from_secs(10), || agent_pid().is_some()),
        "first agent started"
    );
    let mut restarts = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let before = ok.load(Ordering::Relaxed);
        let old = agent_pid().unwrap();
        signal(old, Signal::SIGTERM);
        assert!(
            wait_until(Duration::from_secs(10), || agent_pid()
                .is_some_and(|p| p != old)),
            "agent restarted"
        );
        restarts += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            ok.load(Ordering::Relaxed) > before,
            "calls kept succeeding around the restart"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, Ordering::Relaxed);
    driver.await.unwrap();

    let exited = activator.shut_down();
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let retried = retried.load(Ordering::Relaxed);
    println!("restarts={restarts} ok={ok} failed={failed} transparent_retries={retried}");
    assert_eq!(
        failed,
        0,
        "failed calls: {:?}\nagent log:\n{log_text}",
        errors.lock().unwrap()
    );
    assert!(ok > 100, "the driver kept calling ({ok})");
    assert_eq!(
        log_text.matches("agent exited: 0").count(),
        restarts + 1,
        "each agent exited 0 on SIGTERM:\n{log_text}"
    );
    assert!(exited, "activator exited after the stop file");
    via.remove_pod(&pod).await.unwrap();
}

/// The activator (later the restart loop) and its agent; stopped on drop
/// too, so a failing test leaves nothing running.
struct Activator {
    child: std::process::Child,
    stop: std::path::PathBuf,
    state: String,
}

impl Activator {
    /// Stops the loop, then the agent; true if the loop exited by itself.
    fn shut_down(&mut self) -> bool {
        let _ = fs::write(&self.stop, b"");
        for pid in pids_with_arg(&self.state)
            .into_iter()
            .filter(|p| is_agent(*p))
        {
            signal(pid, Signal::SIGTERM);
        }
        let exited = wait_until(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for pid in pids_with_arg(&self.state)
            .into_iter()
            .filter(|p| is_agent(*p))
        {
            signal(pid, Signal::SIGKILL);
        }
        exited
    }
}

impl Drop for Activator {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.shut_down();
        }
    }
}

fn is_agent(pid: u32) -> bool {
    fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.file_name().is_some_and(|n| n == "keelson-agent"))
        .unwrap_or(false)
}
