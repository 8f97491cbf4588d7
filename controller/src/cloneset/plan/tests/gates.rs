//! `CloneSetShortHash`, `CloneSetPartitionRollback` and
//! `RecreatePodWhenChangeVCTInCloneSetGate`.

use super::*;

fn starts(p: &Plan) -> Vec<(&str, &Value)> {
    p.steps
        .iter()
        .filter_map(|s| match s {
            Step::InPlace { pod, start } => Some((pod.as_str(), &start.pod_patch)),
            _ => None,
        })
        .collect()
}

#[test]
fn short_hash_labels_pods_with_the_hash_alone() {
    assert_eq!(revision_label("web-5d8f7c9b4", false), "web-5d8f7c9b4");
    assert_eq!(revision_label("web-5d8f7c9b4", true), "5d8f7c9b4");
    let c = cs("  replicas: 1\n  updateStrategy: {type: InPlaceIfPossible}\n");
    let with = With {
        short_hash: true,
        ..Default::default()
    };
    let p = run_with(
        &c,
        &[pod("web-a", "old", true)],
        "web-old",
        "web-new",
        &with,
    );
    let [(name, patch)] = starts(&p)[..] else {
        panic!("{:?}", p.steps)
    };
    assert_eq!(name, "web-a");
    assert_eq!(
        patch["metadata"]["labels"]["controller-revision-hash"],
        "new"
    );
    // A pod labelled with the short hash counts as on its revision.
    let p = run_with(
        &c,
        &[pod("web-a", "new", true)],
        "web-new",
        "web-new",
        &with,
    );
    assert!(starts(&p).is_empty(), "{:?}", p.steps);
}

#[test]
fn partition_rollback_takes_pods_back_to_the_current_revision() {
    // 4 pods, 3 updated, partition raised to 3: two go back.
    let c = cs(
        "  replicas: 4\n  updateStrategy: {type: InPlaceIfPossible, partition: 3, maxUnavailable: 4}\n",
    );
    let pods = [
        pod("web-a", "web-old", true),
        pod("web-b", "web-new", true),
        pod("web-c", "web-new", true),
        pod("web-d", "web-new", true),
    ];
    let without = run(&c, &pods, "web-old", "web-new");
    assert!(starts(&without).is_empty(), "no rollback without the gate");
    let with = With {
        partition_rollback: true,
        ..Default::default()
    };
    let p = run_with(&c, &pods, "web-old", "web-new", &with);
    let back = starts(&p);
    assert_eq!(back.len(), 2, "{:?}", p.steps);
    for (name, patch) in back {
        assert_ne!(name, "web-a");
        assert_eq!(
            patch["metadata"]["labels"]["controller-revision-hash"],
            "web-old"
        );
        assert_eq!(patch["spec"]["containers"][0]["image"], "nginx:1");
    }
    // Nothing to roll back to once current and update revision agree.
    let p = run_with(&c, &pods, "web-new", "web-new", &with);
    assert!(starts(&p).is_empty(), "{:?}", p.steps);
}

#[test]
fn partition_rollback_surges_on_the_current_revision() {
    let c = cs("  replicas: 2\n  updateStrategy: {partition: 2, maxSurge: 1, maxUnavailable: 0}\n");
    let pods = [pod("web-a", "web-new", true), pod("web-b", "web-new", true)];
    let with = With {
        partition_rollback: true,
        ..Default::default()
    };
    let p = run_with(&c, &pods, "web-old", "web-new", &with);
    assert_eq!(
        p.steps,
        vec![Step::Create {
            revision: "web-old".into(),
            count: 1
        }]
    );
}

#[test]
fn a_claim_template_change_recreates_under_the_gate() {
    let c = cs("  replicas: 1\n  updateStrategy: {type: InPlaceIfPossible}\n");
    let hashes = |old: &str, new: &str| {
        BTreeMap::from([
            ("web-old".to_string(), old.to_string()),
            ("web-new".to_string(), new.to_string()),
        ])
    };
    let pods = [pod("web-a", "web-old", true)];
    let recreate = |p: &Plan| matches!(&p.steps[..], [Step::Patch { patch, .. }] if patch["metadata"]["labels"][SPECIFIED_DELETE_KEY] == "true");
    let gated = With {
        vct_hashes: hashes("1", "2"),
        recreate_on_vct_change: true,
        ..Default::default()
    };
    assert!(recreate(&run_with(&c, &pods, "web-old", "web-new", &gated)));
    // Without the gate, with equal hashes, or a hash missing: in place.
    for with in [
        With {
            vct_hashes: hashes("1", "2"),
            ..Default::default()
        },
        With {
            vct_hashes: hashes("1", "1"),
            recreate_on_vct_change: true,
            ..Default::default()
        },
        With {
            vct_hashes: BTreeMap::from([("web-new".to_string(), "2".to_string())]),
            recreate_on_vct_change: true,
            ..Default::default()
        },
    ] {
        let p = run_with(&c, &pods, "web-old", "web-new", &with);
        assert_eq!(starts(&p).len(), 1, "{:?}", p.steps);
    }
    // InPlaceOnly ignores the claim templates.
    let only = cs("  replicas: 1\n  updateStrategy: {type: InPlaceOnly}\n");
    assert_eq!(
        starts(&run_with(&only, &pods, "web-old", "web-new", &gated)).len(),
        1
    );
}
