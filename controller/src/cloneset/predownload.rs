//! Image pre-download before an in-place update (OpenKruise's
//! `PreDownloadImageForInPlaceUpdate` gate): once per update revision, one
//! ImagePullJob per changed container image, owned by the CloneSet and
//! aimed at the nodes of its pods not yet on that revision, so the new
//! image is on the node before the container restarts. The revision is
//! labelled `apps.kruise.io/pre-predownload-created` (or `-ignored` when
//! the rollout does not qualify); the jobs go once the rollout is done.
//! What qualifies is CloneSet's; the jobs and their lifecycle are the
//! shared [`crate::workload::predownload`].

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use keelson_api::apps::v1alpha1::cloneset::{CloneSet, IMAGE_PRE_DOWNLOAD_CREATED_KEY};
use serde_json::Value;

use super::numbers;
use crate::workload::inplace::{self, Diff};
use crate::workload::percent::scaled;
use crate::workload::predownload::{self as shared, Owner};
pub use crate::workload::predownload::{
    Decision, MIN_UPDATED_READY_KEY, PARALLELISM_KEY, TIMEOUT_KEY,
};
use crate::workload::revision::short_hash;

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
    if shared::decided(update) {
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
    if updated_ready < shared::min_updated_ready(&cs.metadata, replicas) {
        return Decision::Nothing;
    }
    let strategy = cs
        .spec
        .update_strategy
        .type_
        .as_deref()
        .unwrap_or("ReCreate");
    if strategy == "ReCreate" || replicas <= 3 {
        return Decision::ignore();
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
        return Decision::ignore();
    }
    let Some(current) = current else {
        return Decision::ignore();
    };
    if !matches!(
        inplace::diff(current, update_template, true),
        Ok(Diff::InPlace(_))
    ) {
        return Decision::ignore();
    }
    let owner = Owner {
        meta: &cs.metadata,
        reference: owner,
        selector: &cs.spec.selector,
    };
    let jobs = shared::jobs(
        &owner,
        &rev_name,
        short_hash(&rev_name),
        update_template,
        &shared::changed_images(&[current], update_template),
    );
    Decision::Mark {
        label: IMAGE_PRE_DOWNLOAD_CREATED_KEY,
        jobs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::predownload::fixtures;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use keelson_api::apps::v1alpha1::cloneset::IMAGE_PRE_DOWNLOAD_IGNORED_KEY;
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
        fixtures::revision("web-h2", labels)
    }

    fn owner() -> OwnerReference {
        fixtures::owner("apps.kruise.io/v1alpha1", "CloneSet", "web")
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
