//! Volume claims per instance id: made, reused by a recreated pod, gone
//! with scale-in — or, with `disablePVCReuse`, never reused.

use super::*;

#[test]
fn volume_claims_per_instance_go_with_scale_in_and_come_back_to_a_recreated_pod() {
    let c = cluster();
    let guard = c.namespace("cloneset-claims").unwrap();
    let ns = guard.name.as_str();
    // No provisioner here: claims and pods stay Pending, enough to see
    // the claims made, reused and removed.
    c.apply_stdin(&format!(
        r#"apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata: {{name: vol, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: vol}}}}
  template:
    metadata: {{labels: {{app: vol}}}}
    spec:
      containers: [{{name: main, image: {BUSYBOX}, command: ["sleep", "3600"]}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Mi}}}}
"#
    ))
    .unwrap();
    let claims = |c: &Cluster| -> Vec<Value> {
        c.get_json(&["-n", ns, "pvc"]).unwrap()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect()
    };
    let id = |p: &Value| {
        p["metadata"]["labels"]["apps.kruise.io/cloneset-instance-id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    c.wait_for("two pods and their claims", LIMIT, |c| {
        Ok((claims(c).len() == 2 && pods(c, ns, "vol").len() == 2).then_some(()))
    })
    .unwrap();
    for p in pods(&c, ns, "vol") {
        let i = id(&p);
        assert_eq!(
            p["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            format!("data-vol-{i}")
        );
        let pvc = c
            .get_json(&["-n", ns, "pvc", &format!("data-vol-{i}")])
            .unwrap();
        assert_eq!(id(&pvc), i);
        assert_eq!(pvc["metadata"]["labels"]["app"], "vol");
        assert_eq!(pvc["metadata"]["ownerReferences"][0]["kind"], "CloneSet");
    }
    // A pod deleted from outside comes back with the same id and claim.
    let victim = pods(&c, ns, "vol")[0].clone();
    let victim_id = id(&victim);
    c.kubectl(&[
        "-n",
        ns,
        "delete",
        "pod",
        victim["metadata"]["name"].as_str().unwrap(),
        "--wait=false",
    ])
    .unwrap();
    c.wait_for("the recreated pod reuses its claim's id", LIMIT, |c| {
        let now = pods(c, ns, "vol");
        let live: Vec<&Value> = now
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        Ok((live.len() == 2
            && live
                .iter()
                .any(|p| id(p) == victim_id && p["metadata"]["uid"] != victim["metadata"]["uid"]))
        .then_some(()))
    })
    .unwrap();
    assert_eq!(claims(&c).len(), 2, "no new claim");
    // Scale in: the deleted pod's claim goes with it.
    c.kubectl(&["-n", ns, "scale", "cloneset", "vol", "--replicas=1"])
        .unwrap();
    c.wait_for("one pod, one claim, same id", LIMIT, |c| {
        let now: Vec<Value> = pods(c, ns, "vol")
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let cl = claims(c);
        Ok((now.len() == 1 && cl.len() == 1 && id(&now[0]) == id(&cl[0])).then_some(()))
    })
    .unwrap();
}

#[test]
fn disable_pvc_reuse_gives_a_recreated_pod_fresh_claims() {
    let c = cluster();
    let guard = c.namespace("cloneset-noreuse").unwrap();
    let ns = guard.name.as_str();
    c.apply_stdin(&format!(
        r#"apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata: {{name: fresh, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: fresh}}}}
  scaleStrategy: {{disablePVCReuse: true}}
  template:
    metadata: {{labels: {{app: fresh}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{{name: main, image: {BUSYBOX}, command: ["sleep", "3600"]}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Mi}}}}
"#
    ))
    .unwrap();
    let id = |p: &Value| {
        p["metadata"]["labels"]["apps.kruise.io/cloneset-instance-id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let live = |items: Vec<Value>| -> Vec<Value> {
        items
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect()
    };
    let claim_ids = |c: &Cluster| -> Vec<String> {
        let list = c.get_json(&["-n", ns, "pvc"]).unwrap()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        live(list).iter().map(id).collect()
    };
    c.wait_for("two pods and their claims", LIMIT, |c| {
        Ok((claim_ids(c).len() == 2 && pods(c, ns, "fresh").len() == 2).then_some(()))
    })
    .unwrap();
    let victim = pods(&c, ns, "fresh")[0].clone();
    let victim_id = id(&victim);
    c.kubectl(&[
        "-n",
        ns,
        "delete",
        "pod",
        victim["metadata"]["name"].as_str().unwrap(),
        "--wait=false",
    ])
    .unwrap();
    c.wait_for(
        "a new id with a new claim, the old claim gone",
        LIMIT,
        |c| {
            let now = live(pods(c, ns, "fresh"));
            let mut pod_ids: Vec<String> = now.iter().map(id).collect();
            let mut claims = claim_ids(c);
            pod_ids.sort();
            claims.sort();
            Ok(
                (now.len() == 2 && !pod_ids.contains(&victim_id) && claims == pod_ids)
                    .then_some(()),
            )
        },
    )
    .unwrap();
}
