//! OpenKruise's API in Rust: the `apps.kruise.io` and `policy.kruise.io`
//! kinds with OpenKruise's versions, field names, defaults and status
//! fields, so existing manifests apply unchanged. Field lists were read
//! from OpenKruise's `apis/` (Go); the Rust is Keelson's own.
//!
//! One module per version of a group; one file per kind (or a family of
//! kinds that share types).

pub mod apps;
pub mod conversion;
pub mod envmeta;
pub mod inplace;
pub mod policy;
pub mod served;
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
    let mut sidecarset = kube::core::crd::merge_crds(
        vec![
            a1::sidecarset::SidecarSet::crd(),
            b1::sidecarset::SidecarSet::crd(),
        ],
        b1::sidecarset::STORAGE_VERSION,
    )
    .expect("both SidecarSet versions describe the same kind");
    sidecarset.spec.conversion = Some(conversion_webhook());
    // Served as v1alpha1 and v1beta1, stored as v1beta1, converted by the
    // webhook ([`conversion`]).
    let converted = |alpha: CustomResourceDefinition, beta: CustomResourceDefinition| {
        let kind = alpha.spec.names.kind.clone();
        let mut crd = kube::core::crd::merge_crds(vec![alpha, beta], "v1beta1")
            .unwrap_or_else(|e| panic!("both {kind} versions describe the same kind: {e}"));
        crd.spec.conversion = Some(conversion_webhook());
        crd
    };
    vec![
        a1::broadcastjob::BroadcastJob::crd(),
        a1::cloneset::CloneSet::crd(),
        a1::containerrecreaterequest::ContainerRecreateRequest::crd(),
        converted(
            a1::daemonset::DaemonSet::crd(),
            b1::daemonset::DaemonSet::crd(),
        ),
        converted(
            a1::imagelistpulljob::ImageListPullJob::crd(),
            b1::imagelistpulljob::ImageListPullJob::crd(),
        ),
        converted(
            a1::imagepulljob::ImagePullJob::crd(),
            b1::imagepulljob::ImagePullJob::crd(),
        ),
        converted(
            a1::nodeimage::NodeImage::crd(),
            b1::nodeimage::NodeImage::crd(),
        ),
        a1::resourcedistribution::ResourceDistribution::crd(),
        sidecarset,
        statefulset,
        a1::uniteddeployment::UnitedDeployment::crd(),
        a1::workloadspread::WorkloadSpread::crd(),
        policy::v1alpha1::podunavailablebudget::PodUnavailableBudget::crd(),
    ]
}

/// Where the API server sends ConversionReviews for kinds whose versions
/// differ in shape: Keelson's webhook Service (the controller writes the
/// CA into `caBundle`, as for its admission webhooks).
pub const CONVERSION_SERVICE: (&str, &str, &str) =
    ("keelson-system", "keelson-webhook", "/convert");

fn conversion_webhook()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceConversion {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    let (namespace, name, path) = CONVERSION_SERVICE;
    ext::CustomResourceConversion {
        strategy: "Webhook".into(),
        webhook: Some(ext::WebhookConversion {
            conversion_review_versions: vec!["v1".into()],
            client_config: Some(ext::WebhookClientConfig {
                service: Some(ext::ServiceReference {
                    namespace: namespace.into(),
                    name: name.into(),
                    path: Some(path.into()),
                    port: Some(443),
                }),
                ..Default::default()
            }),
        }),
    }
}

/// A CRD's file name under `deploy/crds/`: `<group>_<plural>.yaml`, as
/// OpenKruise names its CRD files.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}
