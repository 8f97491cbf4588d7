//! Image pre-download for an Advanced DaemonSet update (OpenKruise's
//! `PreDownloadImageForDaemonSetUpdate`): while the rollout is under way
//! (the reported status is not all updated, or reports another hash), the
//! update revision gets one ImagePullJob per container whose image differs
//! from some older revision's, aimed at the nodes of the pods not yet on
//! it — unless every pod would be updated in one batch (`partition` 0 and
//! `maxUnavailable` covering every node), when the revision is marked
//! ignored. As upstream, neither the rolling type nor the in-place-ability
//! of the change is checked, and `image-predownload-min-updated-ready-pods`
//! is not applied to this kind. Unlike upstream, a DaemonSet's first
//! revision is marked ignored (there is nothing to update from). The
//! jobs and their lifecycle are the shared [`crate::workload::predownload`].

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keelson_api::apps::v1alpha1::cloneset::IMAGE_PRE_DOWNLOAD_CREATED_KEY;
use keelson_api::apps::v1beta1::daemonset::DaemonSet;
use serde_json::Value;

use crate::workload::percent::scaled;
use crate::workload::predownload::{self as shared, Decision, Owner};

/// The decision for `ds` whose update revision is `update` (labelled with
/// `hash`, its template `update_template`), the templates of its other
/// revisions being `old`.
pub fn decide(
    ds: &DaemonSet,
    owner: &OwnerReference,
    update: &ControllerRevision,
    update_template: &Value,
    old: &[&Value],
    hash: &str,
) -> Decision {
    let status = ds.status.clone().unwrap_or_default();
    let desired = status.desired_number_scheduled;
    let rolling = status.updated_number_scheduled != desired
        || status.update_revision.as_deref() != Some(hash);
    if !rolling {
        return Decision::DeleteJobs;
    }
    if shared::decided(update) {
        return Decision::Nothing;
    }
    let ru = ds.spec.update_strategy.rolling_update.as_ref();
    let partition = ru
        .and_then(|r| r.partition.as_ref())
        .map_or(Ok(0), |p| scaled(p, desired, false));
    let Ok(partition) = partition else {
        // Upstream gives up on this revision for now (an error, retried).
        return Decision::Nothing;
    };
    let max_unavailable = ru
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    let max_unavailable = scaled(&max_unavailable, desired, true).unwrap_or(0);
    // A first revision updates nothing (upstream would pull every image
    // of it for no pod).
    if (partition == 0 && max_unavailable >= desired) || old.is_empty() {
        return Decision::ignore();
    }
    let name = update.metadata.name.clone().unwrap_or_default();
    let owner = Owner {
        meta: &ds.metadata,
        reference: owner,
        selector: &ds.spec.selector,
    };
    Decision::Mark {
        label: IMAGE_PRE_DOWNLOAD_CREATED_KEY,
        jobs: shared::jobs(
            &owner,
            &name,
            &shared::revision_hash(update),
            update_template,
            &shared::changed_images(old, update_template),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::predownload::fixtures;
    use keelson_api::apps::v1alpha1::cloneset::IMAGE_PRE_DOWNLOAD_IGNORED_KEY;
    use serde_json::json;

    fn ds(rolling: &str, desired: i32, updated: i32, hash: &str) -> DaemonSet {
        serde_saphyr::from_str(&format!(
            "apiVersion: apps.kruise.io/v1beta1\nkind: DaemonSet\nmetadata: {{name: agent, namespace: ns}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec: {{containers: [{{name: main, image: 'a:2'}}]}}\n  updateStrategy: {{type: RollingUpdate, rollingUpdate: {rolling}}}\nstatus: {{desiredNumberScheduled: {desired}, updatedNumberScheduled: {updated}, currentNumberScheduled: {desired}, numberMisscheduled: 0, numberReady: {desired}, observedGeneration: 1, updateRevision: {hash}}}\n"
        ))
        .unwrap()
    }

    fn t(image: &str) -> Value {
        json!({"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "main", "image": image}]}})
    }

    fn rev(labels: &[(&str, &str)]) -> ControllerRevision {
        let mut l = labels.to_vec();
        l.push(("controller.kubernetes.io/hash", "h2"));
        fixtures::revision("agent-h2", &l)
    }

    fn owner() -> OwnerReference {
        fixtures::owner("apps.kruise.io/v1beta1", "DaemonSet", "agent")
    }

    fn run(d: &DaemonSet, update: &ControllerRevision) -> Decision {
        decide(d, &owner(), update, &t("a:2"), &[&t("a:1")], "h2")
    }

    #[test]
    fn a_held_back_node_gets_the_new_image_first() {
        // One node, partition 1: the node waits, its image is pulled.
        let d = run(
            &ds("{partition: 1, maxUnavailable: 1}", 1, 0, "h1"),
            &rev(&[]),
        );
        let Decision::Mark { label, jobs } = d else {
            panic!("{d:?}")
        };
        assert_eq!(label, IMAGE_PRE_DOWNLOAD_CREATED_KEY);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].metadata.name.as_deref(), Some("agent-h2-main"));
        assert_eq!(jobs[0].spec.image, "a:2");
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
            Some(&["agent-h2".to_string(), "h2".to_string()][..])
        );
        // Also for a Standard rollout of several nodes in batches.
        let d = run(&ds("{maxUnavailable: 1}", 3, 0, "h1"), &rev(&[]));
        assert!(
            matches!(d, Decision::Mark { label, .. } if label == IMAGE_PRE_DOWNLOAD_CREATED_KEY)
        );
        // Percent partition, floored against desired.
        let d = run(
            &ds("{partition: '50%', maxUnavailable: '100%'}", 3, 0, "h1"),
            &rev(&[]),
        );
        assert!(
            matches!(d, Decision::Mark { label, .. } if label == IMAGE_PRE_DOWNLOAD_CREATED_KEY)
        );
    }

    #[test]
    fn one_batch_ignored_labelled_nothing_done_deletes() {
        let ignored = |d: &Decision| matches!(d, Decision::Mark { label, jobs } if *label == IMAGE_PRE_DOWNLOAD_IGNORED_KEY && jobs.is_empty());
        // Every node at once: partition 0, maxUnavailable (ceil) ≥ desired.
        assert!(ignored(&run(
            &ds("{maxUnavailable: 1}", 1, 0, "h1"),
            &rev(&[])
        )));
        assert!(ignored(&run(
            &ds("{maxUnavailable: '67%'}", 3, 0, "h1"),
            &rev(&[])
        )));
        // The first revision: nothing to update from.
        assert!(ignored(&decide(
            &ds("{partition: 1}", 0, 0, "h1"),
            &owner(),
            &rev(&[]),
            &t("a:2"),
            &[],
            "h2"
        )));
        // Already handled.
        assert!(matches!(
            run(
                &ds("{partition: 1}", 1, 0, "h1"),
                &rev(&[(IMAGE_PRE_DOWNLOAD_CREATED_KEY, "true")])
            ),
            Decision::Nothing
        ));
        // Reported consistent: the jobs go.
        assert!(matches!(
            run(&ds("{partition: 1}", 1, 1, "h2"), &rev(&[])),
            Decision::DeleteJobs
        ));
        // Hash reported but not every node updated yet: still rolling.
        assert!(!matches!(
            run(&ds("{partition: 1}", 2, 1, "h2"), &rev(&[])),
            Decision::DeleteJobs
        ));
    }
}
