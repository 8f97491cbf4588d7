//! UnitedDeployment types against OpenKruise-shaped manifests.

use super::*;
use kube::CustomResourceExt;
use serde_json::json;

const UD: &str = r#"
apiVersion: apps.kruise.io/v1alpha1
kind: UnitedDeployment
metadata:
  name: sample-ud
  namespace: default
spec:
  replicas: 6
  revisionHistoryLimit: 10
  selector:
    matchLabels:
      app: sample
  template:
    advancedStatefulSetTemplate:
      metadata:
        labels:
          app: sample
      spec:
        selector:
          matchLabels:
            app: sample
        podManagementPolicy: Parallel
        template:
          metadata:
            labels:
              app: sample
          spec:
            containers:
            - name: nginx
              image: nginx:alpine
        updateStrategy:
          type: RollingUpdate
          rollingUpdate:
            podUpdatePolicy: InPlaceIfPossible
            maxUnavailable: 1
  topology:
    subsets:
    - name: subset-a
      nodeSelectorTerm:
        matchExpressions:
        - key: topology.kubernetes.io/zone
          operator: In
          values:
          - zone-a
      minReplicas: 1
      maxReplicas: 50%
    - name: subset-b
      nodeSelectorTerm:
        matchExpressions:
        - key: topology.kubernetes.io/zone
          operator: In
          values:
          - zone-b
      tolerations:
      - key: dedicated
        operator: Equal
        value: sample
        effect: NoSchedule
      minReplicas: 2
      patch:
        metadata:
          labels:
            zone: b
    scheduleStrategy:
      type: Adaptive
      adaptive:
        rescheduleCriticalSeconds: 20
        reserveUnschedulablePods: true
  updateStrategy:
    type: Manual
    manualUpdate:
      partitions:
        subset-a: 0
        subset-b: 1
status:
  observedGeneration: 2
  replicas: 6
  readyReplicas: 5
  updatedReplicas: 6
  updatedReadyReplicas: 5
  currentRevision: sample-ud-5c7b9
  labelSelector: app=sample
  subsetReplicas:
    subset-a: 3
    subset-b: 3
  subsetStatuses:
  - name: subset-b
    conditions:
    - type: Schedulable
      status: "False"
      reason: PodsPending
      lastTransitionTime: "2024-05-01T10:00:00Z"
  conditions:
  - type: SubsetProvisioned
    status: "True"
    lastTransitionTime: "2024-05-01T09:00:00Z"
  updateStatus:
    updatedRevision: sample-ud-5c7b9
    currentPartitions:
      subset-a: 0
      subset-b: 1
"#;

#[test]
fn deserialises_a_two_subset_united_deployment() {
    let ud: UnitedDeployment = serde_saphyr::from_str(UD).unwrap();
    assert_eq!(ud.metadata.name.as_deref(), Some("sample-ud"));
    let spec = &ud.spec;
    assert_eq!(spec.replicas, Some(6));
    assert_eq!(spec.revision_history_limit, Some(10));

    let t = &spec.template;
    assert!(t.stateful_set_template.is_none());
    assert!(t.clone_set_template.is_none());
    assert!(t.deployment_template.is_none());
    let asts = t.advanced_stateful_set_template.as_ref().unwrap();
    assert_eq!(
        asts.metadata
            .labels
            .as_ref()
            .unwrap()
            .get("app")
            .map(String::as_str),
        Some("sample")
    );
    let ru = asts.spec.update_strategy.rolling_update.as_ref().unwrap();
    assert_eq!(ru.pod_update_policy.as_deref(), Some("InPlaceIfPossible"));
    assert_eq!(ru.max_unavailable, Some(IntOrString::Int(1)));

    let subsets = &spec.topology.subsets;
    assert_eq!(subsets.len(), 2);
    assert_eq!(subsets[0].name, "subset-a");
    assert_eq!(
        subsets[0]
            .node_selector_term
            .match_expressions
            .as_ref()
            .unwrap()[0]
            .values,
        Some(vec!["zone-a".to_string()])
    );
    assert_eq!(subsets[0].min_replicas, Some(IntOrString::Int(1)));
    assert_eq!(
        subsets[0].max_replicas,
        Some(IntOrString::String("50%".into()))
    );
    assert!(subsets[0].replicas.is_none());
    assert!(subsets[0].patch.is_none());
    assert_eq!(subsets[1].name, "subset-b");
    assert_eq!(subsets[1].tolerations[0].key.as_deref(), Some("dedicated"));
    assert_eq!(subsets[1].max_replicas, None);
    assert_eq!(
        subsets[1].patch,
        Some(json!({"metadata": {"labels": {"zone": "b"}}}))
    );

    let ss = &spec.topology.schedule_strategy;
    assert!(ss.is_adaptive());
    assert!(ss.should_reserve_unschedulable_pods());
    assert_eq!(ss.reschedule_critical_duration(), Duration::from_secs(20));
    assert_eq!(
        ss.unschedulable_duration(),
        DEFAULT_UNSCHEDULABLE_STATUS_LAST_DURATION
    );

    assert_eq!(
        spec.update_strategy.type_.as_deref(),
        Some(MANUAL_UPDATE_STRATEGY_TYPE)
    );
    let partitions = &spec
        .update_strategy
        .manual_update
        .as_ref()
        .unwrap()
        .partitions;
    assert_eq!(partitions.get("subset-b"), Some(&1));

    let st = ud.status.as_ref().unwrap();
    assert_eq!(
        (
            st.replicas,
            st.ready_replicas,
            st.updated_replicas,
            st.updated_ready_replicas
        ),
        (6, 5, 6, 5)
    );
    assert_eq!(st.current_revision, "sample-ud-5c7b9");
    assert_eq!(st.subset_replicas.get("subset-a"), Some(&3));
    let sb = st.subset_status("subset-b").unwrap();
    let cond = sb.condition(UNITED_DEPLOYMENT_SUBSET_SCHEDULABLE).unwrap();
    assert_eq!(cond.status, "False");
    assert_eq!(cond.reason, "PodsPending");
    assert!(st.subset_status("subset-a").is_none());
    assert_eq!(st.conditions[0].type_, SUBSET_PROVISIONED);
    assert_eq!(
        st.update_status
            .as_ref()
            .unwrap()
            .current_partitions
            .get("subset-b"),
        Some(&1)
    );
}

#[test]
fn round_trips_through_json_with_upstream_field_names() {
    let ud: UnitedDeployment = serde_saphyr::from_str(UD).unwrap();
    let v = serde_json::to_value(&ud).unwrap();
    assert_eq!(v["apiVersion"], "apps.kruise.io/v1alpha1");
    assert_eq!(v["kind"], "UnitedDeployment");
    let spec = &v["spec"];
    let tpl = &spec["template"]["advancedStatefulSetTemplate"];
    assert_eq!(tpl["spec"]["podManagementPolicy"], "Parallel");
    assert!(spec["template"].get("cloneSetTemplate").is_none());
    let subsets = &spec["topology"]["subsets"];
    assert_eq!(subsets[0]["maxReplicas"], "50%");
    assert_eq!(
        subsets[0]["nodeSelectorTerm"]["matchExpressions"][0]["key"],
        "topology.kubernetes.io/zone"
    );
    assert!(subsets[0].get("patch").is_none());
    assert_eq!(subsets[1]["patch"]["metadata"]["labels"]["zone"], "b");
    assert_eq!(subsets[1]["tolerations"][0]["effect"], "NoSchedule");
    let ss = &spec["topology"]["scheduleStrategy"];
    assert_eq!(ss["type"], "Adaptive");
    assert_eq!(ss["adaptive"]["rescheduleCriticalSeconds"], 20);
    assert_eq!(ss["adaptive"]["reserveUnschedulablePods"], true);
    assert!(ss["adaptive"].get("unschedulableDuration").is_none());
    assert_eq!(
        spec["updateStrategy"]["manualUpdate"]["partitions"],
        json!({"subset-a": 0, "subset-b": 1})
    );
    let status = &v["status"];
    assert_eq!(
        status["subsetStatuses"][0]["conditions"][0]["type"],
        "Schedulable"
    );
    assert!(status.get("reservedPods").is_none());
    assert_eq!(status["updateStatus"]["updatedRevision"], "sample-ud-5c7b9");

    let back: UnitedDeployment = serde_json::from_value(v).unwrap();
    assert_eq!(back.metadata, ud.metadata);
    assert_eq!(back.spec, ud.spec);
    assert_eq!(back.status, ud.status);
}

#[test]
fn schedule_strategy_defaults() {
    let fixed = UnitedDeploymentScheduleStrategy::default();
    assert!(!fixed.is_adaptive());
    assert!(!fixed.should_reserve_unschedulable_pods());
    assert_eq!(
        fixed.reschedule_critical_duration(),
        DEFAULT_RESCHEDULE_CRITICAL_DURATION
    );
    // Reservation needs the adaptive type, not just the flag.
    let flag_only = UnitedDeploymentScheduleStrategy {
        type_: Some(FIXED_UNITED_DEPLOYMENT_SCHEDULE_STRATEGY_TYPE.into()),
        adaptive: Some(AdaptiveUnitedDeploymentStrategy {
            reserve_unschedulable_pods: true,
            unschedulable_duration: Some(-5),
            ..Default::default()
        }),
    };
    assert!(!flag_only.should_reserve_unschedulable_pods());
    assert_eq!(flag_only.unschedulable_duration(), Duration::ZERO);
}

#[test]
fn set_condition_only_moves_the_transition_time_on_change() {
    let t1: Time = serde_json::from_value(json!("2024-05-01T10:00:00Z")).unwrap();
    let t2: Time = serde_json::from_value(json!("2024-05-01T11:00:00Z")).unwrap();
    let mut s = UnitedDeploymentSubsetStatus {
        name: "subset-a".into(),
        ..Default::default()
    };
    assert!(s.set_condition(
        UNITED_DEPLOYMENT_SUBSET_SCHEDULABLE,
        "False",
        "Pending",
        "",
        t1.clone()
    ));
    assert!(!s.set_condition(
        UNITED_DEPLOYMENT_SUBSET_SCHEDULABLE,
        "False",
        "Pending",
        "again",
        t2.clone()
    ));
    assert_eq!(s.conditions.len(), 1);
    assert_eq!(s.conditions[0].last_transition_time, Some(t1));
    assert!(s.set_condition(
        UNITED_DEPLOYMENT_SUBSET_SCHEDULABLE,
        "True",
        "",
        "",
        t2.clone()
    ));
    assert_eq!(s.conditions.len(), 1);
    assert_eq!(s.conditions[0].status, "True");
    assert_eq!(s.conditions[0].last_transition_time, Some(t2));
}

#[test]
fn crd_matches_upstream_names_subresources_and_schemaless_fields() {
    let crd = serde_json::to_value(UnitedDeployment::crd()).unwrap();
    assert_eq!(crd["metadata"]["name"], "uniteddeployments.apps.kruise.io");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["ud"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(
        version["subresources"]["scale"]["specReplicasPath"],
        ".spec.replicas"
    );
    assert_eq!(
        version["subresources"]["scale"]["labelSelectorPath"],
        ".status.labelSelector"
    );
    assert_eq!(
        version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert!(
        spec["required"]
            .as_array()
            .unwrap()
            .contains(&json!("selector"))
    );
    let tpl = &spec["properties"]["template"]["properties"];
    for (template, spec_schemaless) in [
        ("statefulSetTemplate", true),
        ("deploymentTemplate", true),
        ("advancedStatefulSetTemplate", false),
        ("cloneSetTemplate", false),
    ] {
        let t = &tpl[template]["properties"];
        assert_eq!(
            t["metadata"]["x-kubernetes-preserve-unknown-fields"], true,
            "{template}.metadata"
        );
        assert_eq!(
            t["spec"].get("properties").is_none(),
            spec_schemaless,
            "{template}.spec"
        );
    }
    let subset = &spec["properties"]["topology"]["properties"]["subsets"]["items"];
    assert_eq!(subset["required"], json!(["name"]));
    assert_eq!(
        subset["properties"]["patch"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    assert_eq!(
        spec["properties"]["topology"]["properties"]["scheduleStrategy"]["properties"]["type"]["enum"],
        json!(["Adaptive", "Fixed", ""])
    );

    let manifest: serde_json::Value = serde_saphyr::from_str(UD).unwrap();
    assert_eq!(
        crate::validate::validate(&UnitedDeployment::crd(), "v1alpha1", &manifest),
        Vec::<String>::new()
    );
}
