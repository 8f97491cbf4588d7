//! Image pre-download before an in-place update (OpenKruise's
//! `PreDownloadImageForInPlaceUpdate` gate): once per update revision, one
//! ImagePullJob per changed container image, owned by the CloneSet and
//! aimed at the nodes of its pods not yet on that revision, so the new
//! image is on the node before the container restarts. The revision is
//! labelled `apps.kruise.io/pre-predownload-created` (or `-ignored` when
//! the rollout does not qualify); the jobs go once the rollout is done.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keelson_api::apps::v1alpha1::cloneset::{
    CloneSet, IMAGE_PRE_DOWNLOAD_CREATED_KEY, IMAGE_PRE_DOWNLOAD_IGNORED_KEY,
};
use keelson_api::apps::v1alpha1::imagepulljob::{
    CompletionPolicy, ImagePullJob, ImagePullJobSpec, ImagePullJobTemplate, PullPolicy,
};
use serde_json::Value;

use super::numbers;
use crate::workload::inplace::{self, Diff};
use crate::workload::percent::scaled;
use crate::workload::revision::{CONTROLLER_REVISION_HASH_LABEL, POD_REVISION_LABEL, short_hash};

/// CloneSet annotation: how many nodes pull at once (default 1).
pub const PARALLELISM_KEY: &str = "apps.kruise.io/image-predownload-parallelism";
/// CloneSet annotation: the pull timeout in seconds (default 300).
pub const TIMEOUT_KEY: &str = "apps.kruise.io/image-predownload-timeout-seconds";
/// CloneSet annotation: updated-and-ready pods (int or percent of
/// replicas) before the pre-download starts (default 0).
pub const MIN_UPDATED_READY_KEY: &str = "apps.kruise.io/image-predownload-min-updated-ready-pods";

/// What to do about pre-download this reconcile.
#[derive(Debug, Clone)]
pub enum Decision {
    Nothing,
    /// The rollout is done: the CloneSet's ImagePullJobs go.
    DeleteJobs,
    /// Label the update revision with `label` = "true", creating `jobs`
    /// first.
    Mark {
        label: &'static str,
        jobs: Vec<ImagePullJob>,
    },
}

fn annotation<'a>(cs: &'a CloneSet, key: &str) -> Option<&'a str> {
    cs.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn images(template: &Value) -> BTreeMap<String, String> {
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

/// The decision for `cs` whose update revision is `update` (with its
/// template) and whose current revision's template is `current`.
pub fn decide(
    cs: &CloneSet,
    owner: &OwnerReference,
    update: &ControllerRevision,
    update_template: &Value,
    current: Option<&Value>,
    current_is_update: bool,
) -> Decision {
    if current_is_update {
        return Decision::DeleteJobs;
    }
    let labels = update.metadata.labels.clone().unwrap_or_default();
    if labels.contains_key(IMAGE_PRE_DOWNLOAD_CREATED_KEY)
        || labels.contains_key(IMAGE_PRE_DOWNLOAD_IGNORED_KEY)
    {
        return Decision::Nothing;
    }
    let replicas = numbers::replicas(cs);
    let rev_name = update.metadata.name.clone().unwrap_or_default();
    let status = cs.status.clone().unwrap_or_default();
    let updated_ready = if status.update_revision.as_deref() == Some(rev_name.as_str()) {
        status.updated_ready_replicas
    } else {
        0
    };
    let min = annotation(cs, MIN_UPDATED_READY_KEY)
        .map(|v| match v.parse::<i32>() {
            Ok(i) => IntOrString::Int(i),
            Err(_) => IntOrString::String(v.to_string()),
        })
        .and_then(|v| scaled(&v, replicas, true).ok())
        .unwrap_or(0);
    if updated_ready < min {
        return Decision::Nothing;
    }
    let ignore = Decision::Mark {
        label: IMAGE_PRE_DOWNLOAD_IGNORED_KEY,
        jobs: vec![],
    };
    let strategy = cs
        .spec
        .update_strategy
        .type_
        .as_deref()
        .unwrap_or("ReCreate");
    if strategy == "ReCreate" || replicas <= 3 {
        return ignore;
    }
    let partition = numbers::partition(cs).unwrap_or(0);
    let max_unavailable = cs
        .spec
        .update_strategy
        .max_unavailable
        .as_ref()
        .and_then(|m| scaled(m, replicas, false).ok())
        .unwrap_or(1);
    if partition == 0 && max_unavailable >= replicas {
        return ignore;
    }
    let Some(current) = current else {
        return ignore;
    };
    if !matches!(
        inplace::diff(current, update_template, true),
        Ok(Diff::InPlace(_))
    ) {
        return ignore;
    }
    let (old, new) = (images(current), images(update_template));
    let mut selector = cs.spec.selector.clone();
    selector
        .match_expressions
        .get_or_insert_with(Vec::new)
        .push(LabelSelectorRequirement {
            key: POD_REVISION_LABEL.into(),
            operator: "NotIn".into(),
            values: Some(vec![rev_name.clone(), short_hash(&rev_name).to_string()]),
        });
    let parallelism = annotation(cs, PARALLELISM_KEY)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let timeout = annotation(cs, TIMEOUT_KEY)
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let pull_secrets: Vec<String> = update_template
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    let mut job_labels: BTreeMap<String, String> = update_template
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    job_labels.insert(
        CONTROLLER_REVISION_HASH_LABEL.into(),
        short_hash(&rev_name).into(),
    );
    let jobs = new
        .iter()
        .filter(|(c, image)| old.get(*c) != Some(*image))
        .map(|(container, image)| ImagePullJob {
            metadata: ObjectMeta {
                name: Some(format!("{rev_name}-{container}")),
                namespace: cs.metadata.namespace.clone(),
                labels: Some(job_labels.clone()),
                owner_references: Some(vec![owner.clone()]),
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
                    ..Default::default()
                },
            },
            status: None,
        })
        .collect();
    Decision::Mark {
        label: IMAGE_PRE_DOWNLOAD_CREATED_KEY,
        jobs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cs(replicas: i32, strategy: &str, partition: i32) -> CloneSet {
        serde_saphyr::from_str(&format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: CloneSet\nmetadata: {{name: web, namespace: ns, annotations: {{apps.kruise.io/image-predownload-parallelism: '3'}}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: main, image: 'nginx:1'}}]}}\n  updateStrategy: {{type: {strategy}, partition: {partition}, maxUnavailable: 1}}\n"
        ))
        .unwrap()
    }

    fn t(main: &str, side: &str) -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "main", "image": main}, {"name": "side", "image": side}]}})
    }

    fn rev(labels: &[(&str, &str)]) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some("web-h2".into()),
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

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "apps.kruise.io/v1alpha1".into(),
            kind: "CloneSet".into(),
            name: "web".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn one_job_per_changed_image_aimed_at_pods_not_yet_updated() {
        let d = decide(
            &cs(5, "InPlaceIfPossible", 0),
            &owner(),
            &rev(&[]),
            &t("nginx:2", "busybox"),
            Some(&t("nginx:1", "busybox")),
            false,
        );
        let Decision::Mark { label, jobs } = d else {
            panic!("{d:?}")
        };
        assert_eq!(label, IMAGE_PRE_DOWNLOAD_CREATED_KEY);
        assert_eq!(jobs.len(), 1);
        let j = &jobs[0];
        assert_eq!(j.metadata.name.as_deref(), Some("web-h2-main"));
        assert_eq!(j.spec.image, "nginx:2");
        assert_eq!(j.spec.template.parallelism, Some(IntOrString::Int(3)));
        let sel = j.spec.template.pod_selector.as_ref().unwrap();
        let e = &sel.match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (e.key.as_str(), e.operator.as_str()),
            ("controller-revision-hash", "NotIn")
        );
        assert_eq!(
            e.values.as_ref().unwrap(),
            &vec!["web-h2".to_string(), "h2".to_string()]
        );
    }

    #[test]
    fn skipped_or_done_as_upstream() {
        let (new, old) = (t("nginx:2", "b"), t("nginx:1", "b"));
        let ignored = |d: Decision| matches!(d, Decision::Mark { label, .. } if label == IMAGE_PRE_DOWNLOAD_IGNORED_KEY);
        assert!(ignored(decide(
            &cs(5, "ReCreate", 0),
            &owner(),
            &rev(&[]),
            &new,
            Some(&old),
            false
        )));
        assert!(ignored(decide(
            &cs(3, "InPlaceIfPossible", 0),
            &owner(),
            &rev(&[]),
            &new,
            Some(&old),
            false
        )));
        let mut cmd = new.clone();
        cmd["spec"]["containers"][0]["command"] = json!(["sh"]);
        assert!(ignored(decide(
            &cs(5, "InPlaceIfPossible", 0),
            &owner(),
            &rev(&[]),
            &cmd,
            Some(&old),
            false
        )));
        assert!(matches!(
            decide(
                &cs(5, "InPlaceIfPossible", 0),
                &owner(),
                &rev(&[(IMAGE_PRE_DOWNLOAD_CREATED_KEY, "true")]),
                &new,
                Some(&old),
                false
            ),
            Decision::Nothing
        ));
        assert!(matches!(
            decide(
                &cs(5, "InPlaceIfPossible", 0),
                &owner(),
                &rev(&[]),
                &new,
                Some(&old),
                true
            ),
            Decision::DeleteJobs
        ));
    }
}
