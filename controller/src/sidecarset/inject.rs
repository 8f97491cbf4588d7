//! Injecting SidecarSets into a pod at creation, as OpenKruise's pod
//! webhook does (`pkg/webhook/pod/mutating/sidecarset.go`): pod metadata
//! patches first; then, per SidecarSet, its init containers (creation
//! only, name-sorted, after the pod's own unless `BeforeAppContainer`), its
//! containers (`BeforeAppContainer` in front of the app containers,
//! `AfterAppContainer` behind, a same-named container replaced in place),
//! shared volume mounts and devices, transferred env, `IS_INJECTED=true`,
//! the volumes the sidecars mount (the pod's own win on a name clash),
//! the pull secrets (union, pod's first), hot-upgrade pairs, and the
//! `kruise.io/sidecarset-hash`, `…-hash-without-image` and
//! `…-injected-list` annotations in upstream's JSON shapes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, Volume,
};
use keelson_api::apps::v1alpha1::sidecarset as a1;
use keelson_api::apps::v1beta1::sidecarset::{SidecarContainer, SidecarSet};
use keelson_api::envmeta::FieldRef;
use serde::{Deserialize, Serialize};

/// Pod annotation: which container of each hot-upgrade pair works now,
/// JSON `{sidecar: "sidecar-1"}`.
pub const ANNOTATION_WORKING_HOT_UPGRADE_CONTAINER: &str =
    "kruise.io/sidecarset-working-hotupgrade-container";
/// Env the hot-upgrade containers read their version from.
pub const ENV_SIDECARSET_VERSION: &str = "SIDECARSET_VERSION";
/// Env the hot-upgrade containers read their partner's version from.
pub const ENV_SIDECARSET_VERSION_ALT: &str = "SIDECARSET_VERSION_ALT";

/// Now as `metav1.Time` writes it (RFC 3339, seconds, UTC): the
/// `updateTimestamp` of the hash and in-place state entries.
pub fn timestamp_now() -> String {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now()))
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// `version.sidecarset.kruise.io/<container>`.
pub fn version_annotation(container: &str) -> String {
    format!("version.sidecarset.kruise.io/{container}")
}

/// `versionalt.sidecarset.kruise.io/<container>`.
pub fn version_alt_annotation(container: &str) -> String {
    format!("versionalt.sidecarset.kruise.io/{container}")
}

/// The two containers a hot-upgrade sidecar `name` becomes.
pub fn hot_upgrade_names(name: &str) -> (String, String) {
    (format!("{name}-1"), format!("{name}-2"))
}

/// One SidecarSet's entry in a pod's hash annotations (upstream's
/// `SidecarSetUpgradeSpec`, fields in its order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeSpec {
    #[serde(rename = "updateTimestamp", default)]
    pub update_timestamp: Option<String>,
    #[serde(rename = "hash", default)]
    pub hash: String,
    #[serde(rename = "sidecarSetName", default)]
    pub sidecar_set_name: String,
    #[serde(rename = "sidecarList", default)]
    pub sidecar_list: Option<Vec<String>>,
    #[serde(
        rename = "controllerRevision",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub controller_revision: String,
}

/// Why a pod cannot be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(
        "pod({namespace}/{name}) invalid annotations[{key}] value {value}, unmarshal failed: {source}"
    )]
    BadHashAnnotation {
        namespace: String,
        name: String,
        key: String,
        value: String,
        source: serde_json::Error,
    },
    #[error("patchPodMetadata of SidecarSet {set}: annotation {key}: {reason}")]
    BadMergePatch {
        set: String,
        key: String,
        reason: String,
    },
}

/// A pod's hash annotation as a map, reading the legacy `{name: hash}`
/// form too. Empty when absent.
pub fn parse_hashes(pod: &Pod, key: &str) -> Result<BTreeMap<String, UpgradeSpec>, InjectError> {
    let Some(raw) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .filter(|v| !v.is_empty())
    else {
        return Ok(BTreeMap::new());
    };
    match serde_json::from_str::<BTreeMap<String, UpgradeSpec>>(raw) {
        Ok(m) => Ok(m),
        Err(first) => match serde_json::from_str::<BTreeMap<String, String>>(raw) {
            Ok(legacy) => Ok(legacy
                .into_iter()
                .map(|(k, hash)| {
                    let spec = UpgradeSpec {
                        update_timestamp: None,
                        hash,
                        sidecar_set_name: k.clone(),
                        sidecar_list: None,
                        controller_revision: String::new(),
                    };
                    (k, spec)
                })
                .collect()),
            Err(_) => Err(InjectError::BadHashAnnotation {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                key: key.into(),
                value: raw.clone(),
                source: first,
            }),
        },
    }
}

/// Applies the SidecarSets' `patchPodMetadata` to `annotations`; whether
/// anything changed.
pub fn patch_pod_metadata(
    annotations: &mut BTreeMap<String, String>,
    set: &SidecarSet,
) -> Result<bool, InjectError> {
    let before = annotations.clone();
    for patch in &set.spec.patch_pod_metadata {
        for (k, v) in &patch.annotations {
            match patch.patch_policy.as_str() {
                a1::PATCH_POLICY_OVERWRITE => {
                    annotations.insert(k.clone(), v.clone());
                }
                a1::PATCH_POLICY_MERGE_PATCH_JSON => {
                    let merged = match annotations.get(k).filter(|o| !o.is_empty()) {
                        Some(origin) => {
                            merge_patch(origin, v).map_err(|reason| InjectError::BadMergePatch {
                                set: set.metadata.name.clone().unwrap_or_default(),
                                key: k.clone(),
                                reason,
                            })?
                        }
                        None => v.clone(),
                    };
                    annotations.insert(k.clone(), merged);
                }
                // Retain, and anything unknown (the webhook refuses it).
                _ => {
                    annotations.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
    Ok(*annotations != before)
}

fn merge_patch(origin: &str, patch: &str) -> Result<String, String> {
    let mut doc: serde_json::Value = serde_json::from_str(origin).map_err(|e| e.to_string())?;
    let patch: serde_json::Value = serde_json::from_str(patch).map_err(|e| e.to_string())?;
    json_patch::merge(&mut doc, &patch);
    Ok(crate::workload::revision::go_json(&doc))
}

fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
    c.env.iter().flatten().find(|e| e.name == name)
}

/// Whether a pod container was put there by a SidecarSet.
pub fn is_injected(c: &Container) -> bool {
    env_value(c, a1::SIDECAR_ENV_IS_INJECTED).and_then(|e| e.value.as_deref()) == Some("true")
}

/// `$(NAME)` references in a `subPathExpr`.
static SUB_PATH_ENV: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)").expect("a valid pattern")
});

fn merge_env(mut original: Vec<EnvVar>, additional: Vec<EnvVar>) -> Vec<EnvVar> {
    let mut names: BTreeSet<String> = original.iter().map(|e| e.name.clone()).collect();
    for e in additional {
        if names.insert(e.name.clone()) {
            original.push(e);
        }
    }
    original
}

/// The volume mounts (and the env their `subPathExpr`s need) the sidecar
/// gets from the pod's app containers under `shareVolumePolicy: enabled`.
fn shared_mounts(
    sidecar: &SidecarContainer,
    pod: &Pod,
) -> (Vec<k8s_openapi::api::core::v1::VolumeMount>, Vec<EnvVar>) {
    if sidecar.share_volume_policy.type_ != a1::SHARE_VOLUME_POLICY_ENABLED {
        return (vec![], vec![]);
    }
    let mut mounts = vec![];
    let mut envs = vec![];
    let app = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter(|c| !is_injected(c));
    for c in app {
        for m in c.volume_mounts.iter().flatten() {
            mounts.push(m.clone());
            for cap in SUB_PATH_ENV.captures_iter(m.sub_path_expr.as_deref().unwrap_or("")) {
                if let Some(e) = env_value(c, &cap[1]) {
                    envs.push(e.clone());
                }
            }
        }
    }
    (mounts, envs)
}

fn shared_devices(
    sidecar: &SidecarContainer,
    pod: &Pod,
) -> Vec<k8s_openapi::api::core::v1::VolumeDevice> {
    if sidecar
        .share_volume_device_policy
        .as_ref()
        .is_none_or(|p| p.type_ != a1::SHARE_VOLUME_POLICY_ENABLED)
    {
        return vec![];
    }
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter(|c| !is_injected(c))
        .flat_map(|c| c.volume_devices.iter().flatten().cloned())
        .collect()
}

/// `transferEnv`: the named env vars copied whole from their source
/// container (missing ones skipped).
fn transfer_env(sidecar: &SidecarContainer, pod: &Pod) -> Vec<EnvVar> {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let containers: Vec<&Container> = pod.spec.iter().flat_map(|s| &s.containers).collect();
    let mut out = vec![];
    for t in &sidecar.transfer_env {
        let mut names: BTreeSet<&str> = t.env_names.iter().map(String::as_str).collect();
        if !t.env_name.is_empty() {
            names.insert(&t.env_name);
        }
        let source = match t
            .source_container_name_from
            .as_ref()
            .and_then(|f| f.field_ref.as_ref())
        {
            Some(f) => match FieldRef::parse(&f.field_path) {
                Some(r) => r.resolve(labels, annotations).to_string(),
                None => {
                    tracing::info!(field_path = %f.field_path, "transferEnv sourceContainerNameFrom: unsupported fieldPath; skipped");
                    continue;
                }
            },
            None => t.source_container_name.clone(),
        };
        let Some(c) = containers.iter().find(|c| c.name == source) else {
            continue;
        };
        for n in names {
            if let Some(e) = env_value(c, n) {
                out.push(e.clone());
            }
        }
    }
    out
}

fn version_env(c: &mut Container) {
    let field = |key: String| EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            api_version: None,
            field_path: format!("metadata.annotations['{key}']"),
        }),
        ..Default::default()
    };
    let env = c.env.get_or_insert_with(Vec::new);
    env.push(EnvVar {
        name: ENV_SIDECARSET_VERSION.into(),
        value: None,
        value_from: Some(field(version_annotation(&c.name))),
    });
    env.push(EnvVar {
        name: ENV_SIDECARSET_VERSION_ALT.into(),
        value: None,
        value_from: Some(field(version_alt_annotation(&c.name))),
    });
}

/// A hot-upgrade sidecar as its two containers, and the annotations that
/// go with them (the working-container map gains the pair).
fn hot_upgrade_pair(
    sidecar: &SidecarContainer,
    working: &mut BTreeMap<String, String>,
    annotations: &mut BTreeMap<String, String>,
) -> [SidecarContainer; 2] {
    let (n1, n2) = hot_upgrade_names(&sidecar.container.name);
    let mut c1 = sidecar.clone();
    let mut c2 = sidecar.clone();
    c1.container.name = n1.clone();
    c2.container.name = n2.clone();
    c2.container.image = Some(sidecar.upgrade_strategy.hot_upgrade_empty_image.clone());
    version_env(&mut c1.container);
    version_env(&mut c2.container);
    annotations.insert(version_annotation(&n1), "1".into());
    annotations.insert(version_alt_annotation(&n1), "0".into());
    annotations.insert(version_annotation(&n2), "0".into());
    annotations.insert(version_alt_annotation(&n2), "1".into());
    working.insert(sidecar.container.name.clone(), n1);
    [c1, c2]
}

/// The sidecar container as it goes into the pod.
fn prepared(
    sidecar: &SidecarContainer,
    pod: &Pod,
    volumes: &[Volume],
    pod_volumes: &mut Vec<Volume>,
) -> SidecarContainer {
    let mut s = sidecar.clone();
    let (mounts, shared_env) = shared_mounts(sidecar, pod);
    let transferred = merge_env(transfer_env(sidecar, pod), shared_env);
    let c = &mut s.container;
    let referenced = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| &m.name)
        .chain(c.volume_devices.iter().flatten().map(|d| &d.name));
    for name in referenced {
        if let Some(v) = volumes.iter().find(|v| &v.name == name) {
            pod_volumes.push(v.clone());
        }
    }
    // Mounts: the sidecar's own, then shared ones at unused paths.
    let mut paths: BTreeSet<String> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.clone())
        .chain(
            c.volume_devices
                .iter()
                .flatten()
                .map(|d| d.device_path.clone()),
        )
        .collect();
    let mut own = c.volume_mounts.take().unwrap_or_default();
    for m in mounts {
        if paths.insert(m.mount_path.clone()) {
            own.push(m);
        }
    }
    c.volume_mounts = (!own.is_empty()).then_some(own);
    let mut env = c.env.take().unwrap_or_default();
    env.push(EnvVar {
        name: a1::SIDECAR_ENV_IS_INJECTED.into(),
        value: Some("true".into()),
        value_from: None,
    });
    c.env = Some(merge_env(env, transferred));
    let devices = shared_devices(sidecar, pod);
    if !devices.is_empty() {
        let mut own = c.volume_devices.take().unwrap_or_default();
        for d in devices {
            if paths.insert(d.device_path.clone()) {
                own.push(d);
            }
        }
        c.volume_devices = Some(own);
    }
    s
}

fn merge_containers(origins: &mut Vec<Container>, injected: Vec<SidecarContainer>) {
    let mut before = vec![];
    let mut after = vec![];
    for s in injected {
        if let Some(slot) = origins.iter_mut().find(|c| c.name == s.container.name) {
            *slot = s.container;
            continue;
        }
        if s.pod_inject_policy == a1::POD_INJECT_POLICY_BEFORE_APP_CONTAINER {
            before.push(s.container);
        } else {
            after.push(s.container);
        }
    }
    before.append(origins);
    before.append(&mut after);
    *origins = before;
}

/// Injects `sets` (already matched, in name order) into a pod being
/// created; `now` is the RFC 3339 time written into the hash entries.
/// Whether the pod changed.
pub fn inject(
    pod: &mut Pod,
    sets: &[&SidecarSet],
    now: &str,
    sort_containers_by_name: bool,
) -> Result<bool, InjectError> {
    if sets.is_empty() {
        return Ok(false);
    }
    let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let mut changed = false;
    for set in sets {
        changed |= patch_pod_metadata(&mut annotations, set)?;
    }
    let mut hashes = parse_hashes(pod, a1::ANNOTATION_SIDECARSET_HASH)?;
    let mut hashes_without_image = parse_hashes(pod, a1::ANNOTATION_SIDECARSET_HASH_WITHOUT_IMAGE)?;
    let mut working: BTreeMap<String, String> = annotations
        .get(ANNOTATION_WORKING_HOT_UPGRADE_CONTAINER)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    let mut names: BTreeSet<String> = annotations
        .get(a1::ANNOTATION_SIDECARSET_INJECTED_LIST)
        .into_iter()
        .flat_map(|l| l.split(','))
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    let (mut inits, mut containers, mut volumes, mut secrets) = (vec![], vec![], vec![], vec![]);
    let mut extra = BTreeMap::new();
    for set in sets {
        let name = set.metadata.name.clone().unwrap_or_default();
        names.insert(name.clone());
        let mut list = BTreeSet::new();
        let mut injecting = false;
        for init in &set.spec.init_containers {
            if init.container.restart_policy.as_deref() == Some("Always") {
                list.insert(init.container.name.clone());
            }
            let s = prepared(init, pod, &set.spec.volumes, &mut volumes);
            injecting = true;
            let native = init.container.restart_policy.as_deref() == Some("Always");
            if native && init.upgrade_strategy.upgrade_type == a1::SIDECAR_CONTAINER_HOT_UPGRADE {
                inits.extend(hot_upgrade_pair(&s, &mut working, &mut extra));
            } else {
                inits.push(s);
            }
        }
        secrets.extend(set.spec.image_pull_secrets.iter().cloned());
        for sidecar in &set.spec.containers {
            list.insert(sidecar.container.name.clone());
            let s = prepared(sidecar, pod, &set.spec.volumes, &mut volumes);
            injecting = true;
            if sidecar.upgrade_strategy.upgrade_type == a1::SIDECAR_CONTAINER_HOT_UPGRADE {
                containers.extend(hot_upgrade_pair(&s, &mut working, &mut extra));
            } else {
                containers.push(s);
            }
        }
        if injecting {
            let list: Vec<String> = list.into_iter().collect();
            let annotations = set.metadata.annotations.as_ref();
            let ann = |k: &str| {
                annotations
                    .and_then(|a| a.get(k))
                    .cloned()
                    .unwrap_or_default()
            };
            hashes.insert(
                name.clone(),
                UpgradeSpec {
                    update_timestamp: Some(now.into()),
                    hash: ann(a1::ANNOTATION_SIDECARSET_HASH),
                    sidecar_set_name: name.clone(),
                    sidecar_list: Some(list.clone()),
                    controller_revision: set
                        .status
                        .as_ref()
                        .map(|s| s.latest_revision.clone())
                        .unwrap_or_default(),
                },
            );
            hashes_without_image.insert(
                name.clone(),
                UpgradeSpec {
                    update_timestamp: Some(now.into()),
                    hash: ann(a1::ANNOTATION_SIDECARSET_HASH_WITHOUT_IMAGE),
                    sidecar_set_name: name.clone(),
                    sidecar_list: Some(list),
                    controller_revision: String::new(),
                },
            );
        }
    }
    if inits.is_empty() && containers.is_empty() {
        if changed {
            pod.metadata.annotations = Some(annotations);
        }
        return Ok(changed);
    }
    inits.sort_by(|a, b| a.container.name.cmp(&b.container.name));
    if sort_containers_by_name {
        containers.sort_by(|a, b| a.container.name.cmp(&b.container.name));
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    let mut pod_inits = spec.init_containers.take().unwrap_or_default();
    merge_containers(&mut pod_inits, inits);
    spec.init_containers = (!pod_inits.is_empty()).then_some(pod_inits);
    merge_containers(&mut spec.containers, containers);
    let mut pod_volumes = spec.volumes.take().unwrap_or_default();
    for v in volumes {
        if !pod_volumes.iter().any(|p| p.name == v.name) {
            pod_volumes.push(v);
        }
    }
    spec.volumes = (!pod_volumes.is_empty()).then_some(pod_volumes);
    let mut pod_secrets = spec.image_pull_secrets.take().unwrap_or_default();
    let mut seen = BTreeSet::new();
    pod_secrets.retain(|s| seen.insert(s.name.clone()));
    for s in secrets {
        if seen.insert(s.name.clone()) {
            pod_secrets.push(s);
        }
    }
    spec.image_pull_secrets = (!pod_secrets.is_empty()).then_some(pod_secrets);
    annotations.extend(extra);
    if !working.is_empty() {
        annotations.insert(
            ANNOTATION_WORKING_HOT_UPGRADE_CONTAINER.into(),
            crate::workload::revision::go_json(&serde_json::to_value(&working).unwrap_or_default()),
        );
    }
    // Struct fields in upstream's order, map keys sorted: what Go writes
    // (no value here can hold the characters Go escapes).
    let json = |m: &BTreeMap<String, UpgradeSpec>| serde_json::to_string(m).unwrap_or_default();
    annotations.insert(a1::ANNOTATION_SIDECARSET_HASH.into(), json(&hashes));
    annotations.insert(
        a1::ANNOTATION_SIDECARSET_HASH_WITHOUT_IMAGE.into(),
        json(&hashes_without_image),
    );
    annotations.insert(
        a1::ANNOTATION_SIDECARSET_INJECTED_LIST.into(),
        names.into_iter().collect::<Vec<_>>().join(","),
    );
    pod.metadata.annotations = Some(annotations);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn set(name: &str, spec: Value) -> SidecarSet {
        let mut obj = json!({
            "apiVersion": "apps.kruise.io/v1beta1", "kind": "SidecarSet",
            "metadata": {"name": name}, "spec": spec,
        });
        super::super::defaults::default_and_hash(&mut obj);
        serde_json::from_value(obj).unwrap()
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {
                "containers": [{
                    "name": "app", "image": "nginx",
                    "env": [{"name": "TZ", "value": "UTC"}, {"name": "SUB", "value": "x"}],
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/data", "subPathExpr": "$(SUB)/d"},
                        {"name": "shared", "mountPath": "/shared"},
                    ],
                }],
                "volumes": [{"name": "data", "emptyDir": {}}, {"name": "shared", "emptyDir": {}}],
                "imagePullSecrets": [{"name": "mine"}],
            }
        }))
        .unwrap()
    }

    fn names(cs: &[Container]) -> Vec<&str> {
        cs.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn containers_init_containers_volumes_env_and_annotations() {
        let s = set(
            "mesh",
            json!({
                "selector": {"matchLabels": {"app": "web"}},
                "containers": [
                    {"name": "envoy", "image": "envoy:1", "shareVolumePolicy": {"type": "enabled"},
                     "transferEnv": [{"sourceContainerName": "app", "envName": "TZ"}],
                     "volumeMounts": [{"name": "shared", "mountPath": "/shared"}, {"name": "cfg", "mountPath": "/etc/envoy"}]},
                    {"name": "after", "image": "a:1", "podInjectPolicy": "AfterAppContainer"},
                ],
                "initContainers": [
                    {"name": "zz-log", "image": "log:1", "restartPolicy": "Always"},
                    {"name": "aa-init", "image": "init:1"},
                ],
                "volumes": [{"name": "cfg", "configMap": {"name": "envoy"}}, {"name": "shared", "hostPath": {"path": "/x"}}],
                "imagePullSecrets": [{"name": "mine"}, {"name": "registry"}],
                "updateStrategy": {"type": "NotUpdate"},
            }),
        );
        let mut p = pod();
        assert!(inject(&mut p, &[&s], "2026-12-01T00:00:00Z", false).unwrap());
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(names(&spec.containers), ["envoy", "app", "after"]);
        assert_eq!(
            names(spec.init_containers.as_ref().unwrap()),
            ["aa-init", "zz-log"]
        );
        let envoy = &spec.containers[0];
        let env: Vec<_> = envoy
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(
            env,
            [
                ("IS_INJECTED", Some("true")),
                ("TZ", Some("UTC")),
                ("SUB", Some("x"))
            ]
        );
        let mounts: Vec<_> = envoy
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        // Its own first; /shared is already mounted, /data comes from the app.
        assert_eq!(mounts, ["/shared", "/etc/envoy", "/data"]);
        let vols: Vec<_> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        // The pod's `shared` wins over the SidecarSet's.
        assert_eq!(vols, ["data", "shared", "cfg"]);
        assert!(spec.volumes.as_ref().unwrap()[1].empty_dir.is_some());
        let secrets: Vec<_> = spec
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(secrets, ["mine", "registry"]);
        let a = p.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[a1::ANNOTATION_SIDECARSET_INJECTED_LIST], "mesh");
        let hashes: Value = serde_json::from_str(&a[a1::ANNOTATION_SIDECARSET_HASH]).unwrap();
        let hash = s.metadata.annotations.as_ref().unwrap()[a1::ANNOTATION_SIDECARSET_HASH].clone();
        assert_eq!(
            hashes,
            json!({"mesh": {"updateTimestamp": "2026-12-01T00:00:00Z", "hash": hash,
                            "sidecarSetName": "mesh", "sidecarList": ["after", "envoy", "zz-log"]}})
        );
        // Upstream's field order.
        assert!(a[a1::ANNOTATION_SIDECARSET_HASH].starts_with(r#"{"mesh":{"updateTimestamp":"#));
    }

    #[test]
    fn a_same_named_container_is_replaced_in_place() {
        let s = set(
            "s",
            json!({"selector": {"matchLabels": {"app": "web"}},
                                "containers": [{"name": "app", "image": "other:2"}]}),
        );
        let mut p = pod();
        inject(&mut p, &[&s], "t", false).unwrap();
        let spec = p.spec.unwrap();
        assert_eq!(names(&spec.containers), ["app"]);
        assert_eq!(spec.containers[0].image.as_deref(), Some("other:2"));
    }

    #[test]
    fn hot_upgrade_makes_a_pair_with_version_env() {
        let s = set(
            "hot",
            json!({"selector": {"matchLabels": {"app": "web"}},
            "containers": [{"name": "mesh", "image": "mesh:1",
                "upgradeStrategy": {"upgradeType": "HotUpgrade", "hotUpgradeEmptyImage": "empty:1"}}]}),
        );
        let mut p = pod();
        inject(&mut p, &[&s], "t", false).unwrap();
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(names(&spec.containers), ["mesh-1", "mesh-2", "app"]);
        assert_eq!(spec.containers[1].image.as_deref(), Some("empty:1"));
        let env: Vec<_> = spec.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            env,
            [
                "IS_INJECTED",
                "SIDECARSET_VERSION",
                "SIDECARSET_VERSION_ALT"
            ]
        );
        let a = p.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            a[ANNOTATION_WORKING_HOT_UPGRADE_CONTAINER],
            r#"{"mesh":"mesh-1"}"#
        );
        assert_eq!(a["version.sidecarset.kruise.io/mesh-1"], "1");
        assert_eq!(a["versionalt.sidecarset.kruise.io/mesh-2"], "1");
    }

    #[test]
    fn patch_pod_metadata_policies() {
        let s = set(
            "s",
            json!({"selector": {"matchLabels": {"app": "web"}},
            "containers": [{"name": "c", "image": "c:1"}],
            "patchPodMetadata": [
                {"annotations": {"keep": "new", "add": "v"}},
                {"annotations": {"over": "new"}, "patchPolicy": "Overwrite"},
                {"annotations": {"json": r#"{"b":2}"#}, "patchPolicy": "MergePatchJson"},
            ]}),
        );
        let mut p = pod();
        p.metadata.annotations = Some(
            [("keep", "old"), ("over", "old"), ("json", r#"{"a":1}"#)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        inject(&mut p, &[&s], "t", false).unwrap();
        let a = p.metadata.annotations.unwrap();
        assert_eq!(a["keep"], "old");
        assert_eq!(a["add"], "v");
        assert_eq!(a["over"], "new");
        assert_eq!(a["json"], r#"{"a":1,"b":2}"#);
    }

    #[test]
    fn legacy_hash_annotations_are_read_and_garbage_is_an_error() {
        let mut p = pod();
        p.metadata.annotations = Some(
            [(
                a1::ANNOTATION_SIDECARSET_HASH.to_string(),
                r#"{"old":"h1"}"#.to_string(),
            )]
            .into(),
        );
        let m = parse_hashes(&p, a1::ANNOTATION_SIDECARSET_HASH).unwrap();
        assert_eq!(m["old"].hash, "h1");
        p.metadata.annotations = Some(
            [(
                a1::ANNOTATION_SIDECARSET_HASH.to_string(),
                "nope".to_string(),
            )]
            .into(),
        );
        let err = parse_hashes(&p, a1::ANNOTATION_SIDECARSET_HASH).unwrap_err();
        assert!(err.to_string().contains("unmarshal failed"), "{err}");
    }
}
