//! Which workload a command is about: `cloneset/web`, `cloneset web`, or
//! the plural, short and group-qualified spellings kubectl accepts.

/// A workload kind the plugin knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    CloneSet,
    /// Advanced StatefulSet.
    StatefulSet,
    /// Advanced DaemonSet.
    DaemonSet,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        let base = s
            .strip_suffix(".apps.kruise.io")
            .unwrap_or(s)
            .to_ascii_lowercase();
        match base.as_str() {
            "cloneset" | "clonesets" | "clone" => Some(Kind::CloneSet),
            "statefulset" | "statefulsets" | "sts" | "asts" => Some(Kind::StatefulSet),
            "daemonset" | "daemonsets" | "daemon" | "ads" => Some(Kind::DaemonSet),
            _ => None,
        }
    }

    /// As kubectl prints it (`cloneset.apps.kruise.io`).
    pub fn qualified(self) -> &'static str {
        match self {
            Kind::CloneSet => "cloneset.apps.kruise.io",
            Kind::StatefulSet => "statefulset.apps.kruise.io",
            Kind::DaemonSet => "daemonset.apps.kruise.io",
        }
    }

    /// The API resource read and written (the storage version where it
    /// is served).
    pub fn api_resource(self) -> kube::core::ApiResource {
        let (version, kind, plural) = match self {
            Kind::CloneSet => ("v1alpha1", "CloneSet", "clonesets"),
            Kind::StatefulSet => ("v1beta1", "StatefulSet", "statefulsets"),
            Kind::DaemonSet => ("v1alpha1", "DaemonSet", "daemonsets"),
        };
        kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("apps.kruise.io", version, kind),
            plural,
        )
    }

    /// Where `paused` lives in the spec (JSON pointer).
    pub fn paused_pointer(self) -> &'static str {
        match self {
            Kind::CloneSet => "/spec/updateStrategy/paused",
            Kind::StatefulSet | Kind::DaemonSet => "/spec/updateStrategy/rollingUpdate/paused",
        }
    }
}

/// Why the arguments name no workload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("you must provide a resource and a name, e.g. cloneset/web")]
    Missing,
    #[error(
        "the server doesn't have a resource type \"{0}\" (kubectl keelson supports cloneset, statefulset, daemonset)"
    )]
    UnknownKind(String),
}

/// The kind and name from `args` (one `kind/name` or `kind name`); the
/// rest of `args` is returned for the command.
pub fn parse(args: &[String]) -> Result<(Kind, String, Vec<String>), TargetError> {
    let first = args.first().ok_or(TargetError::Missing)?;
    if let Some((k, n)) = first.split_once('/') {
        let kind = Kind::parse(k).ok_or_else(|| TargetError::UnknownKind(k.into()))?;
        if n.is_empty() {
            return Err(TargetError::Missing);
        }
        return Ok((kind, n.to_string(), args[1..].to_vec()));
    }
    let kind = Kind::parse(first).ok_or_else(|| TargetError::UnknownKind(first.clone()))?;
    let name = args.get(1).ok_or(TargetError::Missing)?;
    Ok((kind, name.clone(), args[2..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn spellings() {
        for a in [
            s(&["cloneset/web"]),
            s(&["clone", "web"]),
            s(&["clonesets.apps.kruise.io/web"]),
        ] {
            assert_eq!(parse(&a).unwrap().0, Kind::CloneSet);
            assert_eq!(parse(&a).unwrap().1, "web");
        }
        let (_, _, rest) = parse(&s(&["cloneset/web", "main=nginx:2"])).unwrap();
        assert_eq!(rest, s(&["main=nginx:2"]));
        assert_eq!(
            parse(&s(&["deploy/web"])),
            Err(TargetError::UnknownKind("deploy".into()))
        );
        assert_eq!(parse(&s(&["cloneset"])), Err(TargetError::Missing));
        assert_eq!(parse(&[]), Err(TargetError::Missing));
    }
}
