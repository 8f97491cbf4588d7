//! SidecarSet validation with OpenKruise's rules and messages
//! (`pkg/webhook/sidecarset/validating/`): name, selectors, containers,
//! strategies, `patchPodMetadata` against the whitelist in the
//! `kruise-configuration` ConfigMap, immutability on update, and conflicts
//! with the other SidecarSets that can select the same pods. Messages are
//! Kubernetes field errors (`spec.selector: Required value: …`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keelson_api::apps::v1alpha1::sidecarset as a1;
use keelson_api::apps::v1beta1::sidecarset::SidecarSet;
use keelson_api::conversion::LABEL_METADATA_NAME;
use serde::Deserialize;

use super::matching::is_empty;
use crate::workload::percent;

/// The `kruise-configuration` key holding the patchPodMetadata whitelist.
pub const WHITELIST_KEY: &str = "SidecarSet_PatchPodMetadata_WhiteList";
/// The ConfigMap (in the controller's namespace) that holds it.
pub const CONFIGURATION_CONFIGMAP: &str = "kruise-configuration";

/// The patchPodMetadata whitelist: per rule, an optional selector over the
/// SidecarSet's labels and the annotation keys (regular expressions,
/// unanchored as Go's `MatchString`) it may patch.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Whitelist {
    #[serde(default)]
    pub rules: Vec<WhitelistRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WhitelistRule {
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    #[serde(default)]
    pub allowed_annotation_key_exprs: Vec<String>,
}

fn required(path: &str, detail: &str) -> String {
    format!("{path}: Required value: {detail}")
}

fn invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {value:?}: {detail}")
}

fn name_errors(name: &str) -> Vec<String> {
    let mut errs = vec![];
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ok {
        errs.push(invalid(
            "metadata.name",
            name,
            "a valid sidecarset name must consist of alphanumeric characters or '-' (e.g. 'example-com', regex used for validation is '^[a-zA-Z0-9\\-]+$')",
        ));
    }
    if name.len() > 63 {
        errs.push(invalid(
            "metadata.name",
            name,
            "must be no more than 63 characters",
        ));
    }
    errs
}

fn selector_errors(s: &LabelSelector, path: &str) -> Vec<String> {
    let mut errs = vec![];
    if is_empty(s) {
        errs.push(invalid(
            path,
            "{}",
            "empty selector is not valid for sidecarset.",
        ));
    }
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let bad = match e.operator.as_str() {
            "In" | "NotIn" => values.is_empty(),
            "Exists" | "DoesNotExist" => !values.is_empty(),
            _ => true,
        };
        if bad {
            errs.push(invalid(
                &format!("{path}.matchExpressions"),
                &e.operator,
                "invalid label selector requirement",
            ));
        }
    }
    errs
}

fn int_or_percent_errors(v: &Option<IntOrString>, path: &str) -> Vec<String> {
    match v {
        Some(IntOrString::Int(i)) if *i < 0 => vec![invalid(
            path,
            &i.to_string(),
            "must be greater than or equal to 0",
        )],
        Some(v @ IntOrString::String(s)) => match percent::scaled(v, 100, false) {
            Ok(p) if (0..=100).contains(&p) => vec![],
            _ => vec![invalid(
                path,
                s,
                "a valid percent string must be a numeric string followed by an ending '%'",
            )],
        },
        _ => vec![],
    }
}

fn is_native(c: &a1::SidecarContainer) -> bool {
    c.container.restart_policy.as_deref() == Some("Always")
}

/// Whether two selectors can select the same labels (upstream's
/// `IsSelectorOverlapping`: not disjoint either way round).
pub fn overlapping(a: &LabelSelector, b: &LabelSelector) -> bool {
    !(disjoint(a, b) || disjoint(b, a))
}

fn disjoint(a: &LabelSelector, b: &LabelSelector) -> bool {
    let mut allowed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in a.match_labels.iter().flatten() {
        allowed.insert(k, vec![v]);
    }
    for e in a.match_expressions.iter().flatten() {
        match e.operator.as_str() {
            "In" => allowed
                .entry(&e.key)
                .or_default()
                .extend(e.values.iter().flatten().map(String::as_str)),
            "Exists" => {
                allowed.insert(&e.key, vec!["ALL"]);
            }
            _ => {}
        }
    }
    for (k, v) in b.match_labels.iter().flatten() {
        if let Some(vals) = allowed.get(k.as_str())
            && !vals.contains(&"ALL")
            && !vals.contains(&v.as_str())
        {
            return true;
        }
    }
    for e in b.match_expressions.iter().flatten() {
        let vals = allowed.get(e.key.as_str());
        let req: Vec<&str> = e.values.iter().flatten().map(String::as_str).collect();
        let hit = match e.operator.as_str() {
            "In" => vals.is_some_and(|v| !v.contains(&"ALL") && !v.iter().any(|x| req.contains(x))),
            "NotIn" => vals.is_some_and(|v| v.iter().all(|x| req.contains(x))),
            "Exists" => vals.is_none(),
            "DoesNotExist" => vals.is_some(),
            _ => false,
        };
        if hit {
            return true;
        }
    }
    false
}

/// Whether two SidecarSets' namespace scopes can overlap: only two
/// selectors naming different namespaces by `kubernetes.io/metadata.name`
/// are known apart (namespace labels are not consulted).
fn namespaces_overlap(a: &SidecarSet, b: &SidecarSet) -> bool {
    let name = |s: &SidecarSet| {
        s.spec
            .namespace_selector
            .as_ref()
            .and_then(|n| n.match_labels.as_ref())
            .and_then(|m| m.get(LABEL_METADATA_NAME))
            .cloned()
    };
    match (name(a), name(b)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

/// Whether a patched annotation key is whitelisted for `set`; the error
/// text when not.
fn whitelist_error(
    set: &SidecarSet,
    whitelist: Option<&Whitelist>,
    defaults_allowed: bool,
) -> Option<String> {
    if set.spec.patch_pod_metadata.is_empty() {
        return None;
    }
    let Some(w) = whitelist else {
        return (!defaults_allowed).then(|| "SidecarSet patch metadata whitelist not found".into());
    };
    let empty = BTreeMap::new();
    let labels = set.metadata.labels.as_ref().unwrap_or(&empty);
    let mut exprs = vec![];
    for rule in &w.rules {
        if let Some(s) = &rule.selector
            && !crate::selector::matches(s, labels)
        {
            continue;
        }
        for e in &rule.allowed_annotation_key_exprs {
            match regex::Regex::new(e) {
                Ok(r) => exprs.push(r),
                Err(err) => return Some(err.to_string()),
            }
        }
    }
    if exprs.is_empty() {
        return (!defaults_allowed)
            .then(|| "sidecarSet patch metadata annotation is not allowed".into());
    }
    for p in &set.spec.patch_pod_metadata {
        for k in p.annotations.keys() {
            if !exprs.iter().any(|r| r.is_match(k)) {
                return Some(format!(
                    "sidecarSet patch metadata annotation({k}) is not allowed"
                ));
            }
        }
    }
    None
}

/// What the rules need besides the object.
pub struct Context<'a> {
    /// The object before an update.
    pub old: Option<&'a SidecarSet>,
    /// Every SidecarSet in the cluster (the one validated may be among them).
    pub others: &'a [SidecarSet],
    /// The whitelist, when the ConfigMap has one.
    pub whitelist: Option<&'a Whitelist>,
    /// The `SidecarSetPatchPodMetadataDefaultsAllowed` gate.
    pub patch_defaults_allowed: bool,
    /// When `injectionStrategy.revision` pins a revision that cannot be
    /// found: why (the lookup's error text, `<nil>` when there was none).
    pub pin_missing: Option<String>,
}

/// Every rule `set` (defaulted, v1beta1) breaks.
pub fn validate(set: &SidecarSet, ctx: &Context) -> Vec<String> {
    let spec = &set.spec;
    let mut errs = name_errors(set.metadata.name.as_deref().unwrap_or(""));
    if spec.init_containers.iter().any(is_native)
        && spec.update_strategy.type_ == a1::UPDATE_STRATEGY_ROLLING_UPDATE
    {
        errs.push(required(
            "spec.updateStrategy",
            "The initContainer in-place upgrade is not currently supported.",
        ));
    }
    match &spec.selector {
        None => errs.push(required(
            "spec.selector",
            "no selector defined for SidecarSet",
        )),
        Some(s) => errs.extend(selector_errors(s, "spec.selector")),
    }
    if let Some(s) = &spec.namespace_selector {
        errs.extend(selector_errors(s, "spec.namespaceSelector"));
    }
    if let Some(r) = &spec.injection_strategy.revision {
        if r.revision_name.is_none() && r.custom_version.is_none() {
            errs.push(invalid(
                "revision",
                "",
                "revisionName and customVersion cannot be empty simultaneously",
            ));
        } else if let Some(why) = &ctx.pin_missing {
            errs.push(format!(
                "revision: Invalid value: null: Cannot find specific ControllerRevision, err: {why}"
            ));
        }
        if !matches!(
            r.policy.as_str(),
            a1::INJECT_REVISION_POLICY_ALWAYS | a1::INJECT_REVISION_POLICY_PARTIAL
        ) {
            errs.push(invalid(
                "revision.policy",
                &r.policy,
                &format!(
                    "Invalid policy {}, supported: [{}, {}]",
                    r.policy,
                    a1::INJECT_REVISION_POLICY_ALWAYS,
                    a1::INJECT_REVISION_POLICY_PARTIAL
                ),
            ));
        }
    }
    let u = &spec.update_strategy;
    let partition_set = match &u.partition {
        Some(IntOrString::Int(i)) => *i != 0,
        Some(IntOrString::String(s)) => !s.is_empty() && s != "0" && s != "0%",
        None => false,
    };
    if u.selector.is_some() && partition_set {
        errs.push(invalid(
            "updateStrategy",
            "",
            "Partition and Selector cannot be used together",
        ));
    }
    if let Some(s) = &u.selector {
        errs.extend(selector_errors(s, "spec.updateStrategy.selector"));
    }
    errs.extend(int_or_percent_errors(
        &u.partition,
        "spec.updateStrategy.partition",
    ));
    errs.extend(int_or_percent_errors(
        &u.max_unavailable,
        "spec.updateStrategy.maxUnavailable",
    ));
    if !matches!(
        u.type_.as_str(),
        a1::UPDATE_STRATEGY_ROLLING_UPDATE | a1::UPDATE_STRATEGY_NOT_UPDATE
    ) {
        errs.push(invalid(
            "spec.updateStrategy.type",
            &u.type_,
            "unsupported update strategy type",
        ));
    }
    if spec.init_containers.is_empty() && spec.containers.is_empty() {
        errs.push(required(
            "spec",
            "no initContainer or container defined for SidecarSet",
        ));
    }
    for (list, path) in [
        (&spec.init_containers, "spec.initContainers"),
        (&spec.containers, "spec.containers"),
    ] {
        for c in list.iter() {
            if c.container.name.is_empty() {
                errs.push(required(&format!("{path}.name"), ""));
            }
            if c.container.image.as_deref().is_none_or(str::is_empty)
                && c.upgrade_strategy.upgrade_type != a1::SIDECAR_CONTAINER_HOT_UPGRADE
            {
                errs.push(required(&format!("{path}.image"), ""));
            }
            if path == "spec.containers"
                && !matches!(
                    c.pod_inject_policy.as_str(),
                    a1::POD_INJECT_POLICY_BEFORE_APP_CONTAINER
                        | a1::POD_INJECT_POLICY_AFTER_APP_CONTAINER
                )
            {
                errs.push(invalid(
                    "spec.container.podInjectPolicy",
                    &c.pod_inject_policy,
                    "unsupported pod inject policy",
                ));
            }
            if !matches!(
                c.share_volume_policy.type_.as_str(),
                a1::SHARE_VOLUME_POLICY_ENABLED | a1::SHARE_VOLUME_POLICY_DISABLED
            ) {
                errs.push(invalid(
                    "spec.container.shareVolumePolicy",
                    &c.share_volume_policy.type_,
                    "unsupported share volume policy",
                ));
            }
            if c.upgrade_strategy.upgrade_type == a1::SIDECAR_CONTAINER_HOT_UPGRADE
                && c.upgrade_strategy.hot_upgrade_empty_image.is_empty()
            {
                errs.push(required(
                    &format!("{path}.upgradeStrategy.hotUpgradeEmptyImage"),
                    "hotUpgradeEmptyImage must be set for HotUpgrade",
                ));
            }
            if c.resources_policy.is_some() && path == "spec.initContainers" && !is_native(c) {
                errs.push(invalid(
                    &format!("{path}.resourcesPolicy"),
                    &c.container.name,
                    "resourcesPolicy is only supported for containers with RestartPolicy Always",
                ));
            }
        }
    }
    if let Some(e) = whitelist_error(set, ctx.whitelist, ctx.patch_defaults_allowed) {
        errs.push(required("spec.patchPodMetadata", &e));
    }
    let mut keys = BTreeSet::new();
    for p in &spec.patch_pod_metadata {
        if p.annotations.is_empty() {
            errs.push(required(
                "spec.patchPodMetadata",
                "no annotations defined for SidecarSet",
            ));
        }
        if p.patch_policy.is_empty() {
            errs.push(required(
                "spec.patchPodMetadata",
                "no patchPolicy defined for patchPodMetadata",
            ));
        }
        for k in p.annotations.keys() {
            if !keys.insert(k.clone()) {
                errs.push(required(
                    "spec.patchPodMetadata",
                    &format!("patch annotation[{k}] already exist"),
                ));
            }
        }
    }
    if let Some(old) = ctx.old {
        let before: BTreeMap<&str, &str> = old
            .spec
            .containers
            .iter()
            .map(|c| {
                (
                    c.container.name.as_str(),
                    c.upgrade_strategy.upgrade_type.as_str(),
                )
            })
            .collect();
        for c in &spec.containers {
            let name = &c.container.name;
            match before.get(name.as_str()) {
                Some(t) if !t.is_empty() && *t != c.upgrade_strategy.upgrade_type => {
                    errs.push(invalid(
                        "spec.containers.upgradeStrategy.upgradeType",
                        name,
                        &format!("container {name} upgradeType is immutable"),
                    ))
                }
                Some(_) => {}
                None => errs.push(invalid(
                    "spec.containers.name",
                    name,
                    &format!("container {name} is not found"),
                )),
            }
        }
    }
    if errs.is_empty() {
        errs.extend(conflicts(set, ctx.others));
    }
    errs
}

/// Conflicts with the other SidecarSets whose namespaces and selectors
/// overlap this one's: same container or init container name, a
/// same-named volume that differs, an annotation both patch where either
/// overwrites.
fn conflicts(set: &SidecarSet, others: &[SidecarSet]) -> Vec<String> {
    let mut errs = vec![];
    let me = set.metadata.name.as_deref().unwrap_or("");
    let Some(sel) = &set.spec.selector else {
        return errs;
    };
    for other in others {
        let name = other.metadata.name.as_deref().unwrap_or("");
        if name == me {
            continue;
        }
        let overlaps = other
            .spec
            .selector
            .as_ref()
            .is_some_and(|o| overlapping(sel, o))
            && namespaces_overlap(set, other);
        if !overlaps {
            continue;
        }
        for (mine, theirs) in [
            (&set.spec.init_containers, &other.spec.init_containers),
            (&set.spec.containers, &other.spec.containers),
        ] {
            for c in mine.iter() {
                if theirs.iter().any(|t| t.container.name == c.container.name) {
                    errs.push(invalid(
                        "spec.containers",
                        &c.container.name,
                        &format!("container {} already exist in {name}", c.container.name),
                    ));
                }
            }
        }
        for v in &set.spec.volumes {
            if other
                .spec
                .volumes
                .iter()
                .any(|o| o.name == v.name && o != v)
            {
                errs.push(invalid(
                    "spec.volumes",
                    &v.name,
                    &format!("volume {} is in conflict with sidecarset {name}", v.name),
                ));
            }
        }
        for p in &set.spec.patch_pod_metadata {
            if p.patch_policy == a1::PATCH_POLICY_RETAIN {
                continue;
            }
            for k in p.annotations.keys() {
                let clash = other.spec.patch_pod_metadata.iter().any(|o| {
                    o.patch_policy != a1::PATCH_POLICY_RETAIN
                        && o.annotations.contains_key(k)
                        && (p.patch_policy == a1::PATCH_POLICY_OVERWRITE
                            || o.patch_policy == a1::PATCH_POLICY_OVERWRITE)
                });
                if clash {
                    errs.push(invalid(
                        "spec.patchPodMetadata",
                        k,
                        &format!("annotation {k} is in conflict with sidecarset {name}"),
                    ));
                }
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn set(name: &str, spec: Value) -> SidecarSet {
        let mut obj = json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "SidecarSet",
                             "metadata": {"name": name}, "spec": spec});
        super::super::defaults::default_and_hash(&mut obj);
        serde_json::from_value(obj).unwrap()
    }

    fn ctx<'a>(others: &'a [SidecarSet]) -> Context<'a> {
        Context {
            old: None,
            others,
            whitelist: None,
            patch_defaults_allowed: false,
            pin_missing: None,
        }
    }

    fn plain() -> Value {
        json!({"selector": {"matchLabels": {"app": "web"}}, "containers": [{"name": "c", "image": "c:1"}]})
    }

    #[test]
    fn a_plain_sidecarset_is_valid() {
        assert_eq!(
            validate(&set("ok", plain()), &ctx(&[])),
            Vec::<String>::new()
        );
    }

    #[test]
    fn upstream_messages() {
        let native = set(
            "n",
            json!({"selector": {"matchLabels": {"a": "b"}},
            "initContainers": [{"name": "s", "image": "s:1", "restartPolicy": "Always"}]}),
        );
        assert_eq!(
            validate(&native, &ctx(&[])),
            [
                "spec.updateStrategy: Required value: The initContainer in-place upgrade is not currently supported."
            ]
        );
        let none = set("x", json!({"containers": [{"name": "c", "image": "c:1"}]}));
        assert_eq!(
            validate(&none, &ctx(&[])),
            ["spec.selector: Required value: no selector defined for SidecarSet"]
        );
        let empty = set("x", json!({"selector": {}}));
        let errs = validate(&empty, &ctx(&[]));
        assert!(
            errs.iter()
                .any(|e| e.ends_with("empty selector is not valid for sidecarset.")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.ends_with("no initContainer or container defined for SidecarSet")),
            "{errs:?}"
        );
        let mut both = plain();
        both["updateStrategy"] = json!({"partition": 2, "selector": {"matchLabels": {"a": "b"}}});
        let errs = validate(&set("x", both), &ctx(&[]));
        assert!(
            errs.iter()
                .any(|e| e.ends_with("Partition and Selector cannot be used together")),
            "{errs:?}"
        );
        let errs = validate(&set("bad_name", plain()), &ctx(&[]));
        assert!(
            errs[0].starts_with("metadata.name: Invalid value: \"bad_name\""),
            "{errs:?}"
        );
    }

    #[test]
    fn a_pin_to_a_missing_revision_is_refused() {
        let mut spec = plain();
        spec["injectionStrategy"] = json!({"revision": {"customVersion": "v9"}});
        let s = set("s", spec);
        let errs = validate(
            &s,
            &Context {
                pin_missing: Some("<nil>".into()),
                ..ctx(&[])
            },
        );
        assert_eq!(
            errs,
            ["revision: Invalid value: null: Cannot find specific ControllerRevision, err: <nil>"]
        );
    }

    #[test]
    fn containers_cannot_be_added_and_upgrade_type_is_immutable() {
        let old = set("s", plain());
        let mut spec = plain();
        spec["containers"] = json!([{"name": "c", "image": "c:2", "upgradeStrategy": {"upgradeType": "HotUpgrade", "hotUpgradeEmptyImage": "e"}},
                                    {"name": "new", "image": "n:1"}]);
        let new = set("s", spec);
        let errs = validate(
            &new,
            &Context {
                old: Some(&old),
                ..ctx(&[])
            },
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].ends_with("container c upgradeType is immutable"));
        assert!(errs[1].ends_with("container new is not found"));
    }

    #[test]
    fn conflicts_with_overlapping_sidecarsets_only() {
        let other = set("other", plain());
        let disjoint = set(
            "far",
            json!({"selector": {"matchLabels": {"app": "db"}}, "containers": [{"name": "c", "image": "c:1"}]}),
        );
        let errs = validate(&set("me", plain()), &ctx(std::slice::from_ref(&other)));
        assert_eq!(
            errs,
            ["spec.containers: Invalid value: \"c\": container c already exist in other"]
        );
        assert!(validate(&disjoint, &ctx(&[other])).is_empty());
    }

    #[test]
    fn patch_pod_metadata_needs_the_whitelist() {
        let mut spec = plain();
        spec["patchPodMetadata"] = json!([{"annotations": {"mesh.io/inject": "true"}}]);
        let s = set("s", spec);
        assert_eq!(
            validate(&s, &ctx(&[])),
            [
                "spec.patchPodMetadata: Required value: SidecarSet patch metadata whitelist not found"
            ]
        );
        let allowed: Whitelist = serde_json::from_value(
            json!({"rules": [{"allowedAnnotationKeyExprs": ["^mesh\\.io/"]}]}),
        )
        .unwrap();
        assert!(
            validate(
                &s,
                &Context {
                    whitelist: Some(&allowed),
                    ..ctx(&[])
                }
            )
            .is_empty()
        );
        let other: Whitelist =
            serde_json::from_value(json!({"rules": [{"allowedAnnotationKeyExprs": ["^x/"]}]}))
                .unwrap();
        assert_eq!(
            validate(
                &s,
                &Context {
                    whitelist: Some(&other),
                    ..ctx(&[])
                }
            ),
            [
                "spec.patchPodMetadata: Required value: sidecarSet patch metadata annotation(mesh.io/inject) is not allowed"
            ]
        );
        assert!(
            validate(
                &s,
                &Context {
                    patch_defaults_allowed: true,
                    ..ctx(&[])
                }
            )
            .is_empty()
        );
    }

    #[test]
    fn selector_overlap_as_upstream() {
        let s = |v: Value| serde_json::from_value::<LabelSelector>(v).unwrap();
        assert!(overlapping(
            &s(json!({"matchLabels": {"a": "1"}})),
            &s(json!({"matchLabels": {"b": "2"}}))
        ));
        assert!(!overlapping(
            &s(json!({"matchLabels": {"a": "1"}})),
            &s(json!({"matchLabels": {"a": "2"}}))
        ));
        assert!(!overlapping(
            &s(json!({"matchLabels": {"a": "1"}})),
            &s(json!({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}))
        ));
    }
}
