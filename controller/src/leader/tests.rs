//! Leader election: the rule, and the exact API requests (kube's mock
//! service stands in for the API server).

use super::*;
use crate::testing::{Handle, body_json, mock_client, reply};
use http::Method;

const PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/keelson-system/leases/keelson-controller";

fn at(s: i64) -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
}

fn lease(holder: &str, renewed: i64, transitions: i32) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("keelson-controller".into()),
            namespace: Some("keelson-system".into()),
            resource_version: Some("41".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(at(renewed - 100)),
            renew_time: Some(at(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }),
    }
}

fn decide_at(current: Option<&Lease>, me: &str, now: i64) -> Step {
    decide(
        current,
        "keelson-controller",
        "keelson-system",
        me,
        &at(now),
        15,
    )
}

#[test]
fn the_rule() {
    let Step::Create(l) = decide_at(None, "a", 1000) else {
        panic!("no lease: create");
    };
    let s = l.spec.unwrap();
    assert_eq!(s.holder_identity.as_deref(), Some("a"));
    assert_eq!(s.lease_transitions, Some(0));

    // The holder renews, keeping acquire time and transitions.
    let Step::Update(l) = decide_at(Some(&lease("a", 995, 3)), "a", 1000) else {
        panic!("holder renews");
    };
    let s = l.spec.unwrap();
    assert_eq!(s.renew_time, Some(at(1000)));
    assert_eq!(s.acquire_time, Some(at(895)));
    assert_eq!(s.lease_transitions, Some(3));
    assert_eq!(l.metadata.resource_version.as_deref(), Some("41"));

    // A live leader is followed.
    assert!(matches!(
        decide_at(Some(&lease("a", 995, 3)), "b", 1000),
        Step::Follow { holder, .. } if holder == "a"
    ));
    // An expired one is taken over.
    let Step::Update(l) = decide_at(Some(&lease("a", 980, 3)), "b", 1000) else {
        panic!("expired: take over");
    };
    let s = l.spec.unwrap();
    assert_eq!(s.holder_identity.as_deref(), Some("b"));
    assert_eq!(s.acquire_time, Some(at(1000)));
    assert_eq!(s.lease_transitions, Some(4));
}

fn api() -> (Api<Lease>, Handle) {
    let (client, handle) = mock_client();
    (Api::namespaced(client, "keelson-system"), handle)
}

fn status(code: u16, reason: &str) -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": reason, "reason": reason, "code": code})
}

#[tokio::test]
async fn creates_the_lease_when_there_is_none() {
    let (api, mut handle) = api();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!((req.method(), req.uri().path()), (&Method::GET, PATH));
        send.send_response(reply(404, status(404, "NotFound")));
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            req.uri().path(),
            "/apis/coordination.k8s.io/v1/namespaces/keelson-system/leases"
        );
        let body = body_json(req).await;
        assert_eq!(body["spec"]["holderIdentity"], "pod-a");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
        send.send_response(reply(201, body));
    });
    let led = try_lead(
        &api,
        "keelson-controller",
        "keelson-system",
        "pod-a",
        &at(1000),
        15,
    )
    .await
    .unwrap();
    assert!(led);
    server.await.unwrap();
}

#[tokio::test]
async fn hand_over_after_expiry_and_a_lost_race_is_not_leadership() {
    let (api, mut handle) = api();
    let server = tokio::spawn(async move {
        // pod-a's lease expired at 995: pod-b takes it over with a PUT that
        // carries the resourceVersion it read.
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!((req.method(), req.uri().path()), (&Method::GET, PATH));
        send.send_response(reply(
            200,
            serde_json::to_value(lease("pod-a", 980, 1)).unwrap(),
        ));
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!((req.method(), req.uri().path()), (&Method::PUT, PATH));
        let body = body_json(req).await;
        assert_eq!(body["metadata"]["resourceVersion"], "41");
        assert_eq!(body["spec"]["holderIdentity"], "pod-b");
        assert_eq!(body["spec"]["leaseTransitions"], 2);
        send.send_response(reply(200, body));

        // Next round pod-c also saw the expired lease, but pod-b wrote
        // first: the API server answers 409.
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.method(), Method::GET);
        send.send_response(reply(
            200,
            serde_json::to_value(lease("pod-a", 980, 1)).unwrap(),
        ));
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.method(), Method::PUT);
        send.send_response(reply(409, status(409, "Conflict")));

        // And a live leader is only read, never written.
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.method(), Method::GET);
        send.send_response(reply(
            200,
            serde_json::to_value(lease("pod-b", 1000, 2)).unwrap(),
        ));
    });
    let args = ("keelson-controller", "keelson-system");
    assert!(
        try_lead(&api, args.0, args.1, "pod-b", &at(1000), 15)
            .await
            .unwrap()
    );
    assert!(
        !try_lead(&api, args.0, args.1, "pod-c", &at(1000), 15)
            .await
            .unwrap()
    );
    assert!(
        !try_lead(&api, args.0, args.1, "pod-c", &at(1001), 15)
            .await
            .unwrap()
    );
    server.await.unwrap();
}
