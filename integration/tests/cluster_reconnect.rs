//! The agent's cluster mode against an API server that comes late, goes
//! away and comes back: the node side serves throughout, the agent
//! connects once the server is there, notices the loss, and reconnects
//! (its backoff starting afresh after a good connection).
//!
//! No kube-apiserver exists on this machine; the API stand-in (empty: no
//! NodeImage, empty lists, watches held open) is all this test needs.

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use keelson_integration::agent::Agent;
use keelson_integration::api_stand_in::{ApiStandIn, write_kubeconfig};

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

async fn wait_for(agent: &Agent, needle: &str, times: usize, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if count(&agent.log_text(), needle) >= times {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_connects_late_and_reconnects_after_the_api_server_returns() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime.sock");
    let _runtime = UnixListener::bind(&runtime).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = dir.path().join("kubeconfig");
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
    const DOWN: &str = "API server not usable";
    const IN_SYNC: &str = "cluster mode: in sync with the API server";
    assert!(
        wait_for(&agent, DOWN, 1, Duration::from_secs(10)).await,
        "{}",
        agent.log_text()
    );
    assert_eq!(count(&agent.log_text(), IN_SYNC), 0);

    // The API server arrives: the agent connects without a restart.
    let server = ApiStandIn::start_on(port).await;
    assert!(
        wait_for(&agent, IN_SYNC, 1, Duration::from_secs(20)).await,
        "{}",
        agent.log_text()
    );
    // Stay connected a while (backoffs would have grown meanwhile).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let downs = count(&agent.log_text(), DOWN);

    // It goes away: the agent notices and keeps the node side serving.
    drop(server);
    assert!(
        wait_for(&agent, DOWN, downs + 1, Duration::from_secs(20)).await,
        "{}",
        agent.log_text()
    );
    assert!(
        std::os::unix::net::UnixStream::connect(agent.socket()).is_ok(),
        "the CRI socket still serves"
    );

    // The backoff started afresh after the good connection.
    let log = agent.log_text();
    let lost = log
        .lines()
        .filter(|l| l.contains(DOWN))
        .nth(downs)
        .unwrap_or_default()
        .to_string();
    assert!(
        lost.contains("retry_in_ms=500") || lost.contains("\"retry_in_ms\":500"),
        "{lost}"
    );

    // It comes back: the agent reconnects.
    let _server = ApiStandIn::start_on(port).await;
    assert!(
        wait_for(&agent, IN_SYNC, 2, Duration::from_secs(40)).await,
        "{}",
        agent.log_text()
    );
    assert!(agent.pid().is_some(), "no crash");
}
