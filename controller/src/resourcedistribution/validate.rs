//! OpenKruise v1.9's ResourceDistribution validation rules and messages
//! (`pkg/webhook/resourcedistribution/validating/`), without I/O: the
//! name, `spec.resource` (decodable, core Secret or ConfigMap, apiVersion,
//! kind and name unchanged on update), the target namespace names, names
//! both included and excluded, and the label selector (with
//! `LabelSelectorAsSelector`'s messages). The server-side dry-run create
//! of the resource is the webhook's; its message is [`dry_run_error`].
//! Messages are Kubernetes field errors, values printed as Go does
//! ([`super::gofmt`]).

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use keelson_api::apps::v1alpha1::resourcedistribution::ResourceDistributionTargets;
use serde_json::Value;

use super::copy::Template;
use super::gofmt;
use crate::workload::revision::go_json;

/// The feature gate the webhook and the controller need.
pub const GATE: &str = "ResourceDistributionGate";

/// `%v` of upstream's supported GroupKinds (core kinds print bare).
pub const SUPPORTED_GROUP_KINDS: &str = "[Secret ConfigMap]";

const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {value}: {detail}")
}

fn internal(path: &str, detail: &str) -> String {
    format!("{path}: Internal error: {detail}")
}

/// Field errors as Kubernetes aggregates them: one as is, several as
/// `[a, b]`.
fn aggregate(errs: &[String]) -> String {
    if errs.len() == 1 {
        errs[0].clone()
    } else {
        format!("[{}]", errs.join(", "))
    }
}

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn label_like(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| lower_alnum(c) || c == '-')
        && s.starts_with(lower_alnum)
        && s.ends_with(lower_alnum)
}

/// `IsDNS1123Label`'s messages.
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !label_like(s) {
        errs.push(DNS1123_LABEL.to_string());
    }
    errs
}

/// `IsDNS1123Subdomain`'s messages.
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if !s.split('.').all(label_like) {
        errs.push(DNS1123_SUBDOMAIN.to_string());
    }
    errs
}

fn name_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// `IsQualifiedName`'s messages (label keys).
pub fn qualified_name_errors(s: &str) -> Vec<String> {
    let mut errs = vec![];
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !name_part_ok(name) {
        errs.push(format!("name part {QUALIFIED_NAME}"));
    }
    errs
}

/// `IsValidLabelValue`'s messages.
pub fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !s.is_empty() && !name_part_ok(s) {
        errs.push(LABEL_VALUE.to_string());
    }
    errs
}

/// `labels.NewRequirement`'s errors for one term (`values` as given).
fn requirement_errors(key: &str, op: &str, values: &[String]) -> Vec<String> {
    let mut errs = vec![];
    let key_errs = qualified_name_errors(key);
    if !key_errs.is_empty() {
        errs.push(invalid("key", &gofmt::quote(key), &key_errs.join("; ")));
    }
    let shown = gofmt::strings((!values.is_empty()).then_some(values));
    match op {
        "in" | "notin" if values.is_empty() => errs.push(invalid(
            "values",
            &shown,
            "for 'in', 'notin' operators, values set can't be empty",
        )),
        "=" if values.len() != 1 => errs.push(invalid(
            "values",
            &shown,
            "exact-match compatibility requires one single value",
        )),
        "exists" | "!" if !values.is_empty() => errs.push(invalid(
            "values",
            &shown,
            "values set must be empty for exists and does not exist",
        )),
        _ => {}
    }
    for (i, v) in values.iter().enumerate() {
        let value_errs = label_value_errors(v);
        if !value_errs.is_empty() {
            errs.push(invalid(
                &format!("values[{i}][{key}]"),
                &gofmt::quote(v),
                &value_errs.join("; "),
            ));
        }
    }
    errs
}

/// The error `metav1.LabelSelectorAsSelector` returns for `s`, if any
/// (the first failing term: match labels, then expressions).
pub fn selector_error(s: &LabelSelector) -> Option<String> {
    for (k, v) in s.match_labels.iter().flatten() {
        let errs = requirement_errors(k, "=", std::slice::from_ref(v));
        if !errs.is_empty() {
            return Some(aggregate(&errs));
        }
    }
    for e in s.match_expressions.iter().flatten() {
        let op = match e.operator.as_str() {
            "In" => "in",
            "NotIn" => "notin",
            "Exists" => "exists",
            "DoesNotExist" => "!",
            other => {
                return Some(format!(
                    "{} is not a valid label selector operator",
                    gofmt::quote(other)
                ));
            }
        };
        let errs = requirement_errors(&e.key, op, e.values.as_deref().unwrap_or_default());
        if !errs.is_empty() {
            return Some(aggregate(&errs));
        }
    }
    None
}

/// `ValidateObjectMeta`'s name rule (DNS subdomain).
pub fn metadata_errors(name: &str, generate_name: &str) -> Vec<String> {
    if name.is_empty() {
        if generate_name.is_empty() {
            return vec!["metadata.name: Required value: name or generateName is required".into()];
        }
        return vec![];
    }
    dns1123_subdomain_errors(name)
        .iter()
        .map(|m| invalid("metadata.name", &gofmt::quote(name), m))
        .collect()
}

/// Upstream's `DeserializeResource` of `spec.resource` (`null`: absent).
pub fn deserialize(resource: &Value) -> Result<Template, String> {
    let failed = |why: String| {
        internal(
            "spec",
            &format!("failed to deserialize resource, please check your spec.resource, err {why}"),
        )
    };
    let type_name = match resource {
        Value::Null => {
            return Err(invalid("spec", "\"null\"", "empty resource is not allowed"));
        }
        Value::Object(_) => "",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
    };
    if !type_name.is_empty() {
        return Err(failed(format!(
            "json: cannot unmarshal {type_name} into Go value of type unstructured.detector"
        )));
    }
    Template::parse(resource).map_err(|_| {
        failed(format!(
            "Object 'Kind' is missing in '{}'",
            go_json(resource)
        ))
    })
}

/// The kind and, on update, immutability rules for the decoded resource.
pub fn resource_error(new: &Template, old: Option<&Template>) -> Option<String> {
    if !new.supported() {
        return Some(invalid(
            "spec.resource",
            &gofmt::unstructured(&new.object),
            &format!(
                "unknown or unsupported resource GroupKind, only support {SUPPORTED_GROUP_KINDS}"
            ),
        ));
    }
    let same = |o: &Template| {
        (&o.group, &o.version, &o.kind, &o.name) == (&new.group, &new.version, &new.kind, &new.name)
    };
    if old.is_some_and(|o| !same(o)) {
        return Some(invalid(
            "spec.resource",
            "\"null\"",
            "resource apiVersion, kind, and name are immutable",
        ));
    }
    None
}

/// The message of a failed dry-run create (`why`: the API server's).
pub fn dry_run_error(why: &str) -> String {
    internal(
        "spec.resource",
        &format!("failed to dry-run to validate spec.resource, error: {why}"),
    )
}

/// The target rules: namespace names, included ∩ excluded, the selector.
pub fn targets_errors(t: &ResourceDistributionTargets) -> Vec<String> {
    let mut errs = vec![];
    let path = "spec.targets";
    let included: BTreeSet<&str> = t
        .included_namespaces
        .list
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    for n in &t.included_namespaces.list {
        for m in dns1123_label_errors(&n.name) {
            errs.push(invalid(
                &format!("{path}.includedNamespaces"),
                &gofmt::target_namespaces(&t.included_namespaces),
                &m,
            ));
        }
    }
    let mut conflicted = vec![];
    for n in &t.excluded_namespaces.list {
        for m in dns1123_label_errors(&n.name) {
            errs.push(invalid(
                &format!("{path}.excludedNamespaces"),
                &gofmt::target_namespaces(&t.excluded_namespaces),
                &m,
            ));
        }
        if included.contains(n.name.as_str()) {
            conflicted.push(n.name.clone());
        }
    }
    if !conflicted.is_empty() {
        errs.push(invalid(
            path,
            &gofmt::targets(t),
            &format!(
                "ambiguous targets because namespace {} is in both IncludedNamespaces.List and ExcludedNamespaces.List",
                gofmt::list(&conflicted)
            ),
        ));
    }
    if let Some(e) = selector_error(&t.namespace_label_selector) {
        errs.push(invalid(
            &format!("{path}.namespaceLabelSelector"),
            &gofmt::label_selector(&t.namespace_label_selector),
            &format!("labelSelectorAsSelector error: {e}"),
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Expected texts printed by Go 1.26 with k8s.io/apimachinery v0.32.10
    // (OpenKruise v1.9's) running upstream's calls: `field.Invalid` /
    // `field.InternalError` over `ValidateNamespaceName`,
    // `LabelSelectorAsSelector`, `ValidateObjectMeta`, and
    // `fmt.Sprintf("%v", supportedGKList)`.
    fn targets(v: Value) -> ResourceDistributionTargets {
        serde_json::from_value(v).unwrap()
    }

    fn sel(v: Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn resource_kinds_and_immutability() {
        let pod =
            deserialize(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}))
                .unwrap();
        assert_eq!(
            resource_error(&pod, None).unwrap(),
            r#"spec.resource: Invalid value: unstructured.Unstructured{Object:map[string]interface {}{"apiVersion":"v1", "kind":"Pod", "metadata":map[string]interface {}{"name":"p"}}}: unknown or unsupported resource GroupKind, only support [Secret ConfigMap]"#
        );
        let cm = |name: &str, kind: &str| {
            deserialize(&json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}))
                .unwrap()
        };
        assert_eq!(resource_error(&cm("a", "ConfigMap"), None), None);
        assert_eq!(
            resource_error(&cm("a", "ConfigMap"), Some(&cm("a", "ConfigMap"))),
            None
        );
        let immutable = "spec.resource: Invalid value: \"null\": resource apiVersion, kind, and name are immutable";
        assert_eq!(
            resource_error(&cm("b", "ConfigMap"), Some(&cm("a", "ConfigMap"))).as_deref(),
            Some(immutable)
        );
        assert_eq!(
            resource_error(&cm("a", "Secret"), Some(&cm("a", "ConfigMap"))).as_deref(),
            Some(immutable)
        );
        // A core kind under another group is not supported.
        let apps = deserialize(&json!({"apiVersion": "apps/v1", "kind": "ConfigMap"})).unwrap();
        assert!(resource_error(&apps, None).is_some());
    }

    #[test]
    fn undecodable_resources() {
        assert_eq!(
            deserialize(&Value::Null).unwrap_err(),
            "spec: Invalid value: \"null\": empty resource is not allowed"
        );
        assert_eq!(
            deserialize(&json!({"apiVersion": "v1"})).unwrap_err(),
            "spec: Internal error: failed to deserialize resource, please check your spec.resource, err Object 'Kind' is missing in '{\"apiVersion\":\"v1\"}'"
        );
        assert_eq!(
            deserialize(&json!([1])).unwrap_err(),
            "spec: Internal error: failed to deserialize resource, please check your spec.resource, err json: cannot unmarshal array into Go value of type unstructured.detector"
        );
        assert!(deserialize(&json!({"kind": "ConfigMap"})).is_ok());
        assert_eq!(
            dry_run_error("boom"),
            "spec.resource: Internal error: failed to dry-run to validate spec.resource, error: boom"
        );
    }

    #[test]
    fn namespace_names_and_ambiguous_targets() {
        let t = targets(json!({
            "includedNamespaces": {"list": [{"name": "a"}, {"name": "Bad_NS"}, {"name": "b"}]},
            "excludedNamespaces": {"list": [{"name": "a"}, {"name": "b"}]}
        }));
        let errs = targets_errors(&t);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(
            errs[0],
            r#"spec.targets.includedNamespaces: Invalid value: v1alpha1.ResourceDistributionTargetNamespaces{List:[]v1alpha1.ResourceDistributionNamespace{v1alpha1.ResourceDistributionNamespace{Name:"a"}, v1alpha1.ResourceDistributionNamespace{Name:"Bad_NS"}, v1alpha1.ResourceDistributionNamespace{Name:"b"}}}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"#
        );
        assert!(
            errs[1].starts_with("spec.targets: Invalid value: v1alpha1.ResourceDistributionTargets{AllNamespaces:false, ExcludedNamespaces:")
                && errs[1].ends_with(": ambiguous targets because namespace [a b] is in both IncludedNamespaces.List and ExcludedNamespaces.List"),
            "{}",
            errs[1]
        );
        let long = "a-very-long-namespace-name-that-goes-beyond-sixty-three-characters-x";
        let t = targets(json!({"excludedNamespaces": {"list": [{"name": long}]}}));
        assert_eq!(
            targets_errors(&t),
            [format!(
                "spec.targets.excludedNamespaces: Invalid value: v1alpha1.ResourceDistributionTargetNamespaces{{List:[]v1alpha1.ResourceDistributionNamespace{{v1alpha1.ResourceDistributionNamespace{{Name:\"{long}\"}}}}}}: must be no more than 63 characters"
            )]
        );
        assert!(targets_errors(&targets(json!({"allNamespaces": true}))).is_empty());
    }

    #[test]
    fn selector_errors_read_as_upstreams() {
        let t = targets(
            json!({"namespaceLabelSelector": {"matchLabels": {"z": "1", "a": "2"},
            "matchExpressions": [{"key": "k", "operator": "Bad"}, {"key": "j", "operator": "In", "values": ["x"]}]}}),
        );
        assert_eq!(
            targets_errors(&t),
            [
                r#"spec.targets.namespaceLabelSelector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"a":"2", "z":"1"}, MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:"k", Operator:"Bad", Values:[]string(nil)}, v1.LabelSelectorRequirement{Key:"j", Operator:"In", Values:[]string{"x"}}}}: labelSelectorAsSelector error: "Bad" is not a valid label selector operator"#
            ]
        );
        assert_eq!(
            selector_error(&sel(
                json!({"matchExpressions": [{"key": "k", "operator": "In"}]})
            ))
            .unwrap(),
            "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            selector_error(&sel(
                json!({"matchExpressions": [{"key": "k", "operator": "Exists", "values": ["v"]}]})
            ))
            .unwrap(),
            "values: Invalid value: []string{\"v\"}: values set must be empty for exists and does not exist"
        );
        assert_eq!(
            selector_error(&sel(json!({"matchLabels": {"bad key": "v_"}}))).unwrap(),
            "[key: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]'), values[0][bad key]: Invalid value: \"v_\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')]"
        );
        assert_eq!(
            selector_error(&sel(json!({"matchLabels": {"k": "bad value"}}))).unwrap(),
            "values[0][k]: Invalid value: \"bad value\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        for ok in [
            json!({}),
            json!({"matchLabels": {"example.com/group": "one", "empty": ""}}),
            json!({"matchExpressions": [{"key": "g", "operator": "NotIn", "values": ["a"]},
                {"key": "h", "operator": "DoesNotExist"}]}),
        ] {
            assert_eq!(selector_error(&sel(ok.clone())), None, "{ok}");
        }
    }

    #[test]
    fn the_name_is_a_dns_subdomain() {
        assert_eq!(
            metadata_errors("Bad_Name", ""),
            [
                "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ]
        );
        assert!(metadata_errors("sample.v1", "").is_empty());
        assert_eq!(metadata_errors("", "").len(), 1);
        assert_eq!(
            qualified_name_errors("a/b/c"),
            [
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ]
        );
    }
}
