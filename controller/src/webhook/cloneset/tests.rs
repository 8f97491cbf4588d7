use super::*;

fn cs(spec: &str) -> CloneSet {
    serde_saphyr::from_str(&format!(
        "apiVersion: apps.kruise.io/v1alpha1\nkind: CloneSet\nmetadata: {{name: web}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: main, image: 'nginx:1'}}]}}\n{spec}"
    ))
    .unwrap()
}

#[test]
fn defaults_fill_the_spec_and_the_template() {
    let v = serde_json::to_value(cs("  updateStrategy: {type: InPlaceIfPossible}\n")).unwrap();
    let out = defaulted(&v, true);
    assert_eq!(out["spec"]["replicas"], 1);
    assert_eq!(out["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(
        out["spec"]["updateStrategy"],
        json!({"type": "InPlaceIfPossible", "inPlaceUpdateStrategy": {}, "partition": 0, "maxUnavailable": "20%", "maxSurge": 0})
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );
    let plain = defaulted(&serde_json::to_value(cs("")).unwrap(), false);
    assert_eq!(plain["spec"]["updateStrategy"]["type"], "ReCreate");
    assert!(
        plain["spec"]["template"]["spec"]["containers"][0]
            .get("imagePullPolicy")
            .is_none()
    );
}

#[test]
fn valid_cloneset_passes_and_bad_ones_get_openkruise_messages() {
    assert!(validate(&cs(""), None).is_empty());
    let bad = |s: &str| validate(&cs(s), None).join("\n");
    assert!(bad("  replicas: -1\n").contains("must be greater than or equal to 0"));
    assert!(
        bad("  updateStrategy: {type: OnDelete}\n")
            .contains("must be 'ReCreate', InPlaceIfPossible or 'InPlaceOnly'")
    );
    assert!(
        bad("  updateStrategy: {type: InPlaceOnly, maxSurge: 1}\n")
            .contains("can not use maxSurge with strategy type InPlaceOnly")
    );
    assert!(
        bad("  updateStrategy: {maxUnavailable: 0, maxSurge: 0}\n")
            .contains("should not both be less than 1")
    );
    assert!(bad("  updateStrategy: {partition: '5'}\n").contains("string is not a percentage"));
    assert!(bad("  scaleStrategy: {podsToDelete: [a, a]}\n").contains("duplicated items"));
    let mut other = cs("");
    other.spec.selector.match_labels = Some([("app".to_string(), "api".to_string())].into());
    assert!(validate(&other, None)[0].contains("`selector` does not match template `labels`"));
}

#[test]
fn in_place_only_updates_may_change_images_only() {
    let old = cs("  updateStrategy: {type: InPlaceOnly}\n");
    let mut new = old.clone();
    new.spec.template.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
    assert!(validate(&new, Some(&old)).is_empty());
    new.spec.template.spec.as_mut().unwrap().containers[0].command = Some(vec!["sh".into()]);
    assert!(validate(&new, Some(&old))[0].contains(
        "only allowed to update images in spec for InPlaceOnly, but found add /containers/0/command"
    ));
    let mut sel = old.clone();
    sel.spec.selector.match_labels = Some(
        [
            ("app".to_string(), "web".to_string()),
            ("x".to_string(), "y".to_string()),
        ]
        .into(),
    );
    sel.spec
        .template
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .insert("x".into(), "y".into());
    assert!(
        validate(&sel, Some(&old))
            .iter()
            .any(|e| e.contains("updates to cloneset spec for fields other than"))
    );
}

#[test]
fn pods_to_delete_must_be_live_pods_of_this_cloneset() {
    let dup = validate(&cs("  scaleStrategy: {podsToDelete: [a, b, a]}\n"), None);
    assert_eq!(
        dup,
        vec![
            r#"spec.scaleStrategy.podsToDelete: Invalid value: []string{"a", "b", "a"}: duplicated items [a]"#
        ]
    );
    // Only names new to the list are looked up, sorted; none while the
    // list has duplicates.
    let old = cs("  scaleStrategy: {podsToDelete: [web-a]}\n");
    let new = cs("  scaleStrategy: {podsToDelete: [web-c, web-a, web-b]}\n");
    assert_eq!(added_pods_to_delete(&new, Some(&old)), ["web-b", "web-c"]);
    assert_eq!(
        added_pods_to_delete(&new, None),
        ["web-a", "web-b", "web-c"]
    );
    assert!(
        added_pods_to_delete(&cs("  scaleStrategy: {podsToDelete: [x, x]}\n"), None).is_empty()
    );

    let pod = |owner: &str, deleting: bool| -> Lookup {
        let mut p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1",
                "kind": "CloneSet", "name": "web", "uid": owner, "controller": true}]},
        }))
        .unwrap();
        if deleting {
            p.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-01-01T00:00:00Z".parse().unwrap(),
                ));
        }
        Lookup::Found(Box::new(p))
    };
    let errs = pods_to_delete_errors(
        "uid-1",
        &[
            ("mine".into(), pod("uid-1", false)),
            (
                "gone".into(),
                Lookup::Failed(r#"pods "gone" not found"#.into()),
            ),
            ("going".into(), pod("uid-1", true)),
            ("theirs".into(), pod("uid-2", false)),
        ],
    );
    assert_eq!(
        errs,
        vec![
            r#"spec.scaleStrategy.podsToDelete: Invalid value: "gone": find pod gone failed: pods "gone" not found"#,
            r#"spec.scaleStrategy.podsToDelete: Invalid value: "going": find pod going already terminating"#,
            r#"spec.scaleStrategy.podsToDelete: Invalid value: "theirs": find pod theirs owner is not this CloneSet"#,
        ]
    );
}
