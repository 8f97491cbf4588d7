//! Admission for the stand-in, as the API server does it: every webhook of
//! every stored Mutating- (then Validating-) WebhookConfiguration whose
//! rules match
//! the request (group, version, resource, operation) is called with an
//! `admission.k8s.io/v1` AdmissionReview over HTTPS — to the Service its
//! `clientConfig` names (routed to a loopback address the test gives),
//! with the Service's DNS name as TLS server name and its `caBundle` as
//! the only trusted root — and a mutating webhook's JSON patch applied
//! (a validating webhook that sends one fails the request); a refusal or
//! a failed call (failurePolicy Fail) refuses the request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

use super::paths::Target;

/// Where a Service (namespace, name) answers.
pub type Routes = BTreeMap<(String, String), SocketAddr>;

fn listed(rule: &Value, field: &str, want: &str) -> bool {
    rule[field]
        .as_array()
        .is_some_and(|l| l.iter().any(|v| v == want || v == "*"))
}

fn kind_of(object: &Value) -> String {
    object["kind"].as_str().unwrap_or_default().to_string()
}

/// Runs the matching webhooks over `object`; the object to store, or the
/// refusal (HTTP status, message).
pub async fn mutate(
    configs: &[Value],
    routes: &Routes,
    t: &Target,
    operation: &str,
    object: Value,
    old: Option<Value>,
) -> Result<Value, (u16, String)> {
    run(configs, routes, t, operation, object, old, true).await
}

/// Runs the matching validating webhooks over `object`; `object` again,
/// or the refusal (HTTP status, message).
pub async fn validate(
    configs: &[Value],
    routes: &Routes,
    t: &Target,
    operation: &str,
    object: Value,
    old: Option<Value>,
) -> Result<Value, (u16, String)> {
    run(configs, routes, t, operation, object, old, false).await
}

async fn run(
    configs: &[Value],
    routes: &Routes,
    t: &Target,
    operation: &str,
    mut object: Value,
    old: Option<Value>,
    mutating: bool,
) -> Result<Value, (u16, String)> {
    for config in configs {
        for hook in config["webhooks"].as_array().into_iter().flatten() {
            let matches = hook["rules"].as_array().into_iter().flatten().any(|r| {
                listed(r, "apiGroups", &t.group)
                    && listed(r, "apiVersions", &t.version)
                    && listed(r, "resources", &t.plural)
                    && listed(r, "operations", operation)
            });
            if !matches {
                continue;
            }
            let name = hook["name"].as_str().unwrap_or_default().to_string();
            let ignore = hook["failurePolicy"] == "Ignore";
            match call(hook, routes, t, operation, &object, old.as_ref()).await {
                Ok(resp) if resp["allowed"] == true => {
                    if let Some(p) = resp["patch"].as_str() {
                        if !mutating {
                            return Err((500, format!("validating webhook {name} sent a patch")));
                        }
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(p)
                            .map_err(|e| (500, format!("webhook {name}: patch not base64: {e}")))?;
                        let patch: json_patch::Patch = serde_json::from_slice(&bytes)
                            .map_err(|e| (500, format!("webhook {name}: bad patch: {e}")))?;
                        json_patch::patch(&mut object, &patch).map_err(|e| {
                            (500, format!("webhook {name}: patch does not apply: {e}"))
                        })?;
                    }
                }
                Ok(resp) => {
                    let code = resp["status"]["code"]
                        .as_u64()
                        .filter(|c| *c >= 400)
                        .unwrap_or(400);
                    let msg = resp["status"]["message"].as_str().unwrap_or_default();
                    return Err((
                        code as u16,
                        format!("admission webhook \"{name}\" denied the request: {msg}"),
                    ));
                }
                Err(e) if ignore => {
                    let _ = e;
                }
                Err(e) => {
                    return Err((
                        500,
                        format!("Internal error occurred: failed calling webhook \"{name}\": {e}"),
                    ));
                }
            }
        }
    }
    Ok(object)
}

/// One AdmissionReview round trip; the `response` part.
async fn call(
    hook: &Value,
    routes: &Routes,
    t: &Target,
    operation: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<Value, String> {
    let svc = &hook["clientConfig"]["service"];
    let (ns, name) = (
        svc["namespace"].as_str().unwrap_or_default(),
        svc["name"].as_str().unwrap_or_default(),
    );
    let path = svc["path"].as_str().unwrap_or("/");
    let addr = routes
        .get(&(ns.to_string(), name.to_string()))
        .ok_or_else(|| format!("no endpoints for service {ns}/{name}"))?;
    let ca = hook["clientConfig"]["caBundle"]
        .as_str()
        .ok_or("no caBundle")?;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca)
        .map_err(|e| format!("caBundle: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots
            .add(c.map_err(|e| format!("caBundle: {e}"))?)
            .map_err(|e| format!("caBundle: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let host = format!("{name}.{ns}.svc");
    let server = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial {addr}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let gvk = json!({"group": t.group, "version": t.version, "kind": kind_of(object)});
    let gvr = json!({"group": t.group, "version": t.version, "resource": t.plural});
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": format!("review-{}", std::process::id()), "kind": gvk, "resource": gvr,
            "requestKind": gvk, "requestResource": gvr,
            "name": object["metadata"]["name"], "namespace": t.namespace,
            "operation": operation, "userInfo": {"username": "stand-in"},
            "object": object, "oldObject": old, "dryRun": false}});
    let req = hyper::Request::post(path)
        .header("host", &host)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(review.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if code != 200 {
        return Err(format!("HTTP {code}: {}", String::from_utf8_lossy(&body)));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok(v["response"].clone())
}
