//! What the pod and SidecarSet webhooks read on every request, kept in
//! memory by watches: the SidecarSets (v1beta1), the Namespaces (their
//! labels, for `namespaceSelector`) and the PodUnavailableBudgets. A pod
//! admission then costs no API call. The webhook server reports ready only
//! once all are listed.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use keelson_api::apps::v1beta1::sidecarset::SidecarSet;
use keelson_api::policy::v1alpha1::podunavailablebudget::PodUnavailableBudget;
use kube::runtime::reflector::{self, Store};
use kube::{Api, Client};

use crate::follow::follow;

/// The watched objects.
#[derive(Clone)]
pub struct Caches {
    pub sidecarsets: Store<SidecarSet>,
    pub namespaces: Store<Namespace>,
    pub budgets: Store<PodUnavailableBudget>,
}

impl Caches {
    /// Caches that never fill (for tests of the pure paths).
    pub fn empty() -> Self {
        Self {
            sidecarsets: reflector::store::<SidecarSet>().0,
            namespaces: reflector::store::<Namespace>().0,
            budgets: reflector::store::<PodUnavailableBudget>().0,
        }
    }

    /// Caches holding exactly these objects (for tests).
    #[cfg(test)]
    pub fn from_objects(sets: Vec<SidecarSet>, namespaces: Vec<Namespace>) -> Self {
        use kube::runtime::watcher::Event;
        let (sidecarsets, mut w1) = reflector::store::<SidecarSet>();
        for s in sets {
            w1.apply_watcher_event(&Event::Apply(s));
        }
        let (ns, mut w2) = reflector::store::<Namespace>();
        for n in namespaces {
            w2.apply_watcher_event(&Event::Apply(n));
        }
        // The stores stay readable after their writers go.
        std::mem::forget((w1, w2));
        Self {
            sidecarsets,
            namespaces: ns,
            budgets: reflector::store::<PodUnavailableBudget>().0,
        }
    }

    /// Starts the watches; they run while the returned guards live.
    pub fn start(client: &Client) -> (Self, Vec<crate::follow::Watch>) {
        let (sidecarsets, a) = follow(Api::<SidecarSet>::all(client.clone()), "SidecarSets");
        let (namespaces, b) = follow(Api::<Namespace>::all(client.clone()), "Namespaces");
        let (budgets, c) = follow(
            Api::<PodUnavailableBudget>::all(client.clone()),
            "PodUnavailableBudgets",
        );
        (
            Self {
                sidecarsets,
                namespaces,
                budgets,
            },
            vec![a, b, c],
        )
    }

    /// Waits until all have been listed once.
    pub async fn ready(&self) {
        let _ = self.sidecarsets.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.budgets.wait_until_ready().await;
    }

    /// The SidecarSets, as shared snapshots.
    pub fn sidecarsets(&self) -> Vec<Arc<SidecarSet>> {
        self.sidecarsets.state()
    }

    /// The labels of namespace `name`, if known.
    pub fn namespace_labels(
        &self,
        name: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        self.namespaces
            .get(&reflector::ObjectRef::new(name))
            .map(|n| n.metadata.labels.clone().unwrap_or_default())
    }
}
