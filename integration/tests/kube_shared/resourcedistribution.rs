//! ResourceDistribution on the real single-node cluster (the controller
//! runs with `ResourceDistributionGate=true`): OpenKruise's documented
//! example, applied unchanged, copies its ConfigMap into the listed and
//! labelled namespaces with OpenKruise's hash (checked against Go's) and
//! source annotations and a controller ownerReference, and reports the
//! missing one; a source change reaches every copy; a namespace created
//! later with the label gets a copy within seconds; one that loses the
//! label loses its copy; a foreign object of the same name is left alone
//! and reported as a conflict; a manual edit is reverted and a deleted
//! copy recreated; deleting the distribution garbage-collects the copies.
//! The validating webhook refuses what OpenKruise refuses. A distributed
//! `kubernetes.io/dockerconfigjson` Secret lets pods in the target
//! namespaces pull (through keelson-agent on kubelet's CRI path) from the
//! local auth registry, while a pod elsewhere gets `401 Unauthorized`.

use std::time::{Duration, Instant};

use keelson_integration::kube::{self, Cluster};
use serde_json::Value;

fn cluster() -> kube::Turn {
    kube::shared_in(module_path!()).expect("test cluster")
}

const LIMIT: Duration = Duration::from_secs(60);

/// OpenKruise's documented example (docs/user-manuals/resourcedistribution).
const EXAMPLE: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ResourceDistribution
metadata:
  name: sample
spec:
  resource:
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: game-demo
    data:
      game.properties: |
        enemy.types=aliens,monsters
        player.maximum-lives=5
      player_initial_lives: "3"
      ui_properties_file_name: "user-interface.properties"
      user-interface.properties: |
        color.good=purple
        color.bad=yellow
        allow.textmode=true
  targets:
    excludedNamespaces:
      list:
        - name: ns-3
    includedNamespaces:
      list:
        - name: ns-1
        - name: ns-4
    namespaceLabelSelector:
      matchLabels:
        group: one
"#;

// sha256 of Go's `encoding/json` of the example's resource (and of it
// after the update below), computed with Go 1.26: what OpenKruise writes.
const GO_HASH_V1: &str = "0821a13321b2c76b5bd63341a0d97fb46bfdbb2f914e2ad6b613d10632fa4b63";
const GO_HASH_V2: &str = "f0b6a5a550340993b13c4f85245b6f9a9358556a4c0be62524089bd713bc4e00";

const HASH: &str = "kruise.io/resourcedistribution.resource.hashcode";
const FROM: &str = "kruise.io/resourcedistribution.resource.from";

fn copy_in(c: &Cluster, ns: &str) -> Option<Value> {
    c.get_json(&["-n", ns, "configmap", "game-demo"]).ok()
}

fn cond<'a>(rd: &'a Value, type_: &str) -> &'a Value {
    rd["status"]["conditions"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition: {rd}"))
}

/// Waits until the distribution's status reads (desired, succeeded,
/// failed, observedGeneration).
fn wait_status(c: &Cluster, counts: (i64, i64, i64, i64)) -> Value {
    c.wait_for(&format!("sample status {counts:?}"), LIMIT, |c| {
        let rd = c.get_json(&["resourcedistribution", "sample"])?;
        let s = &rd["status"];
        let got = (
            s["desired"].as_i64().unwrap_or(-1),
            s["succeeded"].as_i64().unwrap_or(-1),
            s["failed"].as_i64().unwrap_or(-1),
            s["observedGeneration"].as_i64().unwrap_or(-1),
        );
        Ok((got == counts).then_some(rd))
    })
    .unwrap()
}

fn assert_conditions(rd: &Value, failing: &[(&str, &[&str])]) {
    let types: Vec<&str> = rd["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "GetResourceFailed",
            "CreateResourceFailed",
            "UpdateResourceFailed",
            "DeleteResourceFailed",
            "ConflictOccurred",
            "NamespaceNotExists"
        ]
    );
    for t in types {
        let c = cond(rd, t);
        assert!(c["lastTransitionTime"].is_string(), "{c}");
        match failing.iter().find(|(ft, _)| *ft == t) {
            Some((_, namespaces)) => {
                assert_eq!(c["status"], "True", "{c}");
                assert_eq!(c["failedNamespace"], serde_json::json!(namespaces), "{c}");
            }
            None => {
                assert_eq!(c["status"], "False", "{c}");
                assert_eq!(c["reason"], "Succeeded", "{c}");
                assert!(
                    c.get("failedNamespace")
                        .is_none_or(|l| l.as_array().is_some_and(|l| l.is_empty())),
                    "{c}"
                );
            }
        }
    }
}

fn wait_copy(c: &Cluster, ns: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    c.wait_for(&format!("{what} in {ns}"), LIMIT, |c| {
        Ok(copy_in(c, ns).filter(|cm| check(cm)))
    })
    .unwrap()
}

fn wait_gone(c: &Cluster, ns: &str) {
    c.wait_for(&format!("no copy in {ns}"), LIMIT, |c| {
        Ok(copy_in(c, ns).is_none().then_some(()))
    })
    .unwrap()
}

#[test]
fn distributes_syncs_and_cleans_up_as_openkruise() {
    let c = cluster();
    let _rd = c.deleting("resourcedistribution", "sample");
    let ns1 = c.namespace("ns-1").unwrap();
    let ns2 = c.namespace("ns-2").unwrap();
    let ns3 = c.namespace("ns-3").unwrap();
    for ns in [&ns2.name, &ns3.name] {
        c.kubectl(&["label", "namespace", ns, "group=one"]).unwrap();
    }

    // The example: ns-1 (listed), ns-2 (labelled); ns-3 is excluded and
    // ns-4 does not exist.
    c.apply_stdin(EXAMPLE).unwrap();
    let rd = wait_status(&c, (3, 2, 1, 1));
    assert_conditions(&rd, &[("NamespaceNotExists", &["ns-4"])]);
    assert_eq!(
        cond(&rd, "NamespaceNotExists")["reason"],
        "namespace not found or is terminating"
    );
    let uid = rd["metadata"]["uid"].as_str().unwrap().to_string();
    for ns in [&ns1.name, &ns2.name] {
        let cm = wait_copy(&c, ns, "copy", |_| true);
        assert_eq!(cm["metadata"]["annotations"][HASH], GO_HASH_V1, "{cm}");
        assert_eq!(cm["metadata"]["annotations"][FROM], "sample");
        assert_eq!(cm["data"]["player_initial_lives"], "3");
        assert!(
            cm["data"]["game.properties"]
                .as_str()
                .unwrap()
                .contains("enemy.types=aliens,monsters")
        );
        let owner = &cm["metadata"]["ownerReferences"][0];
        assert_eq!(owner["apiVersion"], "apps.kruise.io/v1alpha1");
        assert_eq!(owner["kind"], "ResourceDistribution");
        assert_eq!(owner["name"], "sample");
        assert_eq!(owner["uid"], uid.as_str());
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
    }
    assert!(copy_in(&c, &ns3.name).is_none(), "the excluded namespace");
    let table = c.kubectl(&["get", "distributor", "sample"]).unwrap();
    assert!(
        table.contains("TOTAL") && table.contains("SUCCEED"),
        "{table}"
    );

    // A source change reaches every copy (HTML characters hashed as Go
    // escapes them).
    c.kubectl(&[
        "patch",
        "resourcedistribution",
        "sample",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"resource":{"data":{"player_initial_lives":"4","motd":"<b>welcome</b> & enjoy ✓"}}}}"#,
    ])
    .unwrap();
    for ns in [&ns1.name, &ns2.name] {
        let cm = wait_copy(&c, ns, "updated copy", |cm| {
            cm["data"]["player_initial_lives"] == "4"
        });
        assert_eq!(cm["metadata"]["annotations"][HASH], GO_HASH_V2, "{cm}");
        assert_eq!(cm["data"]["motd"], "<b>welcome</b> & enjoy ✓");
    }
    wait_status(&c, (3, 2, 1, 2));

    // A namespace created later with the label gets its copy promptly.
    let started = Instant::now();
    let ns5 = c.namespace("ns-5").unwrap();
    c.kubectl(&["label", "namespace", &ns5.name, "group=one"])
        .unwrap();
    wait_copy(&c, &ns5.name, "copy", |cm| {
        cm["data"]["player_initial_lives"] == "4"
    });
    let took = started.elapsed();
    eprintln!("a namespace created later got its copy after {took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    wait_status(&c, (4, 3, 1, 2));

    // Losing the label loses the copy.
    c.kubectl(&["label", "namespace", &ns2.name, "group-"])
        .unwrap();
    wait_gone(&c, &ns2.name);
    wait_status(&c, (3, 2, 1, 2));

    // A foreign ConfigMap of the same name is left alone and reported.
    let foreign = c.namespace("rd-foreign").unwrap();
    c.kubectl(&[
        "-n",
        &foreign.name,
        "create",
        "configmap",
        "game-demo",
        "--from-literal=mine=yes",
    ])
    .unwrap();
    c.kubectl(&[
        "patch",
        "resourcedistribution",
        "sample",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"targets":{"includedNamespaces":{"list":[{"name":"ns-1"},{"name":"ns-4"},{"name":"rd-foreign"}]}}}}"#,
    ])
    .unwrap();
    let rd = wait_status(&c, (4, 2, 2, 3));
    assert_conditions(
        &rd,
        &[
            ("ConflictOccurred", &["rd-foreign"]),
            ("NamespaceNotExists", &["ns-4"]),
        ],
    );
    assert_eq!(
        cond(&rd, "ConflictOccurred")["reason"],
        "conflict with existing resources because of the same namespace, group, version, kind and name"
    );
    let theirs = copy_in(&c, &foreign.name).unwrap();
    assert_eq!(theirs["data"], serde_json::json!({"mine": "yes"}));
    assert!(
        theirs["metadata"].get("ownerReferences").is_none(),
        "{theirs}"
    );

    // A manual edit is reverted; a deleted copy comes back.
    c.kubectl(&[
        "-n",
        &ns1.name,
        "patch",
        "configmap",
        "game-demo",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"player_initial_lives":"99"},"metadata":{"labels":{"added":"by-hand"}}}"#,
    ])
    .unwrap();
    let cm = wait_copy(&c, &ns1.name, "reverted copy", |cm| {
        cm["data"]["player_initial_lives"] == "4"
    });
    assert_eq!(
        cm["metadata"]["labels"]["added"], "by-hand",
        "own labels are kept"
    );
    c.kubectl(&["-n", &ns5.name, "delete", "configmap", "game-demo"])
        .unwrap();
    wait_copy(&c, &ns5.name, "recreated copy", |_| true);

    // Settled: neither the status nor the copies are rewritten again.
    let version = |args: &[&str]| {
        c.get_json(args).unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    };
    wait_status(&c, (4, 2, 2, 3));
    std::thread::sleep(Duration::from_secs(1));
    let before = (
        version(&["resourcedistribution", "sample"]),
        version(&["-n", &ns1.name, "configmap", "game-demo"]),
    );
    std::thread::sleep(Duration::from_secs(3));
    let after = (
        version(&["resourcedistribution", "sample"]),
        version(&["-n", &ns1.name, "configmap", "game-demo"]),
    );
    assert_eq!(before, after);

    // Deleting the distribution garbage-collects its copies only.
    c.kubectl(&["delete", "resourcedistribution", "sample"])
        .unwrap();
    wait_gone(&c, &ns1.name);
    wait_gone(&c, &ns5.name);
    assert!(
        copy_in(&c, &foreign.name).is_some(),
        "the foreign ConfigMap stays"
    );
}

#[test]
fn the_validating_webhook_refuses_as_openkruise() {
    let c = cluster();
    let _rd = c.deleting("resourcedistribution", "rd-refused");
    let manifest = |resource: &str, targets: &str| {
        format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ResourceDistribution\nmetadata: {{name: rd-refused}}\nspec:\n  resource: {resource}\n  targets: {targets}\n"
        )
    };
    let refused = |m: &str, expect: &str| {
        let (ok, out, err) = c.kubectl_result(&["apply", "-f", "-"], Some(m)).unwrap();
        assert!(!ok, "{out}");
        assert!(err.contains("vresourcedistribution.kb.io"), "{err}");
        assert!(err.contains(expect), "{err}");
    };
    refused(
        &manifest(
            "{apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: [{name: c, image: x}]}}",
            "{allNamespaces: true}",
        ),
        "spec.resource: Invalid value: unstructured.Unstructured{Object:map[string]interface {}{\"apiVersion\":\"v1\", \"kind\":\"Pod\", ",
    );
    refused(
        &manifest(
            "{apiVersion: v1, kind: Pod, metadata: {name: p}}",
            "{allNamespaces: true}",
        ),
        "unknown or unsupported resource GroupKind, only support [Secret ConfigMap]",
    );
    refused(
        &manifest(
            "{apiVersion: v1, kind: ConfigMap, metadata: {name: x}, data: {'bad key': v}}",
            "{allNamespaces: true}",
        ),
        "spec.resource: Internal error: failed to dry-run to validate spec.resource, error: ConfigMap \"x\" is invalid",
    );
    refused(
        &manifest(
            "{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}",
            "{includedNamespaces: {list: [{name: a}, {name: b}]}, excludedNamespaces: {list: [{name: b}, {name: a}]}}",
        ),
        "ambiguous targets because namespace [b a] is in both IncludedNamespaces.List and ExcludedNamespaces.List",
    );
    refused(
        &manifest(
            "{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}",
            "{namespaceLabelSelector: {matchExpressions: [{key: k, operator: Near}]}}",
        ),
        "labelSelectorAsSelector error: \"Near\" is not a valid label selector operator",
    );
    // Accepted, then its resource may not be renamed.
    c.apply_stdin(&manifest(
        "{apiVersion: v1, kind: Secret, metadata: {name: token}, stringData: {t: x}}",
        "{includedNamespaces: {list: [{name: rd-nowhere}]}}",
    ))
    .unwrap();
    refused(
        &manifest(
            "{apiVersion: v1, kind: Secret, metadata: {name: other}, stringData: {t: x}}",
            "{includedNamespaces: {list: [{name: rd-nowhere}]}}",
        ),
        "spec.resource: Invalid value: \"null\": resource apiVersion, kind, and name are immutable",
    );
}

/// The pod's events' messages (kubelet's pull failures among them).
fn pod_events(c: &Cluster, ns: &str, pod: &str) -> String {
    let events = c
        .get_json(&[
            "-n",
            ns,
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
        ])
        .unwrap_or_default();
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}: {}",
                e["reason"].as_str().unwrap_or_default(),
                e["message"].as_str().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Applies pod `name` in `ns` pulling `image` (always) with the optional
/// pull secret; retried while the namespace's default ServiceAccount is
/// still being made.
fn pull_pod(c: &Cluster, ns: &str, name: &str, image: &str, secret: Option<&str>) {
    let mut spec = serde_json::json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": image, "imagePullPolicy": "Always",
            "command": ["sleep", "3600"]}],
    });
    if let Some(s) = secret {
        spec["imagePullSecrets"] = serde_json::json!([{"name": s}]);
    }
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns}, "spec": spec});
    c.wait_for(&format!("pod {ns}/{name} created"), LIMIT, |c| {
        c.apply_stdin(&pod.to_string()).map(Some)
    })
    .unwrap();
}

#[test]
fn a_distributed_pull_secret_lets_pods_pull_from_the_auth_registry() {
    use base64::Engine;
    use keelson_integration::images::BUSYBOX;
    use keelson_integration::registry::{Credentials, Registry};

    let c = cluster();
    // kubelet's image service is keelson-agent, which relays to containerd.
    let agent_socket = c.agent_guard().as_ref().map(|a| a.socket());
    assert!(agent_socket.is_some(), "the agent is on the CRI path");
    assert_eq!(c.cri_socket(), agent_socket);
    let _rd = c.deleting("resourcedistribution", "rd-pull");
    let registry = Registry::start(Some(Credentials {
        username: "distributed".into(),
        password: "pull-s3cret".into(),
    }))
    .unwrap();
    // A repository no other test pushes: the node has never pulled it by
    // this name (its layers may be there under another).
    let image = registry
        .push(
            &c.runtime().unwrap().images().layout("busybox"),
            BUSYBOX,
            "rd-pull/app:v1",
        )
        .unwrap();
    let a = c.namespace("rd-pull-a").unwrap();
    let b = c.namespace("rd-pull-b").unwrap();
    let none = c.namespace("rd-pull-none").unwrap();

    // Without credentials the registry refuses kubelet's pull.
    pull_pod(&c, &none.name, "no-creds", &image, None);
    let (reason, events) = c
        .wait_for("the pod without the copy fails to pull", LIMIT, |c| {
            let pod = c.get_json(&["-n", &none.name, "pod", "no-creds"])?;
            let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
            let reason = waiting["reason"].as_str().unwrap_or_default().to_string();
            let text = format!(
                "{}\n{}",
                waiting["message"].as_str().unwrap_or_default(),
                pod_events(c, &none.name, "no-creds")
            );
            let failed = ["ErrImagePull", "ImagePullBackOff"].contains(&reason.as_str());
            Ok((failed && text.contains("401 Unauthorized")).then_some((reason, text)))
        })
        .unwrap();
    eprintln!("without the copy: {reason}; events:\n{events}");

    // The credentials, distributed as a dockerconfigjson Secret.
    let auth = base64::engine::general_purpose::STANDARD.encode("distributed:pull-s3cret");
    let config = serde_json::json!({"auths": {registry.host(): {
        "username": "distributed", "password": "pull-s3cret", "auth": auth}}});
    let rd = serde_json::json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "ResourceDistribution",
        "metadata": {"name": "rd-pull"},
        "spec": {
            "resource": {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "registry-creds"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson":
                    base64::engine::general_purpose::STANDARD.encode(config.to_string())},
            },
            "targets": {"includedNamespaces": {"list": [{"name": a.name}, {"name": b.name}]}},
        },
    });
    c.apply_stdin(&rd.to_string()).unwrap();
    for ns in [&a.name, &b.name] {
        let copy = c
            .wait_for(&format!("secret copy in {ns}"), LIMIT, |c| {
                Ok(c.get_json(&["-n", ns, "secret", "registry-creds"]).ok())
            })
            .unwrap();
        assert_eq!(copy["type"], "kubernetes.io/dockerconfigjson", "{copy}");
        assert_eq!(copy["metadata"]["annotations"][FROM], "rd-pull", "{copy}");
    }
    c.wait_for("rd-pull status (2, 2, 0)", LIMIT, |c| {
        let rd = c.get_json(&["resourcedistribution", "rd-pull"])?;
        let s = &rd["status"];
        Ok((s["desired"] == 2 && s["succeeded"] == 2 && s["failed"] == 0).then_some(()))
    })
    .unwrap();
    assert!(
        c.get_json(&["-n", &none.name, "secret", "registry-creds"])
            .is_err(),
        "no copy outside the targets"
    );

    // Each target namespace's pod pulls with its copy and runs.
    let started = Instant::now();
    for ns in [&a.name, &b.name] {
        pull_pod(&c, ns, "with-copy", &image, Some("registry-creds"));
    }
    for ns in [&a.name, &b.name] {
        let pod = c
            .wait_pod_running(ns, "with-copy", Duration::from_secs(120))
            .unwrap();
        assert_eq!(pod["spec"]["containers"][0]["image"], image.as_str());
        // What kubelet pulled (the status's `image` is the runtime's name
        // for the content, which may be another repository's tag when the
        // same layers came to the shared node under an earlier name).
        let events = pod_events(&c, ns, "with-copy");
        assert!(
            events.contains(&format!("Pulled: Successfully pulled image \"{image}\"")),
            "{events}"
        );
    }
    eprintln!("both pods pulled and ran after {:?}", started.elapsed());
    // The pulls really reached the registry, authenticated as the user.
    let log = registry.log_text();
    assert!(log.contains("rd-pull/app/manifests/v1"), "{log}");
    assert!(log.contains("auth.user.name=distributed"), "{log}");
    // Still refused where there is no copy.
    let pod = c.get_json(&["-n", &none.name, "pod", "no-creds"]).unwrap();
    assert!(
        pod["status"]["containerStatuses"][0]["state"]
            .get("running")
            .is_none(),
        "{pod}"
    );
}
