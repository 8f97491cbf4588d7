//! The webhook: CRR admission answers, routing, caBundle injection, and a
//! real HTTPS round trip with a self-made certificate.

use super::*;
use crate::testing::{body_json, mock_client, reply};
use http::Method;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::Operation;

fn pod() -> Pod {
    serde_saphyr::from_str(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: team, uid: pod-uid}\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 20\n  containers:\n  - name: app\n    image: nginx\n    lifecycle:\n      preStop:\n        exec: {command: [sh, -c, 'sleep 1']}\nstatus:\n  phase: Running\n  containerStatuses:\n  - {name: app, image: nginx, imageID: x, ready: true, restartCount: 2, containerID: 'containerd://abc'}\n",
    )
    .unwrap()
}

fn crr_json(spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequest",
        "metadata": {"name": "r", "namespace": "team"}, "spec": spec})
}

fn review(
    operation: &str,
    object: serde_json::Value,
    old: Option<serde_json::Value>,
) -> serde_json::Value {
    serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "req-1", "operation": operation, "namespace": "team", "name": "r",
            "kind": {"group": "apps.kruise.io", "version": "v1alpha1", "kind": "ContainerRecreateRequest"},
            "resource": {"group": "apps.kruise.io", "version": "v1alpha1", "resource": "containerrecreaterequests"},
            "requestKind": {"group": "apps.kruise.io", "version": "v1alpha1", "kind": "ContainerRecreateRequest"},
            "requestResource": {"group": "apps.kruise.io", "version": "v1alpha1", "resource": "containerrecreaterequests"},
            "userInfo": {"username": "someone"}, "dryRun": false,
            "object": object, "oldObject": old}})
}

fn request(v: serde_json::Value) -> AdmissionRequest<DynamicObject> {
    let r: AdmissionReview<DynamicObject> = serde_json::from_value(v).unwrap();
    r.try_into().unwrap()
}

/// The stored object: `object` with the answer's JSON patch applied.
fn patched(object: &serde_json::Value, resp: &AdmissionResponse) -> serde_json::Value {
    let patch: json_patch::Patch =
        serde_json::from_slice(resp.patch.as_ref().expect("a patch")).unwrap();
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

#[test]
fn a_create_is_patched_with_labels_defaults_and_the_pods_state() {
    let object = crr_json(serde_json::json!({"podName": "p", "containers": [{"name": "app"}]}));
    let req = request(review("CREATE", object.clone(), None));
    assert_eq!(req.operation, Operation::Create);
    let p = pod();
    let resp = crr::on_create(&req, Some(&p));
    assert!(resp.allowed, "{resp:?}");
    let stored = patched(&object, &resp);
    let labels = &stored["metadata"]["labels"];
    assert_eq!(labels["crr.apps.kruise.io/node-name"], "node-a");
    assert_eq!(labels["crr.apps.kruise.io/pod-uid"], "pod-uid");
    assert_eq!(labels["crr.apps.kruise.io/pod-name"], "p");
    assert_eq!(labels["crr.apps.kruise.io/active"], "true");
    let c = &stored["spec"]["containers"][0];
    assert_eq!(c["statusContext"]["containerID"], "containerd://abc");
    assert_eq!(c["statusContext"]["restartCount"], 2);
    assert_eq!(c["preStop"]["exec"]["command"][2], "sleep 1");
    assert_eq!(stored["spec"]["strategy"]["failurePolicy"], "Fail");
    assert_eq!(
        stored["spec"]["strategy"]["terminationGracePeriodSeconds"],
        20
    );

    // Labels already present are kept alongside.
    let mut labelled = object.clone();
    labelled["metadata"]["labels"] = serde_json::json!({"team": "x"});
    let resp = crr::on_create(&request(review("CREATE", labelled.clone(), None)), Some(&p));
    let stored = patched(&labelled, &resp);
    assert_eq!(stored["metadata"]["labels"]["team"], "x");
    assert_eq!(
        stored["metadata"]["labels"]["crr.apps.kruise.io/active"],
        "true"
    );
}

#[test]
fn bad_creates_and_immutable_updates_are_refused_with_the_reason() {
    let object = crr_json(serde_json::json!({"podName": "p", "containers": [{"name": "app"}]}));
    let resp = crr::on_create(&request(review("CREATE", object.clone(), None)), None);
    assert!(!resp.allowed);
    assert_eq!(
        (resp.result.code, resp.result.message.as_str()),
        (400, "no Pod named p")
    );
    let unknown = crr_json(serde_json::json!({"podName": "p", "containers": [{"name": "nope"}]}));
    let resp = crr::on_create(&request(review("CREATE", unknown, None)), Some(&pod()));
    assert_eq!(resp.result.message, "container nope not found in Pod");
    let typo = crr_json(serde_json::json!({"podName": "p", "containers": "app"}));
    let resp = crr::on_create(&request(review("CREATE", typo, None)), Some(&pod()));
    assert!(
        !resp.allowed
            && resp
                .result
                .message
                .contains("not a ContainerRecreateRequest"),
        "{resp:?}"
    );

    let changed =
        crr_json(serde_json::json!({"podName": "other", "containers": [{"name": "app"}]}));
    let resp = crr::on_update(&request(review("UPDATE", changed, Some(object.clone()))));
    assert!(!resp.allowed);
    assert_eq!(resp.result.code, 403);
    assert!(resp.result.message.contains("immutable"), "{resp:?}");
    let resp = crr::on_update(&request(review("UPDATE", object.clone(), Some(object))));
    assert!(resp.allowed);
}

/// A handler context with the gates set by `gates` (OpenKruise's syntax).
pub(super) fn context(client: kube::Client, gates: &str) -> Context {
    let caches = cache::Caches::empty();
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "test".into(),
            instance: None,
        },
    );
    Context {
        guard: crate::podunavailablebudget::guard::Guard::new(
            client.clone(),
            caches.budgets.clone(),
            recorder,
            false,
        ),
        client,
        gates: Arc::new(FeatureGates::parse(gates).unwrap()),
        caches,
        namespace: "keelson-system".into(),
    }
}

#[tokio::test]
async fn routing_and_malformed_reviews() {
    let (client, _handle) = mock_client();
    let ctx = context(client, "");
    let (code, _) = answer("/mutate-nothing", b"{}", &ctx).await;
    assert_eq!(code, 404);
    let (code, body) = answer(crr::PATH, b"not json", &ctx).await;
    assert_eq!(code, 400);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["allowed"], false);
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not an AdmissionReview")
    );
}

#[tokio::test]
async fn the_ca_goes_into_our_webhooks_only() {
    const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/";
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        let mut puts = vec![];
        while let Some((req, send)) = handle.next_request().await {
            let (method, path) = (req.method().clone(), req.uri().path().to_string());
            let answer = match (&method, path.as_str()) {
                (
                    &Method::GET,
                    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/keelson-mutating-webhook-configuration",
                ) => reply(
                    200,
                    serde_json::json!({
                    "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                    "metadata": {"name": ca_bundle::MUTATING, "resourceVersion": "8"},
                    "webhooks": [
                        {"name": "mcontainerrecreaterequest.kb.io", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                         "clientConfig": {"service": {"name": "keelson-webhook", "namespace": "keelson-system", "path": crr::PATH}}},
                        {"name": "other.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                         "clientConfig": {"url": "https://example.com/x"}}]}),
                ),
                (
                    &Method::GET,
                    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/keelson-validating-webhook-configuration",
                ) => reply(
                    404,
                    serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                ),
                (&Method::GET, p) if p.starts_with(CRDS) => {
                    let crd = keelson_api::crds()
                        .into_iter()
                        .find(|c| c.metadata.name.as_deref() == Some(&p[CRDS.len()..]))
                        .unwrap();
                    reply(200, serde_json::to_value(crd).unwrap())
                }
                (&Method::PUT, p) if p.starts_with(CRDS) => {
                    let body = body_json(req).await;
                    puts.push(body.clone());
                    reply(200, body)
                }
                (&Method::PUT, p) if p.ends_with(ca_bundle::MUTATING) => {
                    let body = body_json(req).await;
                    puts.push(body.clone());
                    reply(200, body)
                }
                other => panic!("unexpected request {other:?}"),
            };
            send.send_response(answer);
        }
        puts
    });
    let n = ca_bundle::sync(&client, "keelson-webhook", "keelson-system", b"CA PEM")
        .await
        .unwrap();
    // The mutating configuration and every CRD with a conversion webhook.
    assert_eq!(n, 1 + keelson_api::conversion::CONVERTED_KINDS.len());
    drop(client);
    let puts = server.await.unwrap();
    use base64::Engine as _;
    let mut converted: Vec<&str> = puts[1..]
        .iter()
        .map(|crd| {
            assert_eq!(
                crd["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"],
                base64::engine::general_purpose::STANDARD.encode("CA PEM")
            );
            crd["spec"]["names"]["kind"].as_str().unwrap()
        })
        .collect();
    converted.sort_unstable();
    let mut kinds = keelson_api::conversion::CONVERTED_KINDS.to_vec();
    kinds.sort_unstable();
    assert_eq!(converted, kinds);
    let hooks = &puts[0]["webhooks"];
    assert_eq!(puts[0]["metadata"]["resourceVersion"], "8");
    assert_eq!(
        hooks[0]["clientConfig"]["caBundle"],
        base64::engine::general_purpose::STANDARD.encode("CA PEM")
    );
    assert!(hooks[1]["clientConfig"].get("caBundle").is_none());
}

/// POSTs `body` to `path` over HTTPS, trusting only `ca`, naming `host`.
async fn post_tls(
    addr: std::net::SocketAddr,
    ca: &str,
    host: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("the CA vouches for the server");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", host)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        code,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn an_admission_review_over_https_with_the_self_made_certificate() {
    let names = certs::dns_names("keelson-webhook", "keelson-system");
    let made = certs::generate(&names).unwrap();
    let tls = certs::server_config(&made).unwrap();
    let (client, mut api) = mock_client();
    let api_server = tokio::spawn(async move {
        while let Some((req, send)) = api.next_request().await {
            assert_eq!(req.uri().path(), "/api/v1/namespaces/team/pods/p");
            send.send_response(reply(200, serde_json::to_value(pod()).unwrap()));
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(listener, tls, context(client, "")));

    let object = crr_json(serde_json::json!({"podName": "p", "containers": [{"name": "app"}]}));
    let body = serde_json::to_vec(&review("CREATE", object.clone(), None)).unwrap();
    let (code, answer) = post_tls(
        addr,
        &made.ca_cert,
        "keelson-webhook.keelson-system.svc",
        crr::PATH,
        body,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let resp = &answer["response"];
    assert_eq!(resp["uid"], "req-1");
    assert_eq!(resp["allowed"], true);
    assert_eq!(resp["patchType"], "JSONPatch");
    use base64::Engine as _;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(resp["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut stored = object;
    json_patch::patch(&mut stored, &patch).unwrap();
    assert_eq!(
        stored["metadata"]["labels"]["crr.apps.kruise.io/node-name"],
        "node-a"
    );

    // A name the certificate does not carry is refused by the client.
    let other = certs::generate(&["elsewhere".into()]).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(other.ca_cert.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name =
        rustls_pki_types::ServerName::try_from("keelson-webhook.keelson-system.svc").unwrap();
    assert!(
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .is_err(),
        "a client trusting another CA must not accept this server"
    );
    server.abort();
    let _ = server.await;
    api_server.abort();
}

#[tokio::test]
async fn each_webhook_refuses_while_its_gates_are_off() {
    let (client, _handle) = mock_client();
    let object = crr_json(serde_json::json!({"podName": "p", "containers": [{"name": "app"}]}));
    let body = serde_json::to_vec(&review("CREATE", object, None)).unwrap();
    let (code, out) = answer(
        crr::PATH,
        &body,
        &context(client.clone(), "KruiseDaemon=false"),
    )
    .await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(v["response"]["status"]["code"], 403);
    assert_eq!(
        v["response"]["status"]["message"],
        "feature-gate KruiseDaemon is not enabled"
    );

    let job = serde_json::json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
        "metadata": {"name": "j", "namespace": "team"},
        "spec": {"image": "nginx:1.25", "completionPolicy": {"type": "Always"}}});
    let body = serde_json::to_vec(&review("CREATE", job, None)).unwrap();
    let verdict = |gates: &'static str| {
        let ctx = context(client.clone(), gates);
        let body = body.clone();
        async move {
            let (_, out) = answer(imagepulljob::PATH, &body, &ctx).await;
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            (
                v["response"]["allowed"].clone(),
                v["response"]["status"]["message"].clone(),
            )
        }
    };
    // ImagePullJobGate is off by default, as in OpenKruise.
    assert_eq!(
        verdict("").await,
        (
            serde_json::json!(false),
            serde_json::json!("feature-gate ImagePullJobGate is not enabled")
        )
    );
    assert_eq!(verdict("ImagePullJobGate=true").await.0, true);
}

fn pod_review(pod: serde_json::Value) -> AdmissionRequest<DynamicObject> {
    request(
        serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "req-2", "operation": "CREATE", "namespace": "shop", "name": "",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "userInfo": {"username": "someone"}, "object": pod}}),
    )
}

fn pod_out(req: &AdmissionRequest<DynamicObject>, resp: &AdmissionResponse) -> serde_json::Value {
    patched(
        &serde_json::to_value(req.object.as_ref().unwrap()).unwrap(),
        resp,
    )
}

#[tokio::test]
async fn the_pod_webhook_injects_stamps_and_gates() {
    let (client, _handle) = mock_client();
    let mut set = serde_json::json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "SidecarSet",
        "metadata": {"name": "log"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}},
                 "containers": [{"name": "log", "image": "log:1",
                     "env": [{"name": "KRUISE_CONTAINER_PRIORITY", "value": "10"}]}]}});
    crate::sidecarset::defaults::default_and_hash(&mut set);
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "labels": {"kubernetes.io/metadata.name": "shop"}}});
    let mut ctx = context(client, "");
    ctx.caches = cache::Caches::from_objects(
        vec![serde_json::from_value(set).unwrap()],
        vec![serde_json::from_value(ns).unwrap()],
    );
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-", "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
                "name": "web", "uid": "u", "controller": true}]},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "app", "image": "nginx",
            "env": [{"name": "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "value": "true"},
                    {"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['v']"}}}]}]}});
    let req = pod_review(pod);
    let resp = pod::review(&req, &ctx).await;
    assert!(resp.allowed, "{resp:?}");
    let out = pod_out(&req, &resp);
    let names: Vec<_> = out["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, ["log", "app"]);
    assert_eq!(
        out["spec"]["readinessGates"],
        serde_json::json!([{"conditionType": "KruisePodReady"}])
    );
    let a = &out["metadata"]["annotations"];
    assert_eq!(
        a["keelson.io/container-priorities"],
        r#"{"app":0,"log":10}"#
    );
    assert_eq!(a["keelson.io/restart-policy"], "Never");
    assert_eq!(a["keelson.io/main-containers"], r#"["log"]"#);
    assert_eq!(
        a["keelson.io/env-from-metadata"],
        r#"{"app":{"V":"metadata.labels['v']"}}"#
    );
    assert_eq!(a["kruise.io/sidecarset-injected-list"], "log");
    // The namespace is not written into the pod.
    assert!(out["metadata"].get("namespace").is_none());

    // A pod no SidecarSet selects, in another namespace: untouched.
    let plain = pod_review(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"app": "other"}},
        "spec": {"containers": [{"name": "a", "image": "a"}]}}));
    let resp = pod::review(&plain, &ctx).await;
    assert!(resp.allowed && resp.patch.is_none(), "{resp:?}");
}

#[tokio::test]
async fn a_bad_priority_admits_with_a_warning() {
    let (client, _handle) = mock_client();
    let ctx = context(client, "");
    let req = pod_review(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [
            {"name": "a", "image": "a", "env": [{"name": "KRUISE_CONTAINER_PRIORITY", "value": "first"}]},
            {"name": "b", "image": "b", "env": [{"name": "KRUISE_CONTAINER_PRIORITY", "value": "1"}]}]}}));
    let resp = pod::review(&req, &ctx).await;
    assert!(resp.allowed);
    assert!(
        resp.warnings.as_ref().unwrap()[0].contains("\"first\""),
        "{resp:?}"
    );
    let out = pod_out(&req, &resp);
    assert_eq!(
        out["metadata"]["annotations"]["keelson.io/container-priorities"],
        r#"{"a":0,"b":1}"#
    );
}

#[test]
fn conversion_reviews_are_answered() {
    let body = serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
        "request": {"uid": "c1", "desiredAPIVersion": "apps.kruise.io/v1beta1", "objects": [
            {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "SidecarSet",
             "metadata": {"name": "s"}, "spec": {"namespace": "shop"}}]}});
    let (code, out) = convert::answer(&serde_json::to_vec(&body).unwrap());
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["response"]["uid"], "c1");
    assert_eq!(v["response"]["result"]["status"], "Success");
    assert_eq!(
        v["response"]["convertedObjects"][0]["spec"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "shop"
    );
    let bad = serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
        "request": {"uid": "c2", "desiredAPIVersion": "apps.kruise.io/v9", "objects": [
            {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "SidecarSet", "metadata": {"name": "s"}}]}});
    let (_, out) = convert::answer(&serde_json::to_vec(&bad).unwrap());
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["response"]["result"]["status"], "Failure");
    assert!(
        v["response"]["result"]["message"]
            .as_str()
            .unwrap()
            .contains("\"s\"")
    );
}
