//! Advanced DaemonSet (`apps.kruise.io` `DaemonSet`): one pod per
//! eligible node, like the built-in DaemonSet — node selector, required
//! node affinity, taints against tolerations ([`placement`]), the pod
//! pinned to its node by a `metadata.name` node affinity term
//! ([`newpod`]) — with a cap on pods created at once (`burstReplicas`),
//! `minReadySeconds`, a `preDelete` lifecycle hook, and a rolling update
//! that can hold nodes back (`partition`, `selector`), surge a new pod
//! next to the old one (`maxSurge`), pause, or update in place
//! (`InPlaceIfPossible`, on the shared [`crate::workload`] machinery),
//! the new images pre-downloaded first ([`predownload`]).
//! [`plan`] decides one reconcile, [`status`] what it reports,
//! [`controller`] carries it out.

pub mod controller;
pub mod newpod;
pub mod placement;
pub mod plan;
pub mod predownload;
pub mod status;
