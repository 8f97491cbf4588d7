//! The hash of a CloneSet's `volumeClaimTemplates`, kept on its
//! ControllerRevisions in the `kruise.io/cloneset-volumeclaimtemplate-hash`
//! annotation exactly as OpenKruise computes it
//! (`pkg/util/volumeclaimtemplate`): the templates reduced to name and
//! spec, sorted by name, written as Go's `encoding/json` writes a
//! `[]corev1.PersistentVolumeClaim` (struct field order, quantities in
//! canonical form), that byte slice printed as Kubernetes' hash dumper
//! prints a `[]uint8` (`([]uint8)[91 123 …]`), hashed with 32-bit FNV-1a
//! and written in decimal. No templates: the empty string.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;

use crate::workload::revision::go_json;

/// The annotation value for `templates`.
pub fn hash(templates: &[PersistentVolumeClaim]) -> String {
    if templates.is_empty() {
        return String::new();
    }
    let mut sorted: Vec<&PersistentVolumeClaim> = templates.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let items: Vec<String> = sorted.iter().map(|t| claim_json(t)).collect();
    let json = format!("[{}]", items.join(","));
    let bytes: Vec<String> = json.bytes().map(|b| b.to_string()).collect();
    let dumped = format!("([]uint8)[{}]", bytes.join(" "));
    let mut h: u32 = 0x811c_9dc5;
    for b in dumped.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_string()
}

fn string(s: &str) -> String {
    go_json(&Value::String(s.to_string()))
}

/// `"key":value` pairs as a Go struct writes them (absent ones left out).
fn object(fields: Vec<(&str, Option<String>)>) -> String {
    let parts: Vec<String> = fields
        .into_iter()
        .filter_map(|(k, v)| Some(format!("{}:{}", string(k), v?)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn claim_json(t: &PersistentVolumeClaim) -> String {
    let name = t.metadata.name.as_deref().filter(|n| !n.is_empty());
    let meta = object(vec![
        ("name", name.map(string)),
        ("creationTimestamp", Some("null".into())),
    ]);
    let spec = spec_json(&t.spec.clone().unwrap_or_default());
    format!("{{\"metadata\":{meta},\"spec\":{spec},\"status\":{{}}}}")
}

fn strings(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| string(s)).collect();
    format!("[{}]", items.join(","))
}

fn resources(list: Option<&std::collections::BTreeMap<String, Quantity>>) -> Option<String> {
    let list = list.filter(|l| !l.is_empty())?;
    let items: Vec<String> = list
        .iter()
        .map(|(k, q)| format!("{}:{}", string(k), string(&canonical_quantity(&q.0))))
        .collect();
    Some(format!("{{{}}}", items.join(",")))
}

fn spec_json(s: &PersistentVolumeClaimSpec) -> String {
    let selector = s.selector.as_ref().map(|sel| {
        let labels = sel
            .match_labels
            .as_ref()
            .filter(|m| !m.is_empty())
            .map(|m| go_json(&serde_json::to_value(m).unwrap_or_default()));
        let exprs = sel
            .match_expressions
            .as_ref()
            .filter(|e| !e.is_empty())
            .map(|e| {
                let items: Vec<String> = e
                    .iter()
                    .map(|r| {
                        object(vec![
                            ("key", Some(string(&r.key))),
                            ("operator", Some(string(&r.operator))),
                            (
                                "values",
                                r.values
                                    .as_ref()
                                    .filter(|v| !v.is_empty())
                                    .map(|v| strings(v)),
                            ),
                        ])
                    })
                    .collect();
                format!("[{}]", items.join(","))
            });
        object(vec![("matchLabels", labels), ("matchExpressions", exprs)])
    });
    let res = s.resources.clone().unwrap_or_default();
    let resources_json = object(vec![
        ("limits", resources(res.limits.as_ref())),
        ("requests", resources(res.requests.as_ref())),
    ]);
    let opt = |v: &Option<String>| v.as_deref().map(string);
    let non_empty = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(string);
    let data_source = s.data_source.as_ref().map(|d| {
        object(vec![
            (
                "apiGroup",
                Some(opt(&d.api_group).unwrap_or_else(|| "null".into())),
            ),
            ("kind", Some(string(&d.kind))),
            ("name", Some(string(&d.name))),
        ])
    });
    let data_source_ref = s.data_source_ref.as_ref().map(|d| {
        object(vec![
            (
                "apiGroup",
                Some(opt(&d.api_group).unwrap_or_else(|| "null".into())),
            ),
            ("kind", Some(string(&d.kind))),
            ("name", Some(string(&d.name))),
            ("namespace", opt(&d.namespace)),
        ])
    });
    object(vec![
        (
            "accessModes",
            s.access_modes
                .as_ref()
                .filter(|a| !a.is_empty())
                .map(|a| strings(a)),
        ),
        ("selector", selector),
        ("resources", Some(resources_json)),
        ("volumeName", non_empty(&s.volume_name)),
        ("storageClassName", opt(&s.storage_class_name)),
        ("volumeMode", opt(&s.volume_mode)),
        ("dataSource", data_source),
        ("dataSourceRef", data_source_ref),
        (
            "volumeAttributesClassName",
            opt(&s.volume_attributes_class_name),
        ),
    ])
}

const BINARY: &[(&str, u32)] = &[
    ("Ki", 1),
    ("Mi", 2),
    ("Gi", 3),
    ("Ti", 4),
    ("Pi", 5),
    ("Ei", 6),
];
const DECIMAL: &[(&str, i32)] = &[
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// A quantity as Go's `resource.Quantity` writes it back: the largest
/// suffix giving an integer mantissa, binary suffixes kept binary (for
/// whole values of at least 1Ki), decimal otherwise. Forms this does not
/// know (exponents, values past nano precision) are kept as written.
pub fn canonical_quantity(raw: &str) -> String {
    canonical(raw).unwrap_or_else(|| raw.to_string())
}

fn canonical(raw: &str) -> Option<String> {
    let s = raw.trim();
    let suffix = s.trim_start_matches(|c: char| c.is_ascii_digit() || "+-.".contains(c));
    if !BINARY.iter().any(|(n, _)| *n == suffix) && !DECIMAL.iter().any(|(n, _)| *n == suffix) {
        // Exponent forms keep their own notation.
        return None;
    }
    let v = crate::workload::quantity::nanos(s)?;
    let sign = if v < 0 { "-" } else { "" };
    let v = v.abs();
    if BINARY.iter().any(|(n, _)| *n == suffix)
        && v % 1_000_000_000 == 0
        && v / 1_000_000_000 >= 1024
    {
        let whole = v / 1_000_000_000;
        for (name, k) in BINARY.iter().rev() {
            let unit = 1024i128.pow(*k);
            if whole % unit == 0 {
                return Some(format!("{sign}{}{name}", whole / unit));
            }
        }
    }
    Some(format!("{sign}{}", decimal(v)?))
}

/// `nano` (a non-negative value in nano units) with the largest decimal
/// suffix that leaves an integer.
fn decimal(nano: i128) -> Option<String> {
    if nano == 0 {
        return Some("0".into());
    }
    for (name, e) in DECIMAL.iter().rev() {
        let unit = 10i128.checked_pow(u32::try_from(e + 9).ok()?)?;
        if nano % unit == 0 {
            return Some(format!("{}{name}", nano / unit));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn templates(v: Value) -> Vec<PersistentVolumeClaim> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn hashes_match_openkruise() {
        // Values computed with OpenKruise's own code (Go) for these inputs.
        let one = templates(json!([{"metadata": {"name": "data", "labels": {"x": "y"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}, "volumeMode": "Filesystem"}}]));
        assert_eq!(hash(&one), "3111275868");
        let two = templates(json!([
            {"metadata": {"name": "logs"}, "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                "resources": {"requests": {"storage": "2Gi"}, "limits": {"storage": "3Gi"}}}},
            {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
                "resources": {"requests": {"storage": "1.5Gi"}}, "selector": {"matchLabels": {"a": "b"}}, "volumeMode": "Filesystem"}}
        ]));
        assert_eq!(hash(&two), "778811001");
        let decimal = templates(json!([{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1M"}}, "volumeMode": "Filesystem"}}]));
        assert_eq!(hash(&decimal), "1715818440");
        assert_eq!(hash(&[]), "");
    }

    #[test]
    fn quantities_are_written_in_canonical_form() {
        for (raw, want) in [
            ("1.5Gi", "1536Mi"),
            ("2048Mi", "2Gi"),
            ("1Gi", "1Gi"),
            ("512Ki", "512Ki"),
            ("0.5Ki", "512"),
            ("1000M", "1G"),
            ("1500M", "1500M"),
            ("1.5G", "1500M"),
            ("100m", "100m"),
            ("0.1", "100m"),
            ("1000", "1k"),
            ("0", "0"),
            ("1e3", "1e3"),
        ] {
            assert_eq!(canonical_quantity(raw), want, "{raw}");
        }
    }
}
