//! PodUnavailableBudget and deletion protection on the real single-node
//! cluster, with the shipped webhook configurations, kubectl as a user:
//! a budget over a CloneSet of 5 with `maxUnavailable: 1` lets exactly one
//! of two simultaneous `kubectl delete pod` through (the other is refused
//! with OpenKruise's reason); an eviction it refuses gets 429 Too Many
//! Requests and passes once the replacement pod is available; an in-place
//! update the CloneSet would do all at once is paced one pod at a time
//! (sampled while it runs); and `policy.kruise.io/delete-protection`
//! refuses deleting a namespace with pods, a Deployment with replicas and
//! a CloneSet, with OpenKruise's messages, until the label goes.

use std::time::{Duration, Instant};

use keelson_integration::images::BUSYBOX;
use keelson_integration::kube::{self, Cluster};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(150);

fn cluster() -> kube::Turn {
    kube::shared_in(module_path!()).expect("test cluster")
}

fn cloneset(ns: &str, name: &str, replicas: u32, max_unavailable: &str) -> String {
    format!(
        r#"apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {BUSYBOX}
        imagePullPolicy: IfNotPresent
        command: ["sleep", "3600"]
  updateStrategy:
    type: InPlaceIfPossible
    maxUnavailable: {max_unavailable}
"#
    )
}

fn pods(c: &Cluster, ns: &str, app: &str) -> Vec<Value> {
    c.pods(ns, app).unwrap()
}

fn ready(p: &Value) -> bool {
    kube::live_and_ready(p)
}

fn name(p: &Value) -> String {
    kube::name_of(p)
}

/// Waits until the budget reports `allowed` with all `n` pods available.
fn budget_settled(c: &Cluster, ns: &str, pub_: &str, n: i64, allowed: i64) -> Value {
    c.wait_for(
        &format!("PodUnavailableBudget {ns}/{pub_} allows {allowed} of {n}"),
        LIMIT,
        |c| {
            let b = c.get_json(&["-n", ns, "pub", pub_])?;
            let s = &b["status"];
            let ok = s["observedGeneration"] == b["metadata"]["generation"]
                && s["totalReplicas"] == n
                && s["currentAvailable"] == n
                && s["unavailableAllowed"] == allowed;
            Ok(ok.then(|| s.clone()))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", c.diagnostics()))
}

fn evict(c: &Cluster, ns: &str, pod: &str, dry_run: bool) -> (bool, String) {
    let mut body = serde_json::json!({
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": pod, "namespace": ns},
    });
    if dry_run {
        body["deleteOptions"] = serde_json::json!({"dryRun": ["All"]});
    }
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction");
    let (ok, out, err) = c
        .kubectl_result(
            &["create", "--raw", &path, "-f", "-"],
            Some(&body.to_string()),
        )
        .unwrap();
    (ok, format!("{out}{err}"))
}

#[test]
fn pub_lets_one_of_two_racing_deletions_through_and_answers_evictions_429() {
    let c = cluster();
    let ns = c.namespace("pub-guard").unwrap();
    let ns = ns.name.as_str();
    c.apply_stdin(&cloneset(ns, "web", 5, "1")).unwrap();
    c.apply_stdin(&format!(
        r#"apiVersion: policy.kruise.io/v1alpha1
kind: PodUnavailableBudget
metadata: {{name: web-pub, namespace: {ns}}}
spec:
  targetRef: {{apiVersion: apps.kruise.io/v1alpha1, kind: CloneSet, name: web}}
  maxUnavailable: 1
"#
    ))
    .unwrap();
    let status = budget_settled(&c, ns, "web-pub", 5, 1);
    assert_eq!(status["desiredAvailable"], 4, "{status}");
    let all = pods(&c, ns, "web");
    assert_eq!(all.len(), 5);
    for p in &all {
        assert_eq!(
            p["metadata"]["annotations"]["kruise.io/related-pub"], "web-pub",
            "every pod names its budget: {p}"
        );
    }

    // Two deletions at once: one passes, one is refused with the reason.
    let (a, b) = (name(&all[0]), name(&all[1]));
    let race: Vec<(bool, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = [&a, &b]
            .map(|p| {
                let c = &c;
                s.spawn(move || {
                    let (ok, out, err) = c
                        .kubectl_result(&["-n", ns, "delete", "pod", p, "--wait=false"], None)
                        .unwrap();
                    (ok, format!("{out}{err}"))
                })
            })
            .into_iter()
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let passed = race.iter().filter(|(ok, _)| *ok).count();
    assert_eq!(passed, 1, "exactly one deletion passes: {race:?}");
    let refused = &race.iter().find(|(ok, _)| !ok).unwrap().1;
    assert!(
        refused.contains(
            "podunavailablebudget.policy.kruise.io \"web-pub\" is forbidden: pub unavailable allowed is negative"
        ),
        "{refused}"
    );
    let deleted = if race[0].0 { &a } else { &b };
    let kept = if race[0].0 { &b } else { &a };

    // While the replacement is not available, an eviction is told to come
    // back later (429), as a PodDisruptionBudget's refusal is.
    let (ok, out) = evict(&c, ns, kept, false);
    assert!(!ok, "eviction refused while one pod is disrupted: {out}");
    assert!(
        out.contains("TooManyRequests") || out.contains("429"),
        "a 429 that kubectl drain retries: {out}"
    );
    assert!(out.contains("pub unavailable allowed is negative"), "{out}");
    // Once the replacement is up, the same eviction passes; a dry run of
    // it first takes nothing.
    let status = budget_settled(&c, ns, "web-pub", 5, 1);
    assert!(
        status["disruptedPods"].get(deleted.as_str()).is_none(),
        "the deleted pod's record is gone: {status}"
    );
    let (ok, out) = evict(&c, ns, kept, true);
    assert!(ok, "dry-run eviction admitted: {out}");
    let after = c.get_json(&["-n", ns, "pub", "web-pub"]).unwrap()["status"].clone();
    assert_eq!(
        after["unavailableAllowed"], 1,
        "a dry run takes nothing: {after}"
    );
    assert!(
        after["disruptedPods"].get(kept.as_str()).is_none(),
        "{after}"
    );
    let started = Instant::now();
    let (ok, out) = evict(&c, ns, kept, false);
    assert!(ok, "eviction passes once the budget allows: {out}");
    // The eviction took the one allowed disruption (recorded until the
    // controller sees the pod go, which may already have happened).
    let after = c.get_json(&["-n", ns, "pub", "web-pub"]).unwrap()["status"].clone();
    assert!(
        after["disruptedPods"].get(kept.as_str()).is_some() || after["unavailableAllowed"] == 0,
        "the evicted pod is counted: {after}"
    );
    let gone = c
        .get_json(&[
            "-n",
            ns,
            "pods",
            "--field-selector",
            &format!("metadata.name={kept}"),
        ])
        .unwrap();
    assert!(
        gone["items"].as_array().is_none_or(|l| l
            .iter()
            .all(|p| !p["metadata"]["deletionTimestamp"].is_null())),
        "the evicted pod is going: {gone}"
    );
    eprintln!(
        "eviction admitted {:.1}s after the budget settled",
        started.elapsed().as_secs_f64()
    );
    budget_settled(&c, ns, "web-pub", 5, 1);

    // kubectl drain itself: the node is cordoned, so the one pod it may
    // evict is not replaced and the budget stays spent; drain keeps
    // retrying the others (it gives up on a 403) until its timeout.
    struct Uncordon<'a>(&'a Cluster);
    impl Drop for Uncordon<'_> {
        fn drop(&mut self) {
            let _ = self.0.kubectl(&["uncordon", kube::NODE]);
        }
    }
    let _uncordon = Uncordon(&c);
    let (ok, out, err) = c
        .kubectl_result(
            &[
                "drain",
                kube::NODE,
                "--pod-selector",
                "app=web",
                "--ignore-daemonsets",
                "--timeout=12s",
            ],
            None,
        )
        .unwrap();
    let text = format!("{out}{err}");
    assert!(!ok, "drain cannot finish while the budget is spent: {text}");
    assert!(
        text.contains("will retry after") && text.contains("pub unavailable allowed is negative"),
        "drain backs off and retries on the budget's 429: {text}"
    );
}

#[test]
fn pub_paces_an_in_place_update_one_pod_at_a_time() {
    let c = cluster();
    let ns = c.namespace("pub-pace").unwrap();
    let ns = ns.name.as_str();
    // The CloneSet alone would update all three at once.
    c.apply_stdin(&cloneset(ns, "api", 3, "100%")).unwrap();
    c.apply_stdin(&format!(
        r#"apiVersion: policy.kruise.io/v1alpha1
kind: PodUnavailableBudget
metadata: {{name: api-pub, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  maxUnavailable: 1
"#
    ))
    .unwrap();
    budget_settled(&c, ns, "api-pub", 3, 1);
    let before: Vec<(String, String)> = pods(&c, ns, "api")
        .iter()
        .map(|p| {
            (
                name(p),
                p["status"]["containerStatuses"][0]["containerID"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let retag = "localhost/keelson/busybox:pub-paced";
    c.tag_image(BUSYBOX, retag).unwrap();
    c.kubectl(&[
        "-n",
        ns,
        "patch",
        "cloneset",
        "api",
        "--type=json",
        "-p",
        &format!(
            r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{retag}"}}]"#
        ),
    ])
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut samples = 0;
    loop {
        let now = pods(&c, ns, "api");
        let unavailable = now.iter().filter(|p| !ready(p)).count();
        assert!(
            unavailable <= 1,
            "sample {samples}: {unavailable} of 3 pods unavailable, the budget allows 1: {:?}",
            now.iter().map(|p| (name(p), ready(p))).collect::<Vec<_>>()
        );
        samples += 1;
        let updated = now
            .iter()
            .filter(|p| {
                ready(p)
                    && p["spec"]["containers"][0]["image"] == retag
                    && before.iter().any(|(n, id)| {
                        *n == name(p)
                            && p["status"]["containerStatuses"][0]["containerID"] != id.as_str()
                    })
            })
            .count();
        if updated == 3 && now.len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "in-place rollout did not finish: {updated}/3 updated\n{}",
            c.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // In place: the same pods, restarted containers.
    let names: Vec<String> = pods(&c, ns, "api").iter().map(name).collect();
    for (n, _) in &before {
        assert!(names.contains(n), "pod {n} kept (in-place): {names:?}");
    }
    eprintln!("paced in-place rollout: {samples} samples, at most 1 unavailable");
}

fn refused(c: &Cluster, args: &[&str]) -> String {
    let (ok, out, err) = c.kubectl_result(args, None).unwrap();
    assert!(!ok, "kubectl {} should be refused: {out}", args.join(" "));
    err
}

#[test]
fn deletion_protection_refuses_until_the_label_goes() {
    let c = cluster();
    c.kubectl(&["create", "namespace", "dp-guarded"]).unwrap();
    let ns = "dp-guarded";
    c.kubectl(&[
        "label",
        "namespace",
        ns,
        "policy.kruise.io/delete-protection=Cascading",
    ])
    .unwrap();
    c.apply_stdin(&cloneset(ns, "keep", 1, "1")).unwrap();
    c.wait_for("the namespace's pod runs", LIMIT, |c| {
        Ok(pods(c, ns, "keep").iter().any(ready).then_some(()))
    })
    .unwrap();
    let err = refused(&c, &["delete", "namespace", ns, "--wait=false"]);
    assert!(
        err.contains("forbidden by ResourcesProtectionDeletion for policy.kruise.io/delete-protection=Cascading and active pods 1>0"),
        "{err}"
    );
    c.kubectl(&[
        "label",
        "--overwrite",
        "namespace",
        ns,
        "policy.kruise.io/delete-protection=Always",
    ])
    .unwrap();
    let err = refused(&c, &["delete", "namespace", ns, "--wait=false"]);
    assert!(
        err.contains(
            "forbidden by ResourcesProtectionDeletion for policy.kruise.io/delete-protection=Always"
        ),
        "{err}"
    );

    // A CloneSet labelled Always, a Deployment labelled Cascading with
    // replicas.
    c.kubectl(&[
        "-n",
        ns,
        "label",
        "cloneset",
        "keep",
        "policy.kruise.io/delete-protection=Always",
    ])
    .unwrap();
    let err = refused(
        &c,
        &["-n", ns, "delete", "cloneset", "keep", "--wait=false"],
    );
    assert!(err.contains("delete-protection=Always"), "{err}");
    c.apply_stdin(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: dep
  namespace: {ns}
  labels: {{policy.kruise.io/delete-protection: Cascading}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: dep}}}}
  template:
    metadata: {{labels: {{app: dep}}}}
    spec:
      containers: [{{name: main, image: {BUSYBOX}, command: ["sleep", "3600"]}}]
"#
    ))
    .unwrap();
    let err = refused(
        &c,
        &["-n", ns, "delete", "deployment", "dep", "--wait=false"],
    );
    assert!(
        err.contains("delete-protection=Cascading and replicas 2>0"),
        "{err}"
    );
    c.kubectl(&["-n", ns, "scale", "deployment", "dep", "--replicas=0"])
        .unwrap();
    c.kubectl(&["-n", ns, "delete", "deployment", "dep", "--wait=false"])
        .unwrap();

    // A CRD: Always, and Cascading without its own gate.
    let _crd = c.deleting("crd", "widgets.example.keelson.io");
    c.apply_stdin(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.keelson.io
  labels: {policy.kruise.io/delete-protection: Always}
spec:
  group: example.keelson.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#,
    )
    .unwrap();
    let err = refused(&c, &["delete", "crd", "widgets.example.keelson.io"]);
    assert!(err.contains("delete-protection=Always"), "{err}");
    c.kubectl(&[
        "label",
        "--overwrite",
        "crd",
        "widgets.example.keelson.io",
        "policy.kruise.io/delete-protection=Cascading",
    ])
    .unwrap();
    let err = refused(&c, &["delete", "crd", "widgets.example.keelson.io"]);
    assert!(
        err.contains("feature-gate DeletionProtectionForCRDCascadingGate is not enabled"),
        "{err}"
    );
    c.kubectl(&[
        "label",
        "crd",
        "widgets.example.keelson.io",
        "policy.kruise.io/delete-protection-",
    ])
    .unwrap();
    c.kubectl(&["delete", "crd", "widgets.example.keelson.io"])
        .unwrap();

    // The label removed, everything goes.
    c.kubectl(&[
        "-n",
        ns,
        "label",
        "cloneset",
        "keep",
        "policy.kruise.io/delete-protection-",
    ])
    .unwrap();
    c.kubectl(&[
        "label",
        "namespace",
        ns,
        "policy.kruise.io/delete-protection-",
    ])
    .unwrap();
    c.kubectl(&["delete", "namespace", ns, "--wait=false"])
        .unwrap();
}
