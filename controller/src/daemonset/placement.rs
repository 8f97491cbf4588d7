//! Which nodes a DaemonSet's pod belongs on, by the Kubernetes DaemonSet
//! rules: the template's `nodeName` (if set) must be the node; the pod's
//! required placement — `nodeSelector` and the required node affinity
//! terms — must match the node; and no `NoSchedule`/`NoExecute` taint may
//! be left untolerated by the pod's tolerations plus the ones every
//! daemon pod gets ([`add_daemon_tolerations`]). A node whose only
//! untolerated taints are `NoSchedule` does not get a new pod but keeps a
//! running one. Also: pinning a pod to its node (a required node affinity
//! term on field `metadata.name`) and reading the pin back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
    Taint, Toleration,
};

/// Toleration keys of the taints the node lifecycle controller sets.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// The node field a daemon pod is pinned by.
pub const NODE_NAME_FIELD: &str = "metadata.name";

/// Whether a node should run the daemon pod, and whether a pod already
/// there may keep running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub should_run: bool,
    pub should_continue_running: bool,
}

fn exists(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// Adds the tolerations every daemon pod has (not-ready and unreachable
/// `NoExecute`; disk, memory and pid pressure and unschedulable
/// `NoSchedule`; network-unavailable `NoSchedule` for host-network pods),
/// replacing a toleration of the same key, operator, value and effect.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        exists(TAINT_NOT_READY, "NoExecute"),
        exists(TAINT_UNREACHABLE, "NoExecute"),
        exists(TAINT_DISK_PRESSURE, "NoSchedule"),
        exists(TAINT_MEMORY_PRESSURE, "NoSchedule"),
        exists(TAINT_PID_PRESSURE, "NoSchedule"),
        exists(TAINT_UNSCHEDULABLE, "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(exists(TAINT_NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in wanted {
        let same = |o: &Toleration| {
            o.key == t.key
                && o.operator.as_deref().unwrap_or("Equal") == t.operator.as_deref().unwrap_or("")
                && o.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or("")
                && o.effect == t.effect
        };
        match tolerations.iter_mut().find(|o| same(o)) {
            Some(o) => *o = t,
            None => tolerations.push(t),
        }
    }
}

/// Whether `t` tolerates `taint` (Kubernetes' `ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    let operator = t.operator.as_deref().unwrap_or("Equal");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// Whether some taint with one of `effects` is tolerated by none of
/// `tolerations`.
fn untolerated(taints: &[Taint], tolerations: &[Toleration], effects: &[&str]) -> bool {
    taints
        .iter()
        .filter(|t| effects.contains(&t.effect.as_str()))
        .any(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

fn requirement_matches(
    r: &NodeSelectorRequirement,
    value: Option<&str>,
    numeric_allowed: bool,
) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" if numeric_allowed => value.is_some(),
        "DoesNotExist" if numeric_allowed => value.is_none(),
        "Gt" | "Lt" if numeric_allowed && values.len() == 1 => {
            let (Some(v), Ok(bound)) = (value, values[0].parse::<i64>()) else {
                return false;
            };
            let Ok(v) = v.parse::<i64>() else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether one node selector term matches (its expressions and fields
/// all hold; an empty term matches nothing).
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str), true))
        && fields.iter().all(|r| {
            r.key == NODE_NAME_FIELD
                && matches!(r.operator.as_str(), "In" | "NotIn")
                && requirement_matches(r, name, false)
        })
}

/// Whether the pod's required placement (`nodeSelector` and required node
/// affinity, whose terms are ORed) admits `node`.
pub fn required_affinity_matches(spec: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let by_selector = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let by_affinity =
        required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)));
    by_selector && by_affinity
}

/// Where `spec` (a daemon pod's, default tolerations included) may run on
/// `node`.
pub fn fit(spec: &PodSpec, node: &Node) -> Fit {
    let none = Fit {
        should_run: false,
        should_continue_running: false,
    };
    let node_name = node.metadata.name.as_deref().unwrap_or("");
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != node_name)
    {
        return none;
    }
    if !required_affinity_matches(spec, node) {
        return none;
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    if untolerated(taints, tolerations, &["NoSchedule", "NoExecute"]) {
        return Fit {
            should_run: false,
            should_continue_running: !untolerated(taints, tolerations, &["NoExecute"]),
        };
    }
    Fit {
        should_run: true,
        should_continue_running: true,
    }
}

/// `affinity` with its required node affinity replaced by one term
/// matching field `metadata.name` = `node` (preferred terms and pod
/// (anti-)affinity kept): the default scheduler then binds the pod there.
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let mut affinity = affinity.unwrap_or_default();
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: NODE_NAME_FIELD.into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
        }],
    });
    affinity
}

/// The node a daemon pod is for: its `nodeName`, else the single node its
/// `metadata.name` affinity term names.
pub fn target_node(spec: &PodSpec) -> Option<String> {
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            (r.key == NODE_NAME_FIELD && r.operator == "In" && values.len() == 1)
                .then(|| values[0].clone())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn spec(v: serde_json::Value) -> PodSpec {
        let mut s: PodSpec = serde_json::from_value(v).unwrap();
        add_daemon_tolerations(&mut s);
        s
    }

    #[test]
    fn selector_affinity_and_taints_decide() {
        let plain =
            node(json!({"metadata": {"name": "n1", "labels": {"zone": "a", "cores": "8"}}}));
        let base = spec(json!({"containers": []}));
        assert_eq!(
            fit(&base, &plain),
            Fit {
                should_run: true,
                should_continue_running: true
            }
        );
        let by_selector = spec(json!({"containers": [], "nodeSelector": {"zone": "b"}}));
        assert!(!fit(&by_selector, &plain).should_run);
        let by_affinity = spec(json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}]}}}}));
        assert!(fit(&by_affinity, &plain).should_run, "terms are ORed");
        let empty_terms = spec(json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}}}}));
        assert!(
            !fit(&empty_terms, &plain).should_run,
            "an empty term matches nothing"
        );
        let by_field = spec(json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}]}}}}));
        assert!(!fit(&by_field, &plain).should_run);
        let named = spec(json!({"containers": [], "nodeName": "n2"}));
        assert!(!fit(&named, &plain).should_continue_running);

        let no_schedule = node(json!({"metadata": {"name": "n1"},
            "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}));
        assert_eq!(
            fit(&base, &no_schedule),
            Fit {
                should_run: false,
                should_continue_running: true
            },
            "a running pod stays on a NoSchedule node"
        );
        let no_execute = node(json!({"metadata": {"name": "n1"},
            "spec": {"taints": [{"key": "dedicated", "effect": "NoExecute"}]}}));
        assert!(!fit(&base, &no_execute).should_continue_running);
        let tolerant = spec(json!({"containers": [],
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}]}));
        assert!(fit(&tolerant, &no_schedule).should_run);
        assert!(!fit(&tolerant, &no_execute).should_run, "value differs");

        let cordoned = node(
            json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true,
            "taints": [{"key": TAINT_UNSCHEDULABLE, "effect": "NoSchedule"},
                       {"key": TAINT_NOT_READY, "effect": "NoExecute"}]}}),
        );
        assert!(fit(&base, &cordoned).should_run, "default tolerations");
        let net = node(json!({"metadata": {"name": "n1"},
            "spec": {"taints": [{"key": TAINT_NETWORK_UNAVAILABLE, "effect": "NoSchedule"}]}}));
        assert!(!fit(&base, &net).should_run);
        assert!(fit(&spec(json!({"containers": [], "hostNetwork": true})), &net).should_run);
    }

    #[test]
    fn tolerations_are_added_once() {
        let mut s: PodSpec = serde_json::from_value(json!({"containers": [],
            "tolerations": [{"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]}))
        .unwrap();
        add_daemon_tolerations(&mut s);
        add_daemon_tolerations(&mut s);
        let t = s.tolerations.unwrap();
        assert_eq!(t.len(), 6);
        assert_eq!(t[0].toleration_seconds, None, "replaced by the daemon one");
    }

    #[test]
    fn pins_and_reads_the_node() {
        let a: Affinity = serde_json::from_value(json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}]}}))
        .unwrap();
        let pinned = pin_to_node(Some(a), "n7");
        let v = serde_json::to_value(&pinned).unwrap();
        assert_eq!(
            v["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
            json!({"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["n7"]}]}]})
        );
        assert!(v["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"].is_array());
        let s = PodSpec {
            affinity: Some(pinned),
            ..Default::default()
        };
        assert_eq!(target_node(&s).as_deref(), Some("n7"));
        let bound = PodSpec {
            node_name: Some("n8".into()),
            ..s
        };
        assert_eq!(target_node(&bound).as_deref(), Some("n8"));
    }
}
