//! OpenKruise manifests of the shapes its documentation shows apply to the
//! generated CRDs unchanged (strict field validation, as `kubectl apply`
//! does by default) and read into the Rust types; a misspelt field is
//! refused. The manifests are in `examples/`; the real-cluster tests apply
//! the same files to a kube-apiserver (`integration/tests/kube_shared/cluster.rs`).

use keelson_api::apps::v1alpha1::{
    cloneset::CloneSet, containerrecreaterequest::ContainerRecreateRequest,
    imagepulljob::ImagePullJob, resourcedistribution::ResourceDistribution, sidecarset::SidecarSet,
};
use keelson_api::apps::v1beta1::statefulset::StatefulSet;
use keelson_api::validate::validate;
use serde_json::Value;

const CLONESET: &str = include_str!("examples/cloneset.yaml");

const RESOURCE_DISTRIBUTION: &str = include_str!("examples/resourcedistribution.yaml");

const SIDECARSET: &str = include_str!("examples/sidecarset.yaml");

const ADVANCED_STATEFULSET: &str = include_str!("examples/advanced-statefulset.yaml");

const IMAGE_PULL_JOB: &str = include_str!("examples/imagepulljob.yaml");

const CRR: &str = include_str!("examples/containerrecreaterequest.yaml");

/// Validates `yaml` against the generated CRD of its kind and version.
fn applies(yaml: &str) -> Value {
    let m: Value = serde_saphyr::from_str(yaml).unwrap();
    let kind = m["kind"].as_str().unwrap();
    let (group, version) = m["apiVersion"].as_str().unwrap().split_once('/').unwrap();
    let crds = keelson_api::crds();
    let crd = crds
        .iter()
        .find(|c| c.spec.names.kind == kind && c.spec.group == group)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    let problems = validate(crd, version, &m);
    assert!(problems.is_empty(), "{kind}: {problems:?}");
    m
}

#[test]
fn cloneset_in_place_with_env_from_an_annotation() {
    let cs: CloneSet = serde_json::from_value(applies(CLONESET)).unwrap();
    let strategy = &cs.spec.update_strategy;
    assert_eq!(strategy.type_.as_deref(), Some("InPlaceIfPossible"));
    let env = &cs.spec.template.spec.as_ref().unwrap().containers[0]
        .env
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        env.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.annotations['app-version']"
    );
}

#[test]
fn resource_distribution() {
    let rd: ResourceDistribution = serde_json::from_value(applies(RESOURCE_DISTRIBUTION)).unwrap();
    let v = serde_json::to_value(&rd).unwrap();
    assert_eq!(v["spec"]["resource"]["kind"], "ConfigMap");
    assert_eq!(
        v["spec"]["targets"]["includedNamespaces"]["list"][1]["name"],
        "ns-4"
    );
}

#[test]
fn sidecarset_with_a_native_sidecar_init_container() {
    let ss: SidecarSet = serde_json::from_value(applies(SIDECARSET)).unwrap();
    let init = &ss.spec.init_containers[0];
    assert_eq!(init.container.restart_policy.as_deref(), Some("Always"));
    assert_eq!(ss.spec.containers[0].container.name, "sidecar1");
}

#[test]
fn advanced_statefulset_with_a_start_ordinal() {
    let sts: StatefulSet = serde_json::from_value(applies(ADVANCED_STATEFULSET)).unwrap();
    let v = serde_json::to_value(&sts).unwrap();
    assert_eq!(v["spec"]["ordinals"]["start"], 5);
    assert_eq!(
        v["spec"]["updateStrategy"]["rollingUpdate"]["podUpdatePolicy"],
        "InPlaceIfPossible"
    );
}

#[test]
fn image_pull_job_and_container_recreate_request() {
    let job: ImagePullJob = serde_json::from_value(applies(IMAGE_PULL_JOB)).unwrap();
    assert_eq!(job.spec.image, "nginx:1.9.1");
    let crr: ContainerRecreateRequest = serde_json::from_value(applies(CRR)).unwrap();
    assert_eq!(crr.spec.containers.len(), 2);
}

#[test]
fn misspelt_fields_are_refused() {
    let crds = keelson_api::crds();
    let find = |kind: &str| crds.iter().find(|c| c.spec.names.kind == kind).unwrap();
    for (yaml, kind, version, path, bad) in [
        (
            CLONESET,
            "CloneSet",
            "v1alpha1",
            "/spec/updateStrategy",
            "inPlaceUpdateStrategi",
        ),
        (
            SIDECARSET,
            "SidecarSet",
            "v1alpha1",
            "/spec",
            "initContainer",
        ),
        (
            ADVANCED_STATEFULSET,
            "StatefulSet",
            "v1beta1",
            "/spec/ordinals",
            "begin",
        ),
        (
            RESOURCE_DISTRIBUTION,
            "ResourceDistribution",
            "v1alpha1",
            "/spec/targets",
            "includeNamespaces",
        ),
    ] {
        let mut m: Value = serde_saphyr::from_str(yaml).unwrap();
        m.pointer_mut(path)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert(bad.into(), Value::Bool(true));
        let problems = validate(find(kind), version, &m);
        assert!(
            problems
                .iter()
                .any(|p| p.contains(bad) && p.ends_with("unknown field")),
            "{kind}: {problems:?}"
        );
    }
}
