//! The NodeImage reconcile, state in → decision out.

use super::*;
use crate::testing::at;

fn node(yaml: &str) -> Node {
    serde_saphyr::from_str(&format!("apiVersion: v1\nkind: Node\n{yaml}")).unwrap()
}

/// A Node named node-a, Ready since t=1000, labelled zone=a.
fn ready_node() -> Node {
    node(
        "metadata: {name: node-a, labels: {zone: a}}\nstatus:\n  conditions:\n  - {type: Ready, status: 'True', lastTransitionTime: '1970-01-01T00:16:40Z'}\n",
    )
}

fn image(yaml: &str) -> NodeImage {
    serde_saphyr::from_str(&format!(
        "apiVersion: apps.kruise.io/v1beta1\nkind: NodeImage\nmetadata: {{name: node-a, resourceVersion: '9', labels: {{zone: a}}}}\n{yaml}"
    ))
    .unwrap()
}

/// One tag `nginx:1.9.1`, version 1, created at t=1000, owned by job
/// team/job (uid-job), with `policy` as its pullPolicy.
fn one_tag(policy: &str, status: &str) -> NodeImage {
    image(&format!(
        "spec:\n  images:\n    nginx:\n      tags:\n      - tag: 1.9.1\n        version: 1\n        createdAt: '1970-01-01T00:16:40Z'\n        pullPolicy: {policy}\n        ownerReferences:\n        - {{apiVersion: apps.kruise.io/v1alpha1, kind: ImagePullJob, namespace: team, name: job, uid: uid-job}}\n{status}"
    ))
}

fn jobs(uid: Option<&str>) -> BTreeMap<(String, String), Option<String>> {
    BTreeMap::from([(("team".into(), "job".into()), uid.map(String::from))])
}

fn observe<'a>(
    node: Option<&'a Node>,
    image: Option<&'a NodeImage>,
    jobs: &'a BTreeMap<(String, String), Option<String>>,
    now: i64,
) -> Decision {
    reconcile(&Observed {
        node,
        image,
        jobs,
        now: at(now),
        creation_delay_seconds: DEFAULT_CREATION_DELAY_SECONDS,
    })
}

#[test]
fn a_node_gets_its_nodeimage_after_being_ready_for_the_delay() {
    let n = ready_node();
    let none = BTreeMap::new();
    assert_eq!(
        observe(Some(&n), None, &none, 1010),
        Decision::Wait {
            after_seconds: Some(20)
        }
    );
    assert_eq!(
        observe(Some(&n), None, &none, 1030),
        Decision::Create {
            labels: BTreeMap::from([("zone".to_string(), "a".to_string())])
        }
    );
    let not_ready = node(
        "metadata: {name: node-a}\nstatus:\n  conditions:\n  - {type: Ready, status: 'False'}\n",
    );
    assert_eq!(
        observe(Some(&not_ready), None, &none, 5000),
        Decision::Wait {
            after_seconds: None
        }
    );
    let virtual_node = node(
        "metadata: {name: vk, labels: {type: virtual-kubelet}}\nstatus:\n  conditions:\n  - {type: Ready, status: 'True'}\n",
    );
    assert_eq!(
        observe(Some(&virtual_node), None, &none, 5000),
        Decision::Wait {
            after_seconds: None
        }
    );
}

#[test]
fn the_nodeimage_goes_with_its_node_unless_fake() {
    let none = BTreeMap::new();
    let i = image("spec: {}\n");
    assert_eq!(observe(None, Some(&i), &none, 5000), Decision::Delete);
    let mut deleting = ready_node();
    deleting.metadata.deletion_timestamp = Some(at(4000));
    assert_eq!(
        observe(Some(&deleting), Some(&i), &none, 5000),
        Decision::Delete
    );
    let fake = serde_saphyr::from_str::<NodeImage>(
        "apiVersion: apps.kruise.io/v1beta1\nkind: NodeImage\nmetadata: {name: node-a, labels: {apps.kruise.io/fake-nodeimage: 'true'}}\nspec: {}\n",
    )
    .unwrap();
    assert_eq!(
        observe(None, Some(&fake), &none, 5000),
        Decision::Wait {
            after_seconds: None
        }
    );
}

#[test]
fn node_labels_are_copied() {
    let mut n = ready_node();
    n.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("pool".into(), "gpu".into());
    let none = BTreeMap::new();
    let i = image("spec: {}\n");
    match observe(Some(&n), Some(&i), &none, 5000) {
        Decision::Update { object, changes } => {
            assert_eq!(object.metadata.labels, n.metadata.labels);
            assert_eq!(object.metadata.resource_version.as_deref(), Some("9"));
            assert_eq!(changes, ["node labels changed"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tags_of_deleted_or_recreated_jobs_go_and_unreadable_ones_stay() {
    let n = ready_node();
    let i = one_tag("{}", "");
    for (jobs, gone) in [
        (jobs(None), true),
        (jobs(Some("another-uid")), true),
        (jobs(Some("uid-job")), false),
        (BTreeMap::new(), false),
    ] {
        match observe(Some(&n), Some(&i), &jobs, 1100) {
            Decision::Update { object, changes } if gone => {
                assert!(object.spec.images.is_empty(), "{object:?}");
                assert!(
                    changes
                        .iter()
                        .any(|c| c.contains("1 owner(s) no longer exist"))
                );
                assert!(
                    changes
                        .iter()
                        .any(|c| c.contains("image nginx has no tags left"))
                );
            }
            Decision::Wait { after_seconds } if !gone => {
                // Waiting for the node's answer (created at 1000, 600 s).
                assert_eq!(after_seconds, Some(500));
            }
            other => panic!("jobs {jobs:?}: {other:?}"),
        }
    }
}

#[test]
fn other_owners_keep_a_tag_when_one_job_goes() {
    let n = ready_node();
    let mut i = one_tag("{}", "");
    let tag = &mut i.spec.images.get_mut("nginx").unwrap().tags[0];
    let mut other = tag.owner_references[0].clone();
    other.name = Some("other".into());
    other.uid = Some("uid-other".into());
    tag.owner_references.push(other);
    let mut jobs = jobs(None);
    jobs.insert(("team".into(), "other".into()), Some("uid-other".into()));
    match observe(Some(&n), Some(&i), &jobs, 1100) {
        Decision::Update { object, .. } => {
            let owners = &object.spec.images["nginx"].tags[0].owner_references;
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].name.as_deref(), Some("other"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_finished_tag_goes_after_its_ttl() {
    let n = ready_node();
    let jobs = jobs(Some("uid-job"));
    let status = "status:\n  imageStatuses:\n    nginx:\n      tags:\n      - {tag: 1.9.1, phase: Succeeded, version: 1, completionTime: '1970-01-01T00:20:00Z'}\n";
    let i = one_tag("{ttlSecondsAfterFinished: 100}", status);
    assert_eq!(
        observe(Some(&n), Some(&i), &jobs, 1250),
        Decision::Wait {
            after_seconds: Some(50)
        }
    );
    match observe(Some(&n), Some(&i), &jobs, 1300) {
        Decision::Update { object, changes } => {
            assert!(object.spec.images.is_empty());
            assert!(changes[0].contains("past its ttlSecondsAfterFinished (100s)"));
        }
        other => panic!("{other:?}"),
    }
    // A status about an older version does not start the TTL.
    let old = status.replace("version: 1", "version: 0");
    let i = one_tag("{ttlSecondsAfterFinished: 100}", &old);
    assert!(!matches!(
        observe(Some(&n), Some(&i), &jobs, 1300),
        Decision::Update { .. }
    ));
}

#[test]
fn a_tag_without_created_at_gets_one() {
    let n = ready_node();
    let jobs = jobs(Some("uid-job"));
    let mut i = one_tag("{}", "");
    i.spec.images.get_mut("nginx").unwrap().tags[0].created_at = None;
    match observe(Some(&n), Some(&i), &jobs, 4242) {
        Decision::Update { object, .. } => {
            assert_eq!(
                object.spec.images["nginx"].tags[0].created_at,
                Some(at(4242))
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unanswered_tag_fails_after_the_response_timeout() {
    let n = ready_node();
    let jobs = jobs(Some("uid-job"));
    let i = one_tag("{}", "");
    assert_eq!(
        observe(Some(&n), Some(&i), &jobs, 1599),
        Decision::Wait {
            after_seconds: Some(1)
        }
    );
    match observe(Some(&n), Some(&i), &jobs, 1600) {
        Decision::UpdateStatus {
            object,
            after_seconds,
        } => {
            let s = object.status.unwrap();
            let t = &s.image_statuses["nginx"].tags[0];
            assert_eq!(
                (t.phase.as_str(), t.version, t.message.as_deref()),
                ("Failed", 1, Some(NOT_RESPONDED))
            );
            assert_eq!(t.completion_time, Some(at(1600)));
            assert_eq!((s.desired, s.failed, s.succeeded, s.pulling), (1, 1, 0, 0));
            assert_eq!(after_seconds, None);
        }
        other => panic!("{other:?}"),
    }
    // An answer about an older version counts as no answer.
    let stale = one_tag(
        "{}",
        "status:\n  imageStatuses:\n    nginx:\n      tags:\n      - {tag: 1.9.1, phase: Succeeded, version: 0}\n",
    );
    match observe(Some(&n), Some(&stale), &jobs, 1600) {
        Decision::UpdateStatus { object, .. } => {
            let s = object.status.unwrap();
            assert_eq!(s.image_statuses["nginx"].tags.len(), 1);
            assert_eq!(s.image_statuses["nginx"].tags[0].version, 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_pull_past_its_deadline_fails_and_finished_ones_are_left_alone() {
    let n = ready_node();
    let jobs = jobs(Some("uid-job"));
    let pulling = "status:\n  desired: 1\n  pulling: 1\n  imageStatuses:\n    nginx:\n      tags:\n      - {tag: 1.9.1, phase: Pulling, version: 1}\n";
    let i = one_tag("{activeDeadlineSeconds: 60}", pulling);
    assert_eq!(
        observe(Some(&n), Some(&i), &jobs, 1000 + 600 + 30),
        Decision::Wait {
            after_seconds: Some(30)
        }
    );
    match observe(Some(&n), Some(&i), &jobs, 1000 + 660) {
        Decision::UpdateStatus { object, .. } => {
            let s = object.status.unwrap();
            let t = &s.image_statuses["nginx"].tags[0];
            assert_eq!(
                (t.phase.as_str(), t.message.as_deref()),
                ("Failed", Some(DEADLINE_EXCEEDED))
            );
            assert_eq!((s.desired, s.failed, s.pulling), (1, 1, 0));
        }
        other => panic!("{other:?}"),
    }
    let done = pulling.replace(
        "phase: Pulling",
        "phase: Succeeded, completionTime: '1970-01-01T00:17:00Z'",
    );
    let i = one_tag("{activeDeadlineSeconds: 60}", &done);
    assert_eq!(
        observe(Some(&n), Some(&i), &jobs, 99_999),
        Decision::Wait {
            after_seconds: None
        }
    );
}

/// The agent writes every entry until it is finished; the controller only
/// finishes unanswered or overdue ones, never rewrites a finished one, and
/// counts as the agent does (`NodeImageStatus::recount`), so neither side
/// undoes the other's write.
#[test]
fn the_controller_finishes_entries_only_and_counts_as_the_agent_does() {
    let n = ready_node();
    let jobs = jobs(Some("uid-job"));
    // Two tags: 1.9.1 is Waiting on the node (as the agent wrote it, with
    // its counters), 1.10 the node never answered.
    let two = image(
        "spec:\n  images:\n    nginx:\n      tags:\n      - {tag: 1.9.1, version: 1, createdAt: '1970-01-01T00:16:40Z', pullPolicy: {activeDeadlineSeconds: 60}}\n      - {tag: '1.10', version: 1, createdAt: '1970-01-01T00:16:40Z'}\nstatus:\n  desired: 2\n  waiting: 2\n  imageStatuses:\n    nginx:\n      tags:\n      - {tag: 1.9.1, phase: Waiting, version: 1}\n",
    );
    match observe(Some(&n), Some(&two), &jobs, 1000 + 650) {
        Decision::UpdateStatus { object, .. } => {
            let s = object.status.unwrap();
            let mut agent = s.clone();
            agent.recount_tags(object.spec.tags());
            assert_eq!(s, agent, "the agent's counters");
            assert_eq!((s.desired, s.waiting, s.failed), (2, 1, 1));
        }
        other => panic!("{other:?}"),
    }
    // A Failed entry (the agent's, without a completion time) past the
    // deadline is finished already: left alone.
    let failed = one_tag(
        "{activeDeadlineSeconds: 60}",
        "status:\n  desired: 1\n  failed: 1\n  imageStatuses:\n    nginx:\n      tags:\n      - {tag: 1.9.1, phase: Failed, version: 1, message: boom}\n",
    );
    assert_eq!(
        observe(Some(&n), Some(&failed), &jobs, 99_999),
        Decision::Wait {
            after_seconds: None
        }
    );
}
