//! Which version of a kind the cluster stores, told from API discovery
//! alone (no read access to CRDs needed): every served version of a
//! resource carries the same `storageVersionHash`, the API server's hash
//! of `<group>/<storage version>/<kind>`
//! (`k8s.io/apiserver/pkg/endpoints/discovery.StorageVersionHash`: the
//! first 8 bytes of its SHA-256, base64). Reading the stored version needs
//! no conversion, so it keeps working while the conversion webhook is
//! away.

use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use sha2::{Digest, Sha256};

/// The API server's storage version hash of `group/version/kind`.
pub fn storage_version_hash(group: &str, version: &str, kind: &str) -> String {
    let digest = Sha256::digest(format!("{group}/{version}/{kind}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

/// The version to read `plural` (kind `kind`, group `group`) in, given the
/// discovery documents of the candidate versions (`None`: that version is
/// not served). The stored version when discovery tells it; otherwise the
/// first candidate that serves the resource (list them newest first).
pub fn pick<'a>(
    group: &str,
    kind: &str,
    plural: &str,
    candidates: &[(&'a str, Option<&APIResourceList>)],
) -> Option<&'a str> {
    let served: Vec<(&str, Option<&str>)> = candidates
        .iter()
        .filter_map(|(version, list)| {
            let r = (*list)?.resources.iter().find(|r| r.name == plural)?;
            Some((*version, r.storage_version_hash.as_deref()))
        })
        .collect();
    let stored = served.iter().find_map(|(_, hash)| {
        let hash = (*hash)?;
        served
            .iter()
            .map(|(v, _)| *v)
            .find(|v| storage_version_hash(group, v, kind) == hash)
    });
    stored.or_else(|| served.first().map(|(v, _)| *v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;

    #[test]
    fn hashes_as_the_api_server_does() {
        // As every cluster's discovery shows them.
        assert_eq!(
            storage_version_hash("apps", "v1", "Deployment"),
            "8aSe+NMegvE="
        );
        assert_eq!(storage_version_hash("", "v1", "Pod"), "xPOwRZ+Yhw8=");
    }

    fn list(version: &str, hash: Option<String>) -> APIResourceList {
        APIResourceList {
            group_version: format!("apps.kruise.io/{version}"),
            resources: vec![
                APIResource {
                    name: "nodeimages".into(),
                    kind: "NodeImage".into(),
                    storage_version_hash: hash,
                    ..Default::default()
                },
                APIResource {
                    name: "nodeimages/status".into(),
                    kind: "NodeImage".into(),
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn picks_the_stored_version_else_the_newest_served() {
        let pick = |c: &[(&'static str, Option<&APIResourceList>)]| {
            pick("apps.kruise.io", "NodeImage", "nodeimages", c)
        };
        let alpha_hash = Some(storage_version_hash(
            "apps.kruise.io",
            "v1alpha1",
            "NodeImage",
        ));
        let beta_hash = Some(storage_version_hash(
            "apps.kruise.io",
            "v1beta1",
            "NodeImage",
        ));
        let (a, b) = (
            list("v1alpha1", beta_hash.clone()),
            list("v1beta1", beta_hash),
        );
        assert_eq!(
            pick(&[("v1beta1", Some(&b)), ("v1alpha1", Some(&a))]),
            Some("v1beta1")
        );
        // Both served, v1alpha1 stored (CRDs of an older install).
        let (a, b) = (
            list("v1alpha1", alpha_hash.clone()),
            list("v1beta1", alpha_hash.clone()),
        );
        assert_eq!(
            pick(&[("v1beta1", Some(&b)), ("v1alpha1", Some(&a))]),
            Some("v1alpha1")
        );
        // Only v1alpha1 served.
        let a = list("v1alpha1", alpha_hash);
        assert_eq!(
            pick(&[("v1beta1", None), ("v1alpha1", Some(&a))]),
            Some("v1alpha1")
        );
        // No hash: the newest served.
        let (a, b) = (list("v1alpha1", None), list("v1beta1", None));
        assert_eq!(
            pick(&[("v1beta1", Some(&b)), ("v1alpha1", Some(&a))]),
            Some("v1beta1")
        );
        // A v1beta1 group that does not have the resource.
        let mut other = list("v1beta1", None);
        other.resources.clear();
        let a = list("v1alpha1", None);
        assert_eq!(
            pick(&[("v1beta1", Some(&other)), ("v1alpha1", Some(&a))]),
            Some("v1alpha1")
        );
        assert_eq!(pick(&[("v1beta1", None), ("v1alpha1", None)]), None);
    }
}
