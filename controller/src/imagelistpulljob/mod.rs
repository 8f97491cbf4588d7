//! ImageListPullJob → one ImagePullJob per image, as a pure reconcile (as
//! OpenKruise's controller): jobs are created for images without one, and
//! replaced when the shared template changed (tracked by a template hash
//! label); jobs of images no longer listed are deleted. The list's status
//! counts the jobs (active, completed, succeeded, the images with failed
//! nodes); with completionPolicy `Always` it completes when every job has,
//! and is deleted `ttlSecondsAfterFinished` later.

pub mod controller;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use keelson_api::apps::v1alpha1::imagelistpulljob::{
    FailedImageStatus, ImageListPullJob, ImageListPullJobStatus,
};
use keelson_api::apps::v1alpha1::imagepulljob::{ImagePullJob, ImagePullJobSpec};

/// Label with the hash of the template a job was made from (Kubernetes'
/// controller-revision-hash key, as OpenKruise uses it).
pub const TEMPLATE_HASH_LABEL: &str = "controller-revision-hash";

/// The outcome of one reconcile.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Put on the list job as [`TEMPLATE_HASH_LABEL`] when it differs.
    pub template_hash: String,
    pub status: ImageListPullJobStatus,
    /// ImagePullJobs to create (`generateName`d, owned by the list job).
    pub create: Vec<ImagePullJob>,
    /// Names of owned ImagePullJobs to delete.
    pub delete: Vec<String>,
    /// Finished and past its TTL: delete the list job itself.
    pub delete_self: bool,
    pub requeue_after_seconds: Option<i64>,
}

/// A stable hash of the template (FNV-1a over its JSON), in hex.
pub fn template_hash(list: &ImageListPullJob) -> String {
    let json = serde_json::to_vec(&list.spec.template).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in json {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

fn owner(list: &ImageListPullJob) -> OwnerReference {
    OwnerReference {
        api_version: "apps.kruise.io/v1alpha1".into(),
        kind: "ImageListPullJob".into(),
        name: list.metadata.name.clone().unwrap_or_default(),
        uid: list.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// One reconcile of `list` given the ImagePullJobs it owns.
pub fn reconcile(list: &ImageListPullJob, owned: &[ImagePullJob], now: &Time) -> Decision {
    let hash = template_hash(list);
    let old = list.status.clone().unwrap_or_default();
    if let Some(done) = &old.completion_time {
        let ttl = list
            .spec
            .template
            .completion_policy
            .ttl_seconds_after_finished;
        let left = ttl.map(|t| done.0.as_second() + i64::from(t) - now.0.as_second());
        return Decision {
            template_hash: hash,
            status: old.clone(),
            create: vec![],
            delete: vec![],
            delete_self: left.is_some_and(|l| l <= 0),
            requeue_after_seconds: left.filter(|l| *l > 0),
        };
    }
    let by_image: BTreeMap<&str, &ImagePullJob> = owned
        .iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .map(|j| (j.spec.image.as_str(), j))
        .collect();

    let mut status = ImageListPullJobStatus {
        start_time: Some(old.start_time.clone().unwrap_or_else(|| now.clone())),
        completion_time: None,
        desired: list.spec.images.len() as i32,
        active: 0,
        completed: 0,
        succeeded: 0,
        failed_image_statuses: vec![],
    };
    for job in by_image.values() {
        let Some(s) = job.status.as_ref().filter(|s| s.start_time.is_some()) else {
            continue;
        };
        if s.active > 0 {
            status.active += 1;
        }
        if s.failed > 0 {
            let name = job.metadata.name.clone().unwrap_or_default();
            status.failed_image_statuses.push(FailedImageStatus {
                message: Some(format!(
                    "nodes failed to pull; see `kubectl get imagepulljob {name}`"
                )),
                image_pull_job: name,
                name: job.spec.image.clone(),
            });
        }
        if s.desired == s.succeeded + s.failed {
            status.completed += 1;
        }
        if s.desired == s.succeeded {
            status.succeeded += 1;
        }
    }
    let never = list.spec.template.completion_policy.type_.as_deref() == Some("Never");
    if !never && status.desired == status.completed {
        status.completion_time = Some(now.clone());
    }

    let mut create = vec![];
    let mut delete = vec![];
    for image in &list.spec.images {
        match by_image.get(image.as_str()) {
            Some(job) => {
                let job_hash = job
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(TEMPLATE_HASH_LABEL));
                let same = job_hash == Some(&hash)
                    || (job_hash.is_none() && job.spec.template == list.spec.template);
                if !same {
                    delete.push(job.metadata.name.clone().unwrap_or_default());
                    create.push(new_job(list, image, &hash));
                }
            }
            None => create.push(new_job(list, image, &hash)),
        }
    }
    for (image, job) in &by_image {
        if !list.spec.images.iter().any(|i| i == image) {
            delete.push(job.metadata.name.clone().unwrap_or_default());
        }
    }
    Decision {
        template_hash: hash,
        status,
        create,
        delete,
        delete_self: false,
        requeue_after_seconds: None,
    }
}

fn new_job(list: &ImageListPullJob, image: &str, hash: &str) -> ImagePullJob {
    ImagePullJob {
        metadata: ObjectMeta {
            namespace: list.metadata.namespace.clone(),
            generate_name: Some(format!(
                "{}-",
                list.metadata.name.clone().unwrap_or_default()
            )),
            labels: Some([(TEMPLATE_HASH_LABEL.to_string(), hash.to_string())].into()),
            owner_references: Some(vec![owner(list)]),
            ..Default::default()
        },
        spec: ImagePullJobSpec {
            image: image.to_string(),
            template: list.spec.template.clone(),
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::at;
    use keelson_api::apps::v1alpha1::imagepulljob::ImagePullJobStatus;

    fn list(images: &str, extra: &str) -> ImageListPullJob {
        serde_saphyr::from_str(&format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ImageListPullJob\nmetadata: {{name: prefetch, namespace: default, uid: uid-list}}\nspec:\n  images: {images}\n  parallelism: 2\n  completionPolicy:\n    type: Always\n    ttlSecondsAfterFinished: 60\n{extra}"
        ))
        .unwrap()
    }

    fn made(
        d: &Decision,
        n: usize,
        name: &str,
        status: Option<ImagePullJobStatus>,
    ) -> ImagePullJob {
        let mut j = d.create[n].clone();
        j.metadata.name = Some(name.into());
        j.status = status;
        j
    }

    fn finished(desired: i32, succeeded: i32, failed: i32) -> Option<ImagePullJobStatus> {
        Some(ImagePullJobStatus {
            start_time: Some(at(1)),
            desired,
            succeeded,
            failed,
            active: desired - succeeded - failed,
            ..Default::default()
        })
    }

    #[test]
    fn one_job_per_image_then_status_then_completion_and_ttl() {
        let mut l = list("[nginx:1.9, redis:7]", "");
        let d = reconcile(&l, &[], &at(1000));
        assert_eq!(d.create.len(), 2);
        assert!(d.delete.is_empty());
        let job = &d.create[0];
        assert_eq!(job.spec.image, "nginx:1.9");
        assert_eq!(job.metadata.generate_name.as_deref(), Some("prefetch-"));
        assert_eq!(job.spec.template, l.spec.template);
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ImageListPullJob", "uid-list")
        );
        assert_eq!(
            job.metadata.labels.as_ref().unwrap()[TEMPLATE_HASH_LABEL],
            d.template_hash
        );
        l.status = Some(d.status.clone());

        let owned = vec![
            made(&d, 0, "prefetch-a", finished(3, 2, 1)),
            made(&d, 1, "prefetch-b", finished(3, 1, 0)),
        ];
        let d2 = reconcile(&l, &owned, &at(1010));
        assert!(d2.create.is_empty() && d2.delete.is_empty());
        let s = &d2.status;
        assert_eq!(
            (s.desired, s.active, s.completed, s.succeeded),
            (2, 1, 1, 0)
        );
        assert_eq!(s.failed_image_statuses.len(), 1);
        assert_eq!(s.failed_image_statuses[0].image_pull_job, "prefetch-a");
        assert!(s.completion_time.is_none());

        let owned = vec![
            made(&d, 0, "prefetch-a", finished(3, 2, 1)),
            made(&d, 1, "prefetch-b", finished(3, 3, 0)),
        ];
        let d3 = reconcile(&l, &owned, &at(1020));
        assert_eq!(d3.status.completion_time, Some(at(1020)));
        assert_eq!(d3.status.start_time, Some(at(1000)));
        l.status = Some(d3.status);
        let d4 = reconcile(&l, &owned, &at(1050));
        assert_eq!(
            (d4.delete_self, d4.requeue_after_seconds),
            (false, Some(30))
        );
        assert!(reconcile(&l, &owned, &at(1080)).delete_self);
    }

    #[test]
    fn removed_images_and_changed_templates_replace_jobs() {
        let l = list("[nginx:1.9, redis:7]", "");
        let d = reconcile(&l, &[], &at(1000));
        let owned = vec![
            made(&d, 0, "prefetch-a", None),
            made(&d, 1, "prefetch-b", None),
        ];
        // redis dropped from the list; the template changed for nginx.
        let mut l2 = list("[nginx:1.9]", "");
        l2.spec.template.parallelism =
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(5));
        let d2 = reconcile(&l2, &owned, &at(1001));
        assert_eq!(
            d2.delete,
            vec!["prefetch-a".to_string(), "prefetch-b".to_string()]
        );
        assert_eq!(d2.create.len(), 1);
        assert_ne!(d2.template_hash, d.template_hash);
        // Unchanged list: nothing to do.
        let d3 = reconcile(&l, &owned, &at(1002));
        assert!(d3.create.is_empty() && d3.delete.is_empty());
    }
}
