//! Container launch priority without a barrier ConfigMap: the full map of
//! container name → priority, stamped as `keelson.io/container-priorities`
//! for the node agent, which holds each StartContainer until the
//! containers of higher priority run. Inputs as OpenKruise documents them:
//! `apps.kruise.io/container-launch-priority: Ordered` (spec order: 0, -1,
//! -2, …) or each container's `KRUISE_CONTAINER_PRIORITY` env (an integer,
//! higher first, absent 0). No stamp when every priority is the same or
//! the pod has one container. A bad value does not refuse the pod (as
//! OpenKruise's webhook does): that container gets 0 and the answer
//! carries a warning saying why.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;

/// Pod annotation: `Ordered` launches containers in spec order.
pub const ANNOTATION_LAUNCH_PRIORITY: &str = "apps.kruise.io/container-launch-priority";
/// Container env with the container's priority.
pub const ENV_CONTAINER_PRIORITY: &str = "KRUISE_CONTAINER_PRIORITY";
/// The stamp the agent reads.
pub const ANNOTATION_PRIORITIES: &str = "keelson.io/container-priorities";

/// Largest magnitude OpenKruise accepts.
const LIMIT: i64 = 2_147_483_647;

/// The priority map for `containers` (none when there is nothing to
/// order), with a warning per unusable value.
pub fn priorities(
    containers: &[Container],
    annotations: &BTreeMap<String, String>,
) -> (Option<BTreeMap<String, i64>>, Vec<String>) {
    if containers.len() <= 1 {
        return (None, vec![]);
    }
    if annotations
        .get(ANNOTATION_LAUNCH_PRIORITY)
        .map(String::as_str)
        == Some("Ordered")
    {
        let map = containers
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), -(i as i64)))
            .collect();
        return (Some(map), vec![]);
    }
    let mut warnings = vec![];
    let mut map = BTreeMap::new();
    for c in containers {
        let env = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == ENV_CONTAINER_PRIORITY);
        let p = match env {
            None => 0,
            Some(e) => match e.value.as_deref().map(str::trim).map(str::parse::<i64>) {
                Some(Ok(p)) if (-LIMIT..=LIMIT).contains(&p) => p,
                _ => {
                    let shown = match (&e.value, &e.value_from) {
                        (Some(v), _) => format!("{v:?}"),
                        (None, Some(_)) => "a valueFrom reference".into(),
                        (None, None) => "an empty value".into(),
                    };
                    warnings.push(format!(
                        "container {}: {ENV_CONTAINER_PRIORITY} is {shown}, not an integer between -{LIMIT} and {LIMIT}; it launches with the default priority 0",
                        c.name
                    ));
                    0
                }
            },
        };
        map.insert(c.name.clone(), p);
    }
    let mut values = map.values();
    let first = values.next().copied();
    if values.all(|v| Some(*v) == first) {
        return (None, warnings);
    }
    (Some(map), warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn containers(v: serde_json::Value) -> Vec<Container> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ordered_is_spec_order() {
        let cs = containers(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
        let ann = [(
            ANNOTATION_LAUNCH_PRIORITY.to_string(),
            "Ordered".to_string(),
        )]
        .into();
        let (m, w) = priorities(&cs, &ann);
        assert_eq!(
            m.unwrap(),
            [("a".into(), 0), ("b".into(), -1), ("c".into(), -2)].into()
        );
        assert!(w.is_empty());
    }

    #[test]
    fn env_values_absent_is_zero_equal_is_nothing() {
        let cs = containers(json!([
            {"name": "app"},
            {"name": "mesh", "env": [{"name": ENV_CONTAINER_PRIORITY, "value": "100"}]},
        ]));
        let (m, _) = priorities(&cs, &BTreeMap::new());
        assert_eq!(m.unwrap(), [("app".into(), 0), ("mesh".into(), 100)].into());
        let same = containers(json!([
            {"name": "a", "env": [{"name": ENV_CONTAINER_PRIORITY, "value": "5"}]},
            {"name": "b", "env": [{"name": ENV_CONTAINER_PRIORITY, "value": "5"}]},
        ]));
        assert_eq!(priorities(&same, &BTreeMap::new()).0, None);
        assert_eq!(priorities(&cs[..1], &BTreeMap::new()).0, None);
    }

    #[test]
    fn bad_values_warn_and_default() {
        let cs = containers(json!([
            {"name": "a", "env": [{"name": ENV_CONTAINER_PRIORITY, "value": "high"}]},
            {"name": "b", "env": [{"name": ENV_CONTAINER_PRIORITY, "value": "3"}]},
        ]));
        let (m, w) = priorities(&cs, &BTreeMap::new());
        assert_eq!(m.unwrap(), [("a".into(), 0), ("b".into(), 3)].into());
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("container a") && w[0].contains("\"high\""),
            "{w:?}"
        );
    }
}
