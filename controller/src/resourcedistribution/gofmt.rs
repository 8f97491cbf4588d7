//! How Go prints the values OpenKruise's ResourceDistribution webhook puts
//! into its field errors (`field.Invalid(path, value, detail)` renders a
//! struct or map value with `%#v`): the embedded object as
//! `unstructured.Unstructured{Object:map[string]interface {}{…}}`, the
//! target types as `v1alpha1.ResourceDistributionTargets{…}`, label
//! selectors as `v1.LabelSelector{…}`. Also `%v` of a string list
//! (`[a b]`) and Go's `strconv.Quote`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use keelson_api::apps::v1alpha1::resourcedistribution::{
    ResourceDistributionTargetNamespaces, ResourceDistributionTargets,
};
use serde_json::Value;

/// Go's `strconv.Quote`: printable characters kept, the usual escapes,
/// `\xNN` for ASCII controls, `\uNNNN`/`\UNNNNNNNN` for other unprintable
/// characters (spaces other than U+0020, format characters, private use).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `strconv.IsPrint` without Unicode tables.
fn printable(c: char) -> bool {
    let u = c as u32;
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let format_chars = matches!(u,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x202a..=0x202e | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb
        | 0xe0001 | 0xe0020..=0xe007f);
    let private = matches!(u, 0xe000..=0xf8ff | 0xf0000..=0x10ffff);
    let nonchar = (u & 0xfffe) == 0xfffe || (0xfdd0..=0xfdef).contains(&u);
    !(format_chars || private || nonchar)
}

/// `%v` of a Go `float64` (`%g` with the shortest digits: exponent form
/// below 1e-4 and from 1e6 on, at least two exponent digits).
pub fn float(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f.is_infinite() {
            if f > 0.0 {
                "+Inf".into()
            } else {
                "-Inf".into()
            }
        } else if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

/// `%#v` of a value of a Go `map[string]interface{}` decoded from JSON.
pub fn interface(v: &Value) -> String {
    match v {
        Value::Null => "interface {}(nil)".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => float(f),
            _ => n.to_string(),
        },
        Value::String(s) => quote(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(interface).collect();
            format!("[]interface {{}}{{{}}}", inner.join(", "))
        }
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            let inner: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{}", quote(k), interface(v)))
                .collect();
            format!("map[string]interface {{}}{{{}}}", inner.join(", "))
        }
    }
}

/// `%#v` of the `unstructured.Unstructured` holding `object`.
pub fn unstructured(object: &Value) -> String {
    let map = match object {
        Value::Object(_) => interface(object),
        _ => "map[string]interface {}(nil)".into(),
    };
    format!("unstructured.Unstructured{{Object:{map}}}")
}

/// `%#v` of a `[]string` (`None`: a nil slice).
pub fn strings(v: Option<&[String]>) -> String {
    match v {
        None => "[]string(nil)".into(),
        Some(items) => {
            let inner: Vec<String> = items.iter().map(|s| quote(s)).collect();
            format!("[]string{{{}}}", inner.join(", "))
        }
    }
}

/// `%v` of a `[]string`: `[a b]`.
pub fn list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// `%#v` of a `metav1.LabelSelector`.
pub fn label_selector(s: &LabelSelector) -> String {
    let labels = match &s.match_labels {
        None => "map[string]string(nil)".into(),
        Some(m) => {
            let inner: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
                .collect();
            format!("map[string]string{{{}}}", inner.join(", "))
        }
    };
    let exprs = match &s.match_expressions {
        None => "[]v1.LabelSelectorRequirement(nil)".into(),
        Some(list) => {
            let inner: Vec<String> = list
                .iter()
                .map(|e| {
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                        quote(&e.key),
                        quote(&e.operator),
                        strings(e.values.as_deref())
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", inner.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

/// `%#v` of a `v1alpha1.ResourceDistributionTargetNamespaces` (an empty
/// list prints as Go's nil slice, as an absent one decodes).
pub fn target_namespaces(t: &ResourceDistributionTargetNamespaces) -> String {
    let list = if t.list.is_empty() {
        "[]v1alpha1.ResourceDistributionNamespace(nil)".to_string()
    } else {
        let inner: Vec<String> = t
            .list
            .iter()
            .map(|n| {
                format!(
                    "v1alpha1.ResourceDistributionNamespace{{Name:{}}}",
                    quote(&n.name)
                )
            })
            .collect();
        format!(
            "[]v1alpha1.ResourceDistributionNamespace{{{}}}",
            inner.join(", ")
        )
    };
    format!("v1alpha1.ResourceDistributionTargetNamespaces{{List:{list}}}")
}

/// `%#v` of a `v1alpha1.ResourceDistributionTargets`.
pub fn targets(t: &ResourceDistributionTargets) -> String {
    format!(
        "v1alpha1.ResourceDistributionTargets{{AllNamespaces:{}, ExcludedNamespaces:{}, IncludedNamespaces:{}, NamespaceLabelSelector:{}}}",
        t.all_namespaces,
        target_namespaces(&t.excluded_namespaces),
        target_namespaces(&t.included_namespaces),
        label_selector(&t.namespace_label_selector)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Expected texts printed by Go 1.26 (`fmt.Sprintf("%#v", …)`) over
    // k8s.io/apimachinery v0.32.10, OpenKruise v1.9's version.
    #[test]
    fn unstructured_objects_print_as_go_does() {
        let pod: Value = serde_json::from_str(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"a":"<b>"}},"spec":{"containers":[{"image":"nginx","name":"c","ports":[{"containerPort":80}]}],"x":1.5,"y":null,"z":true,"w":"é\n\"q\"\u2028\u0001"}}"#,
        )
        .unwrap();
        assert_eq!(
            unstructured(&pod),
            r#"unstructured.Unstructured{Object:map[string]interface {}{"apiVersion":"v1", "kind":"Pod", "metadata":map[string]interface {}{"labels":map[string]interface {}{"a":"<b>"}, "name":"p"}, "spec":map[string]interface {}{"containers":[]interface {}{map[string]interface {}{"image":"nginx", "name":"c", "ports":[]interface {}{map[string]interface {}{"containerPort":80}}}}, "w":"é\n\"q\"\u2028\x01", "x":1.5, "y":interface {}(nil), "z":true}}}"#
        );
    }

    #[test]
    fn floats_and_strings_print_as_go_does() {
        let got: Vec<String> = [
            1.5, 1e21, 1e20, 1e-7, 0.0001, 0.00001, 1234567.5, 123456.5, -2.25,
        ]
        .iter()
        .map(|f| float(*f))
        .collect();
        assert_eq!(
            got,
            [
                "1.5",
                "1e+21",
                "1e+20",
                "1e-07",
                "0.0001",
                "1e-05",
                "1.2345675e+06",
                "123456.5",
                "-2.25"
            ]
        );
        assert_eq!(
            interface(&json!("a\u{a0}b\u{200b}c\td\u{7f}e😀\u{e0001}\u{300}")),
            "\"a\\u00a0b\\u200bc\\td\\x7fe😀\\U000e0001\u{300}\""
        );
    }

    #[test]
    fn target_types_print_as_go_does() {
        let t: ResourceDistributionTargets = serde_json::from_value(json!({
            "includedNamespaces": {"list": [{"name": "a"}, {"name": "Bad_NS"}]},
            "excludedNamespaces": {"list": [{"name": "a"}]},
            "namespaceLabelSelector": {"matchLabels": {"z": "1", "a": "2"},
                "matchExpressions": [{"key": "k", "operator": "Bad"}, {"key": "j", "operator": "In", "values": ["x"]}]}
        }))
        .unwrap();
        assert_eq!(
            targets(&t),
            r#"v1alpha1.ResourceDistributionTargets{AllNamespaces:false, ExcludedNamespaces:v1alpha1.ResourceDistributionTargetNamespaces{List:[]v1alpha1.ResourceDistributionNamespace{v1alpha1.ResourceDistributionNamespace{Name:"a"}}}, IncludedNamespaces:v1alpha1.ResourceDistributionTargetNamespaces{List:[]v1alpha1.ResourceDistributionNamespace{v1alpha1.ResourceDistributionNamespace{Name:"a"}, v1alpha1.ResourceDistributionNamespace{Name:"Bad_NS"}}}, NamespaceLabelSelector:v1.LabelSelector{MatchLabels:map[string]string{"a":"2", "z":"1"}, MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:"k", Operator:"Bad", Values:[]string(nil)}, v1.LabelSelectorRequirement{Key:"j", Operator:"In", Values:[]string{"x"}}}}}"#
        );
        assert_eq!(
            targets(&ResourceDistributionTargets::default()),
            r#"v1alpha1.ResourceDistributionTargets{AllNamespaces:false, ExcludedNamespaces:v1alpha1.ResourceDistributionTargetNamespaces{List:[]v1alpha1.ResourceDistributionNamespace(nil)}, IncludedNamespaces:v1alpha1.ResourceDistributionTargetNamespaces{List:[]v1alpha1.ResourceDistributionNamespace(nil)}, NamespaceLabelSelector:v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}}"#
        );
        assert_eq!(list(&["a".into(), "b".into()]), "[a b]");
    }
}
