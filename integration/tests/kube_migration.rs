//! Moving from an OpenKruise install: the CRDs are replaced by Keelson's
//! in place (`kubectl apply`), and objects stored under OpenKruise's shape
//! survive. Before v1.9 OpenKruise stored ImagePullJobs as v1alpha1 with no
//! conversion webhook; the test gives the cluster's ImagePullJob CRD that
//! shape (as a Helm-made object, without kubectl's last-applied
//! annotation), stores jobs through it, applies Keelson's CRD file as a
//! user would, and reads every job back in both versions, field by field,
//! through Keelson's conversion webhook. deploy/README.md has the whole
//! migration, in order.

use std::sync::Arc;
use std::time::Duration;

use keelson_integration::kube::{self, Cluster};
use serde_json::{Value, json};

const CRD: &str = "imagepulljobs.apps.kruise.io";

fn cluster() -> Arc<Cluster> {
    kube::shared().expect("test cluster")
}

/// The CRD as an OpenKruise install before v1.9 had it: v1alpha1 stored,
/// no conversion webhook, no kubectl annotation.
fn openkruise_shape(ours: &Value) -> Value {
    let mut crd = ours.clone();
    let meta = crd["metadata"].as_object_mut().unwrap();
    for k in [
        "resourceVersion",
        "uid",
        "managedFields",
        "generation",
        "creationTimestamp",
    ] {
        meta.remove(k);
    }
    if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    crd.as_object_mut().unwrap().remove("status");
    for v in crd["spec"]["versions"].as_array_mut().unwrap() {
        let name = v["name"].as_str().unwrap().to_string();
        v["storage"] = json!(name == "v1alpha1");
    }
    crd["spec"]["conversion"] = json!({"strategy": "None"});
    crd
}

fn job(ns: &str, name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: apps.kruise.io/v1alpha1
kind: ImagePullJob
metadata: {{name: {name}, namespace: {ns}, labels: {{from: openkruise}}}}
spec:
  image: {image}
  parallelism: 2
  pullSecrets: [regcred]
  selector:
    names: [no-such-node]
  completionPolicy:
    type: Always
    activeDeadlineSeconds: 600
  pullPolicy:
    backoffLimit: 2
    timeoutSeconds: 90
"#
    )
}

#[test]
fn objects_stored_under_openkruises_crd_survive_the_switch_to_keelsons() {
    let c = cluster();
    let ns = c.namespace("migration").unwrap();
    let ns = ns.name.as_str();
    let ours = c.get_json(&["crd", CRD]).unwrap();
    let (ok, out, err) = c
        .kubectl_result(
            &["replace", "-f", "-"],
            Some(&openkruise_shape(&ours).to_string()),
        )
        .unwrap();
    assert!(ok, "the OpenKruise-shaped CRD: {err}{out}");
    // Stored through the v1alpha1-only shape.
    c.wait_for("v1alpha1 stored", Duration::from_secs(60), |c| {
        let crd = c.get_json(&["crd", CRD])?;
        let stored: Vec<&str> = crd["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["storage"] == true)
            .filter_map(|v| v["name"].as_str())
            .collect();
        Ok((stored == ["v1alpha1"]).then_some(()))
    })
    .unwrap();
    let names = ["old-a", "old-b", "old-c"];
    for (i, name) in names.iter().enumerate() {
        c.apply_stdin(&job(ns, name, &format!("example.com/app:{i}")))
            .unwrap();
    }
    let before: Vec<Value> = names
        .iter()
        .map(|n| {
            c.get_json(&["-n", ns, "imagepulljobs.v1alpha1.apps.kruise.io", n])
                .unwrap()
        })
        .collect();
    let crd = c.get_json(&["crd", CRD]).unwrap();
    let stored = crd["status"]["storedVersions"].clone();
    assert!(
        stored.as_array().unwrap().iter().any(|v| v == "v1alpha1"),
        "{stored}"
    );

    // The user applies Keelson's CRD over it.
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/crds/apps.kruise.io_imagepulljobs.yaml"
    );
    c.kubectl(&["apply", "-f", file]).unwrap();
    let crd = c.get_json(&["crd", CRD]).unwrap();
    let storage: Vec<&str> = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["storage"] == true)
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(storage, ["v1beta1"], "Keelson's CRD stores v1beta1");
    assert_eq!(crd["spec"]["conversion"]["strategy"], "Webhook");

    // Every job reads back in both versions once the controller has put its
    // CA into the CRD (at once when it starts; here within its minute).
    for (name, old) in names.iter().zip(&before) {
        let (alpha, beta) = c
            .wait_for(
                &format!("{name} in both versions"),
                Duration::from_secs(120),
                |c| {
                    let get = |v: &str| {
                        c.get_json(&["-n", ns, &format!("imagepulljobs.{v}.apps.kruise.io"), name])
                    };
                    Ok(get("v1alpha1").ok().zip(get("v1beta1").ok()))
                },
            )
            .unwrap();
        assert_eq!(
            alpha["spec"], old["spec"],
            "{name}: v1alpha1 spec unchanged"
        );
        assert_eq!(alpha["metadata"]["uid"], old["metadata"]["uid"]);
        assert_eq!(alpha["metadata"]["labels"], old["metadata"]["labels"]);
        assert_eq!(beta["apiVersion"], "apps.kruise.io/v1beta1");
        for field in [
            "image",
            "parallelism",
            "pullSecrets",
            "selector",
            "completionPolicy",
            "pullPolicy",
        ] {
            assert_eq!(beta["spec"][field], old["spec"][field], "{name}: {field}");
        }
    }
    // A write after the switch stores the object as v1beta1 again.
    c.kubectl(&["-n", ns, "label", "imagepulljob", "old-a", "migrated=yes"])
        .unwrap();
    let a = c
        .get_json(&["-n", ns, "imagepulljobs.v1beta1.apps.kruise.io", "old-a"])
        .unwrap();
    assert_eq!(a["metadata"]["labels"]["migrated"], "yes");
    assert_eq!(a["spec"]["image"], "example.com/app:0");
}
