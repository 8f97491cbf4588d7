//! What a request names: API paths (`/api/v1/...`, `/apis/<group>/<version>/...`,
//! cluster-scoped or under `namespaces/<ns>`, an object, its `/status`),
//! query parameters, and equality/existence label and field selectors.

use serde_json::Value;

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// API group ("" for the core group) and version.
    pub group: String,
    pub version: String,
    /// The resource's plural (the stand-in keys objects by it).
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub status: bool,
}

/// Parses an API path; `None` for anything else.
pub fn parse(path: &str) -> Option<Target> {
    let (group, version, rest) = if let Some(r) = path.strip_prefix("/api/v1/") {
        ("", "v1", r)
    } else {
        let r = path.strip_prefix("/apis/")?;
        let mut it = r.splitn(3, '/');
        (it.next()?, it.next()?, it.next()?)
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let (namespace, tail) = match parts.as_slice() {
        ["namespaces", ns, plural, tail @ ..] => {
            (Some(ns.to_string()), [&[*plural], tail].concat())
        }
        tail => (None, tail.to_vec()),
    };
    let target = |plural: &str, name: Option<&str>, status: bool| Target {
        group: group.to_string(),
        version: version.to_string(),
        plural: plural.to_string(),
        namespace: namespace.clone(),
        name: name.map(String::from),
        status,
    };
    match tail.as_slice() {
        [plural] => Some(target(plural, None, false)),
        [plural, name] => Some(target(plural, Some(name), false)),
        [plural, name, "status"] => Some(target(plural, Some(name), true)),
        _ => None,
    }
}

/// A query parameter, percent-decoded.
pub fn param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `obj` passes a label selector (`k=v`, `k==v`, `k!=v`, `k`,
/// `!k`, comma-separated) and a field selector (`dotted.path=v`).
pub fn selected(obj: &Value, labels: Option<&str>, fields: Option<&str>) -> bool {
    let label = |k: &str| {
        obj.pointer("/metadata/labels")
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let labels_ok = labels.is_none_or(|sel| {
        sel.split(',').filter(|t| !t.is_empty()).all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                label(k).as_deref() != Some(v)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                label(k).as_deref() == Some(v)
            } else if let Some(k) = term.strip_prefix('!') {
                label(k).is_none()
            } else {
                label(term).is_some()
            }
        })
    });
    let fields_ok = fields.is_none_or(|sel| {
        sel.split(',').filter(|t| !t.is_empty()).all(|term| {
            let Some((k, v)) = term.split_once('=') else {
                return false;
            };
            let ptr = format!("/{}", k.replace('.', "/"));
            obj.pointer(&ptr).and_then(Value::as_str) == Some(v)
        })
    });
    labels_ok && fields_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        assert_eq!(
            parse(
                "/apis/apps.kruise.io/v1alpha1/namespaces/team/containerrecreaterequests/r/status"
            ),
            Some(Target {
                group: "apps.kruise.io".into(),
                version: "v1alpha1".into(),
                plural: "containerrecreaterequests".into(),
                namespace: Some("team".into()),
                name: Some("r".into()),
                status: true
            })
        );
        assert_eq!(parse("/api/v1/pods").unwrap().namespace, None);
        let ns = parse("/api/v1/namespaces/team").unwrap();
        assert_eq!(
            (ns.plural.as_str(), ns.name.as_deref()),
            ("namespaces", Some("team"))
        );
        assert_eq!(parse("/healthz"), None);
    }

    #[test]
    fn selectors() {
        let o = json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}, "spec": {"nodeName": "n"}});
        assert!(selected(&o, Some("x=1,y"), Some("spec.nodeName=n")));
        assert!(!selected(&o, Some("x!=1"), None));
        assert!(selected(&o, Some("!z"), Some("metadata.name=a")));
        assert!(!selected(&o, None, Some("metadata.name=b")));
        assert_eq!(
            param("a=1&labelSelector=k%3Dv%2Cw", "labelSelector").as_deref(),
            Some("k=v,w")
        );
    }
}
