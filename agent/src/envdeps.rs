//! Env from pod metadata: which containers an annotation or label change
//! must restart.
//!
//! Kubelet resolves `env[].valueFrom.fieldRef` (`metadata.annotations['k']`,
//! `metadata.labels['k']`) once, when it creates the container; CRI then
//! carries only the values, not where they came from. So the agent does not
//! guess and does not exec into containers (images without a shell are
//! fine): the pod carries the dependency map as an annotation, which
//! kubelet hands to the runtime with the sandbox config —
//! `keelson.io/env-from-metadata`, JSON `{container: {ENV: fieldPath}}`,
//! stamped by the controller's pod webhook from the pod spec (or written
//! by hand on bare metal). At CreateContainer the pod book keeps the values
//! those env vars were created with. Given the pod's new metadata, a
//! container is restarted when one of its env vars would now resolve to a
//! value other than the one it was created with. Comparing with the
//! created value (not with the previous annotation) makes repeated or
//! replayed updates restart nothing twice.

use std::collections::HashMap;

use serde::Deserialize;

/// The pod annotation with the dependency map.
pub const ANNOTATION_ENV_FROM_METADATA: &str = "keelson.io/env-from-metadata";

pub use keelson_api::envmeta::FieldRef;

/// Per container, env name → the metadata it reads.
pub type Dependencies = HashMap<String, HashMap<String, FieldRef>>;

/// The dependency map from the pod's annotations (absent → empty; entries
/// with other fieldPaths are left out).
pub fn dependencies(pod_annotations: &HashMap<String, String>) -> Result<Dependencies, String> {
    let Some(raw) = pod_annotations.get(ANNOTATION_ENV_FROM_METADATA) else {
        return Ok(Dependencies::new());
    };
    let parsed: HashMap<String, HashMap<String, String>> = serde_json::from_str(raw)
        .map_err(|e| format!("annotation {ANNOTATION_ENV_FROM_METADATA}: {e}"))?;
    Ok(parsed
        .into_iter()
        .map(|(container, envs)| {
            let refs = envs
                .into_iter()
                .filter_map(|(env, path)| FieldRef::parse(&path).map(|r| (env, r)))
                .collect();
            (container, refs)
        })
        .collect())
}

/// Env names of `container` that read pod metadata.
pub fn env_names(pod_annotations: &HashMap<String, String>, container: &str) -> Vec<String> {
    dependencies(pod_annotations)
        .ok()
        .and_then(|mut d| d.remove(container))
        .map(|m| m.into_keys().collect())
        .unwrap_or_default()
}

/// New pod metadata: keys given are set, keys given as `null` are
/// removed, keys not given keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataUpdate {
    #[serde(default)]
    pub annotations: HashMap<String, Option<String>>,
    #[serde(default)]
    pub labels: HashMap<String, Option<String>>,
}

/// Containers (sorted) whose env, resolved against `update`, differs from
/// what they were created with (`created`: container → env → value).
/// Keys the update does not mention are unchanged and restart nothing.
pub fn affected(
    deps: &Dependencies,
    created: &HashMap<String, HashMap<String, String>>,
    update: &MetadataUpdate,
) -> Vec<String> {
    let mut out: Vec<String> = deps
        .iter()
        .filter(|(container, envs)| {
            let Some(values) = created.get(*container) else {
                return false;
            };
            envs.iter().any(|(env, field)| {
                let new = match field {
                    FieldRef::Annotation(k) => update.annotations.get(k),
                    FieldRef::Label(k) => update.labels.get(k),
                };
                // Kubelet resolves a missing key to "".
                new.is_some_and(|v| {
                    values.get(env).map(String::as_str).unwrap_or("") != v.as_deref().unwrap_or("")
                })
            })
        })
        .map(|(c, _)| c.clone())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> HashMap<String, String> {
        HashMap::from([(
            ANNOTATION_ENV_FROM_METADATA.to_string(),
            r#"{"app":{"VERSION":"metadata.annotations['app/version']","NAME":"metadata.name"},
                "sidecar":{"TIER":"metadata.labels['tier']"}}"#
                .to_string(),
        )])
    }

    #[test]
    fn only_containers_reading_a_changed_key_restart() {
        let deps = dependencies(&stamp()).unwrap();
        assert_eq!(deps["app"].len(), 1, "metadata.name cannot change in place");
        assert_eq!(env_names(&stamp(), "sidecar"), vec!["TIER".to_string()]);
        let created = HashMap::from([
            (
                "app".to_string(),
                HashMap::from([("VERSION".to_string(), "v1".to_string())]),
            ),
            (
                "sidecar".to_string(),
                HashMap::from([("TIER".to_string(), "web".to_string())]),
            ),
        ]);
        let update = |a: &[(&str, Option<&str>)], l: &[(&str, Option<&str>)]| MetadataUpdate {
            annotations: a
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
            labels: l
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
        };
        assert_eq!(
            affected(
                &deps,
                &created,
                &update(&[("app/version", Some("v2"))], &[])
            ),
            vec!["app".to_string()]
        );
        // Same value as at creation, or an unrelated key: nothing.
        assert!(
            affected(
                &deps,
                &created,
                &update(&[("app/version", Some("v1"))], &[])
            )
            .is_empty()
        );
        assert!(
            affected(
                &deps,
                &created,
                &update(&[("other", Some("x"))], &[("x", Some("y"))])
            )
            .is_empty()
        );
        // Removing a key resolves to "".
        assert_eq!(
            affected(&deps, &created, &update(&[], &[("tier", None)])),
            vec!["sidecar".to_string()]
        );
        assert_eq!(
            affected(
                &deps,
                &created,
                &update(&[("app/version", Some("v3"))], &[("tier", Some("db"))])
            ),
            vec!["app".to_string(), "sidecar".to_string()]
        );
    }

    #[test]
    fn a_broken_stamp_is_an_error() {
        let bad = HashMap::from([(ANNOTATION_ENV_FROM_METADATA.to_string(), "{".to_string())]);
        assert!(
            dependencies(&bad)
                .unwrap_err()
                .contains(ANNOTATION_ENV_FROM_METADATA)
        );
        assert!(dependencies(&HashMap::new()).unwrap().is_empty());
    }
}
