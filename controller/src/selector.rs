//! Label selectors: matching labels, and the string form the API server
//! takes in `labelSelector=` queries and the scale subresource reports.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` match `selector` (matchLabels and matchExpressions
/// with In, NotIn, Exists, DoesNotExist; an unknown operator matches
/// nothing).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// The selector as a query string (`a=b,c in (d,e),!f`), terms sorted as
/// Kubernetes prints them.
pub fn to_query(selector: &LabelSelector) -> String {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let mut values = e.values.clone().unwrap_or_default();
        values.sort();
        terms.push(match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, values.join(",")),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other}", e.key),
        });
    }
    terms.sort();
    terms.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        let s: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web", "a": "b"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["y", "x"]}, {"key": "gone", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        assert_eq!(to_query(&s), "!gone,a=b,app=web,tier in (x,y)");
        assert!(matches(
            &s,
            &BTreeMap::from([
                ("app".into(), "web".into()),
                ("a".into(), "b".into()),
                ("tier".into(), "x".into())
            ])
        ));
    }
}
