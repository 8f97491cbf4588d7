//! The local admin API: a root-only unix socket (mode 0600, and the peer's
//! uid checked with SO_PEERCRED) serving versioned HTTP/1.1 + JSON, used by
//! `keelson-agent ctl` on bare-metal nodes (and later by cluster mode).
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/pulls` with a [`PullSpec`] | `202 {"id": …}`; `400 {"error": …}` for a bad request |
//! | `GET /v1/pulls` | `200 [PullStatus…]` |
//! | `GET /v1/pulls/{id}` | `200 PullStatus`, `404` |
//! | `DELETE /v1/pulls/{id}` | `200 PullStatus` (cancelled), `404` |

pub mod client;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use crate::images::pulls::{PullEngine, PullSpec};

/// Largest request body accepted (a pull spec with its secrets).
const MAX_BODY: usize = 1 << 20;

/// Serves the admin API on `listener` until the task is dropped.
pub async fn serve(listener: UnixListener, engine: Arc<PullEngine>) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        if uid != Some(0) && uid != Some(me) {
            tracing::warn!(peer_uid = ?uid, "admin API: refusing a caller that is not root");
            continue;
        }
        let engine = engine.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(engine.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

async fn handle(
    engine: Arc<PullEngine>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let resp = match (req.method().clone(), segments.as_slice()) {
        (Method::POST, ["v1", "pulls"]) => {
            let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => return Ok(error(StatusCode::BAD_REQUEST, format!("reading body: {e}"))),
            };
            match serde_json::from_slice::<PullSpec>(&body) {
                Err(e) => error(
                    StatusCode::BAD_REQUEST,
                    format!("not a pull spec: line {} column {}", e.line(), e.column()),
                ),
                Ok(spec) => match engine.submit(spec).await {
                    Ok(id) => json(StatusCode::ACCEPTED, &serde_json::json!({ "id": id })),
                    Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
                },
            }
        }
        (Method::GET, ["v1", "pulls"]) => json(StatusCode::OK, &engine.list()),
        (Method::GET, ["v1", "pulls", id]) => match engine.status(id) {
            Some(s) => json(StatusCode::OK, &s),
            None => error(StatusCode::NOT_FOUND, format!("no pull {id}")),
        },
        (Method::DELETE, ["v1", "pulls", id]) => match engine.cancel(id).await {
            Some(s) => json(StatusCode::OK, &s),
            None => error(StatusCode::NOT_FOUND, format!("no pull {id}")),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {} {path}", req.method()),
        ),
    };
    Ok(resp)
}
