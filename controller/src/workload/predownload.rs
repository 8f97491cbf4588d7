//! Image pre-download before an update, shared by CloneSet, Advanced
//! StatefulSet and Advanced DaemonSet (OpenKruise's
//! `PreDownloadImageForInPlaceUpdate` / `PreDownloadImageForDaemonSetUpdate`):
//! once per update revision, one ImagePullJob per changed container
//! image, owned by the workload and aimed at the nodes of its pods not yet
//! on that revision (OpenKruise's `CreateJobForWorkload` shape). The
//! revision is then labelled `apps.kruise.io/pre-predownload-created` (or
//! `-ignored` when the rollout does not qualify, which each workload
//! decides), and the jobs go once the rollout is done.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keelson_api::apps::v1alpha1::cloneset::{
    IMAGE_PRE_DOWNLOAD_CREATED_KEY, IMAGE_PRE_DOWNLOAD_IGNORED_KEY,
};
use keelson_api::apps::v1alpha1::imagepulljob::{
    CompletionPolicy, ImagePullJob, ImagePullJobSpec, ImagePullJobTemplate, PullPolicy,
    SandboxConfig,
};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::Recorder;
use serde_json::{Value, json};

use super::percent::scaled;
use super::revision::{CONTROLLER_REVISION_HASH_LABEL, POD_REVISION_LABEL, short_hash};

/// Workload annotation: how many nodes pull at once (default 1).
pub const PARALLELISM_KEY: &str = "apps.kruise.io/image-predownload-parallelism";
/// Workload annotation: the pull timeout in seconds (default 300).
pub const TIMEOUT_KEY: &str = "apps.kruise.io/image-predownload-timeout-seconds";
/// Workload annotation: updated-and-ready pods (int or percent of
/// replicas) before the pre-download starts (default 0).
pub const MIN_UPDATED_READY_KEY: &str = "apps.kruise.io/image-predownload-min-updated-ready-pods";

/// What to do about pre-download this reconcile.
#[derive(Debug, Clone)]
pub enum Decision {
    Nothing,
    /// The rollout is done: the workload's ImagePullJobs go.
    DeleteJobs,
    /// Label the update revision with `label` = "true", creating `jobs`
    /// first.
    Mark {
        label: &'static str,
        jobs: Vec<ImagePullJob>,
    },
}

impl Decision {
    /// The rollout does not qualify: the revision is marked ignored.
    pub fn ignore() -> Self {
        Decision::Mark {
            label: IMAGE_PRE_DOWNLOAD_IGNORED_KEY,
            jobs: vec![],
        }
    }
}

/// Whether the revision was already handled (jobs made or ignored).
pub fn decided(revision: &ControllerRevision) -> bool {
    revision.metadata.labels.as_ref().is_some_and(|l| {
        l.contains_key(IMAGE_PRE_DOWNLOAD_CREATED_KEY)
            || l.contains_key(IMAGE_PRE_DOWNLOAD_IGNORED_KEY)
    })
}

/// The revision's hash: its `controller.kubernetes.io/hash` label, else
/// the last segment of its name.
pub fn revision_hash(revision: &ControllerRevision) -> String {
    let name = revision.metadata.name.as_deref().unwrap_or("");
    revision
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL))
        .cloned()
        .unwrap_or_else(|| short_hash(name).to_string())
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// `apps.kruise.io/image-predownload-min-updated-ready-pods` resolved
/// against `total` (int, or percent rounded up; unparsable ⇒ 0).
pub fn min_updated_ready(meta: &ObjectMeta, total: i32) -> i32 {
    annotation(meta, MIN_UPDATED_READY_KEY)
        .map(|v| match v.parse::<i32>() {
            Ok(i) => IntOrString::Int(i),
            Err(_) => IntOrString::String(v.to_string()),
        })
        .and_then(|v| scaled(&v, total, true).ok())
        .unwrap_or(0)
}

/// Container name → image of a pod template.
pub fn images(template: &Value) -> BTreeMap<String, String> {
    template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c["name"].as_str()?.to_string(),
                c["image"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The containers of `new` whose image is worth pulling: those no old
/// template has, and those some old template runs with another image.
pub fn changed_images(old: &[&Value], new: &Value) -> BTreeMap<String, String> {
    let olds: Vec<BTreeMap<String, String>> = old.iter().map(|t| images(t)).collect();
    images(new)
        .into_iter()
        .filter(|(name, image)| {
            let seen: Vec<&String> = olds.iter().filter_map(|o| o.get(name)).collect();
            seen.is_empty() || seen.iter().any(|i| *i != image)
        })
        .collect()
}

/// The workload the jobs are for.
pub struct Owner<'a> {
    /// Its metadata (namespace and the pre-download annotations).
    pub meta: &'a ObjectMeta,
    /// The controller reference the jobs carry.
    pub reference: &'a OwnerReference,
    /// Its pod selector.
    pub selector: &'a LabelSelector,
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default()
}

/// One ImagePullJob per entry of `images` (container → image), named
/// `<revision>-<container>`, for the pods of `owner` not labelled with
/// `revision` or `hash`; labels are the template's plus the revision hash,
/// pull secrets and sandbox metadata come from `template`.
pub fn jobs(
    owner: &Owner,
    revision: &str,
    hash: &str,
    template: &Value,
    images: &BTreeMap<String, String>,
) -> Vec<ImagePullJob> {
    let mut selector = owner.selector.clone();
    selector
        .match_expressions
        .get_or_insert_with(Vec::new)
        .push(LabelSelectorRequirement {
            key: POD_REVISION_LABEL.into(),
            operator: "NotIn".into(),
            values: Some(vec![revision.to_string(), hash.to_string()]),
        });
    let parallelism = annotation(owner.meta, PARALLELISM_KEY)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let timeout = annotation(owner.meta, TIMEOUT_KEY)
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let pull_secrets: Vec<String> = template
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    let mut labels = string_map(template.pointer("/metadata/labels"));
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.into());
    let annotations = string_map(template.pointer("/metadata/annotations"));
    images
        .iter()
        .map(|(container, image)| ImagePullJob {
            metadata: ObjectMeta {
                name: Some(format!("{revision}-{container}")),
                namespace: owner.meta.namespace.clone(),
                labels: Some(labels.clone()),
                owner_references: Some(vec![owner.reference.clone()]),
                ..Default::default()
            },
            spec: ImagePullJobSpec {
                image: image.clone(),
                template: ImagePullJobTemplate {
                    pull_secrets: pull_secrets.clone(),
                    pod_selector: Some(selector.clone()),
                    parallelism: Some(IntOrString::Int(parallelism)),
                    pull_policy: Some(PullPolicy {
                        timeout_seconds: Some(timeout),
                        backoff_limit: Some(1),
                    }),
                    completion_policy: CompletionPolicy {
                        type_: Some("Always".into()),
                        active_deadline_seconds: None,
                        ttl_seconds_after_finished: Some(600),
                    },
                    sandbox_config: Some(SandboxConfig {
                        labels: labels.clone(),
                        annotations: annotations.clone(),
                    }),
                    ..Default::default()
                },
            },
            status: None,
        })
        .collect()
}

/// Where a decision is carried out.
pub struct Target<'a> {
    pub client: &'a kube::Client,
    pub recorder: &'a Recorder,
    /// The workload, for events.
    pub reference: ObjectReference,
    pub namespace: &'a str,
    /// The workload's UID: the jobs it controls.
    pub uid: &'a str,
}

fn gone_ok<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if crate::api_call::status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Carries out `decision` for the update revision `update`: deletes the
/// workload's jobs, or creates the new ones (already existing is fine;
/// events `CreatedImagePullJob` / `FailedCreateImagePullJob`) and labels
/// the revision.
pub async fn carry_out(
    target: &Target<'_>,
    update: &ControllerRevision,
    decision: Decision,
) -> Result<(), kube::Error> {
    let jobs: Api<ImagePullJob> = Api::namespaced(target.client.clone(), target.namespace);
    let publish = |warning: bool, reason: &str, note: String| {
        crate::events::publish(
            target.recorder,
            target.reference.clone(),
            warning,
            reason,
            note,
        );
    };
    match decision {
        Decision::Nothing => {}
        Decision::DeleteJobs => {
            for j in jobs.list(&ListParams::default()).await?.items {
                if crate::api_call::controlled_by(&j.metadata, target.uid) {
                    tracing::info!(namespace = %target.namespace, job = %j.name_any(), "deleting pre-download ImagePullJob: rollout done");
                    gone_ok(
                        jobs.delete(&j.name_any(), &DeleteParams::background())
                            .await,
                    )?;
                }
            }
        }
        Decision::Mark { label, jobs: new } => {
            for job in &new {
                match jobs.create(&PostParams::default(), job).await {
                    Ok(_) => {
                        tracing::info!(namespace = %target.namespace, job = %job.name_any(), image = %job.spec.image, "created pre-download ImagePullJob");
                        publish(
                            false,
                            "CreatedImagePullJob",
                            format!(
                                "created ImagePullJob {} for image: {}",
                                job.name_any(),
                                job.spec.image
                            ),
                        );
                    }
                    Err(e) if crate::api_call::status_code(&e) == Some(409) => {}
                    Err(e) => {
                        publish(
                            true,
                            "FailedCreateImagePullJob",
                            format!("failed to create ImagePullJob {}: {e}", job.name_any()),
                        );
                        return Err(e);
                    }
                }
            }
            let patch = json!({"metadata": {"labels": {label: "true"}}});
            let revisions: Api<ControllerRevision> =
                Api::namespaced(target.client.clone(), target.namespace);
            revisions
                .patch(
                    &update.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(main: &str, side: Option<&str>) -> Value {
        let mut cs = vec![json!({"name": "main", "image": main})];
        if let Some(s) = side {
            cs.push(json!({"name": "side", "image": s}));
        }
        json!({"metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
            "spec": {"containers": cs, "imagePullSecrets": [{"name": "reg"}]}})
    }

    #[test]
    fn changed_images_against_every_old_template() {
        let new = t("nginx:2", Some("side:1"));
        // Same as the only old one: nothing to pull.
        assert!(changed_images(&[&t("nginx:2", Some("side:1"))], &new).is_empty());
        // Changed and new containers.
        assert_eq!(
            changed_images(&[&t("nginx:1", None)], &new),
            BTreeMap::from([
                ("main".to_string(), "nginx:2".to_string()),
                ("side".to_string(), "side:1".to_string())
            ])
        );
        // One old revision differing is enough.
        assert_eq!(
            changed_images(
                &[&t("nginx:2", Some("side:1")), &t("nginx:1", Some("side:1"))],
                &new
            )
            .keys()
            .collect::<Vec<_>>(),
            vec!["main"]
        );
        // No old revision at all: every image.
        assert_eq!(changed_images(&[], &new).len(), 2);
    }

    #[test]
    fn job_shape_as_upstream() {
        let meta = ObjectMeta {
            name: Some("web".into()),
            namespace: Some("ns".into()),
            annotations: Some(BTreeMap::from([
                (PARALLELISM_KEY.to_string(), "2".to_string()),
                (TIMEOUT_KEY.to_string(), "60".to_string()),
            ])),
            ..Default::default()
        };
        let reference = OwnerReference {
            api_version: "apps.kruise.io/v1alpha1".into(),
            kind: "DaemonSet".into(),
            name: "web".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            match_expressions: None,
        };
        let owner = Owner {
            meta: &meta,
            reference: &reference,
            selector: &selector,
        };
        let template = t("nginx:2", None);
        let js = jobs(&owner, "web-h2", "h2", &template, &images(&template));
        assert_eq!(js.len(), 1);
        let j = &js[0];
        assert_eq!(j.metadata.name.as_deref(), Some("web-h2-main"));
        assert_eq!(j.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(
            j.metadata.owner_references.as_ref().unwrap()[0].kind,
            "DaemonSet"
        );
        let labels = j.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[CONTROLLER_REVISION_HASH_LABEL], "h2");
        let tpl = &j.spec.template;
        assert_eq!(tpl.pull_secrets, vec!["reg".to_string()]);
        assert_eq!(tpl.parallelism, Some(IntOrString::Int(2)));
        let pp = tpl.pull_policy.as_ref().unwrap();
        assert_eq!((pp.timeout_seconds, pp.backoff_limit), (Some(60), Some(1)));
        assert_eq!(tpl.completion_policy.type_.as_deref(), Some("Always"));
        assert_eq!(tpl.completion_policy.ttl_seconds_after_finished, Some(600));
        let sb = tpl.sandbox_config.as_ref().unwrap();
        assert_eq!(sb.labels[CONTROLLER_REVISION_HASH_LABEL], "h2");
        assert_eq!(sb.annotations["a"], "b");
        let sel = tpl.pod_selector.as_ref().unwrap();
        assert_eq!(sel.match_labels, selector.match_labels);
        let e = &sel.match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (e.key.as_str(), e.operator.as_str()),
            (POD_REVISION_LABEL, "NotIn")
        );
        assert_eq!(
            e.values.as_deref(),
            Some(&["web-h2".to_string(), "h2".to_string()][..])
        );
    }

    #[test]
    fn min_updated_ready_int_or_percent() {
        let meta = |v: &str| ObjectMeta {
            annotations: Some(BTreeMap::from([(
                MIN_UPDATED_READY_KEY.to_string(),
                v.to_string(),
            )])),
            ..Default::default()
        };
        assert_eq!(min_updated_ready(&ObjectMeta::default(), 10), 0);
        assert_eq!(min_updated_ready(&meta("3"), 10), 3);
        assert_eq!(min_updated_ready(&meta("25%"), 10), 3);
        assert_eq!(min_updated_ready(&meta("x"), 10), 0);
    }

    #[test]
    fn decided_and_hash_from_labels() {
        let rev = |labels: &[(&str, &str)]| ControllerRevision {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            data: None,
            revision: 1,
        };
        assert!(!decided(&rev(&[])));
        assert!(decided(&rev(&[(IMAGE_PRE_DOWNLOAD_IGNORED_KEY, "true")])));
        assert!(decided(&rev(&[(IMAGE_PRE_DOWNLOAD_CREATED_KEY, "true")])));
        assert_eq!(revision_hash(&rev(&[])), "abc");
        assert_eq!(
            revision_hash(&rev(&[(CONTROLLER_REVISION_HASH_LABEL, "xyz")])),
            "xyz"
        );
    }
}

/// What the workloads' pre-download tests build their cases from.
#[cfg(test)]
pub mod fixtures {
    use k8s_openapi::api::apps::v1::ControllerRevision;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    /// Revision `name` (revision number 2) with `labels`.
    pub fn revision(name: &str, labels: &[(&str, &str)]) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            data: None,
            revision: 2,
        }
    }

    /// The controller reference of workload `kind`/`name` (uid `u`).
    pub fn owner(api_version: &str, kind: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}
