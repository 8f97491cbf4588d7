//! A client of the admin API: one HTTP/1.1 request per connection over
//! the unix socket. Used by `keelson-agent ctl` and by tests and
//! benchmarks.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Sends one request; returns the HTTP status and the body.
pub async fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(u16, Bytes)> {
    use anyhow::Context;
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to the agent's admin socket {} (is the agent running, and are you root?)", socket.display()))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "keelson-agent")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// The API's error message from an answer, with its status.
pub fn api_error(status: u16, body: &Bytes) -> anyhow::Error {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    anyhow::anyhow!("{msg} (HTTP {status})")
}

/// Calls the API and decodes a JSON answer, expecting HTTP `want`.
pub async fn fetch<T: serde::de::DeserializeOwned>(
    socket: &Path,
    method: &str,
    path: &str,
    want: u16,
) -> anyhow::Result<T> {
    let (code, body) = call(socket, method, path, None).await?;
    if code != want {
        return Err(api_error(code, &body));
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Posts `body` as JSON to an endpoint that accepts work with
/// `202 {"id": …}`; returns the id.
pub async fn submit(
    socket: &Path,
    path: &str,
    body: &impl serde::Serialize,
) -> anyhow::Result<String> {
    let (code, reply) = call(socket, "POST", path, Some(serde_json::to_vec(body)?)).await?;
    if code != 202 {
        return Err(api_error(code, &reply));
    }
    Ok(serde_json::from_slice::<serde_json::Value>(&reply)?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// Prints an accepted request's id (`{"id": …}` with `json`).
pub fn print_id(id: &str, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "id": id }));
    } else {
        println!("{id}");
    }
}
