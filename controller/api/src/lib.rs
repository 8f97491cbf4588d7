//! OpenKruise's API in Rust: the `apps.kruise.io` and `policy.kruise.io`
//! kinds with OpenKruise's versions, field names, defaults and status
//! fields, so existing manifests apply unchanged. Field lists were read
//! from OpenKruise's `apis/` (Go); the Rust is Keelson's own.
//!
//! One module per version of a group; one file per kind (or a family of
//! kinds that share types).

pub mod apps;
pub mod envmeta;
pub mod policy;
pub mod validate;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD Keelson serves, as generated from the types.
pub fn crds() -> Vec<CustomResourceDefinition> {
    use apps::v1alpha1 as a1;
    use apps::v1beta1 as b1;
    let statefulset = kube::core::crd::merge_crds(
        vec![
            a1::statefulset::StatefulSet::crd(),
            b1::statefulset::StatefulSet::crd(),
        ],
        b1::statefulset::STORAGE_VERSION,
    )
    .expect("both StatefulSet versions describe the same kind");
    vec![
        a1::broadcastjob::BroadcastJob::crd(),
        a1::cloneset::CloneSet::crd(),
        a1::containerrecreaterequest::ContainerRecreateRequest::crd(),
        a1::daemonset::DaemonSet::crd(),
        a1::imagelistpulljob::ImageListPullJob::crd(),
        a1::imagepulljob::ImagePullJob::crd(),
        a1::nodeimage::NodeImage::crd(),
        a1::resourcedistribution::ResourceDistribution::crd(),
        a1::sidecarset::SidecarSet::crd(),
        statefulset,
        a1::uniteddeployment::UnitedDeployment::crd(),
        a1::workloadspread::WorkloadSpread::crd(),
        policy::v1alpha1::podunavailablebudget::PodUnavailableBudget::crd(),
    ]
}

/// A CRD's file name under `deploy/crds/`: `<group>_<plural>.yaml`, as
/// OpenKruise names its CRD files.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}
