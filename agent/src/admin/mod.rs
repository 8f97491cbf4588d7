//! The local admin API: a root-only unix socket (mode 0600, and the peer's
//! uid checked with SO_PEERCRED) serving versioned HTTP/1.1 + JSON, used by
//! `keelson-agent ctl` on bare-metal nodes and by the cluster side
//! ([`crate::cluster`], in this process or in the DaemonSet pod).
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/pulls` with a [`PullSpec`] | `202 {"id": …}`; `400 {"error": …}` for a bad request |
//! | `GET /v1/pulls` | `200 [PullStatus…]` |
//! | `GET /v1/pulls/{id}` | `200 PullStatus`, `404` |
//! | `DELETE /v1/pulls/{id}` | `200 PullStatus` (cancelled), `404` |
//! | `POST /v1/restarts` with a [`RestartSpec`] | `202 {"id": …}`; `400` bad request, `404` no such pod or container, `503` runtime unreachable |
//! | `GET /v1/restarts` | `200 [RestartStatus…]` |
//! | `GET /v1/restarts/{id}` | `200 RestartStatus`, `404` |
//! | `POST /v1/pods/{namespace}/{name}/metadata` with a [`MetadataUpdate`] | `200 {"containers": […], "restart": id or null}` (env-from-metadata restarts) |
//! | `PUT /v1/readiness/{pod uid}` with a [`PodReport`] | `204` (the launch gate's pod spec and readiness, from the cluster side) |
//! | `DELETE /v1/readiness/{pod uid}` | `204` |
//! | `GET /v1/book/{pod uid}` | `200 [PodView…]` (the pod's sandboxes and containers as the runtime reported them) |
//! | `GET /v1/changes?boot=B&generation=G&wait=S` | `200 {"boot", "generation"}`, at once when not at (B, G), else when it moves or after S s (≤ 60) ([`feed`]) |
//! | `GET /v1/version` | `200 {"version", "binarySha256", "clusterSideOf"?}` (of the running binary, which an install may have replaced on disk since; `clusterSideOf`: the node whose cluster side this process runs) |
//! | `GET /metrics` | `200` OpenMetrics text ([`crate::metrics`]) |
//! | `POST /v1/exit` | `202`, then the agent drains and exits 0 (its service manager starts the binary again: how an upgrade takes effect) |

pub mod client;
pub mod feed;

use std::convert::Infallible;
use std::sync::Arc;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use crate::backoff::{Backoff, Retry};
use crate::envdeps::MetadataUpdate;
use crate::images::pulls::{PullEngine, PullSpec};
use crate::pods::PodBook;
use crate::readiness::{PodReadiness, PodReport};
use crate::restart::engine::{RestartEngine, SubmitError};
use crate::restart::spec::RestartSpec;

/// What binary the agent runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentVersion {
    pub version: String,
    /// SHA-256 of the running executable (`/proc/self/exe`, which stays
    /// the running one when the file on disk is replaced).
    pub binary_sha256: String,
    /// The node whose cluster side this agent runs in its own process
    /// (`node-name` in its config); none when the DaemonSet pod runs it.
    /// A DaemonSet pod on a node whose host agent says so stays idle: two
    /// cluster sides would both write the node's NodeImage and CRRs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_side_of: Option<String>,
}

async fn running_version(cluster_side_of: Option<String>) -> Result<AgentVersion, String> {
    // Hashed once: the running executable does not change (and the
    // DaemonSet's cluster side asks every few seconds).
    static DIGEST: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    let digest = DIGEST
        .get_or_try_init(|| async {
            tokio::task::spawn_blocking(|| {
                crate::install::digest_of(Path::new("/proc/self/exe")).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?
        })
        .await?;
    Ok(AgentVersion {
        version: env!("CARGO_PKG_VERSION").to_string(),
        binary_sha256: digest.clone(),
        cluster_side_of,
    })
}

/// Largest request body accepted (a pull spec with its secrets).
const MAX_BODY: usize = 1 << 20;

/// The engines the API serves.
#[derive(Clone)]
pub struct Services {
    pub pulls: Arc<PullEngine>,
    pub restarts: Arc<RestartEngine>,
    pub readiness: Arc<PodReadiness>,
    pub book: Arc<PodBook>,
    pub feed: Arc<feed::Feed>,
    /// Notified by `POST /v1/exit`.
    pub exit: Arc<tokio::sync::Notify>,
    /// The node this process runs the cluster side of, if it does.
    pub cluster_side_of: Option<String>,
    /// Served on `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Waiting after a failed accept (out of file descriptors, …) before the
/// next: 10 ms doubling to 1 s, reset by a good one; the listener never
/// gives up, and never spins.
pub const ACCEPT_RETRY: Backoff = Backoff {
    base: std::time::Duration::from_millis(10),
    max: std::time::Duration::from_secs(1),
    attempts: None,
};

/// The next connection from `accept`, retrying its errors with `retry`'s
/// backoff (logged once per run of failures).
pub async fn accept_with_backoff<S, F, Fut>(mut accept: F, retry: &mut Retry) -> S
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    loop {
        match accept().await {
            Ok(s) => {
                retry.succeeded();
                return s;
            }
            Err(e) => {
                let delay = retry.failed().unwrap_or(ACCEPT_RETRY.max);
                if retry.failures() == 1 {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "admin API: accept failed; retrying with backoff");
                } else {
                    tracing::debug!(error = %e, failures = retry.failures(), "admin API: accept failed again");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Serves the admin API on `listener` until the task is dropped.
pub async fn serve(listener: UnixListener, services: Services) {
    let me = nix::unistd::geteuid().as_raw();
    let mut retry = Retry::new(ACCEPT_RETRY);
    loop {
        let stream = accept_with_backoff(
            || async { listener.accept().await.map(|(s, _)| s) },
            &mut retry,
        )
        .await;
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        if uid != Some(0) && uid != Some(me) {
            tracing::warn!(peer_uid = ?uid, "admin API: refusing a caller that is not root");
            continue;
        }
        let services = services.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(services.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

type Reply = Response<Full<Bytes>>;

fn json(status: StatusCode, body: &impl serde::Serialize) -> Reply {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// The request body decoded as `T`, or the error answer. Bodies that may
/// hold secrets (`secret: true`) get errors with a position only, since
/// serde's messages can quote the input.
async fn body<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    what: &str,
    secret: bool,
) -> Result<T, Reply> {
    let bytes = http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("reading body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        let why = if secret {
            format!("line {} column {}", e.line(), e.column())
        } else {
            e.to_string()
        };
        error(StatusCode::BAD_REQUEST, format!("not a {what}: {why}"))
    })
}

fn empty(status: StatusCode) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// `boot=B&generation=G&wait=S` of `GET /v1/changes`: the feed position
/// seen (none without `boot`), and how long to wait (0 without `wait`).
pub fn changes_query(query: Option<&str>) -> Result<(Option<feed::Changes>, Duration), String> {
    let (mut boot, mut generation, mut wait) = (None, 0u64, 0u64);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "boot" => boot = Some(v.to_string()),
            "generation" => {
                generation = v
                    .parse()
                    .map_err(|_| format!("generation: {v:?} is not a number"))?
            }
            "wait" => {
                wait = v
                    .parse()
                    .map_err(|_| format!("wait: {v:?} is not a number of seconds"))?
            }
            other => return Err(format!("unknown query parameter {other:?}")),
        }
    }
    let seen = boot.map(|boot| feed::Changes { boot, generation });
    Ok((seen, Duration::from_secs(wait)))
}

fn restart_error(e: SubmitError) -> Reply {
    let code = match &e {
        SubmitError::Spec(_) | SubmitError::Metadata(_) => StatusCode::BAD_REQUEST,
        SubmitError::PodNotFound(_) | SubmitError::NoContainer { .. } => StatusCode::NOT_FOUND,
        SubmitError::Runtime(_) | SubmitError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(code, e.to_string())
}

async fn handle(services: Services, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query = req.uri().query().map(str::to_string);
    let method = req.method().clone();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let pulls = &services.pulls;
    let restarts = &services.restarts;
    let resp = match (method.clone(), segments.as_slice()) {
        (Method::POST, ["v1", "pulls"]) => match body::<PullSpec>(req, "pull spec", true).await {
            Err(r) => r,
            Ok(spec) => match pulls.submit(spec).await {
                Ok(id) => json(StatusCode::ACCEPTED, &serde_json::json!({ "id": id })),
                Err(e @ crate::images::pulls::SubmitError::Store(_)) => {
                    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                }
                Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
            },
        },
        (Method::GET, ["v1", "pulls"]) => json(StatusCode::OK, &pulls.list()),
        (Method::GET, ["v1", "pulls", id]) => match pulls.status(id) {
            Some(s) => json(StatusCode::OK, &s),
            None => error(StatusCode::NOT_FOUND, format!("no pull {id}")),
        },
        (Method::DELETE, ["v1", "pulls", id]) => match pulls.cancel(id).await {
            Some(s) => json(StatusCode::OK, &s),
            None => error(StatusCode::NOT_FOUND, format!("no pull {id}")),
        },
        (Method::POST, ["v1", "restarts"]) => {
            match body::<RestartSpec>(req, "restart spec", false).await {
                Err(r) => r,
                Ok(spec) => match restarts.submit(spec).await {
                    Ok(id) => json(StatusCode::ACCEPTED, &serde_json::json!({ "id": id })),
                    Err(e) => restart_error(e),
                },
            }
        }
        (Method::GET, ["v1", "restarts"]) => json(StatusCode::OK, &restarts.list()),
        (Method::GET, ["v1", "restarts", id]) => match restarts.status(id) {
            Some(s) => json(StatusCode::OK, &s),
            None => error(StatusCode::NOT_FOUND, format!("no restart {id}")),
        },
        (Method::POST, ["v1", "pods", namespace, name, "metadata"]) => {
            let (namespace, name) = (namespace.to_string(), name.to_string());
            match body::<MetadataUpdate>(req, "metadata update", false).await {
                Err(r) => r,
                Ok(update) => match restarts.update_metadata(&namespace, &name, &update).await {
                    Ok((containers, restart)) => json(
                        StatusCode::OK,
                        &serde_json::json!({ "containers": containers, "restart": restart }),
                    ),
                    Err(e) => restart_error(e),
                },
            }
        }
        (Method::PUT, ["v1", "readiness", uid]) => {
            let uid = uid.to_string();
            match body::<PodReport>(req, "pod report", false).await {
                Err(r) => r,
                Ok(report) => {
                    services.readiness.report(&uid, report);
                    empty(StatusCode::NO_CONTENT)
                }
            }
        }
        (Method::DELETE, ["v1", "readiness", uid]) => {
            services.readiness.forget(uid);
            empty(StatusCode::NO_CONTENT)
        }
        (Method::GET, ["v1", "book", uid]) => json(StatusCode::OK, &services.book.views_of(uid)),
        (Method::GET, ["v1", "changes"]) => match changes_query(query.as_deref()) {
            Ok((seen, wait)) => json(
                StatusCode::OK,
                &services.feed.wait(seen.as_ref(), wait).await,
            ),
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (Method::GET, ["v1", "version"]) => {
            match running_version(services.cluster_side_of.clone()).await {
                Ok(v) => json(StatusCode::OK, &v),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        (Method::GET, ["metrics"]) => {
            match services
                .metrics
                .render(&services.pulls, &services.restarts, &services.book)
            {
                Ok(text) => {
                    let mut resp = Response::new(Full::new(Bytes::from(text)));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                    );
                    resp
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (Method::POST, ["v1", "exit"]) => {
            tracing::info!("admin API: exit asked for (upgrade); draining");
            services.exit.notify_one();
            json(
                StatusCode::ACCEPTED,
                &serde_json::json!({ "exiting": true }),
            )
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {method} {path}"),
        ),
    };
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_accept_retry_policy() {
        let delays: Vec<u128> = (1..=9)
            .filter_map(|n| ACCEPT_RETRY.delay(n))
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    }

    /// Regression: a failing accept (EMFILE) was retried at once, forever.
    #[tokio::test]
    async fn accept_errors_are_retried_with_backoff_not_spun_on() {
        let mut calls = 0;
        let mut retry = Retry::new(ACCEPT_RETRY);
        let started = Instant::now();
        let got = accept_with_backoff(
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n <= 5 {
                        Err(std::io::Error::from_raw_os_error(libc_emfile()))
                    } else {
                        Ok(n)
                    }
                }
            },
            &mut retry,
        )
        .await;
        assert_eq!(got, 6);
        assert!(
            started.elapsed() >= Duration::from_millis(10 + 20 + 40 + 80 + 160),
            "waited {:?}",
            started.elapsed()
        );
        assert_eq!(retry.failures(), 0, "a good accept resets the backoff");
    }

    fn libc_emfile() -> i32 {
        nix::errno::Errno::EMFILE as i32
    }
}
