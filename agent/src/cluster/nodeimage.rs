//! This node's NodeImage ↔ the pull engine, without I/O: which pulls the
//! spec asks for (one per image tag and version: a new version is a new
//! round of pulls), and the NodeImage status that the pulls' states make.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keelson_api::apps::v1beta1::nodeimage::{
    IMAGE_PHASE_FAILED, IMAGE_PHASE_PULLING, IMAGE_PHASE_SUCCEEDED, IMAGE_PHASE_WAITING,
    ImageTagStatus, NodeImage, NodeImageStatus, ReferenceObject,
};

use crate::images::pulls::{Phase, PullPolicy, PullSpec, PullStatus};

/// One pull the NodeImage asks for.
#[derive(Debug, Clone)]
pub struct TagPull {
    /// NodeImage key (familiar image name) and tag (or digest).
    pub name: String,
    pub tag: String,
    pub version: i64,
    /// The pull, secrets not yet filled in.
    pub spec: PullSpec,
    /// Secrets to read and add as `.dockerconfigjson` documents.
    pub secrets: Vec<ReferenceObject>,
}

impl TagPull {
    /// The key under which the agent remembers this round's pull.
    pub fn key(&self) -> String {
        format!("{}:{}#{}", self.name, self.tag, self.version)
    }
}

/// The full reference of `name` at `tag` (`@` for a digest).
pub fn reference(name: &str, tag: &str) -> String {
    if tag.contains(':') {
        format!("{name}@{tag}")
    } else {
        format!("{name}:{tag}")
    }
}

/// Every pull `node` asks for, in image then tag order.
pub fn wanted(node: &NodeImage) -> Vec<TagPull> {
    let mut out = vec![];
    for (name, image) in &node.spec.images {
        for t in &image.tags {
            let mut spec = PullSpec::new(&reference(name, &t.tag));
            if let Some(p) = &t.pull_policy {
                if let Some(s) = p.timeout_seconds.filter(|s| *s > 0) {
                    spec.timeout_seconds = s as u64;
                }
                if let Some(b) = p.backoff_limit.filter(|b| *b >= 0) {
                    spec.backoff_limit = b as u32;
                }
            }
            spec.policy = match t.image_pull_policy.as_deref() {
                Some("Always") => PullPolicy::Always,
                _ => PullPolicy::IfNotPresent,
            };
            if let Some(sc) = &image.sandbox_config {
                spec.sandbox_labels = sc.labels.clone().into_iter().collect();
                spec.sandbox_annotations = sc.annotations.clone().into_iter().collect();
            }
            out.push(TagPull {
                name: name.clone(),
                tag: t.tag.clone(),
                version: t.version,
                spec,
                secrets: image.pull_secrets.clone(),
            });
        }
    }
    out
}

/// A pull's time as the API stores it: whole seconds (metav1.Time is
/// serialised without fractions, so a finer time would never compare equal
/// to what is read back and the status would be written again forever).
fn time(ms: Option<u64>) -> Option<Time> {
    let seconds = i64::try_from(ms? / 1000).ok()?;
    Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(seconds).ok()?,
    ))
}

/// The entry for `tag` at `version` in the status the API holds, when it
/// is finished: it stays as it is (first finish wins; see
/// [`ImageTagStatus::is_finished`]).
pub fn finished<'a>(
    node: &'a NodeImage,
    name: &str,
    tag: &str,
    version: i64,
) -> Option<&'a ImageTagStatus> {
    node.status
        .as_ref()?
        .image_statuses
        .get(name)?
        .tags
        .iter()
        .find(|s| s.tag == tag && s.version == version && s.is_finished())
}

/// The status `node` should have given the pulls the agent knows
/// (`pulls`: by [`TagPull::key`]). A tag without a pull yet is Waiting; a
/// tag whose entry in `node`'s status is already finished for its version
/// keeps that entry (the controller's timeouts may have finished it).
/// Entries of images and tags no longer in the spec are left out, and the
/// counters follow [`NodeImageStatus::recount`].
pub fn status(node: &NodeImage, pulls: &BTreeMap<String, PullStatus>) -> NodeImageStatus {
    let mut out = NodeImageStatus {
        first_sync_status: node
            .status
            .as_ref()
            .and_then(|s| s.first_sync_status.clone()),
        ..Default::default()
    };
    for want in wanted(node) {
        let entry = match finished(node, &want.name, &want.tag, want.version) {
            Some(done) => done.clone(),
            None => {
                let s = pulls.get(&want.key());
                let phase = match s.map(|p| p.phase) {
                    None | Some(Phase::Waiting) => IMAGE_PHASE_WAITING,
                    Some(Phase::Pulling) => IMAGE_PHASE_PULLING,
                    Some(Phase::Succeeded) => IMAGE_PHASE_SUCCEEDED,
                    Some(Phase::Failed) => IMAGE_PHASE_FAILED,
                };
                ImageTagStatus {
                    tag: want.tag.clone(),
                    phase: phase.into(),
                    progress: if phase == IMAGE_PHASE_SUCCEEDED {
                        100
                    } else {
                        0
                    },
                    start_time: s.and_then(|s| time(s.started_unix_ms)),
                    completion_time: s.and_then(|s| time(s.completed_unix_ms)),
                    version: want.version,
                    image_id: s.and_then(|s| s.image_id.clone()).unwrap_or_default(),
                    message: s.map(|s| s.message.clone()).filter(|m| !m.is_empty()),
                }
            }
        };
        out.image_statuses
            .entry(want.name.clone())
            .or_default()
            .tags
            .push(entry);
    }
    out.recount_tags(node.spec.tags());
    out
}

/// Whether writing `next` would change what the API stores as `node`'s
/// status (compared as serialised, the form the API keeps).
pub fn changes(node: &NodeImage, next: &NodeImageStatus) -> bool {
    serde_json::to_value(&node.status).ok() != serde_json::to_value(Some(next)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeImage {
        serde_saphyr::from_str(
            r#"
apiVersion: apps.kruise.io/v1beta1
kind: NodeImage
metadata: {name: node-a}
spec:
  images:
    nginx:
      pullSecrets: [{namespace: kruise-daemon-config, name: regcred}]
      sandboxConfig: {labels: {team: web}}
      tags:
      - {tag: "1.9.1", version: 2, pullPolicy: {timeoutSeconds: 120, backoffLimit: 1}, imagePullPolicy: Always}
      - {tag: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", version: 0}
    127.0.0.1:5000/team/app:
      tags:
      - {tag: v1, version: 0}
"#,
        )
        .unwrap()
    }

    #[test]
    fn one_pull_per_tag_and_version() {
        let w = wanted(&node());
        let refs: Vec<&str> = w.iter().map(|p| p.spec.image.as_str()).collect();
        assert_eq!(
            refs,
            vec![
                "127.0.0.1:5000/team/app:v1",
                "nginx:1.9.1",
                "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ]
        );
        let nginx = &w[1];
        assert_eq!(nginx.key(), "nginx:1.9.1#2");
        assert_eq!(
            (nginx.spec.timeout_seconds, nginx.spec.backoff_limit),
            (120, 1)
        );
        assert_eq!(nginx.spec.policy, PullPolicy::Always);
        assert_eq!(nginx.spec.sandbox_labels["team"], "web");
        assert_eq!(nginx.secrets[0].name, "regcred");
        assert_eq!(w[0].spec.timeout_seconds, 600, "defaults when not given");
    }

    #[test]
    fn status_from_the_pulls() {
        let n = node();
        let w = wanted(&n);
        let pull = |phase: Phase, image_id: Option<&str>| PullStatus {
            id: "p".into(),
            image: "x".into(),
            phase,
            attempts: 1,
            accepted_unix_ms: 1_000,
            started_unix_ms: Some(2_000),
            completed_unix_ms: (phase == Phase::Succeeded).then_some(3_000),
            image_id: image_id.map(str::to_string),
            message: "pulled".into(),
        };
        let mut pulls = BTreeMap::new();
        pulls.insert(w[1].key(), pull(Phase::Succeeded, Some("sha256:abc")));
        pulls.insert(w[2].key(), pull(Phase::Pulling, None));
        // An older round's pull does not count for version 2.
        pulls.insert("nginx:1.9.1#1".into(), pull(Phase::Failed, None));
        let s = status(&n, &pulls);
        assert_eq!(
            (s.desired, s.succeeded, s.pulling, s.waiting, s.failed),
            (3, 1, 1, 1, 0)
        );
        let tags = &s.image_statuses["nginx"].tags;
        assert_eq!(tags[0].tag, "1.9.1");
        assert_eq!((tags[0].phase.as_str(), tags[0].version), ("Succeeded", 2));
        assert_eq!(tags[0].image_id, "sha256:abc");
        assert_eq!(tags[0].progress, 100);
        assert_eq!(
            tags[0].completion_time.as_ref().unwrap().0.as_millisecond(),
            3_000
        );
        assert_eq!(
            s.image_statuses["127.0.0.1:5000/team/app"].tags[0].phase,
            "Waiting"
        );
    }

    fn pulled(started_ms: u64, completed_ms: Option<u64>) -> PullStatus {
        PullStatus {
            id: "p".into(),
            image: "x".into(),
            phase: if completed_ms.is_some() {
                Phase::Succeeded
            } else {
                Phase::Pulling
            },
            attempts: 1,
            accepted_unix_ms: started_ms,
            started_unix_ms: Some(started_ms),
            completed_unix_ms: completed_ms,
            image_id: completed_ms.map(|_| "sha256:abc".to_string()),
            message: String::new(),
        }
    }

    /// `node` as the API server hands it back once `status` was stored.
    fn stored(node: &NodeImage, status: &NodeImageStatus) -> NodeImage {
        let mut n = node.clone();
        n.status = Some(status.clone());
        serde_json::from_value(serde_json::to_value(&n).unwrap()).unwrap()
    }

    #[test]
    fn a_status_read_back_from_the_api_is_unchanged() {
        let n = node();
        let w = wanted(&n);
        let mut pulls = BTreeMap::new();
        // Times with milliseconds: the API keeps whole seconds.
        pulls.insert(
            w[0].key(),
            pulled(1_700_000_000_123, Some(1_700_000_004_567)),
        );
        pulls.insert(w[1].key(), pulled(1_700_000_001_999, None));
        let first = status(&n, &pulls);
        let back = stored(&n, &first);
        assert_eq!(
            back.status.as_ref(),
            Some(&first),
            "truncated to what is stored"
        );
        let again = status(&back, &pulls);
        assert!(!changes(&back, &again), "nothing to write: {again:?}");
        assert_eq!(
            again.image_statuses["127.0.0.1:5000/team/app"].tags[0]
                .start_time
                .as_ref()
                .unwrap()
                .0
                .as_second(),
            1_700_000_000
        );
    }

    #[test]
    fn an_image_dropped_from_the_spec_leaves_the_status() {
        let mut n = node();
        let w = wanted(&n);
        let mut pulls = BTreeMap::new();
        pulls.insert(w[1].key(), pulled(1_000, Some(2_000)));
        let before = status(&n, &pulls);
        assert!(before.image_statuses.contains_key("nginx"));
        n = stored(&n, &before);
        n.spec.images.remove("nginx");
        let after = status(&n, &pulls);
        assert!(changes(&n, &after));
        assert_eq!(
            after.image_statuses.keys().collect::<Vec<_>>(),
            vec!["127.0.0.1:5000/team/app"],
            "only images still in the spec"
        );
        assert_eq!((after.desired, after.succeeded, after.waiting), (1, 0, 1));
        let json = serde_json::to_value(&after).unwrap();
        assert!(json["imageStatuses"].get("nginx").is_none(), "{json}");
    }

    #[test]
    fn a_finished_entry_is_kept_for_its_version() {
        let n = node();
        let w = wanted(&n);
        // The controller failed nginx:1.9.1 (version 2) past its deadline
        // while the pull still runs here.
        let mut written = status(&n, &BTreeMap::new());
        let tag = &mut written.image_statuses.get_mut("nginx").unwrap().tags[0];
        tag.phase = "Failed".into();
        tag.message = Some("pulling exceeds the activeDeadlineSeconds".into());
        written.recount_tags(n.spec.tags());
        let n = stored(&n, &written);
        let mut pulls = BTreeMap::new();
        pulls.insert(w[1].key(), pulled(1_000, None));
        let next = status(&n, &pulls);
        assert!(!changes(&n, &next), "the verdict stays: {next:?}");
        // A new version of the tag is a new round: the agent's again.
        let mut bumped = n.clone();
        bumped.spec.images.get_mut("nginx").unwrap().tags[0].version = 3;
        let next = status(&bumped, &BTreeMap::new());
        let tag = &next.image_statuses["nginx"].tags[0];
        assert_eq!((tag.phase.as_str(), tag.version), ("Waiting", 3));
    }
}
