//! Which NodeImages an ImagePullJob targets: `selector.names`, or the
//! NodeImages whose labels (the node's) match `selector`, or the nodes
//! running pods that match `podSelector` in the job's namespace, or every
//! node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use keelson_api::apps::v1alpha1::imagepulljob::ImagePullJob;
use keelson_api::apps::v1beta1::nodeimage::NodeImage;

pub use crate::selector::matches;

fn is_empty(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
}

/// The job's target NodeImages among `all`, sorted by name; `pods` are
/// the cluster's pods (only needed with `podSelector`). `all` is the
/// controller's store as it reads it (shared, not copied).
pub fn select<'a>(
    job: &ImagePullJob,
    all: &'a [Arc<NodeImage>],
    pods: &[Pod],
) -> Vec<&'a NodeImage> {
    let t = &job.spec.template;
    let all: Vec<&'a NodeImage> = all.iter().map(Arc::as_ref).collect();
    let mut out: Vec<&NodeImage> = if let Some(sel) = &t.selector
        && !sel.names.is_empty()
    {
        all.into_iter()
            .filter(|n| {
                n.metadata
                    .name
                    .as_ref()
                    .is_some_and(|name| sel.names.contains(name))
            })
            .collect()
    } else if let Some(sel) = &t.selector
        && !is_empty(&sel.label_selector)
    {
        all.into_iter()
            .filter(|n| {
                matches(
                    &sel.label_selector,
                    n.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
                )
            })
            .collect()
    } else if let Some(ps) = &t.pod_selector {
        let nodes: BTreeSet<&str> = pods
            .iter()
            .filter(|p| p.metadata.namespace == job.metadata.namespace)
            .filter(|p| matches(ps, p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
            .filter_map(|p| p.spec.as_ref()?.node_name.as_deref())
            .collect();
        all.into_iter()
            .filter(|n| {
                n.metadata
                    .name
                    .as_deref()
                    .is_some_and(|name| nodes.contains(name))
            })
            .collect()
    } else {
        all
    };
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}
