//! Image pre-download for an Advanced StatefulSet in-place update
//! (OpenKruise's `PreDownloadImageForInPlaceUpdate`): while the current
//! revision differs from the update revision, and once
//! `apps.kruise.io/image-predownload-min-updated-ready-pods` updated pods
//! are ready, the update revision gets one ImagePullJob per changed
//! container image, aimed at the nodes of the pods not yet on it. Marked
//! ignored instead when the update is not a rolling in-place one
//! (`OnDelete`, no `rollingUpdate`, `podUpdatePolicy` ReCreate), when there
//! are 3 replicas or fewer, when every pod would go in one batch
//! (`partition` 0 and `maxUnavailable` ≥ replicas), or when the change
//! cannot be made in place. The jobs and their lifecycle are the shared
//! [`crate::workload::predownload`].

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keelson_api::apps::v1alpha1::cloneset::IMAGE_PRE_DOWNLOAD_CREATED_KEY;
use keelson_api::apps::v1beta1::statefulset::{
    ON_DELETE_STATEFUL_SET_STRATEGY_TYPE, RECREATE_POD_UPDATE_STRATEGY_TYPE, StatefulSet,
};
use serde_json::Value;

use crate::workload::inplace::{self, Diff};
use crate::workload::percent::scaled;
use crate::workload::predownload::{self as shared, Decision, Owner};

/// Upstream's `minimumReplicasToPreDownloadImage`: sets this small are
/// not worth it.
const MINIMUM_REPLICAS: i32 = 3;

/// The decision for `sts` whose update revision is `update` (template
/// `update_template`) and current revision's template is `current`
/// (`None` when current and update are one revision).
pub fn decide(
    sts: &StatefulSet,
    owner: &OwnerReference,
    update: &ControllerRevision,
    update_template: &Value,
    current: Option<&Value>,
    env_from_metadata: bool,
) -> Decision {
    let Some(current) = current else {
        return Decision::DeleteJobs;
    };
    let replicas = sts.spec.replicas.unwrap_or(1);
    let name = update.metadata.name.clone().unwrap_or_default();
    let status = sts.status.clone().unwrap_or_default();
    let updated_ready = if status.update_revision == name {
        status.updated_ready_replicas
    } else {
        0
    };
    if updated_ready < shared::min_updated_ready(&sts.metadata, replicas) {
        return Decision::Nothing;
    }
    if shared::decided(update) {
        return Decision::Nothing;
    }
    let strategy = &sts.spec.update_strategy;
    let Some(ru) = strategy
        .rolling_update
        .as_ref()
        .filter(|_| strategy.type_.as_deref() != Some(ON_DELETE_STATEFUL_SET_STRATEGY_TYPE))
    else {
        return Decision::ignore();
    };
    if ru
        .pod_update_policy
        .as_deref()
        .unwrap_or(RECREATE_POD_UPDATE_STRATEGY_TYPE)
        == RECREATE_POD_UPDATE_STRATEGY_TYPE
    {
        return Decision::ignore();
    }
    if replicas <= MINIMUM_REPLICAS {
        return Decision::ignore();
    }
    let partition = ru.partition.unwrap_or(0);
    let max_unavailable = ru.max_unavailable.clone().unwrap_or(IntOrString::Int(1));
    let max_unavailable = scaled(&max_unavailable, replicas, false).unwrap_or(0);
    if partition == 0 && max_unavailable >= replicas {
        return Decision::ignore();
    }
    if !matches!(
        inplace::diff(current, update_template, env_from_metadata),
        Ok(Diff::InPlace(_))
    ) {
        return Decision::ignore();
    }
    let owner = Owner {
        meta: &sts.metadata,
        reference: owner,
        selector: &sts.spec.selector,
    };
    Decision::Mark {
        label: IMAGE_PRE_DOWNLOAD_CREATED_KEY,
        jobs: shared::jobs(
            &owner,
            &name,
            &shared::revision_hash(update),
            update_template,
            &shared::changed_images(&[current], update_template),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::predownload::fixtures;
    use keelson_api::apps::v1alpha1::cloneset::IMAGE_PRE_DOWNLOAD_IGNORED_KEY;
    use serde_json::json;

    fn sts(replicas: i32, rolling: &str, annotations: &str, status: &str) -> StatefulSet {
        serde_saphyr::from_str(&format!(
            "apiVersion: apps.kruise.io/v1beta1\nkind: StatefulSet\nmetadata: {{name: web, namespace: ns, annotations: {{{annotations}}}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: main, image: 'nginx:2'}}]}}\n  updateStrategy: {rolling}\nstatus: {{{status}}}\n"
        ))
        .unwrap()
    }

    const IN_PLACE: &str = "{type: RollingUpdate, rollingUpdate: {podUpdatePolicy: InPlaceIfPossible, partition: 0, maxUnavailable: 1}}";

    fn t(main: &str) -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "main", "image": main}, {"name": "side", "image": "b"}]}})
    }

    fn rev(labels: &[(&str, &str)]) -> ControllerRevision {
        fixtures::revision("web-h2", labels)
    }

    fn owner() -> OwnerReference {
        fixtures::owner("apps.kruise.io/v1beta1", "StatefulSet", "web")
    }

    fn run(s: &StatefulSet, new: &Value) -> Decision {
        decide(s, &owner(), &rev(&[]), new, Some(&t("nginx:1")), true)
    }

    fn ignored(d: &Decision) -> bool {
        matches!(d, Decision::Mark { label, jobs } if *label == IMAGE_PRE_DOWNLOAD_IGNORED_KEY && jobs.is_empty())
    }

    #[test]
    fn one_job_per_changed_image_for_an_in_place_rollout() {
        let d = run(&sts(4, IN_PLACE, "", ""), &t("nginx:2"));
        let Decision::Mark { label, jobs } = d else {
            panic!("{d:?}")
        };
        assert_eq!(label, IMAGE_PRE_DOWNLOAD_CREATED_KEY);
        assert_eq!(jobs.len(), 1, "only the changed container");
        assert_eq!(jobs[0].metadata.name.as_deref(), Some("web-h2-main"));
        assert_eq!(
            jobs[0].metadata.owner_references.as_ref().unwrap()[0].kind,
            "StatefulSet"
        );
        let e = &jobs[0]
            .spec
            .template
            .pod_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            e.values.as_deref(),
            Some(&["web-h2".to_string(), "h2".to_string()][..])
        );
    }

    #[test]
    fn skipped_as_upstream() {
        let new = t("nginx:2");
        // Not a rolling in-place update.
        assert!(ignored(&run(
            &sts(
                4,
                "{type: RollingUpdate, rollingUpdate: {podUpdatePolicy: ReCreate}}",
                "",
                ""
            ),
            &new
        )));
        assert!(ignored(&run(
            &sts(4, "{type: RollingUpdate}", "", ""),
            &new
        )));
        assert!(ignored(&run(
            &sts(
                4,
                "{type: OnDelete, rollingUpdate: {podUpdatePolicy: InPlaceIfPossible}}",
                "",
                ""
            ),
            &new
        )));
        // Too few replicas.
        assert!(ignored(&run(&sts(3, IN_PLACE, "", ""), &new)));
        // One batch.
        assert!(ignored(&run(
            &sts(
                4,
                "{type: RollingUpdate, rollingUpdate: {podUpdatePolicy: InPlaceIfPossible, maxUnavailable: '100%'}}",
                "",
                ""
            ),
            &new
        )));
        // Partition keeps a batch back even with maxUnavailable ≥ replicas.
        assert!(!ignored(&run(
            &sts(
                4,
                "{type: RollingUpdate, rollingUpdate: {podUpdatePolicy: InPlaceIfPossible, partition: 2, maxUnavailable: 4}}",
                "",
                ""
            ),
            &new
        )));
        // Not in place.
        let mut cmd = new.clone();
        cmd["spec"]["containers"][0]["command"] = json!(["sh"]);
        assert!(ignored(&run(&sts(4, IN_PLACE, "", ""), &cmd)));
    }

    #[test]
    fn waits_for_updated_ready_pods_then_once_then_deletes() {
        let key = shared::MIN_UPDATED_READY_KEY;
        let new = t("nginx:2");
        // 50% of 4 = 2 updated ready pods wanted; the status has 1.
        let s = sts(
            4,
            IN_PLACE,
            &format!("{key}: '50%'"),
            "updateRevision: web-h2, updatedReadyReplicas: 1",
        );
        assert!(matches!(run(&s, &new), Decision::Nothing));
        let s = sts(
            4,
            IN_PLACE,
            &format!("{key}: '2'"),
            "updateRevision: web-h2, updatedReadyReplicas: 2",
        );
        assert!(
            matches!(run(&s, &new), Decision::Mark { label, .. } if label == IMAGE_PRE_DOWNLOAD_CREATED_KEY)
        );
        // Counted as 0 when the status reports another update revision.
        let s = sts(
            4,
            IN_PLACE,
            &format!("{key}: '2'"),
            "updateRevision: web-h1, updatedReadyReplicas: 4",
        );
        assert!(matches!(run(&s, &new), Decision::Nothing));
        // Once per revision.
        let d = decide(
            &sts(4, IN_PLACE, "", ""),
            &owner(),
            &rev(&[(IMAGE_PRE_DOWNLOAD_IGNORED_KEY, "true")]),
            &new,
            Some(&t("nginx:1")),
            true,
        );
        assert!(matches!(d, Decision::Nothing));
        // Current is the update revision: the jobs go.
        let d = decide(
            &sts(4, IN_PLACE, "", ""),
            &owner(),
            &rev(&[]),
            &new,
            None,
            true,
        );
        assert!(matches!(d, Decision::DeleteJobs));
    }
}
