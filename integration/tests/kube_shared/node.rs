//! Node features through the real kubelet on the real single-node cluster:
//! container launch priority (containerd's start times), the Job sidecar
//! terminator (the pod Succeeded by kubelet's own logic, the Job
//! Complete), a ContainerRecreateRequest restarting a container in place,
//! and an ImagePullJob pulling from the local auth registry — each applied
//! with kubectl as a user writes it.

use std::time::Duration;

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster, condition};
use keelson_integration::registry::{Credentials, Registry};
use serde_json::Value;

fn cluster() -> kube::Turn {
    kube::shared_in(module_path!()).expect("test cluster")
}

fn ready_pod(c: &Cluster, ns: &str, name: &str, limit: Duration) -> Value {
    c.wait_pod_ready(ns, name, limit).unwrap()
}

#[test]
fn ordered_launch_priority_starts_containers_in_spec_order() {
    let c = cluster();
    let ns = c.namespace("priority-ordered").unwrap();
    c.apply_stdin(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: ordered
  namespace: {ns}
  annotations:
    apps.kruise.io/container-launch-priority: Ordered
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: first, image: {BUSYBOX}, command: ["sleep", "3600"]}}
  - {{name: second, image: {BUSYBOX}, command: ["sleep", "3600"]}}
  - {{name: third, image: {BUSYBOX}, command: ["sleep", "3600"]}}
"#,
        ns = ns.name
    ))
    .unwrap();
    let pod = ready_pod(&c, &ns.name, "ordered", Duration::from_secs(120));
    let ids = kube::container_ids(&pod);
    let t: Vec<i128> = ["first", "second", "third"]
        .iter()
        .map(|n| c.container_started_ns(&ids[*n]).unwrap())
        .collect();
    assert!(
        t[0] < t[1] && t[1] < t[2],
        "start times out of order: {t:?}"
    );
    eprintln!(
        "Ordered: per level {:.0} ms, {:.0} ms",
        (t[1] - t[0]) as f64 / 1e6,
        (t[2] - t[1]) as f64 / 1e6
    );
}

#[test]
fn env_priority_waits_for_a_later_listed_container_to_be_ready() {
    let c = cluster();
    let ns = c.namespace("priority-env").unwrap();
    // `high` is listed after `low` and becomes ready only when its probe
    // sees /tmp/ready, two seconds after it starts.
    c.apply_stdin(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: by-env
  namespace: {ns}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: low
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    env: [{{name: KRUISE_CONTAINER_PRIORITY, value: "1"}}]
  - name: high
    image: {BUSYBOX}
    command: ["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 3600"]
    env: [{{name: KRUISE_CONTAINER_PRIORITY, value: "10"}}]
    readinessProbe:
      exec: {{command: ["test", "-f", "/tmp/ready"]}}
      periodSeconds: 1
"#,
        ns = ns.name
    ))
    .unwrap();
    let pod = ready_pod(&c, &ns.name, "by-env", Duration::from_secs(120));
    let ids = kube::container_ids(&pod);
    let high = c.container_started_ns(&ids["high"]).unwrap();
    let low = c.container_started_ns(&ids["low"]).unwrap();
    let gap_ms = (low - high) as f64 / 1e6;
    assert!(
        gap_ms >= 2000.0,
        "low started {gap_ms:.0} ms after high; high is ready only 2 s after it starts"
    );
    eprintln!("env priority gated on readiness: low started {gap_ms:.0} ms after high");
}

#[test]
fn a_job_with_a_sidecar_completes_and_its_pod_succeeds() {
    let c = cluster();
    let ns = c.namespace("sidecar-job").unwrap();
    c.apply_stdin(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: with-sidecar
  namespace: {ns}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 3
      containers:
      - name: main
        image: {BUSYBOX}
        command: ["sh", "-c", "sleep 2; echo work done"]
      - name: sidecar
        image: {BUSYBOX}
        command: ["sleep", "3600"]
        env: [{{name: KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT, value: "true"}}]
"#,
        ns = ns.name
    ))
    .unwrap();
    let job = c
        .wait_for("Job complete", Duration::from_secs(120), |c| {
            let job = c.get_json(&["-n", &ns.name, "job", "with-sidecar"])?;
            if condition(&job, "Failed") {
                anyhow::bail!("the Job failed: {}", job["status"]);
            }
            Ok(condition(&job, "Complete").then_some(job))
        })
        .unwrap();
    assert_eq!(job["status"]["succeeded"], 1, "{}", job["status"]);
    let pods = c
        .get_json(&["-n", &ns.name, "pods", "-l", "job-name=with-sidecar"])
        .unwrap();
    let pod = &pods["items"][0];
    assert_eq!(pod["status"]["phase"], "Succeeded", "{}", pod["status"]);
    for s in pod["status"]["containerStatuses"].as_array().unwrap() {
        assert_eq!(
            s["state"]["terminated"]["exitCode"], 0,
            "{}: {}",
            s["name"], s["state"]
        );
    }
}

#[test]
fn a_container_recreate_request_restarts_a_container_in_place() {
    let c = cluster();
    let ns = c.namespace("crr").unwrap();
    c.apply_stdin(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: target
  namespace: {ns}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {{name: app, image: {BUSYBOX}, command: ["sleep", "3600"]}}
  - {{name: other, image: {BUSYBOX}, command: ["sleep", "3600"]}}
"#,
        ns = ns.name
    ))
    .unwrap();
    let before = ready_pod(&c, &ns.name, "target", Duration::from_secs(90));
    c.apply_stdin(&format!(
        r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ContainerRecreateRequest
metadata:
  name: restart-app
  namespace: {ns}
spec:
  podName: target
  containers:
  - name: app
  strategy:
    failurePolicy: Fail
    minStartedSeconds: 1
  activeDeadlineSeconds: 120
  ttlSecondsAfterFinished: 600
"#,
        ns = ns.name
    ))
    .unwrap();
    let crr = c
        .wait_for("CRR Completed", Duration::from_secs(120), |c| {
            let crr = c.get_json(&["-n", &ns.name, "crr", "restart-app"])?;
            Ok((crr["status"]["phase"] == "Completed").then_some(crr))
        })
        .unwrap();
    let states = crr["status"]["containerRecreateStates"].as_array().unwrap();
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0]["name"], "app");
    assert_eq!(states[0]["phase"], "Succeeded", "{}", crr["status"]);
    // The webhook filled in what the agents select by.
    assert_eq!(
        crr["metadata"]["labels"]["crr.apps.kruise.io/node-name"],
        kube::NODE
    );
    let after = ready_pod(&c, &ns.name, "target", Duration::from_secs(60));
    assert_eq!(
        after["metadata"]["uid"], before["metadata"]["uid"],
        "same pod"
    );
    let restarts = |pod: &Value, name: &str| {
        pod["status"]["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["restartCount"].as_i64().unwrap_or(-1))
            .unwrap()
    };
    assert_eq!(restarts(&after, "app"), restarts(&before, "app") + 1);
    assert_eq!(restarts(&after, "other"), restarts(&before, "other"));
}

#[test]
fn an_image_pull_job_pulls_from_the_auth_registry_on_the_node() {
    let c = cluster();
    let ns = c.namespace("pulls").unwrap();
    let registry = Registry::start(Some(Credentials {
        username: "keelson".into(),
        password: "s3cret".into(),
    }))
    .unwrap();
    let image = registry
        .push(
            &c.runtime().unwrap().images().layout("busybox"),
            BUSYBOX,
            "team/app:v1",
        )
        .unwrap();
    c.kubectl(&[
        "-n",
        &ns.name,
        "create",
        "secret",
        "docker-registry",
        "team-registry",
        &format!("--docker-server={}", registry.host()),
        "--docker-username=keelson",
        "--docker-password=s3cret",
    ])
    .unwrap();
    // The controller makes the node's NodeImage once the node has been
    // Ready for its creation delay; a job made before targets no node.
    c.wait_for("NodeImage of the node", Duration::from_secs(120), |c| {
        Ok(c.get_json(&["nodeimage", kube::NODE]).ok().map(|_| ()))
    })
    .unwrap();
    c.apply_stdin(&format!(
        r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ImagePullJob
metadata:
  name: prefetch
  namespace: {ns}
spec:
  image: {image}
  pullSecrets: [team-registry]
  parallelism: 1
  completionPolicy:
    type: Always
    activeDeadlineSeconds: 600
  pullPolicy:
    backoffLimit: 1
    timeoutSeconds: 120
"#,
        ns = ns.name
    ))
    .unwrap();
    let job = c
        .wait_for("ImagePullJob succeeded", Duration::from_secs(120), |c| {
            let job = c.get_json(&["-n", &ns.name, "imagepulljob", "prefetch"])?;
            if job["status"]["failed"].as_i64().unwrap_or(0) > 0 {
                anyhow::bail!("pull failed: {}", job["status"]);
            }
            Ok((job["status"]["succeeded"] == 1).then_some(job))
        })
        .unwrap();
    assert_eq!(job["status"]["desired"], 1, "{}", job["status"]);
    // The node's entry named the copy in kruise-daemon-config (the only
    // Secrets the agent's ServiceAccount may read), not the source.
    let node_image = c.get_json(&["nodeimage", kube::NODE]).unwrap();
    let repo = image.rsplit_once(':').unwrap().0;
    let entry = &node_image["spec"]["images"][repo];
    let secret_ref = &entry["pullSecrets"][0];
    assert_eq!(secret_ref["namespace"], "kruise-daemon-config", "{entry}");
    let copy = secret_ref["name"].as_str().unwrap().to_string();
    assert!(copy.starts_with("team-registry-"), "{entry}");
    let tag = &node_image["status"]["imageStatuses"][repo]["tags"][0];
    assert_eq!(tag["phase"], "Succeeded", "{node_image}");
    // Finished: the copy is released and the job let go of.
    c.wait_for("the secret copy released", Duration::from_secs(60), |c| {
        let gone = c
            .get_json(&["-n", "kruise-daemon-config", "secret", &copy])
            .is_err();
        let job = c.get_json(&["-n", &ns.name, "imagepulljob", "prefetch"])?;
        let unheld = job["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
        Ok((gone && unheld).then_some(()))
    })
    .unwrap();
    // The reconciles are counted on the leader's /metrics (read through
    // the API server's pod proxy).
    let pods = c
        .get_json(&[
            "-n",
            "keelson-system",
            "pods",
            "-l",
            "app.kubernetes.io/name=keelson-controller",
        ])
        .unwrap();
    let metrics: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap();
            c.kubectl(&[
                "get",
                "--raw",
                &format!("/api/v1/namespaces/keelson-system/pods/{name}:8080/proxy/metrics"),
            ])
            .unwrap()
        })
        .collect();
    let leader = metrics
        .iter()
        .find(|m| m.contains("keelson_controller_leader 1"))
        .expect("one replica leads");
    assert!(
        leader.contains(
            "keelson_controller_reconciles_total{controller=\"imagepulljob\",result=\"ok\"}"
        ),
        "{leader}"
    );
    let socket = c.runtime().unwrap().socket();
    let images = c.crictl(&socket, &["images", "-o", "json"]).unwrap();
    assert!(
        images.contains(&image),
        "{image} not in containerd: {images}"
    );
    assert!(
        registry.log_text().contains("team/app/manifests/v1"),
        "the registry served no manifest"
    );
}
