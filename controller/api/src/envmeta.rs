//! Env values taken from pod metadata (`env[].valueFrom.fieldRef` reading
//! `metadata.annotations['k']` or `metadata.labels['k']`): how such a
//! reference is parsed, and the hash of the values a container runs with,
//! which the node agent reports in `apps.kruise.io/runtime-containers-meta`
//! and the controller compares with what the pod's metadata says now.
//! Both sides are Keelson's, so the hash is Keelson's own (FNV-1a 64 over
//! sorted `NAME=value` lines), not OpenKruise's.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;

/// Where an env var's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum FieldRef {
    Annotation(String),
    Label(String),
}

impl FieldRef {
    /// Parses kubelet's fieldPath forms `metadata.annotations['k']` and
    /// `metadata.labels['k']` (other fieldPaths cannot change in place).
    pub fn parse(path: &str) -> Option<Self> {
        let (label, rest) = if let Some(r) = path.strip_prefix("metadata.annotations[") {
            (false, r)
        } else if let Some(r) = path.strip_prefix("metadata.labels[") {
            (true, r)
        } else {
            return None;
        };
        let key = rest.strip_suffix(']')?;
        let key = key
            .strip_prefix('\'')
            .and_then(|k| k.strip_suffix('\''))
            .or_else(|| key.strip_prefix('"').and_then(|k| k.strip_suffix('"')))?;
        if key.is_empty() {
            return None;
        }
        Some(if label {
            FieldRef::Label(key.to_string())
        } else {
            FieldRef::Annotation(key.to_string())
        })
    }

    /// The value kubelet resolves it to from `labels`/`annotations` (a
    /// missing key resolves to "").
    pub fn resolve<'a>(
        &self,
        labels: &'a BTreeMap<String, String>,
        annotations: &'a BTreeMap<String, String>,
    ) -> &'a str {
        match self {
            FieldRef::Annotation(k) => annotations.get(k),
            FieldRef::Label(k) => labels.get(k),
        }
        .map_or("", String::as_str)
    }
}

/// Env names SidecarSet injects from metadata that never restart a
/// container in place.
pub const IGNORED_ENV: [&str; 2] = ["SIDECARSET_VERSION", "SIDECARSET_VERSION_ALT"];

/// The container's env vars that read pod metadata, by env name.
pub fn references(container: &Container) -> BTreeMap<String, FieldRef> {
    container
        .env
        .iter()
        .flatten()
        .filter(|e| !IGNORED_ENV.contains(&e.name.as_str()))
        .filter_map(|e| {
            let path = &e.value_from.as_ref()?.field_ref.as_ref()?.field_path;
            Some((e.name.clone(), FieldRef::parse(path)?))
        })
        .collect()
}

/// Hash of env values (name → value); 0 only when there are none.
pub fn values_hash(values: &BTreeMap<String, String>) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in values {
        for b in k.bytes().chain([b'=']).chain(v.bytes()).chain([b'\n']) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h.max(1)
}

/// The hash a container reading `refs` should run with, given the pod's
/// metadata.
pub fn expected_hash(
    refs: &BTreeMap<String, FieldRef>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> u64 {
    let values = refs
        .iter()
        .map(|(env, r)| (env.clone(), r.resolve(labels, annotations).to_string()))
        .collect();
    values_hash(&values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_field_paths() {
        assert_eq!(
            FieldRef::parse("metadata.annotations['app.io/version']"),
            Some(FieldRef::Annotation("app.io/version".into()))
        );
        assert_eq!(
            FieldRef::parse("metadata.labels[\"tier\"]"),
            Some(FieldRef::Label("tier".into()))
        );
        for bad in [
            "metadata.name",
            "metadata.annotations",
            "metadata.annotations['']",
            "metadata.annotations[k]",
            "spec.nodeName",
        ] {
            assert_eq!(FieldRef::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn references_and_hashes() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "app",
            "env": [
                {"name": "CFG", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['cfg']"}}},
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "SIDECARSET_VERSION", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['v']"}}},
                {"name": "PLAIN", "value": "x"}
            ]
        }))
        .unwrap();
        let refs = references(&c);
        assert_eq!(refs.len(), 1);
        let labels = BTreeMap::new();
        let v1 = BTreeMap::from([("cfg".to_string(), "v1".to_string())]);
        let v2 = BTreeMap::from([("cfg".to_string(), "v2".to_string())]);
        let h1 = expected_hash(&refs, &labels, &v1);
        assert_eq!(
            h1,
            values_hash(&BTreeMap::from([("CFG".into(), "v1".into())]))
        );
        assert_ne!(h1, expected_hash(&refs, &labels, &v2));
        assert_ne!(h1, 0);
        assert_eq!(values_hash(&BTreeMap::new()), 0);
    }
}
