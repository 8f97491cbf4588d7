//! The `keelson-agent` binary's own behaviour: config file, JSON logs,
//! socket mode and group, refusing a second agent, clear start-up errors,
//! and a clean exit 0 on SIGTERM that removes its socket.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::Duration;

use keelson_integration::agent::{Agent, binary};
use keelson_integration::proc::wait_until;

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn config_file_json_logs_socket_mode_and_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime.sock");
    let _runtime = UnixListener::bind(&runtime).unwrap();
    let sock = dir.path().join("run/keelson/cri.sock");
    let config = dir.path().join("agent.toml");
    fs::write(
        &config,
        format!(
            "listen = \"{}\"\nruntime-endpoint = \"unix://{}\"\nstate-dir = \"{}\"\nadmin-socket = \"{}\"\nlogging-format = \"json\"\nlog-level = \"debug\"\n",
            sock.display(),
            runtime.display(),
            dir.path().join("state").display(),
            dir.path().join("admin.sock").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("agent.log");
    let mut child = Command::new(binary().unwrap())
        .arg("--config")
        .arg(&config)
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists()),
        "socket created, parent dirs too"
    );
    assert!(fs::metadata(&sock).unwrap().file_type().is_socket());
    assert_eq!(mode(&sock), 0o600, "root only");
    assert!(dir.path().join("state").is_dir(), "state dir created");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("state"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "root-only: it journals pull secrets");
    }
    // The CRI on the main thread, everything else on the node thread
    // (sled keeps threads of its own).
    let threads: Vec<String> = fs::read_dir(format!("/proc/{}/task", child.id()))
        .unwrap()
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    assert!(threads.iter().any(|t| t == "keelson-agent"), "{threads:?}");
    assert_eq!(
        threads.iter().filter(|t| *t == "keelson-node").count(),
        1,
        "{threads:?}"
    );
    assert!(
        !threads.iter().any(|t| t.starts_with("tokio-runtime")),
        "no worker pool with the default --worker-threads 1: {threads:?}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit 0 on SIGTERM: {status}");
    assert!(!sock.exists(), "own socket removed on exit");
    let text = fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let serving = lines
        .iter()
        .find(|l| l["message"] == "serving CRI")
        .expect("serving line");
    assert_eq!(serving["listen"], sock.display().to_string());
    assert_eq!(serving["level"], "INFO");
    assert!(lines.iter().any(|l| l["message"] == "stopped cleanly"));
}

#[test]
fn a_second_agent_on_the_same_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime.sock");
    let _runtime = UnixListener::bind(&runtime).unwrap();
    let first = Agent::start(&runtime, &["--socket-group", "root"]).unwrap();
    assert_eq!(
        mode(&first.socket()),
        0o660,
        "group access when a group is given"
    );
    let out = Command::new(binary().unwrap())
        .arg("--listen")
        .arg(first.socket())
        .arg("--runtime-endpoint")
        .arg(&runtime)
        .arg("--state-dir")
        .arg(dir.path().join("state2"))
        .arg("--admin-socket")
        .arg(dir.path().join("admin2.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another agent holds"), "{err}");
    assert!(
        std::os::unix::net::UnixStream::connect(first.socket()).is_ok(),
        "first agent still serves"
    );
}

/// The CRI socket is served before the state opens; a state dir another
/// agent holds still stops the second agent, with a message that says so,
/// and takes its socket with it.
#[test]
fn a_second_agent_on_the_same_state_dir_stops_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime.sock");
    let _runtime = UnixListener::bind(&runtime).unwrap();
    let first = Agent::start(&runtime, &[]).unwrap();
    let second_sock = dir.path().join("second.sock");
    let out = Command::new(binary().unwrap())
        .arg("--listen")
        .arg(&second_sock)
        .arg("--runtime-endpoint")
        .arg(&runtime)
        .arg("--state-dir")
        .arg(first.state_dir())
        .arg("--admin-socket")
        .arg(dir.path().join("second-admin.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&first.state_dir().display().to_string()),
        "{err}"
    );
    assert!(!second_sock.exists(), "its CRI socket is removed");
    assert!(
        std::os::unix::net::UnixStream::connect(first.socket()).is_ok(),
        "first agent still serves"
    );
}

#[test]
fn start_up_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(binary().unwrap())
            .args([
                "--listen",
                &dir.path().join("cri.sock").display().to_string(),
            ])
            .args([
                "--state-dir",
                &dir.path().join("state").display().to_string(),
            ])
            .args([
                "--admin-socket",
                &dir.path().join("admin.sock").display().to_string(),
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = dir.path().join("nope.sock");
    let err = run(&["--runtime-endpoint", &missing.display().to_string()]);
    assert!(
        err.contains(&format!(
            "{} does not exist or is not a socket",
            missing.display()
        )),
        "{err}"
    );
    let err = run(&["--runtime-endpoint", "tcp://127.0.0.1:1"]);
    assert!(err.contains("only unix sockets are supported"), "{err}");
    let err = run(&["--config", "/nonexistent/agent.toml"]);
    assert!(
        err.contains("reading config file /nonexistent/agent.toml"),
        "{err}"
    );
    let bad = dir.path().join("bad.toml");
    fs::write(&bad, "listne = \"/x\"\n").unwrap();
    let err = run(&["--config", &bad.display().to_string()]);
    assert!(err.contains("unknown field `listne`"), "{err}");
    // Auto-detection names every path it tried when none is a socket.
    let candidates = keelson_agent::config::RUNTIME_CANDIDATES;
    if candidates.iter().all(|c| !std::path::Path::new(c).exists()) {
        let err = run(&[]);
        assert!(err.contains("no container runtime socket found"), "{err}");
        for c in candidates {
            assert!(err.contains(c), "{err} names {c}");
        }
    } else {
        let err = run(&["--runtime-endpoint", &missing.display().to_string()]);
        assert!(err.contains("does not exist"), "{err}");
    }
}

/// A kubeconfig for a plain-HTTP API server at `addr`.
fn write_kubeconfig(path: &std::path::Path, addr: std::net::SocketAddr) -> std::io::Result<()> {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'http://{addr}'}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
}

#[test]
fn cluster_mode_without_an_api_server_keeps_the_node_side_serving() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime.sock");
    let _runtime = UnixListener::bind(&runtime).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    // A cluster nobody listens for (a closed loopback port).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write_kubeconfig(&kubeconfig, ([127, 0, 0, 1], port).into()).unwrap();
    let agent = Agent::start(
        &runtime,
        &[
            "--node-name",
            "node-a",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || agent
            .log_text()
            .contains("API server not usable")),
        "{}",
        agent.log_text()
    );
    assert!(
        std::os::unix::net::UnixStream::connect(agent.socket()).is_ok(),
        "the CRI socket still serves"
    );
    assert!(agent.pid().is_some());
    let out = Command::new(binary().unwrap())
        .args(["--kubeconfig", "/nonexistent", "--listen"])
        .arg(dir.path().join("x.sock"))
        .arg("--runtime-endpoint")
        .arg(&runtime)
        .env_remove("NODE_NAME")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kubeconfig needs node-name"), "{err}");
}
