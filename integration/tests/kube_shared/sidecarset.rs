//! SidecarSet and the pod webhook on the real single-node cluster,
//! manifests applied with kubectl: a v1.0-style (v1alpha1) SidecarSet is
//! stored as v1beta1 through the conversion webhook and injects a regular
//! sidecar — shared volumes, transferred env, OpenKruise's hash
//! annotations — that the agent starts before the app by the stamped
//! launch priorities; the v1.7 example's native sidecar is started by
//! kubelet before the app and stopped after it, so the Job completes; a
//! Job sidecar marked `KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT` is stopped
//! by the agent from the restart policy the webhook stamped, after its
//! preStop hook; a sidecar image change rolls in place within partition
//! and maxUnavailable; and the
//! validating webhook refuses what OpenKruise refuses.

use std::time::Duration;

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster};
use serde_json::Value;

fn cluster() -> kube::Turn {
    kube::shared_in(module_path!()).expect("test cluster")
}

const LIMIT: Duration = Duration::from_secs(120);

fn started_at(status: &Value) -> String {
    status["state"]["running"]["startedAt"]
        .as_str()
        .or_else(|| status["state"]["terminated"]["startedAt"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn status_of<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["status"][list]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no {list} status for {name}: {pod}"))
}

fn job_complete(c: &Cluster, ns: &str, name: &str) -> Value {
    let done = c.wait_for(&format!("Job {ns}/{name} Complete"), LIMIT, |c| {
        let job = c.get_json(&["-n", ns, "job", name])?;
        Ok(kube::condition(&job, "Complete").then_some(job))
    });
    match done {
        Ok(job) => job,
        Err(e) => {
            let agent: Vec<String> = c
                .agent_log()
                .lines()
                .filter(|l| l.contains(ns))
                .map(String::from)
                .collect();
            panic!(
                "{e}\npod: {}\nagent on {ns}:\n{}",
                job_pod(c, ns, name),
                agent.join("\n")
            );
        }
    }
}

/// Runs Job `work` (one `main` container sleeping 2 s, pods labelled
/// `app`) to completion; its pod.
fn run_job(c: &Cluster, ns: &str, app: &str, restart_policy: &str) -> Value {
    c.apply_stdin(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: work, namespace: {ns}}}
spec:
  backoffLimit: 0
  template:
    metadata: {{labels: {{app: {app}}}}}
    spec:
      restartPolicy: {restart_policy}
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {BUSYBOX}
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "sleep 2"]
"#
    ))
    .unwrap();
    job_complete(c, ns, "work");
    job_pod(c, ns, "work")
}

fn job_pod(c: &Cluster, ns: &str, job: &str) -> Value {
    let list = c
        .get_json(&["-n", ns, "pods", "-l", &format!("job-name={job}")])
        .unwrap();
    list["items"][0].clone()
}

#[test]
fn a_v1alpha1_sidecarset_injects_a_sidecar_that_starts_first() {
    let c = cluster();
    let ns = c.namespace("sc-inject").unwrap();
    let ns = ns.name.as_str();
    let name = "sc-inject-log";
    let _cleanup = c.deleting("sidecarset", name);
    c.apply_stdin(&format!(
        r#"
apiVersion: apps.kruise.io/v1alpha1
kind: SidecarSet
metadata: {{name: {name}}}
spec:
  namespace: {ns}
  selector: {{matchLabels: {{app: web}}}}
  containers:
  - name: log
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    env:
    - {{name: KRUISE_CONTAINER_PRIORITY, value: "10"}}
    volumeMounts:
    - {{name: logs, mountPath: /var/log/app}}
    shareVolumePolicy: {{type: enabled}}
    transferEnv:
    - {{sourceContainerName: app, envName: TZ}}
  volumes:
  - {{name: logs, emptyDir: {{}}}}
"#
    ))
    .unwrap();
    // Stored as v1beta1: the namespace became a namespace selector.
    let beta = c
        .get_json(&["sidecarsets.v1beta1.apps.kruise.io", name])
        .unwrap();
    assert_eq!(
        beta["spec"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], ns,
        "{beta}"
    );
    assert!(beta["spec"].get("namespace").is_none());
    let alpha = c
        .get_json(&["sidecarsets.v1alpha1.apps.kruise.io", name])
        .unwrap();
    assert_eq!(alpha["apiVersion"], "apps.kruise.io/v1alpha1");
    let set_hash = beta["metadata"]["annotations"]["kruise.io/sidecarset-hash"]
        .as_str()
        .expect("the webhook hashed the SidecarSet")
        .to_string();
    assert_eq!(
        beta["spec"]["containers"][0]["podInjectPolicy"],
        "BeforeAppContainer"
    );
    assert_eq!(beta["spec"]["updateStrategy"]["type"], "RollingUpdate");

    c.apply_stdin(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {ns}, labels: {{app: web}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    env:
    - {{name: TZ, value: UTC}}
    volumeMounts:
    - {{name: data, mountPath: /data}}
  volumes:
  - {{name: data, emptyDir: {{}}}}
"#
    ))
    .unwrap();
    let pod = c.wait_pod_ready(ns, "web", LIMIT).unwrap();
    let containers = pod["spec"]["containers"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["log", "app"]);
    let log = &containers[0];
    let env: Vec<(&str, &str)> = log["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["value"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        env,
        [
            ("KRUISE_CONTAINER_PRIORITY", "10"),
            ("IS_INJECTED", "true"),
            ("TZ", "UTC")
        ]
    );
    let mounts: Vec<&str> = log["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .filter(|p| !p.starts_with("/var/run/secrets"))
        .collect();
    assert_eq!(mounts, ["/var/log/app", "/data"]);
    let volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(
        volumes.starts_with(&["data"]) && volumes.contains(&"logs"),
        "{volumes:?}"
    );
    let a = &pod["metadata"]["annotations"];
    assert_eq!(a["kruise.io/sidecarset-injected-list"], name);
    let hashes: Value =
        serde_json::from_str(a["kruise.io/sidecarset-hash"].as_str().unwrap()).unwrap();
    assert_eq!(hashes[name]["hash"], set_hash.as_str());
    assert_eq!(hashes[name]["sidecarList"], serde_json::json!(["log"]));
    assert!(a["kruise.io/sidecarset-hash-without-image"].is_string());
    assert_eq!(
        a["keelson.io/container-priorities"],
        r#"{"app":0,"log":10}"#
    );
    // The agent held the app until the sidecar ran.
    let (log_started, app_started) = (
        started_at(status_of(&pod, "containerStatuses", "log")),
        started_at(status_of(&pod, "containerStatuses", "app")),
    );
    assert!(
        log_started <= app_started,
        "log {log_started}, app {app_started}"
    );
    let (ok, out, err) = c
        .kubectl_result(
            &["-n", ns, "exec", "web", "-c", "log", "--", "ls", "/data"],
            None,
        )
        .unwrap();
    assert!(
        ok,
        "the shared volume is mounted in the sidecar: {out}{err}"
    );
}

#[test]
fn the_v1_7_native_sidecar_starts_before_the_app_and_the_job_completes() {
    let c = cluster();
    let ns = c.namespace("sc-native").unwrap();
    let ns = ns.name.as_str();
    let name = "sc-native-sidecar";
    let _cleanup = c.deleting("sidecarset", name);
    c.apply_stdin(&format!(
        r#"
apiVersion: apps.kruise.io/v1beta1
kind: SidecarSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: native-job}}}}
  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
  updateStrategy: {{type: NotUpdate}}
  initContainers:
  - name: sidecar
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sleep", "3600"]
"#
    ))
    .unwrap();
    let pod = run_job(&c, ns, "native-job", "Never");
    let inits = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(inits.len(), 1);
    assert_eq!(inits[0]["name"], "sidecar");
    assert_eq!(inits[0]["restartPolicy"], "Always");
    let hashes: Value = serde_json::from_str(
        pod["metadata"]["annotations"]["kruise.io/sidecarset-hash"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(hashes[name]["sidecarList"], serde_json::json!(["sidecar"]));
    let sidecar = status_of(&pod, "initContainerStatuses", "sidecar");
    let main = status_of(&pod, "containerStatuses", "main");
    assert!(started_at(sidecar) <= started_at(main), "{pod}");
    assert_eq!(pod["status"]["phase"], "Succeeded");
}

#[test]
fn a_job_sidecar_is_stopped_from_the_stamped_restart_policy() {
    let c = cluster();
    let ns = c.namespace("sc-job").unwrap();
    let ns = ns.name.as_str();
    let name = "sc-job-helper";
    let _cleanup = c.deleting("sidecarset", name);
    c.apply_stdin(&format!(
        r#"
apiVersion: apps.kruise.io/v1beta1
kind: SidecarSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: helper-job}}}}
  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
  containers:
  - name: helper
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    env:
    - {{name: KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT, value: "true"}}
    lifecycle:
      preStop:
        exec: {{command: ["sh", "-c", "echo prestop-ran > /dev/termination-log"]}}
"#
    ))
    .unwrap();
    let pod = run_job(&c, ns, "helper-job", "OnFailure");
    assert_eq!(
        pod["metadata"]["annotations"]["keelson.io/restart-policy"],
        "OnFailure"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["keelson.io/main-containers"],
        r#"["main"]"#
    );
    assert_eq!(pod["spec"]["containers"][0]["name"], "helper");
    assert_eq!(pod["status"]["phase"], "Succeeded");
    let helper = status_of(&pod, "containerStatuses", "helper");
    assert_eq!(helper["state"]["terminated"]["exitCode"], 0, "{helper}");
    // The agent ran the sidecar's preStop hook before stopping it.
    assert!(
        helper["state"]["terminated"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("prestop-ran")),
        "{helper}"
    );
}

#[test]
fn the_validating_webhook_refuses_as_openkruise() {
    let c = cluster();
    let name = "sc-refused";
    let _cleanup = c.deleting("sidecarset", name);
    let manifest = format!(
        r#"
apiVersion: apps.kruise.io/v1beta1
kind: SidecarSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: x}}}}
  initContainers:
  - {{name: s, image: {BUSYBOX}, restartPolicy: Always}}
"#
    );
    let (ok, out, err) = c
        .kubectl_result(&["apply", "-f", "-"], Some(&manifest))
        .unwrap();
    assert!(!ok, "{out}");
    assert!(
        err.contains("The initContainer in-place upgrade is not currently supported."),
        "{err}"
    );
    assert!(err.contains("vsidecarset.kb.io"), "{err}");
    // A pin to a revision that does not exist.
    let pinned = format!(
        r#"
apiVersion: apps.kruise.io/v1beta1
kind: SidecarSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: x}}}}
  injectionStrategy: {{revision: {{customVersion: never-made}}}}
  containers:
  - {{name: s, image: {BUSYBOX}}}
"#
    );
    let (ok, out, err) = c
        .kubectl_result(&["apply", "-f", "-"], Some(&pinned))
        .unwrap();
    assert!(!ok, "{out}");
    assert!(
        err.contains("Cannot find specific ControllerRevision"),
        "{err}"
    );
}

/// Per pod: (log containerID, log restartCount, app restartCount, app
/// startedAt, log image in spec, Ready).
type Row = (String, i64, i64, String, String, bool);

fn rows(c: &Cluster, ns: &str) -> std::collections::BTreeMap<String, Row> {
    let list = c.get_json(&["-n", ns, "pods", "-l", "app=roll"]).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let log = status_of(p, "containerStatuses", "log");
            let app = status_of(p, "containerStatuses", "app");
            let image = p["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "log")
                .map(|c| c["image"].as_str().unwrap_or("").to_string())
                .unwrap_or_default();
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                (
                    log["containerID"].as_str().unwrap_or("").to_string(),
                    log["restartCount"].as_i64().unwrap_or(0),
                    app["restartCount"].as_i64().unwrap_or(0),
                    started_at(app),
                    image,
                    kube::condition(p, "Ready"),
                ),
            )
        })
        .collect()
}

fn sidecarset_status(c: &Cluster, name: &str) -> Value {
    c.get_json(&["sidecarset", name]).unwrap()["status"].clone()
}

#[test]
fn a_sidecar_image_update_rolls_in_place_within_partition_and_max_unavailable() {
    let c = cluster();
    let ns = c.namespace("sc-roll").unwrap();
    let ns = ns.name.as_str();
    let name = "sc-roll-log";
    let _cleanup = c.deleting("sidecarset", name);
    let new_image = BUSYBOX.replace(":test", ":sc-roll");
    c.tag_image(BUSYBOX, &new_image).unwrap();
    let set = |image: &str, partition: u32| {
        format!(
            r#"
apiVersion: apps.kruise.io/v1beta1
kind: SidecarSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: roll}}}}
  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
  updateStrategy: {{maxUnavailable: 2, partition: {partition}}}
  containers:
  - name: log
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"#
        )
    };
    c.apply_stdin(&set(BUSYBOX, 3)).unwrap();
    c.apply_stdin(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: roll, namespace: {ns}}}
spec:
  replicas: 10
  selector: {{matchLabels: {{app: roll}}}}
  template:
    metadata: {{labels: {{app: roll}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {BUSYBOX}
        imagePullPolicy: IfNotPresent
        command: ["sleep", "3600"]
"#
    ))
    .unwrap();
    let counters = |s: &Value| {
        (
            s["matchedPods"].as_i64().unwrap_or(-1),
            s["updatedPods"].as_i64().unwrap_or(-1),
            s["readyPods"].as_i64().unwrap_or(-1),
            s["updatedReadyPods"].as_i64().unwrap_or(-1),
        )
    };
    c.wait_for(
        "10 injected pods ready and counted",
        Duration::from_secs(180),
        |c| {
            let s = sidecarset_status(c, name);
            Ok((counters(&s) == (10, 10, 10, 10)).then_some(()))
        },
    )
    .unwrap();
    let before = rows(&c, ns);
    assert_eq!(before.len(), 10);

    c.apply_stdin(&set(&new_image, 3)).unwrap();
    let (mut samples, mut worst_unavailable, mut most_updated) = (0, 0, 0);
    let started = std::time::Instant::now();
    loop {
        let now = rows(&c, ns);
        let updated = now.values().filter(|r| r.4 == new_image).count();
        let unavailable = now
            .iter()
            .filter(|(pod, r)| {
                !r.5 || (r.4 == new_image && before.get(*pod).is_some_and(|b| b.0 == r.0))
            })
            .count();
        samples += 1;
        worst_unavailable = worst_unavailable.max(unavailable);
        most_updated = most_updated.max(updated);
        assert!(unavailable <= 2, "maxUnavailable 2 broken: {now:?}");
        assert!(updated <= 7, "partition 3 broken: {updated} updated");
        let s = sidecarset_status(&c, name);
        if counters(&s) == (10, 7, 10, 7) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "rollout stuck: {s} {now:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!(
        "partitioned rollout: {samples} samples, at most {worst_unavailable} unavailable, {most_updated} updated"
    );
    // The partition holds.
    std::thread::sleep(Duration::from_secs(5));
    let held = rows(&c, ns);
    assert_eq!(held.values().filter(|r| r.4 == new_image).count(), 7);
    for (pod, r) in &held {
        let b = &before[pod];
        assert_eq!(
            (r.2, &r.3),
            (b.2, &b.3),
            "{pod}: the app container was restarted"
        );
        if r.4 == new_image {
            assert_ne!(r.0, b.0, "{pod}: the sidecar was not replaced");
            assert_eq!(r.1, b.1 + 1, "{pod}: the sidecar restarted in place once");
        } else {
            assert_eq!(r.0, b.0, "{pod}: a partitioned pod was touched");
        }
    }

    c.apply_stdin(&set(&new_image, 0)).unwrap();
    c.wait_for("all 10 updated", Duration::from_secs(120), |c| {
        let s = sidecarset_status(c, name);
        Ok((counters(&s) == (10, 10, 10, 10)).then_some(()))
    })
    .unwrap();
    let after = rows(&c, ns);
    for (pod, r) in &after {
        assert_eq!(r.4, new_image);
        assert_eq!(
            (r.2, &r.3),
            (before[pod].2, &before[pod].3),
            "{pod}: app restarted"
        );
    }
    let s = sidecarset_status(&c, name);
    assert!(
        s["latestRevision"]
            .as_str()
            .is_some_and(|r| r.starts_with(name)),
        "{s}"
    );
    assert_eq!(
        s["observedGeneration"],
        c.get_json(&["sidecarset", name]).unwrap()["metadata"]["generation"]
    );
}

#[test]
fn new_pods_get_the_pinned_custom_version() {
    let c = cluster();
    let ns = c.namespace("sc-pin").unwrap();
    let ns = ns.name.as_str();
    let name = "sc-pin-log";
    let _cleanup = c.deleting("sidecarset", name);
    let v2_image = BUSYBOX.replace(":test", ":sc-pin-v2");
    c.tag_image(BUSYBOX, &v2_image).unwrap();
    let set = |image: &str, version: &str, pin: &str| {
        format!(
            r#"
apiVersion: apps.kruise.io/v1beta1
kind: SidecarSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: pinned}}}}
  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
  customVersion: {version}
  updateStrategy: {{type: NotUpdate}}
{pin}
  containers:
  - {{name: log, image: {image}, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}}
"#
        )
    };
    c.apply_stdin(&set(BUSYBOX, "v1", "")).unwrap();
    let v1 = c
        .wait_for("revision of v1", LIMIT, |c| {
            let s = c.get_json(&["sidecarset", name])?;
            let rev = s["status"]["latestRevision"]
                .as_str()
                .unwrap_or("")
                .to_string();
            Ok((!rev.is_empty()).then_some((
                rev,
                s["metadata"]["annotations"]["kruise.io/sidecarset-hash"].clone(),
            )))
        })
        .unwrap();
    let revision = c
        .get_json(&["-n", "keelson-system", "controllerrevision", &v1.0])
        .unwrap();
    assert_eq!(
        revision["metadata"]["labels"]["apps.kruise.io/sidecarset-custom-version"],
        "v1"
    );
    assert_eq!(
        revision["metadata"]["labels"]["kruise.io/sidecarset-name"],
        name
    );
    c.apply_stdin(&set(
        &v2_image,
        "v2",
        "  injectionStrategy: {revision: {customVersion: v1, policy: Always}}",
    ))
    .unwrap();
    c.apply_stdin(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: pinned, namespace: {ns}, labels: {{app: pinned}}}}
spec:
  containers:
  - {{name: app, image: {BUSYBOX}, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}}
"#
    ))
    .unwrap();
    let pod = c.get_json(&["-n", ns, "pod", "pinned"]).unwrap();
    assert_eq!(
        pod["spec"]["containers"][0]["image"], BUSYBOX,
        "the v1 image: {pod}"
    );
    let hashes: Value = serde_json::from_str(
        pod["metadata"]["annotations"]["kruise.io/sidecarset-hash"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(hashes[name]["hash"], v1.1, "v1's hash");
    assert_eq!(hashes[name]["controllerRevision"], v1.0.as_str());
}

#[test]
fn a_hot_upgrade_hands_over_to_the_idle_container_and_flips_the_old_one() {
    let c = cluster();
    let ns = c.namespace("sc-hot").unwrap();
    let ns = ns.name.as_str();
    let name = "sc-hot-mesh";
    let _cleanup = c.deleting("sidecarset", name);
    let (v1, v2, empty) = (
        BUSYBOX.replace(":test", ":hot-v1"),
        BUSYBOX.replace(":test", ":hot-v2"),
        BUSYBOX.replace(":test", ":hot-empty"),
    );
    for t in [&v1, &v2, &empty] {
        c.tag_image(BUSYBOX, t).unwrap();
    }
    let set = |image: &str| {
        format!(
            r#"
apiVersion: apps.kruise.io/v1beta1
kind: SidecarSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: hot}}}}
  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
  containers:
  - name: mesh
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    upgradeStrategy: {{upgradeType: HotUpgrade, hotUpgradeEmptyImage: {empty}}}
"#
        )
    };
    c.apply_stdin(&set(&v1)).unwrap();
    c.apply_stdin(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hot, namespace: {ns}, labels: {{app: hot}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: app, image: {BUSYBOX}, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}}
"#
    ))
    .unwrap();
    let pod = c.wait_pod_ready(ns, "hot", LIMIT).unwrap();
    let image_of = |p: &Value, n: &str| {
        p["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .map(|c| c["image"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        (image_of(&pod, "mesh-1"), image_of(&pod, "mesh-2")),
        (v1.clone(), empty.clone())
    );
    let a = &pod["metadata"]["annotations"];
    assert_eq!(
        a["kruise.io/sidecarset-working-hotupgrade-container"],
        r#"{"mesh":"mesh-1"}"#
    );
    let app_before = status_of(&pod, "containerStatuses", "app").clone();
    c.wait_for("status 1/1/1/1", LIMIT, |c| {
        let s = sidecarset_status(c, name);
        Ok((s["matchedPods"] == 1 && s["updatedReadyPods"] == 1).then_some(()))
    })
    .unwrap();

    c.apply_stdin(&set(&v2)).unwrap();
    let done = c
        .wait_for("handed over to mesh-2 and mesh-1 flipped", LIMIT, |c| {
            let p = c.get_json(&["-n", ns, "pod", "hot"])?;
            let s = sidecarset_status(c, name);
            let flipped = image_of(&p, "mesh-2") == v2 && image_of(&p, "mesh-1") == empty;
            Ok(
                (flipped && s["updatedReadyPods"] == 1 && kube::condition(&p, "Ready"))
                    .then_some(p),
            )
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\npod: {}\nstatus: {}",
                c.get_json(&["-n", ns, "pod", "hot"]).unwrap_or_default(),
                sidecarset_status(&c, name)
            )
        });
    let a = &done["metadata"]["annotations"];
    assert_eq!(
        a["kruise.io/sidecarset-working-hotupgrade-container"],
        r#"{"mesh":"mesh-2"}"#
    );
    assert_eq!(a["version.sidecarset.kruise.io/mesh-1"], "0");
    assert_eq!(a["versionalt.sidecarset.kruise.io/mesh-2"], "0");
    let app = status_of(&done, "containerStatuses", "app");
    assert_eq!(app["restartCount"], app_before["restartCount"]);
    assert_eq!(
        started_at(app),
        started_at(&app_before),
        "the app was not restarted"
    );
}
