//! OpenKruise manifests of the shapes its documentation shows apply to the
//! generated CRDs unchanged (strict field validation, as `kubectl apply`
//! does by default) and read into the Rust types; a misspelt field is
//! refused.

use keelson_api::apps::v1alpha1::{
    cloneset::CloneSet, containerrecreaterequest::ContainerRecreateRequest,
    imagepulljob::ImagePullJob, resourcedistribution::ResourceDistribution, sidecarset::SidecarSet,
};
use keelson_api::apps::v1beta1::statefulset::StatefulSet;
use keelson_api::validate::validate;
use serde_json::Value;

const CLONESET: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata:
  name: sample
spec:
  replicas: 5
  selector:
    matchLabels:
      app: sample
  template:
    metadata:
      labels:
        app: sample
      annotations:
        app-version: v1
    spec:
      containers:
      - name: main
        image: nginx:alpine
        env:
        - name: APP_VERSION
          valueFrom:
            fieldRef:
              fieldPath: metadata.annotations['app-version']
  updateStrategy:
    type: InPlaceIfPossible
    inPlaceUpdateStrategy:
      gracePeriodSeconds: 10
    maxUnavailable: 20%
    partition: 1
"#;

const RESOURCE_DISTRIBUTION: &str = r#"
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
      ui_properties_file_name: user-interface.properties
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

const SIDECARSET: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: SidecarSet
metadata:
  name: test-sidecarset
spec:
  selector:
    matchLabels:
      app: sample
  namespace: ns-1
  initContainers:
  - name: log-agent
    image: fluent-bit:latest
    restartPolicy: Always
    podInjectPolicy: BeforeAppContainer
  containers:
  - name: sidecar1
    image: centos:6.7
    command: ["sleep", "999d"]
    podInjectPolicy: BeforeAppContainer
    shareVolumePolicy:
      type: disabled
    transferEnv:
    - sourceContainerName: main
      envName: PROXY_IP
    volumeMounts:
    - name: log-volume
      mountPath: /var/log
  volumes:
  - name: log-volume
    emptyDir: {}
  updateStrategy:
    type: RollingUpdate
    maxUnavailable: 1
"#;

const ADVANCED_STATEFULSET: &str = r#"
apiVersion: apps.kruise.io/v1beta1
kind: StatefulSet
metadata:
  name: sample
spec:
  replicas: 3
  serviceName: fake-service
  ordinals:
    start: 5
  reserveOrdinals:
  - 6
  selector:
    matchLabels:
      app: sample
  template:
    metadata:
      labels:
        app: sample
    spec:
      readinessGates:
      - conditionType: InPlaceUpdateReady
      containers:
      - name: main
        image: nginx:alpine
  podManagementPolicy: Parallel
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      podUpdatePolicy: InPlaceIfPossible
      maxUnavailable: 2
"#;

const IMAGE_PULL_JOB: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ImagePullJob
metadata:
  name: job-with-always
spec:
  image: nginx:1.9.1
  parallelism: 10
  selector:
    matchLabels:
      node-type: xxx
  completionPolicy:
    type: Always
    activeDeadlineSeconds: 1200
    ttlSecondsAfterFinished: 300
  pullPolicy:
    backoffLimit: 3
    timeoutSeconds: 300
"#;

const CRR: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: ContainerRecreateRequest
metadata:
  namespace: pod-namespace
  name: xxx
spec:
  podName: pod-name
  containers:
  - name: app
  - name: sidecar
  strategy:
    failurePolicy: Fail
    orderedRecreate: false
    terminationGracePeriodSeconds: 30
    unreadyGracePeriodSeconds: 3
    minStartedSeconds: 10
  activeDeadlineSeconds: 300
  ttlSecondsAfterFinished: 1800
"#;

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
