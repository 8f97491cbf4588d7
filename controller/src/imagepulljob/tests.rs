//! The ImagePullJob reconcile, state in → decision out.

use super::*;
use crate::testing::at;
use keelson_api::apps::v1beta1::nodeimage::{
    ImageStatus, ImageTagStatus, NodeImageSpec, NodeImageStatus,
};
use std::sync::Arc;

fn ctx(now: i64) -> Context {
    Context {
        now: at(now),
        secrets: vec![],
        jitter_seconds: 100,
    }
}

fn job(yaml_spec: &str) -> ImagePullJob {
    let mut j: ImagePullJob = serde_saphyr::from_str(&format!(
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: job\n  namespace: default\n  uid: uid-job\nspec:\n{yaml_spec}"
    ))
    .unwrap();
    j.status = None;
    j
}

fn node(name: &str) -> NodeImage {
    let mut n = NodeImage::new(name, NodeImageSpec::default());
    n.metadata.resource_version = Some("7".into());
    n
}

/// `node` after the agent reported `phase` for the entry it was given.
fn reported(mut n: NodeImage, write: &EntryWrite, phase: &str) -> NodeImage {
    let tag = &write.spec.tags.iter().find(|t| t.tag == "1.9.1").unwrap();
    n.spec
        .images
        .insert(write.image.clone(), write.spec.clone());
    let status = n.status.get_or_insert_with(NodeImageStatus::default);
    status.image_statuses.insert(
        write.image.clone(),
        ImageStatus {
            tags: vec![ImageTagStatus {
                tag: tag.tag.clone(),
                phase: phase.into(),
                version: tag.version,
                ..Default::default()
            }],
        },
    );
    n
}

fn sync(d: Decision) -> (ImagePullJobStatus, Vec<EntryWrite>, Option<i64>) {
    match d {
        Decision::Sync {
            status,
            writes,
            requeue_after_seconds,
        } => (status, writes, requeue_after_seconds),
        other => panic!("expected Sync, got {other:?}"),
    }
}

const ALWAYS: &str = "  image: nginx:1.9.1\n  parallelism: 2\n  completionPolicy:\n    type: Always\n    activeDeadlineSeconds: 100\n    ttlSecondsAfterFinished: 60\n";

#[test]
fn syncs_at_most_parallelism_nodes_then_more_as_they_finish() {
    let mut j = job(ALWAYS);
    let nodes = [node("a"), node("b"), node("c")];
    let refs: Vec<&NodeImage> = nodes.iter().collect();
    let (status, writes, requeue) = sync(reconcile(&j, &refs, &ctx(1000)));
    assert_eq!(status.desired, 3);
    assert_eq!(status.active, 0);
    assert_eq!(
        writes.iter().map(|w| w.node.as_str()).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert_eq!(writes[0].image, "nginx");
    assert_eq!(writes[0].resource_version.as_deref(), Some("7"));
    let tag = &writes[0].spec.tags[0];
    assert_eq!((tag.tag.as_str(), tag.version), ("1.9.1", 0));
    assert_eq!(tag.owner_references[0].uid.as_deref(), Some("uid-job"));
    let policy = tag.pull_policy.as_ref().unwrap();
    assert_eq!(policy.active_deadline_seconds, Some(100));
    assert_eq!(policy.ttl_seconds_after_finished, Some(60 + 300 + 50));
    assert_eq!(requeue, Some(100));
    j.status = Some(status);

    // a succeeded, b still pulling: one slot free, c gets its entry.
    let nodes = [
        reported(node("a"), &writes[0], "Succeeded"),
        reported(node("b"), &writes[1], "Pulling"),
        node("c"),
    ];
    let refs: Vec<&NodeImage> = nodes.iter().collect();
    let (status, more, _) = sync(reconcile(&j, &refs, &ctx(1010)));
    assert_eq!((status.active, status.succeeded), (1, 1));
    assert_eq!(
        status.message.as_deref(),
        Some("job is running, progress 33.3%")
    );
    assert_eq!(
        more.iter().map(|w| w.node.as_str()).collect::<Vec<_>>(),
        vec!["c"]
    );
    assert_eq!(status.start_time, Some(at(1000)), "start time is kept");
    j.status = Some(status);

    // b failed, c succeeded: complete, failed nodes listed.
    let nodes = [
        reported(node("a"), &writes[0], "Succeeded"),
        reported(node("b"), &writes[1], "Failed"),
        reported(node("c"), &more[0], "Succeeded"),
    ];
    let refs: Vec<&NodeImage> = nodes.iter().collect();
    let (status, none, requeue) = sync(reconcile(&j, &refs, &ctx(1020)));
    assert!(none.is_empty());
    assert_eq!((status.succeeded, status.failed), (2, 1));
    assert_eq!(status.failed_nodes, vec!["b".to_string()]);
    assert_eq!(status.completion_time, Some(at(1020)));
    assert_eq!(status.message.as_deref(), Some("job has completed"));
    assert_eq!(requeue, None);
    j.status = Some(status);

    // Deleted ttlSecondsAfterFinished (60 s) after completion.
    let (_, _, requeue) = sync(reconcile(&j, &refs, &ctx(1050)));
    assert_eq!(requeue, Some(30));
    assert_eq!(reconcile(&j, &refs, &ctx(1080)), Decision::Delete);
}

#[test]
fn parallelism_zero_pauses_and_the_deadline_fails_the_rest() {
    let paused = job(
        "  image: nginx:1.9.1\n  parallelism: 0\n  completionPolicy:\n    type: Always\n    activeDeadlineSeconds: 100\n",
    );
    let nodes = [node("a"), node("b")];
    let refs: Vec<&NodeImage> = nodes.iter().collect();
    let (status, writes, _) = sync(reconcile(&paused, &refs, &ctx(1000)));
    assert!(writes.is_empty());
    let mut j = paused.clone();
    j.status = Some(status);
    let (status, writes, _) = sync(reconcile(&j, &refs, &ctx(1100)));
    assert!(writes.is_empty());
    assert_eq!(status.failed, 2);
    assert_eq!(status.failed_nodes, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(
        status.message.as_deref(),
        Some("job exceeds activeDeadlineSeconds")
    );
    assert_eq!(status.completion_time, Some(at(1100)));
}

#[test]
fn another_jobs_entry_is_kept_and_a_shared_tag_gets_a_new_round() {
    let j = job(ALWAYS);
    let mut other = job(ALWAYS);
    other.metadata.uid = Some("uid-other".into());
    other.metadata.name = Some("other".into());
    let n = node("a");
    let first = entry_for(&other, &n, "nginx", "1.9.1", &ctx(900)).unwrap();
    let mut n = n;
    n.spec.images.insert("nginx".into(), first.clone());
    // A different image of another job stays untouched too.
    let redis = entry_for(&other, &n, "redis", "7", &ctx(900)).unwrap();
    n.spec.images.insert("redis".into(), redis.clone());

    let refs = vec![&n];
    let (_, writes, _) = sync(reconcile(&j, &refs, &ctx(1000)));
    assert_eq!(writes.len(), 1);
    let w = &writes[0];
    assert_eq!(w.image, "nginx", "only this image's entry is written");
    let tag = &w.spec.tags[0];
    assert_eq!(
        tag.version,
        first.tags[0].version + 1,
        "a new round of pulls"
    );
    let owners: Vec<_> = tag
        .owner_references
        .iter()
        .map(|o| o.uid.clone().unwrap())
        .collect();
    assert_eq!(owners, vec!["uid-other".to_string(), "uid-job".to_string()]);
    // Already carrying this job: nothing to write.
    let mut n2 = n.clone();
    n2.spec.images.insert("nginx".into(), w.spec.clone());
    assert_eq!(entry_for(&j, &n2, "nginx", "1.9.1", &ctx(1001)), None);
    assert_eq!(n2.spec.images["redis"], redis);
}

#[test]
fn a_node_that_reported_an_older_round_is_still_pulling() {
    let mut j = job(ALWAYS);
    let n = node("a");
    let refs = vec![&n];
    let (status, writes, _) = sync(reconcile(&j, &refs, &ctx(1000)));
    j.status = Some(status);
    // Status for version 0 exists from an earlier job; the entry is now
    // version 1: not finished for this job.
    let mut n = reported(node("a"), &writes[0], "Succeeded");
    n.spec.images.get_mut("nginx").unwrap().tags[0].version = 1;
    let refs = vec![&n];
    let (status, _, _) = sync(reconcile(&j, &refs, &ctx(1001)));
    assert_eq!((status.active, status.succeeded), (1, 0));
}

#[test]
fn never_keeps_running_and_secrets_must_reach_the_node() {
    let j = job(
        "  image: nginx:1.9.1\n  completionPolicy:\n    type: Never\n  pullSecrets: [regcred]\n",
    );
    let mut c = ctx(1000);
    c.secrets = vec![ReferenceObject {
        namespace: "kruise-daemon-config".into(),
        name: "regcred-copy".into(),
        mode: String::new(),
    }];
    let n = node("a");
    let refs = vec![&n];
    let (status, writes, requeue) = sync(reconcile(&j, &refs, &c));
    assert_eq!(requeue, None, "Never has no deadline");
    assert!(status.completion_time.is_none());
    let spec = &writes[0].spec;
    assert_eq!(spec.pull_secrets, c.secrets);
    let policy = spec.tags[0].pull_policy.as_ref().unwrap();
    assert_eq!(
        policy.active_deadline_seconds,
        Some(NEVER_ACTIVE_DEADLINE_SECONDS)
    );
    assert_eq!(
        policy.ttl_seconds_after_finished,
        Some(NEVER_TTL_SECONDS + 200 - 600)
    );
    // All done on the node: a Never job still does not complete.
    let n = reported(node("a"), &writes[0], "Succeeded");
    let refs = vec![&n];
    let mut j2 = j.clone();
    j2.status = Some(status);
    let (status, _, _) = sync(reconcile(&j2, &refs, &c));
    assert_eq!(status.succeeded, 1);
    assert!(status.completion_time.is_none());
    // Without the secret on the node it counts as not synced again.
    let (status, writes, _) = sync(reconcile(
        &j2,
        &refs,
        &Context {
            secrets: vec![ReferenceObject {
                namespace: "kruise-daemon-config".into(),
                name: "another".into(),
                mode: String::new(),
            }],
            ..c.clone()
        },
    ));
    assert_eq!(status.succeeded, 0);
    assert_eq!(writes.len(), 1);
}

#[test]
fn a_bad_image_is_ignored_with_a_reason() {
    let j = job("  image: Not A Ref\n  completionPolicy:\n    type: Always\n");
    match reconcile(&j, &[], &ctx(0)) {
        Decision::Ignore { reason } => assert!(reason.contains("invalid image"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn targets_by_names_labels_pods_or_all() {
    use k8s_openapi::api::core::v1::{Pod, PodSpec};
    let mut a = node("a");
    a.metadata.labels = Some([("zone".to_string(), "x".to_string())].into());
    let b = node("b");
    let all = vec![Arc::new(b.clone()), Arc::new(a.clone())];
    let names = |v: Vec<&NodeImage>| -> Vec<String> {
        v.iter().map(|n| n.metadata.name.clone().unwrap()).collect()
    };
    let by_name = job(
        "  image: nginx\n  selector:\n    names: [b, zz]\n  completionPolicy: {type: Always}\n",
    );
    assert_eq!(names(targets::select(&by_name, &all, &[])), vec!["b"]);
    let by_label = job(
        "  image: nginx\n  selector:\n    matchExpressions:\n    - {key: zone, operator: In, values: [x, 'y']}\n  completionPolicy: {type: Always}\n",
    );
    assert_eq!(names(targets::select(&by_label, &all, &[])), vec!["a"]);
    let everyone = job("  image: nginx\n  completionPolicy: {type: Always}\n");
    assert_eq!(names(targets::select(&everyone, &all, &[])), vec!["a", "b"]);
    let by_pod = job(
        "  image: nginx\n  podSelector:\n    matchLabels: {app: web}\n  completionPolicy: {type: Always}\n",
    );
    let pod = |ns: &str, node: &str| {
        let mut p = Pod {
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        p.metadata.namespace = Some(ns.into());
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        p
    };
    let pods = vec![pod("default", "b"), pod("elsewhere", "a")];
    assert_eq!(names(targets::select(&by_pod, &all, &pods)), vec!["b"]);
}
