//! Checks a manifest against a CRD's `openAPIV3Schema` the way the API
//! server's strict field validation (`kubectl apply --validate=strict`, the
//! default since Kubernetes 1.27) does for the parts that matter to a
//! manifest author: unknown fields (unless the schema preserves them),
//! value types, required fields and enums. Used by the tests that apply
//! OpenKruise's own examples to the generated CRDs
//! (`tests/openkruise_examples.rs`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

/// Problems found in `object` (a whole manifest) for version `version` of
/// `crd`; empty when it would be accepted.
pub fn validate(crd: &CustomResourceDefinition, version: &str, object: &Value) -> Vec<String> {
    let Some(schema) = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == version)
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
    else {
        return vec![format!("{}: no version {version}", crd.spec.names.kind)];
    };
    let mut problems = vec![];
    if let Some(map) = object.as_object() {
        // apiVersion, kind and metadata are the API server's, not the schema's.
        let body: serde_json::Map<String, Value> = map
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        check(schema, &Value::Object(body), "", &mut problems);
    } else {
        problems.push("the manifest is not an object".into());
    }
    problems
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => true,
    }
}

fn check(schema: &JSONSchemaProps, v: &Value, path: &str, problems: &mut Vec<String>) {
    if v.is_null() {
        if schema.nullable != Some(true) {
            problems.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    if schema.x_kubernetes_int_or_string == Some(true) {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            problems.push(format!("{path}: expected an integer or a string"));
        }
        return;
    }
    if let Some(ty) = &schema.type_
        && !type_ok(ty, v)
    {
        problems.push(format!("{path}: expected {ty}, got {v}"));
        return;
    }
    if let Some(allowed) = &schema.enum_
        && !allowed.iter().any(|a| a.0 == *v)
    {
        problems.push(format!("{path}: {v} is not one of the allowed values"));
    }
    // Sub-schemas (untagged enums, flattened types): the value must fit
    // one of them; field names are checked against their union.
    let alternatives: Vec<&JSONSchemaProps> = schema
        .one_of
        .iter()
        .chain(schema.any_of.iter())
        .flatten()
        .collect();
    match v {
        Value::Object(map) => {
            for field in schema.required.iter().flatten() {
                if !map.contains_key(field) {
                    problems.push(format!("{path}: missing required field {field:?}"));
                }
            }
            let preserve = schema.x_kubernetes_preserve_unknown_fields == Some(true);
            for (k, child) in map {
                let here = format!("{path}.{k}");
                let sub = schema
                    .properties
                    .as_ref()
                    .and_then(|p| p.get(k))
                    .or_else(|| {
                        alternatives
                            .iter()
                            .find_map(|a| a.properties.as_ref().and_then(|p| p.get(k)))
                    });
                match (sub, &schema.additional_properties) {
                    (Some(sub), _) => check(sub, child, &here, problems),
                    (None, Some(JSONSchemaPropsOrBool::Schema(s))) => {
                        check(s, child, &here, problems)
                    }
                    (None, Some(_)) => {}
                    (None, None) if preserve => {}
                    (None, None) => problems.push(format!("{here}: unknown field")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
                for (i, child) in items.iter().enumerate() {
                    check(item, child, &format!("{path}[{i}]"), problems);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::v1alpha1::containerrecreaterequest::ContainerRecreateRequest;
    use kube::CustomResourceExt;

    fn manifest(yaml: &str) -> Value {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_reported() {
        let crd = ContainerRecreateRequest::crd();
        let bad = manifest(
            "
apiVersion: apps.kruise.io/v1alpha1
kind: ContainerRecreateRequest
metadata: {name: x}
spec:
  podName: p
  containers:
  - name: app
    restartPolicy: Always
  strategy:
    orderedRecreate: \"yes\"
  activeDeadline: 3
",
        );
        let problems = validate(&crd, "v1alpha1", &bad);
        assert!(
            problems.contains(&".spec.containers[0].restartPolicy: unknown field".to_string()),
            "{problems:?}"
        );
        assert!(
            problems.contains(&".spec.activeDeadline: unknown field".to_string()),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(".spec.strategy.orderedRecreate: expected boolean")),
            "{problems:?}"
        );
        let missing = manifest(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ContainerRecreateRequest\nspec: {containers: []}\n",
        );
        assert!(
            validate(&crd, "v1alpha1", &missing)
                .iter()
                .any(|p| p.contains("missing required field \"podName\"")),
        );
    }
}
