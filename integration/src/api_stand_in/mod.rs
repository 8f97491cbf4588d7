//! A stand-in for the Kubernetes API server, kept only for a fault the
//! real one (`crate::kube`, where every other cluster-side test runs) is
//! slow to stage: a server at a fixed address that is absent when the
//! agent starts and vanishes mid-watch (`tests/cluster_reconnect.rs`). It keeps
//! JSON objects of any resource in memory, keyed by plural, namespace and
//! name, and answers what the agent and the controller use: GET, LIST
//! with label/field selectors, WATCH (changes after the given
//! resourceVersion replayed, then streamed), POST (with `generateName`),
//! PUT and JSON merge PATCH (of the object or its `/status`; a
//! resourceVersion in the body must match, else 409), DELETE (objects with
//! finalizers get a deletionTimestamp and go when the last finalizer does;
//! a uid precondition is honoured). Every request is recorded.
//!
//! It is not an API server: no schemas, validation, defaulting, admission
//! or authorisation, strategic merge patches are applied as JSON merge
//! patches, and every resource is treated as having a status subresource
//! (writes to the object keep the stored status). Listens on 127.0.0.1;
//! dropping it stops it and closes every connection.

pub mod paths;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
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

use paths::{Target, param, selected};

type Body = BoxBody<Bytes, Infallible>;

/// A resource, by plural (namespaced or not is the caller's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind(pub &'static str);

pub const NODE_IMAGES: Kind = Kind("nodeimages");
pub const CRRS: Kind = Kind("containerrecreaterequests");
pub const PODS: Kind = Kind("pods");
pub const SECRETS: Kind = Kind("secrets");
pub const NODES: Kind = Kind("nodes");
pub const IMAGE_PULL_JOBS: Kind = Kind("imagepulljobs");

/// Key of a stored object: plural, namespace ("" if cluster-scoped), name.
type Key = (String, String, String);

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    plural: String,
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

impl State {
    /// Stores `obj` under `key` with a new resourceVersion and tells the
    /// watchers.
    fn store(&mut self, key: Key, mut obj: Value, changes: &broadcast::Sender<Event>) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let kind_type = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        // An object being deleted goes with its last finalizer.
        let deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
        let finalized = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        let kind_type = if deleting && finalized {
            self.objects.remove(&key);
            "DELETED"
        } else {
            self.objects.insert(key.clone(), obj.clone());
            kind_type
        };
        let ev = Event {
            rv: self.rv,
            plural: key.0,
            kind_type,
            object: obj.clone(),
        };
        self.events.push(ev.clone());
        let _ = changes.send(ev);
        obj
    }
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

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A short unique suffix (as `generateName` gets).
fn suffix() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id());
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|i| alphabet[((n / 27u64.pow(i)) % 27) as usize] as char)
        .collect()
}

fn key_of(t: &Target, name: &str) -> Key {
    (
        t.plural.clone(),
        t.namespace.clone().unwrap_or_default(),
        name.to_string(),
    )
}

fn rv_of(v: &Value) -> Option<&str> {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

/// Writes a kubeconfig at `path` for an API server on `addr` (plain
/// HTTP, a dummy token): what the agent and controller are started with.
/// The address need not be served yet.
pub fn write_kubeconfig(path: &Path, addr: SocketAddr) -> std::io::Result<()> {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'http://{addr}'}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
}

impl ApiStandIn {
    /// Starts on a free loopback port.
    pub async fn start() -> ApiStandIn {
        Self::start_on(0).await
    }

    /// Starts on loopback port `port` (0: any free one), empty.
    pub async fn start_on(port: u16) -> ApiStandIn {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let (changes, _) = broadcast::channel(4096);
        let connections = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            state: state.clone(),
            changes: changes.clone(),
        };
        let held = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                let conn = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(answer(req, shared).await) }
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

    /// Where the stand-in listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends a request over HTTP as a client (kubectl) would: the
    /// answer's status code and JSON body.
    pub async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect to the stand-in");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(Value::to_string).unwrap_or_default(),
            )))
            .expect("a request");
        let resp = sender.send_request(req).await.expect("an answer");
        let code = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// A kubeconfig pointing at the stand-in, written to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        write_kubeconfig(path, self.addr)
    }

    /// Creates or replaces an object (namespace and name from its
    /// metadata; a uid is given if it has none); returns it as stored.
    pub fn put(&self, kind: Kind, mut obj: Value) -> Value {
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
        if obj.pointer("/metadata/uid").is_none() {
            obj["metadata"]["uid"] = Value::String(format!("uid-{name}-{}", suffix()));
        }
        let mut st = self.state.lock().unwrap();
        st.store((kind.0.to_string(), ns, name), obj, &self.changes)
    }

    /// The stored object, if any.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .get(&(kind.0.to_string(), namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every stored object of `kind` in `namespace`.
    pub fn list(&self, kind: Kind, namespace: &str) -> Vec<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .iter()
            .filter(|(k, _)| k.0 == kind.0 && k.1 == namespace)
            .map(|(_, v)| v.clone())
            .collect()
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

/// What every connection shares.
#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<Event>,
}

async fn answer(req: hyper::Request<Incoming>, shared: Shared) -> hyper::Response<Body> {
    let (state, changes) = (&shared.state, &shared.changes);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    state
        .lock()
        .unwrap()
        .requests
        .push(format!("{method} {path}?{query}"));
    let Some(t) = paths::parse(&path) else {
        return status(404, "NotFound", &format!("the stand-in serves no {path}"));
    };
    let body: Option<Value> = if matches!(
        method,
        hyper::Method::POST | hyper::Method::PUT | hyper::Method::PATCH | hyper::Method::DELETE
    ) {
        let bytes = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return status(400, "BadRequest", "unreadable body"),
        };
        if bytes.is_empty() {
            None
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => Some(v),
                Err(_) => return status(400, "BadRequest", "the body is not JSON"),
            }
        }
    } else {
        None
    };
    match (&method, t.name.clone()) {
        (&hyper::Method::GET, Some(name)) => {
            match state.lock().unwrap().objects.get(&key_of(&t, &name)) {
                Some(o) => json_reply(200, o),
                None => status(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", t.plural),
                ),
            }
        }
        (&hyper::Method::GET, None) if param(&query, "watch").as_deref() == Some("true") => {
            watch(&t, &query, state, changes)
        }
        (&hyper::Method::GET, None) => {
            let labels = param(&query, "labelSelector");
            let fields = param(&query, "fieldSelector");
            let st = state.lock().unwrap();
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|(k, _)| {
                    k.0 == t.plural && t.namespace.as_ref().is_none_or(|ns| &k.1 == ns)
                })
                .map(|(_, o)| o.clone())
                .filter(|o| selected(o, labels.as_deref(), fields.as_deref()))
                .collect();
            json_reply(
                200,
                &json!({"kind": "List", "apiVersion": "v1",
                    "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
            )
        }
        (&hyper::Method::POST, None) => {
            let Some(mut obj) = body else {
                return status(400, "BadRequest", "no object");
            };
            let name = match obj.pointer("/metadata/name").and_then(Value::as_str) {
                Some(n) if !n.is_empty() => n.to_string(),
                _ => match obj
                    .pointer("/metadata/generateName")
                    .and_then(Value::as_str)
                {
                    Some(g) => format!("{g}{}", suffix()),
                    None => {
                        return status(422, "Invalid", "metadata.name or generateName required");
                    }
                },
            };
            let key = key_of(&t, &name);
            if state.lock().unwrap().objects.contains_key(&key) {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("{} \"{name}\" already exists", t.plural),
                );
            }
            obj["metadata"]["name"] = Value::String(name.clone());
            if let Some(ns) = &t.namespace {
                obj["metadata"]["namespace"] = Value::String(ns.clone());
            }
            obj["metadata"]["uid"] = Value::String(format!("uid-{name}-{}", suffix()));
            obj["metadata"]["creationTimestamp"] = Value::String(now());
            let mut st = state.lock().unwrap();
            if st.objects.contains_key(&key) {
                return status(409, "AlreadyExists", "created meanwhile");
            }
            let stored = st.store(key, obj, changes);
            json_reply(201, &stored)
        }
        (&hyper::Method::PUT | &hyper::Method::PATCH, Some(name)) => {
            let Some(body) = body else {
                return status(400, "BadRequest", "no body");
            };
            let key = key_of(&t, &name);
            let found = state.lock().unwrap().objects.get(&key).cloned();
            let Some(current) = found else {
                return status(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", t.plural),
                );
            };
            if let Some(rv) = rv_of(&body)
                && Some(rv) != rv_of(&current)
            {
                return status(
                    409,
                    "Conflict",
                    &format!("the object has been modified; {} \"{name}\"", t.plural),
                );
            }
            let mut next = current.clone();
            if t.status {
                let mut s = if method == hyper::Method::PUT {
                    json!({})
                } else {
                    current.get("status").cloned().unwrap_or(json!({}))
                };
                let given = body.get("status").cloned().unwrap_or(Value::Null);
                if method == hyper::Method::PUT {
                    s = given;
                } else {
                    json_patch::merge(&mut s, &given);
                }
                next["status"] = s;
            } else {
                let mut given = body.clone();
                if let Some(m) = given.as_object_mut() {
                    m.remove("status");
                }
                if method == hyper::Method::PUT {
                    let kept_status = current.get("status").cloned();
                    let kept_meta = current["metadata"].clone();
                    next = given;
                    for f in [
                        "uid",
                        "creationTimestamp",
                        "deletionTimestamp",
                        "namespace",
                        "name",
                    ] {
                        if let Some(v) = kept_meta.get(f) {
                            next["metadata"][f] = v.clone();
                        }
                    }
                    if let Some(s) = kept_status {
                        next["status"] = s;
                    }
                } else {
                    json_patch::merge(&mut next, &given);
                }
            }
            let mut st = state.lock().unwrap();
            // Changed while the webhooks ran: a conflict.
            if st.objects.get(&key).and_then(rv_of) != rv_of(&current) {
                return status(409, "Conflict", "the object has been modified");
            }
            let stored = st.store(key, next, changes);
            json_reply(200, &stored)
        }
        (&hyper::Method::DELETE, Some(name)) => {
            let key = key_of(&t, &name);
            let mut st = state.lock().unwrap();
            let Some(mut current) = st.objects.get(&key).cloned() else {
                return status(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", t.plural),
                );
            };
            if let Some(uid) = body
                .as_ref()
                .and_then(|b| b.pointer("/preconditions/uid"))
                .and_then(Value::as_str)
                && current.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
            {
                return status(409, "Conflict", "precondition failed: uid");
            }
            if let Some(rv) = body
                .as_ref()
                .and_then(|b| b.pointer("/preconditions/resourceVersion"))
                .and_then(Value::as_str)
                && current
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    != Some(rv)
            {
                return status(409, "Conflict", "precondition failed: resourceVersion");
            }
            if current.pointer("/metadata/deletionTimestamp").is_none() {
                current["metadata"]["deletionTimestamp"] = Value::String(now());
            }
            let stored = st.store(key, current, changes);
            json_reply(200, &stored)
        }
        _ => status(
            405,
            "MethodNotAllowed",
            &format!("the stand-in does not {method} {path}"),
        ),
    }
}

fn watch(
    t: &Target,
    query: &str,
    state: &Arc<Mutex<State>>,
    changes: &broadcast::Sender<Event>,
) -> hyper::Response<Body> {
    let since: u64 = param(query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let labels = param(query, "labelSelector");
    let fields = param(query, "fieldSelector");
    // Subscribe before reading the backlog: nothing falls between.
    let live = changes.subscribe();
    let backlog: Vec<Event> = state
        .lock()
        .unwrap()
        .events
        .iter()
        .filter(|e| e.rv > since)
        .cloned()
        .collect();
    let (plural, ns) = (t.plural.clone(), t.namespace.clone());
    let wanted = move |e: &Event| {
        e.plural == plural
            && ns.as_deref().is_none_or(|n| {
                e.object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    == Some(n)
            })
            && selected(&e.object, labels.as_deref(), fields.as_deref())
    };
    let line = |e: &Event| {
        Ok::<_, Infallible>(Frame::data(Bytes::from(format!(
            "{}\n",
            json!({"type": e.kind_type, "object": e.object})
        ))))
    };
    let last = backlog.last().map_or(since, |e| e.rv);
    let first: Vec<_> = backlog.iter().filter(|e| wanted(e)).map(line).collect();
    let rest = futures_util::stream::unfold(live, |mut rx| async move {
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
    .map(move |e| line(&e));
    let stream = futures_util::stream::iter(first).chain(rest);
    hyper::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_default()
}
