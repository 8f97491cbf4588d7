//! The admission webhook server: AdmissionReviews over HTTPS, routed by
//! path to the handlers ([`crr`], [`imagepulljob`]), with TLS material from
//! [`certs`], kept current by [`tls`] (renewals and rotations served
//! without a restart), and the CA written into Keelson's webhook
//! configurations by [`ca_bundle`]. Every replica serves (the API server
//! may call any).

pub mod ca_bundle;
pub mod cache;
pub mod certs;
pub mod cloneset;
pub mod convert;
pub mod crr;
pub mod daemonset;
pub mod deletion;
pub mod imagepulljob;
pub mod pod;
pub mod podunavailablebudget;
pub mod resourcedistribution;
pub mod scope;
pub mod sidecarset;
pub mod statefulset;
pub mod tls;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use kube::Client;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

use crate::gates::FeatureGates;

/// How long a peer may take over the TLS handshake, and over each
/// request's headers.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest AdmissionReview accepted (the API server's own request limit).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// The paths served.
pub const PATHS: &[&str] = &[
    crr::PATH,
    cloneset::MUTATE_PATH,
    cloneset::VALIDATE_PATH,
    imagepulljob::PATH,
    imagepulljob::MUTATE_PATH,
    imagepulljob::LIST_PATH,
    imagepulljob::LIST_MUTATE_PATH,
    pod::PATH,
    pod::validate::PATH,
    podunavailablebudget::PATH,
    deletion::NAMESPACE_PATH,
    deletion::CRD_PATH,
    deletion::DEPLOYMENT_PATH,
    deletion::REPLICASET_PATH,
    deletion::STATEFULSET_PATH,
    deletion::SERVICE_PATH,
    deletion::INGRESS_PATH,
    deletion::KRUISE_STATEFULSET_PATH,
    deletion::UNITEDDEPLOYMENT_PATH,
    resourcedistribution::PATH,
    sidecarset::MUTATE_PATH,
    sidecarset::VALIDATE_PATH,
    statefulset::MUTATE_PATH,
    daemonset::MUTATE_PATH,
    daemonset::VALIDATE_PATH,
    convert::PATH,
];

/// What the handlers may consult: the API server, the feature gates, the
/// watched objects, and the controller's namespace (where its
/// configuration lives).
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub gates: Arc<FeatureGates>,
    pub caches: cache::Caches,
    pub namespace: String,
    /// The PodUnavailableBudget check of pod disruptions.
    pub guard: crate::podunavailablebudget::guard::Guard,
}

/// A refusal with an HTTP-style `code` and `reason`, as OpenKruise's
/// handlers answer (`admission.Errored`).
pub(crate) fn deny(
    resp: AdmissionResponse,
    code: u16,
    reason: &str,
    msg: String,
) -> AdmissionResponse {
    let mut resp = resp.deny(msg);
    resp.result.code = code;
    resp.result.reason = reason.into();
    resp
}

/// A request's object (or old object) as JSON.
pub(crate) fn object(o: Option<&DynamicObject>) -> Option<serde_json::Value> {
    o.and_then(|o| serde_json::to_value(o).ok())
}

/// The answer of a defaulting webhook: `defaulted` applied to the
/// created or updated object (told whether the pod template is to be
/// defaulted too: never under `TemplateNoDefaults`, and on update only
/// when the template changed), as a JSON patch.
pub(crate) fn defaulting(
    req: &AdmissionRequest<DynamicObject>,
    no_template_defaults: bool,
    defaulted: impl Fn(&serde_json::Value, bool) -> serde_json::Value,
) -> AdmissionResponse {
    use kube::core::admission::Operation;
    let resp = AdmissionResponse::from(req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return resp;
    }
    let Some(obj) = object(req.object.as_ref()) else {
        return deny(resp, 400, "BadRequest", "the request has no object".into());
    };
    let template_defaults = !no_template_defaults
        && match req.operation {
            Operation::Update => {
                let old = object(req.old_object.as_ref());
                old.as_ref().and_then(|o| o.pointer("/spec/template"))
                    != obj.pointer("/spec/template")
            }
            _ => true,
        };
    let patch = json_patch::diff(&obj, &defaulted(&obj, template_defaults));
    if patch.0.is_empty() {
        return resp;
    }
    match resp.clone().with_patch(patch) {
        Ok(r) => r,
        Err(e) => deny(resp, 500, "InternalError", e.to_string()),
    }
}

/// Field errors as Kubernetes aggregates them: one as is, several as
/// `[a, b]`.
pub(crate) fn aggregate(errs: &[String]) -> String {
    if errs.len() == 1 {
        errs[0].clone()
    } else {
        format!("[{}]", errs.join(", "))
    }
}

/// The request in an AdmissionReview `body`, or why there is none.
pub fn parse_review(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    review.try_into().map_err(|e| format!("{e}"))
}

/// The answer to one AdmissionReview `body` posted to `path`: (HTTP status,
/// JSON body).
pub async fn answer(path: &str, body: &[u8], ctx: &Context) -> (u16, Vec<u8>) {
    if !PATHS.contains(&path) {
        return (404, b"{\"message\":\"no webhook at this path\"}".to_vec());
    }
    if path == convert::PATH {
        return convert::answer(body);
    }
    let req = match parse_review(body) {
        Ok(r) => r,
        Err(e) => return (400, review_json(AdmissionResponse::invalid(e))),
    };
    let resp = match path {
        crr::PATH if !ctx.gates.enabled("KruiseDaemon") => deny(
            AdmissionResponse::from(&req),
            403,
            "Forbidden",
            "feature-gate KruiseDaemon is not enabled".into(),
        ),
        crr::PATH => crr::review(&req, &ctx.client).await,
        cloneset::MUTATE_PATH => cloneset::mutate_review(&req, &ctx.gates),
        cloneset::VALIDATE_PATH if req.operation == kube::core::admission::Operation::Delete => {
            deletion::review(&req, ctx).await
        }
        cloneset::VALIDATE_PATH => cloneset::validate_review(&req, &ctx.client).await,
        imagepulljob::PATH => imagepulljob::review(&req, &ctx.gates, false),
        imagepulljob::MUTATE_PATH => imagepulljob::mutate_review(&req, false),
        imagepulljob::LIST_PATH => imagepulljob::review(&req, &ctx.gates, true),
        imagepulljob::LIST_MUTATE_PATH => imagepulljob::mutate_review(&req, true),
        pod::PATH => pod::review(&req, ctx).await,
        pod::validate::PATH => pod::validate::review(&req, ctx).await,
        podunavailablebudget::PATH => podunavailablebudget::review(&req, ctx),
        statefulset::MUTATE_PATH => statefulset::mutate_review(&req, &ctx.gates),
        statefulset::VALIDATE_PATH if req.operation != kube::core::admission::Operation::Delete => {
            statefulset::validate_review(&req)
        }
        daemonset::MUTATE_PATH => daemonset::mutate_review(&req),
        daemonset::VALIDATE_PATH => daemonset::validate_review(&req),
        p if deletion::PATHS.contains(&p) => deletion::review(&req, ctx).await,
        resourcedistribution::PATH => resourcedistribution::review(&req, ctx).await,
        sidecarset::MUTATE_PATH => sidecarset::mutate_review(&req),
        sidecarset::VALIDATE_PATH => sidecarset::validate_review(&req, ctx).await,
        _ => unreachable!("checked above"),
    };
    tracing::debug!(path = %path, uid = %req.uid, operation = ?req.operation, name = %req.name, allowed = resp.allowed, "admission");
    crate::metrics::admitted(path, resp.allowed);
    if !resp.allowed {
        tracing::info!(path = %path, namespace = ?req.namespace, name = %req.name, reason = %resp.result.message, "admission refused");
    }
    (200, review_json(resp))
}

/// The AdmissionReview answer as JSON, its patch base64-encoded as the
/// API server writes `[]byte` (kube-core would send an array of numbers).
fn review_json(resp: AdmissionResponse) -> Vec<u8> {
    use base64::Engine as _;
    let patch = resp.patch.clone();
    let mut v = serde_json::to_value(resp.into_review()).unwrap_or_default();
    if let (Some(p), Some(slot)) = (patch, v.pointer_mut("/response/patch")) {
        *slot = serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(p));
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    ctx: Context,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let reply = |code: u16, body: Vec<u8>| {
        hyper::Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.method() == hyper::Method::GET && path == "/healthz" {
        return Ok(reply(200, b"{}".to_vec()));
    }
    if req.method() != hyper::Method::POST {
        return Ok(reply(
            405,
            b"{\"message\":\"POST an AdmissionReview\"}".to_vec(),
        ));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(reply(413, format!("{{\"message\":\"{e}\"}}").into_bytes())),
    };
    let (code, out) = answer(&path, &body, &ctx).await;
    Ok(reply(code, out))
}

/// Serves HTTPS on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Context,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "webhook accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            // A peer that stalls the handshake or its request headers is
            // dropped instead of holding a task and a socket for good.
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "webhook TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| handle(req, ctx.clone()));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(peer = %peer, error = %e, "webhook connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests;
