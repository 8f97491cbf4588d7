//! The CRD conversion webhook (`/convert`): ConversionReviews from the API
//! server for the kinds served as v1alpha1 and stored as v1beta1
//! ([`keelson_api::conversion::CONVERTED_KINDS`]: SidecarSet, Advanced
//! DaemonSet, ImagePullJob, ImageListPullJob, NodeImage), answered with
//! [`keelson_api::conversion`]. A
//! failure names the object and why; the API server then fails the read
//! or write that needed it.

use kube::core::Status;
use kube::core::conversion::{ConversionRequest, ConversionResponse, ConversionReview};

/// The path the CRDs name.
pub const PATH: &str = keelson_api::CONVERSION_SERVICE.2;

/// The answer (HTTP status, JSON body) to a ConversionReview `body`.
pub fn answer(body: &[u8]) -> (u16, Vec<u8>) {
    let review: ConversionReview = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            let resp = ConversionResponse::invalid(Status::failure(
                &format!("not a ConversionReview: {e}"),
                "BadRequest",
            ));
            return (
                400,
                serde_json::to_vec(&resp.into_review()).unwrap_or_default(),
            );
        }
    };
    let req = match ConversionRequest::from_review(review) {
        Ok(r) => r,
        Err(e) => {
            let resp = ConversionResponse::invalid(Status::failure(&e.to_string(), "BadRequest"));
            return (
                400,
                serde_json::to_vec(&resp.into_review()).unwrap_or_default(),
            );
        }
    };
    let desired = req.desired_api_version.clone();
    let objects = req.objects.clone();
    let resp = ConversionResponse::for_request(req);
    let mut out = Vec::with_capacity(objects.len());
    let mut failed = None;
    for o in objects {
        let name = o
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string();
        match keelson_api::conversion::convert(o, &desired) {
            Ok(c) => out.push(c),
            Err(e) => {
                failed = Some(format!("converting {name:?} to {desired}: {e}"));
                break;
            }
        }
    }
    let resp = match failed {
        None => resp.success(out),
        Some(m) => {
            tracing::warn!(reason = %m, "conversion failed");
            resp.failure(Status::failure(&m, "BadRequest"))
        }
    };
    crate::metrics::admitted(PATH, resp.result.is_success());
    (
        200,
        serde_json::to_vec(&resp.into_review()).unwrap_or_default(),
    )
}
