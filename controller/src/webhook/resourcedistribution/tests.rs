//! The ResourceDistribution webhook: the gate, upstream's refusals, and
//! the dry-run create against a mock API server.

use super::*;
use crate::testing::{body_json, mock_client, reply};
use crate::webhook::tests::context;
use http::Method;
use kube::core::admission::AdmissionReview;
use serde_json::json;

const GATE_ON: &str = "ResourceDistributionGate=true";

fn rd(name: &str, resource: Value, targets: Value) -> Value {
    json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ResourceDistribution",
        "metadata": {"name": name}, "spec": {"resource": resource, "targets": targets}})
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

fn request(operation: &str, object: Value, old: Option<Value>) -> AdmissionRequest<DynamicObject> {
    let gvk =
        json!({"group": "apps.kruise.io", "version": "v1alpha1", "kind": "ResourceDistribution"});
    let gvr = json!({"group": "apps.kruise.io", "version": "v1alpha1", "resource": "resourcedistributions"});
    let v = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "req-1", "operation": operation, "name": object["metadata"]["name"],
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "userInfo": {"username": "someone"}, "dryRun": false,
            "object": object, "oldObject": old}});
    let r: AdmissionReview<DynamicObject> = serde_json::from_value(v).unwrap();
    r.try_into().unwrap()
}

#[tokio::test]
async fn refused_with_403_while_the_gate_is_off() {
    let (client, _handle) = mock_client();
    let ctx = context(client, "");
    let req = request(
        "CREATE",
        rd("sample", cm("game-demo"), json!({"allNamespaces": true})),
        None,
    );
    let resp = review(&req, &ctx).await;
    assert!(!resp.allowed);
    assert_eq!(resp.result.code, 403);
    assert_eq!(
        resp.result.message,
        "feature-gate ResourceDistributionGate is not enabled"
    );
}

#[tokio::test]
async fn a_valid_create_is_dry_run_in_the_controllers_namespace() {
    let (client, mut handle) = mock_client();
    let ctx = context(client, GATE_ON);
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            req.uri().path(),
            "/api/v1/namespaces/keelson-system/configmaps"
        );
        assert!(
            req.uri().query().unwrap().contains("dryRun=All"),
            "{:?}",
            req.uri()
        );
        let body = body_json(req).await;
        assert_eq!(body["metadata"]["namespace"], "keelson-system");
        assert_eq!(body["data"]["k"], "v");
        send.send_response(reply(201, body));
        // The second create finds an object of that name: still fine.
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(
            409,
            json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "reason": "AlreadyExists", "code": 409,
            "message": "configmaps \"game-demo\" already exists"}),
        ));
    });
    let targets = json!({"includedNamespaces": {"list": [{"name": "ns-1"}]},
        "namespaceLabelSelector": {"matchLabels": {"group": "one"}}});
    let req = request(
        "CREATE",
        rd("sample", cm("game-demo"), targets.clone()),
        None,
    );
    let resp = review(&req, &ctx).await;
    assert!(resp.allowed, "{resp:?}");
    let req = request(
        "UPDATE",
        rd("sample", cm("game-demo"), targets.clone()),
        Some(rd("sample", cm("game-demo"), json!({}))),
    );
    assert!(review(&req, &ctx).await.allowed);
    server.await.unwrap();
}

#[tokio::test]
async fn the_dry_run_refusal_is_reported() {
    let (client, mut handle) = mock_client();
    let ctx = context(client, GATE_ON);
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(422, json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "reason": "Invalid", "code": 422,
            "message": "ConfigMap \"game-demo\" is invalid: data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"})));
    });
    let mut bad = cm("game-demo");
    bad["data"] = json!({"bad key": "v"});
    let req = request("CREATE", rd("sample", bad, json!({})), None);
    let resp = review(&req, &ctx).await;
    assert_eq!(resp.result.code, 422);
    assert!(
        resp.result.message.starts_with("spec.resource: Internal error: failed to dry-run to validate spec.resource, error: ConfigMap \"game-demo\" is invalid: data[bad key]"),
        "{}",
        resp.result.message
    );
    server.await.unwrap();
}

#[tokio::test]
async fn unsupported_kinds_renames_and_bad_targets_are_refused_without_a_dry_run() {
    // No request may reach the API server.
    let (client, _handle) = mock_client();
    let ctx = context(client, GATE_ON);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
    let req = request("CREATE", rd("sample", pod, json!({})), None);
    let resp = review(&req, &ctx).await;
    assert_eq!(resp.result.code, 422);
    assert_eq!(
        resp.result.message,
        r#"spec.resource: Invalid value: unstructured.Unstructured{Object:map[string]interface {}{"apiVersion":"v1", "kind":"Pod", "metadata":map[string]interface {}{"name":"p"}}}: unknown or unsupported resource GroupKind, only support [Secret ConfigMap]"#
    );

    let targets = json!({"includedNamespaces": {"list": [{"name": "a"}]},
        "excludedNamespaces": {"list": [{"name": "a"}]}});
    let req = request(
        "UPDATE",
        rd("sample", cm("renamed"), targets),
        Some(rd("sample", cm("game-demo"), json!({}))),
    );
    let resp = review(&req, &ctx).await;
    assert_eq!(resp.result.code, 422);
    let msg = &resp.result.message;
    assert!(
        msg.starts_with("[spec.resource: Invalid value: \"null\": resource apiVersion, kind, and name are immutable, spec.targets: Invalid value: v1alpha1.ResourceDistributionTargets{")
            && msg.ends_with("ambiguous targets because namespace [a] is in both IncludedNamespaces.List and ExcludedNamespaces.List]"),
        "{msg}"
    );

    let mut named = rd("Bad_Name", json!(null), json!({}));
    named["spec"]["resource"] = Value::Null;
    let resp = review(&request("CREATE", named, None), &ctx).await;
    assert_eq!(resp.result.code, 422);
    assert!(
        resp.result.message.starts_with(
            "[metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        ) && resp
            .result
            .message
            .ends_with(", spec: Invalid value: \"null\": empty resource is not allowed]"),
        "{}",
        resp.result.message
    );

    // Deletes are not this webhook's business.
    let req = request("DELETE", rd("sample", cm("x"), json!({})), None);
    assert!(review(&req, &ctx).await.allowed);
}

#[tokio::test]
async fn routed_at_upstreams_path() {
    let (client, _handle) = mock_client();
    let ctx = context(client, "");
    assert!(crate::webhook::PATHS.contains(&PATH));
    let req = request("CREATE", rd("sample", cm("game-demo"), json!({})), None);
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": serde_json::to_value(&req).unwrap()});
    let (code, out) = crate::webhook::answer(PATH, &serde_json::to_vec(&body).unwrap(), &ctx).await;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(v["response"]["status"]["code"], 403);
}
