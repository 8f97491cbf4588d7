//! The unit files in `systemd/` pass `systemd-analyze verify` (with
//! ExecStart pointed at binaries that exist here, as verify requires), with
//! no warnings, and the kubelet drop-in is picked up.

use std::fs;
use std::path::Path;
use std::process::Command;

const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd");

/// Copies the agent's units into `dir` with ExecStart at the built binary.
fn install_agent_units(dir: &Path) {
    let agent = keelson_integration::agent::binary().unwrap();
    let service = fs::read_to_string(Path::new(UNITS).join("keelson-agent.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/local/bin/keelson-agent "));
    fs::write(
        dir.join("keelson-agent.service"),
        service.replace("/usr/local/bin/keelson-agent", &agent.display().to_string()),
    )
    .unwrap();
    fs::copy(
        Path::new(UNITS).join("keelson-agent.socket"),
        dir.join("keelson-agent.socket"),
    )
    .unwrap();
}

fn verify(unit_path: &Path, units: &[&Path]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .env("SYSTEMD_UNIT_PATH", format!("{}:", unit_path.display()))
        .arg("verify")
        .args(units)
        .output()
        .expect("systemd-analyze (package systemd)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn agent_socket_and_service_verify() {
    let dir = tempfile::tempdir().unwrap();
    install_agent_units(dir.path());
    let service = fs::read_to_string(dir.path().join("keelson-agent.service")).unwrap();
    assert!(service.contains("Restart=always"));
    let socket = fs::read_to_string(dir.path().join("keelson-agent.socket")).unwrap();
    assert!(
        socket.contains("ListenStream=/run/keelson/cri.sock") && socket.contains("SocketMode=0600")
    );
    let (ok, stderr) = verify(
        dir.path(),
        &[
            &dir.path().join("keelson-agent.socket"),
            &dir.path().join("keelson-agent.service"),
        ],
    );
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

/// `key=value` lines of section `[name]` of a unit file.
fn section(unit: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = vec![];
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{name}]");
        } else if inside
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// A restart of the service leaves the socket alone (no `PartOf=` or
/// `BindsTo=` tying the socket's lifetime to the service), and a runtime
/// that comes up late cannot exhaust a start limit (`StartLimitIntervalSec=0`).
#[test]
fn restarting_the_service_keeps_the_socket_and_restarts_never_run_out() {
    let socket = fs::read_to_string(Path::new(UNITS).join("keelson-agent.socket")).unwrap();
    for (k, v) in section(&socket, "Unit") {
        assert!(
            !(matches!(k.as_str(), "PartOf" | "BindsTo") && v.contains("keelson-agent.service")),
            "the socket must outlive service restarts: {k}={v}"
        );
    }
    let service = fs::read_to_string(Path::new(UNITS).join("keelson-agent.service")).unwrap();
    let unit = section(&service, "Unit");
    assert!(
        unit.iter()
            .any(|(k, v)| k == "StartLimitIntervalSec" && (v == "0" || v == "infinity")),
        "no start limit: {unit:?}"
    );
    let svc = section(&service, "Service");
    assert!(svc.iter().any(|(k, v)| k == "Restart" && v == "always"));
}

#[test]
fn kubelet_drop_in_verifies_and_points_at_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    install_agent_units(dir.path());
    fs::write(
        dir.path().join("kubelet.service"),
        "[Unit]\nDescription=kubelet stand-in\n[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    fs::create_dir(dir.path().join("kubelet.service.d")).unwrap();
    let drop_in =
        fs::read_to_string(Path::new(UNITS).join("kubelet.service.d/20-keelson.conf")).unwrap();
    assert!(drop_in.contains("--container-runtime-endpoint=unix:///run/keelson/cri.sock"));
    fs::write(
        dir.path().join("kubelet.service.d/20-keelson.conf"),
        drop_in.replace("/usr/bin/kubelet", "/bin/true"),
    )
    .unwrap();
    let (ok, stderr) = verify(dir.path(), &[&dir.path().join("kubelet.service")]);
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    // The drop-in is really read: a broken ExecStart in it fails verification.
    fs::write(
        dir.path().join("kubelet.service.d/20-keelson.conf"),
        drop_in.replace("/usr/bin/kubelet", "/nonexistent/kubelet"),
    )
    .unwrap();
    let (ok, _) = verify(dir.path(), &[&dir.path().join("kubelet.service")]);
    assert!(!ok, "verification reads the drop-in");
}
