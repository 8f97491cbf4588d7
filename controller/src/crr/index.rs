//! ContainerRecreateRequests by the pod they are about: the CRR
//! controller maps each pod event to its requests through this index,
//! kept from the requests' own watch events, instead of scanning every
//! request in the cluster per pod event.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use keelson_api::apps::v1alpha1::containerrecreaterequest::ContainerRecreateRequest;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

/// (namespace, pod name) → names of the requests about that pod.
type ByPod = HashMap<(String, String), BTreeSet<String>>;

/// The index; fed every watch event of the requests.
#[derive(Debug, Default)]
pub struct PodIndex {
    current: Mutex<ByPod>,
    /// The listing in progress after a (re)list began.
    relisting: Mutex<Option<ByPod>>,
}

fn key(crr: &ContainerRecreateRequest) -> Option<((String, String), String)> {
    Some((
        (crr.metadata.namespace.clone()?, crr.spec.pod_name.clone()),
        crr.metadata.name.clone()?,
    ))
}

fn insert(map: &mut ByPod, crr: &ContainerRecreateRequest) {
    if let Some((pod, name)) = key(crr) {
        map.entry(pod).or_default().insert(name);
    }
}

impl PodIndex {
    fn current(&self) -> std::sync::MutexGuard<'_, ByPod> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in one watch event.
    pub fn apply(&self, event: &Event<ContainerRecreateRequest>) {
        let mut relisting = self.relisting.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Apply(crr) => insert(&mut self.current(), crr),
            Event::Delete(crr) => {
                if let Some((pod, name)) = key(crr) {
                    let mut current = self.current();
                    if let Some(names) = current.get_mut(&pod) {
                        names.remove(&name);
                        if names.is_empty() {
                            current.remove(&pod);
                        }
                    }
                }
            }
            Event::Init => *relisting = Some(ByPod::new()),
            Event::InitApply(crr) => {
                if let Some(map) = relisting.as_mut() {
                    insert(map, crr);
                }
                // Until the listing is done, the old entries and the new
                // both answer.
                insert(&mut self.current(), crr);
            }
            Event::InitDone => {
                if let Some(map) = relisting.take() {
                    *self.current() = map;
                }
            }
        }
    }

    /// The requests about `pod`.
    pub fn requests_of(&self, pod: &Pod) -> Vec<ObjectRef<ContainerRecreateRequest>> {
        let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
            return vec![];
        };
        self.current()
            .get(&(ns.clone(), name.clone()))
            .into_iter()
            .flatten()
            .map(|crr| ObjectRef::new(crr).within(ns))
            .collect()
    }

    /// How many pods have requests.
    pub fn pods(&self) -> usize {
        self.current().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crr(ns: &str, name: &str, pod: &str) -> ContainerRecreateRequest {
        serde_saphyr::from_str(&format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ContainerRecreateRequest\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  podName: {pod}\n  containers: [{{name: app}}]\n"
        ))
        .unwrap()
    }

    fn pod(ns: &str, name: &str) -> Pod {
        serde_saphyr::from_str(&format!("metadata: {{name: {name}, namespace: {ns}}}")).unwrap()
    }

    fn names(refs: Vec<ObjectRef<ContainerRecreateRequest>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn pods_map_to_their_requests_through_applies_deletes_and_relists() {
        let index = PodIndex::default();
        index.apply(&Event::Apply(crr("team", "a", "web-0")));
        index.apply(&Event::Apply(crr("team", "b", "web-0")));
        index.apply(&Event::Apply(crr("team", "c", "web-1")));
        index.apply(&Event::Apply(crr("prod", "d", "web-0")));
        assert_eq!(names(index.requests_of(&pod("team", "web-0"))), ["a", "b"]);
        assert_eq!(names(index.requests_of(&pod("prod", "web-0"))), ["d"]);
        assert!(index.requests_of(&pod("team", "other")).is_empty());
        index.apply(&Event::Delete(crr("team", "a", "web-0")));
        assert_eq!(names(index.requests_of(&pod("team", "web-0"))), ["b"]);
        // A relist that no longer has c nor d: they go when it is done.
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(crr("team", "b", "web-0")));
        index.apply(&Event::InitApply(crr("team", "e", "web-2")));
        assert_eq!(names(index.requests_of(&pod("team", "web-1"))), ["c"]);
        index.apply(&Event::InitDone);
        assert!(index.requests_of(&pod("team", "web-1")).is_empty());
        assert!(index.requests_of(&pod("prod", "web-0")).is_empty());
        assert_eq!(names(index.requests_of(&pod("team", "web-2"))), ["e"]);
        assert_eq!(index.pods(), 2);
    }
}
