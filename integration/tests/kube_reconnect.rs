//! The agent's cluster mode when the real kube-apiserver goes away and
//! comes back: the node side (kubelet's CRI, the pods) serves throughout;
//! the agent notices the loss with its backoff started afresh after the
//! good connection; an agent (re)started while the API server is away
//! connects once it is back, without another restart.

use std::time::{Duration, Instant};

use keelson_integration::kube::{self, Cluster};
use nix::sys::signal::Signal;

const DOWN: &str = "API server not usable";
const IN_SYNC: &str = "cluster mode: in sync with the API server";

fn count(c: &Cluster, needle: &str) -> usize {
    c.agent_log().matches(needle).count()
}

fn wait_count(c: &Cluster, needle: &str, times: usize, limit: Duration) {
    let start = Instant::now();
    while count(c, needle) < times {
        assert!(
            start.elapsed() < limit,
            "{needle:?} not logged {times} times within {limit:?}; agent log:\n{}",
            c.agent_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_agent_rides_out_the_api_server_going_away_and_coming_back() {
    let c = kube::shared().expect("test cluster");
    let ns = c.namespace("reconnect").unwrap();
    c.apply_stdin(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: steady, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: main, image: {image}, command: ["sleep", "3600"]}}
"#,
        ns = ns.name,
        image = keelson_integration::images::BUSYBOX,
    ))
    .unwrap();
    c.wait_pod_ready(&ns.name, "steady", Duration::from_secs(90))
        .unwrap();
    wait_count(&c, IN_SYNC, 1, Duration::from_secs(10));
    let downs = count(&c, DOWN);
    let agent_socket = c.agent_guard().as_ref().unwrap().socket();

    // The API server goes away: the agent notices; the node side serves.
    c.stop_apiserver().unwrap();
    wait_count(&c, DOWN, downs + 1, Duration::from_secs(60));
    let lost = c
        .agent_log()
        .lines()
        .filter(|l| l.contains(DOWN))
        .nth(downs)
        .unwrap_or_default()
        .to_string();
    assert!(
        lost.contains("retry_in_ms=500") || lost.contains("\"retry_in_ms\":500"),
        "the backoff starts afresh after a good connection: {lost}"
    );
    let version = c.crictl(&agent_socket, &["version"]).unwrap();
    assert!(version.contains("containerd"), "{version}");

    // An agent started while it is away (a restart) waits for it.
    let syncs = count(&c, IN_SYNC);
    let downs = count(&c, DOWN);
    let pid = c
        .agent_guard()
        .as_ref()
        .unwrap()
        .restart(Signal::SIGTERM)
        .unwrap();
    wait_count(&c, DOWN, downs + 1, Duration::from_secs(30));
    assert_eq!(count(&c, IN_SYNC), syncs, "not in sync without a server");

    // It comes back: the agent reconnects, no restart, no crash.
    c.start_apiserver().unwrap();
    wait_count(&c, IN_SYNC, syncs + 1, Duration::from_secs(60));
    assert_eq!(c.agent_guard().as_ref().unwrap().pid(), Some(pid));
    let pod = c.get_json(&["-n", &ns.name, "pod", "steady"]).unwrap();
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
}
