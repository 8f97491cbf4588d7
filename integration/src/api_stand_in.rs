//! A stand-in for the Kubernetes API server, for the agent's cluster mode
//! end to end (no kube-apiserver can be installed on this machine). It
//! keeps JSON objects in memory and answers the few calls the agent makes:
//! GET of one object, LIST with equality label/field selectors, WATCH
//! (replaying changes after the given resourceVersion, then streaming), and
//! JSON merge PATCH of an object or its `/status`. Every request is
//! recorded. It is not a general API server: no validation, no defaulting,
//! no admission — only what lets the agent's real code run against it.
//! Listens on 127.0.0.1; dropping it stops it and closes every connection.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, Infallible>;

/// A resource the stand-in serves: its API path prefix and plural.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// `/api/v1` or `/apis/<group>/<version>`.
    pub prefix: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

pub const NODE_IMAGES: Kind = Kind {
    prefix: "/apis/apps.kruise.io/v1alpha1",
    plural: "nodeimages",
    namespaced: false,
};
pub const CRRS: Kind = Kind {
    prefix: "/apis/apps.kruise.io/v1alpha1",
    plural: "containerrecreaterequests",
    namespaced: true,
};
pub const PODS: Kind = Kind {
    prefix: "/api/v1",
    plural: "pods",
    namespaced: true,
};
pub const SECRETS: Kind = Kind {
    prefix: "/api/v1",
    plural: "secrets",
    namespaced: true,
};
const KINDS: [Kind; 4] = [NODE_IMAGES, CRRS, PODS, SECRETS];

/// Key of a stored object.
type Key = (&'static str, String, String);

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    kind: &'static str,
    kind_type: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    events: Vec<Event>,
    requests: Vec<String>,
}

/// The stand-in; see the module docs.
pub struct ApiStandIn {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<Event>,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

fn json_reply(code: u16, v: &Value) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap_or_default()
}

fn status(code: u16, reason: &str, message: &str) -> hyper::Response<Body> {
    json_reply(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": reason, "code": code, "message": message}),
    )
}

/// What a request path names.
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    for kind in KINDS {
        let Some(rest) = path.strip_prefix(kind.prefix) else {
            continue;
        };
        let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        let (namespace, tail) = match parts.as_slice() {
            ["namespaces", ns, tail @ ..] => (Some(ns.to_string()), tail.to_vec()),
            tail => (None, tail.to_vec()),
        };
        match tail.as_slice() {
            [p] if *p == kind.plural => {
                return Some(Target {
                    kind,
                    namespace,
                    name: None,
                    status: false,
                });
            }
            [p, name] if *p == kind.plural => {
                return Some(Target {
                    kind,
                    namespace,
                    name: Some(name.to_string()),
                    status: false,
                });
            }
            [p, name, "status"] if *p == kind.plural => {
                return Some(Target {
                    kind,
                    namespace,
                    name: Some(name.to_string()),
                    status: true,
                });
            }
            _ => {}
        }
    }
    None
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `obj` passes equality selectors `k=v,k2=v2` (labels) and
/// `path=v` (fields, dotted paths).
fn selected(obj: &Value, labels: Option<&str>, fields: Option<&str>) -> bool {
    let pairs = |s: &str| -> Vec<(String, String)> {
        s.split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    };
    let label_ok = labels.is_none_or(|l| {
        pairs(l).iter().all(|(k, v)| {
            obj.pointer("/metadata/labels")
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                == Some(v.as_str())
        })
    });
    let field_ok = fields.is_none_or(|f| {
        pairs(f).iter().all(|(k, v)| {
            let ptr = format!("/{}", k.replace('.', "/"));
            obj.pointer(&ptr).and_then(Value::as_str) == Some(v.as_str())
        })
    });
    label_ok && field_ok
}

fn in_scope(key: &Key, kind: Kind, namespace: Option<&str>) -> bool {
    key.0 == kind.plural && namespace.is_none_or(|ns| key.1 == ns)
}

impl ApiStandIn {
    /// Starts on a free loopback port.
    pub async fn start() -> ApiStandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let (changes, _) = broadcast::channel(1024);
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (st, ch, held) = (state.clone(), changes.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (st, ch) = (st.clone(), ch.clone());
                let conn = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (st, ch) = (st.clone(), ch.clone());
                        async move { Ok::<_, Infallible>(answer(req, st, ch).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                held.lock().unwrap().push(conn);
            }
        });
        ApiStandIn {
            addr,
            state,
            changes,
            accept,
            connections,
        }
    }

    /// A kubeconfig pointing at the stand-in, written to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'http://{}'}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
                self.addr
            ),
        )
    }

    /// Creates or replaces an object (its kind, namespace and name are
    /// taken from `kind` and `obj`'s metadata); returns its resourceVersion.
    pub fn put(&self, kind: Kind, mut obj: Value) -> u64 {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let key = (kind.plural, ns, name);
        let kind_type = if st.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.objects.insert(key, obj.clone());
        let ev = Event {
            rv,
            kind: kind.plural,
            kind_type,
            object: obj,
        };
        st.events.push(ev.clone());
        let _ = self.changes.send(ev);
        rv
    }

    /// The stored object, if any.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .get(&(kind.plural, namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The requests served so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for ApiStandIn {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

async fn answer(
    req: hyper::Request<Incoming>,
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<Event>,
) -> hyper::Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    state
        .lock()
        .unwrap()
        .requests
        .push(format!("{method} {path}?{query}"));
    let Some(t) = parse_path(&path) else {
        return status(404, "NotFound", &format!("the stand-in serves no {path}"));
    };
    let labels = query_param(&query, "labelSelector");
    let fields = query_param(&query, "fieldSelector");
    match (&method, &t.name) {
        (&hyper::Method::GET, Some(name)) => {
            let key = (
                t.kind.plural,
                t.namespace.clone().unwrap_or_default(),
                name.clone(),
            );
            match state.lock().unwrap().objects.get(&key) {
                Some(o) => json_reply(200, o),
                None => status(
                    404,
                    "NotFound",
                    &format!("{} {name} not found", t.kind.plural),
                ),
            }
        }
        (&hyper::Method::GET, None) if query_param(&query, "watch").as_deref() == Some("true") => {
            let since: u64 = query_param(&query, "resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let live = changes.subscribe();
            let backlog: Vec<Event> = state
                .lock()
                .unwrap()
                .events
                .iter()
                .filter(|e| e.rv > since)
                .cloned()
                .collect();
            let (kind, ns) = (t.kind, t.namespace.clone());
            let wanted = move |e: &Event| {
                e.kind == kind.plural
                    && ns.as_deref().is_none_or(|n| {
                        e.object
                            .pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            == Some(n)
                    })
                    && selected(&e.object, labels.as_deref(), fields.as_deref())
            };
            let stream = watch_body(backlog, live, wanted);
            hyper::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap_or_default()
        }
        (&hyper::Method::GET, None) => {
            let st = state.lock().unwrap();
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|(k, _)| in_scope(k, t.kind, t.namespace.as_deref()))
                .map(|(_, o)| o.clone())
                .filter(|o| selected(o, labels.as_deref(), fields.as_deref()))
                .collect();
            json_reply(
                200,
                &json!({"kind": "List", "apiVersion": "v1",
                    "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
            )
        }
        (&hyper::Method::PATCH, Some(name)) => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return status(400, "BadRequest", "unreadable body"),
            };
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "not JSON");
            };
            let key = (
                t.kind.plural,
                t.namespace.clone().unwrap_or_default(),
                name.clone(),
            );
            let mut st = state.lock().unwrap();
            let Some(mut obj) = st.objects.get(&key).cloned() else {
                return status(
                    404,
                    "NotFound",
                    &format!("{} {name} not found", t.kind.plural),
                );
            };
            if t.status {
                // The status subresource changes only the status.
                let mut s = obj.get("status").cloned().unwrap_or(json!({}));
                json_patch::merge(&mut s, patch.get("status").unwrap_or(&Value::Null));
                obj["status"] = s;
            } else {
                let mut p = patch.clone();
                if let Some(m) = p.as_object_mut() {
                    m.remove("status");
                }
                json_patch::merge(&mut obj, &p);
            }
            st.rv += 1;
            let rv = st.rv;
            obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
            st.objects.insert(key, obj.clone());
            let ev = Event {
                rv,
                kind: t.kind.plural,
                kind_type: "MODIFIED",
                object: obj.clone(),
            };
            st.events.push(ev.clone());
            let _ = changes.send(ev);
            json_reply(200, &obj)
        }
        _ => status(
            405,
            "MethodNotAllowed",
            &format!("the stand-in does not {method} here"),
        ),
    }
}

/// The watch body: the backlog, then live changes, as JSON lines.
fn watch_body(
    backlog: Vec<Event>,
    rx: broadcast::Receiver<Event>,
    wanted: impl Fn(&Event) -> bool + Send + 'static,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    let line = |e: &Event| {
        Frame::data(Bytes::from(format!(
            "{}\n",
            json!({"type": e.kind_type, "object": e.object})
        )))
    };
    let last = backlog.last().map_or(0, |e| e.rv);
    let first: Vec<Result<Frame<Bytes>, Infallible>> = backlog
        .iter()
        .filter(|e| wanted(e))
        .map(|e| Ok(line(e)))
        .collect();
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .filter(move |e| {
        let keep = e.rv > last && wanted(e);
        async move { keep }
    })
    .map(move |e| Ok(line(&e)));
    futures_util::stream::iter(first).chain(rest)
}
