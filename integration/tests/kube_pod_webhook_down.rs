//! The pod webhook's failure scope on the real cluster: with every
//! keelson-controller replica gone, a pod no SidecarSet, launch priority
//! or Kruise workload concerns is still created (its webhook registration
//! is `Ignore`), while a pod an existing SidecarSet selects is refused
//! (`mpod.kb.io`, `Fail`: it would otherwise start without its sidecar).
//! Its own test binary: it takes the controller away from everything else.

use std::time::{Duration, Instant};

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube;

const LIMIT: Duration = Duration::from_secs(120);

fn pod(ns: &str, name: &str, app: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: main, image: {BUSYBOX}, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}}
"#
    )
}

fn scale(c: &kube::Cluster, replicas: u32) {
    c.kubectl(&[
        "-n",
        "keelson-system",
        "scale",
        "deployment/keelson-controller",
        &format!("--replicas={replicas}"),
    ])
    .unwrap();
}

#[test]
fn with_the_controller_down_only_concerned_pods_are_refused() {
    let c = kube::shared().expect("test cluster");
    let ns = c.namespace("hook-down").unwrap();
    let ns = ns.name.as_str();
    let name = "hook-down-guard";
    let _cleanup = c.deleting("sidecarset", name);
    c.apply_stdin(&format!(
        r#"
apiVersion: apps.kruise.io/v1beta1
kind: SidecarSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: guarded}}}}
  containers:
  - {{name: guard, image: {BUSYBOX}, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}}
"#
    ))
    .unwrap();
    // The controller puts the new selector into mpod.kb.io's condition.
    c.wait_for("the SidecarSet's selector in mpod.kb.io", LIMIT, |c| {
        let cfg = c.get_json(&[
            "mutatingwebhookconfiguration",
            "keelson-mutating-webhook-configuration",
        ])?;
        let scoped = cfg["webhooks"]
            .as_array()
            .and_then(|w| w.iter().find(|h| h["name"] == "mpod.kb.io"))
            .cloned()
            .unwrap_or_default();
        let expr = scoped["matchConditions"][0]["expression"]
            .as_str()
            .unwrap_or("");
        Ok(expr.contains("'guarded'").then_some(()))
    })
    .unwrap();

    scale(&c, 0);
    c.wait_for("no keelson-controller pods", LIMIT, |c| {
        let pods = c.get_json(&[
            "-n",
            "keelson-system",
            "pods",
            "-l",
            "app.kubernetes.io/name=keelson-controller",
        ])?;
        Ok(pods["items"]
            .as_array()
            .is_some_and(|i| i.is_empty())
            .then_some(()))
    })
    .unwrap();

    let t = Instant::now();
    let (ok, out, err) = c
        .kubectl_result(&["apply", "-f", "-"], Some(&pod(ns, "plain", "plain")))
        .unwrap();
    let plain_took = t.elapsed();
    assert!(
        ok,
        "an unrelated pod is created without the controller: {out}{err}"
    );
    let (ok, out, err) = c
        .kubectl_result(&["apply", "-f", "-"], Some(&pod(ns, "guarded", "guarded")))
        .unwrap();
    assert!(
        !ok,
        "a SidecarSet's pod must not start without its sidecar: {out}"
    );
    assert!(err.contains("mpod.kb.io"), "{err}");
    eprintln!("unrelated pod created in {plain_took:?} with the controller down");

    scale(&c, 2);
    c.wait_for("keelson-controller back", LIMIT, |c| {
        let d = c.get_json(&["-n", "keelson-system", "deployment", "keelson-controller"])?;
        Ok((d["status"]["readyReplicas"] == 2).then_some(()))
    })
    .unwrap();
    // With the controller back the guarded pod gets its sidecar.
    c.wait_for("the guarded pod admitted", LIMIT, |c| {
        let (ok, _, _) =
            c.kubectl_result(&["apply", "-f", "-"], Some(&pod(ns, "guarded", "guarded")))?;
        Ok(ok.then_some(()))
    })
    .unwrap();
    let p = c.get_json(&["-n", ns, "pod", "guarded"]).unwrap();
    assert_eq!(p["spec"]["containers"][0]["name"], "guard", "{p}");
}
