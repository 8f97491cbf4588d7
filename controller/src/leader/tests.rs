//! Leader election: the rules, the fence, and the exact API requests
//! (kube's mock service stands in for the API server).

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

/// `decide` at wall time `wall` and monotonic `now`, the Lease noted in
/// `seen` first (as the elector does after each read).
fn decide_at(
    current: Option<&Lease>,
    seen: &mut Observed,
    me: &str,
    wall: i64,
    now: Instant,
) -> Step {
    seen.note(current.and_then(|l| l.spec.as_ref()), now);
    decide(
        current,
        seen,
        "keelson-controller",
        "keelson-system",
        me,
        &at(wall),
        now,
        15,
    )
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn the_rule() {
    let t0 = Instant::now();
    let mut seen = Observed::default();
    let Step::Create(l) = decide_at(None, &mut seen, "a", 1000, t0) else {
        panic!("no lease: create");
    };
    let s = l.spec.unwrap();
    assert_eq!(s.holder_identity.as_deref(), Some("a"));
    assert_eq!(s.lease_transitions, Some(0));

    // The holder renews, keeping acquire time and transitions.
    let mut seen = Observed::default();
    let Step::Update(l) = decide_at(Some(&lease("a", 995, 3)), &mut seen, "a", 1000, t0) else {
        panic!("holder renews");
    };
    let s = l.spec.unwrap();
    assert_eq!(s.renew_time, Some(at(1000)));
    assert_eq!(s.acquire_time, Some(at(895)));
    assert_eq!(s.lease_transitions, Some(3));
    assert_eq!(l.metadata.resource_version.as_deref(), Some("41"));

    // A live leader is followed; one whose record stood still for the
    // lease since we saw it is taken over.
    let mut seen = Observed::default();
    assert!(matches!(
        decide_at(Some(&lease("a", 995, 3)), &mut seen, "b", 1000, t0),
        Step::Follow { holder, .. } if holder == "a"
    ));
    let Step::Update(l) = decide_at(
        Some(&lease("a", 995, 3)),
        &mut seen,
        "b",
        1015,
        t0 + secs(15),
    ) else {
        panic!("expired: take over");
    };
    let s = l.spec.unwrap();
    assert_eq!(s.holder_identity.as_deref(), Some("b"));
    assert_eq!(s.acquire_time, Some(at(1015)));
    assert_eq!(s.lease_transitions, Some(4));
}

/// The holder's clock says nothing: a holder whose clock is far behind
/// ours but who renews is followed; one whose clock is far ahead but who
/// stopped renewing is taken over one lease after we saw its last write.
#[test]
fn expiry_is_judged_by_our_observation_not_the_holders_clock() {
    let t0 = Instant::now();
    // Holder's clock 1000 s behind: its renewTime looks long expired.
    let mut seen = Observed::default();
    for (i, renewed) in [0_i64, 2, 4, 6, 8, 10, 12, 14, 16, 18]
        .into_iter()
        .enumerate()
    {
        let now = t0 + secs(2 * i as u64);
        assert!(
            matches!(
                decide_at(
                    Some(&lease("a", renewed, 1)),
                    &mut seen,
                    "b",
                    1000 + renewed,
                    now
                ),
                Step::Follow { .. }
            ),
            "a renewing holder is followed (round {i})"
        );
    }
    // Holder's clock 1000 s ahead and the holder gone quiet: the record
    // stands still; after a lease from when we first saw it, take over.
    let mut seen = Observed::default();
    let stuck = lease("a", 2000, 1);
    assert!(matches!(
        decide_at(Some(&stuck), &mut seen, "b", 1000, t0),
        Step::Follow { .. }
    ));
    assert!(matches!(
        decide_at(Some(&stuck), &mut seen, "b", 1014, t0 + secs(14)),
        Step::Follow { .. }
    ));
    assert!(matches!(
        decide_at(Some(&stuck), &mut seen, "b", 1015, t0 + secs(15)),
        Step::Update(_)
    ));
    // A change of the record restarts the wait.
    let mut seen = Observed::default();
    decide_at(Some(&lease("a", 2000, 1)), &mut seen, "b", 1000, t0);
    assert!(matches!(
        decide_at(
            Some(&lease("a", 2001, 1)),
            &mut seen,
            "b",
            1010,
            t0 + secs(10)
        ),
        Step::Follow { .. }
    ));
    assert!(matches!(
        decide_at(
            Some(&lease("a", 2001, 1)),
            &mut seen,
            "b",
            1020,
            t0 + secs(20)
        ),
        Step::Follow { .. }
    ));
    assert!(matches!(
        decide_at(
            Some(&lease("a", 2001, 1)),
            &mut seen,
            "b",
            1025,
            t0 + secs(25)
        ),
        Step::Update(_)
    ));
}

#[test]
fn the_leader_stops_at_its_renew_deadline() {
    let t0 = Instant::now();
    let deadline = Timing::DEFAULT.renew_deadline;
    assert!(Timing::DEFAULT.renew_deadline < Timing::DEFAULT.lease);
    assert!(!still_leading(None, t0, deadline));
    assert!(still_leading(Some(t0), t0, deadline));
    assert!(still_leading(Some(t0), t0 + secs(9), deadline));
    assert!(!still_leading(Some(t0), t0 + secs(10), deadline));
}

#[test]
fn the_fence_refuses_writes_after_its_time() {
    let t0 = Instant::now();
    let f = Fence::default();
    assert!(f.allows(&Method::GET, t0), "reads always");
    assert!(!f.allows(&Method::PATCH, t0), "no grant yet");
    f.grant(t0 + secs(10));
    for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        assert!(f.allows(&m, t0 + secs(9)), "{m}");
        assert!(!f.allows(&m, t0 + secs(10)), "{m}");
    }
    f.grant(t0 + secs(20));
    f.revoke();
    assert!(!f.allows(&Method::PUT, t0));
    assert!(f.allows(&Method::GET, t0 + secs(99)));
}

fn api() -> (Api<Lease>, Handle) {
    let (client, handle) = mock_client();
    (Api::namespaced(client, "keelson-system"), handle)
}

fn status(code: u16, reason: &str) -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": reason, "reason": reason, "code": code})
}

fn quick() -> Timing {
    Timing {
        lease: Duration::from_millis(900),
        renew_deadline: Duration::from_millis(600),
        retry: Duration::from_millis(100),
    }
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
    let mut e = Elector::new(
        api,
        "keelson-controller",
        "keelson-system",
        "pod-a",
        Timing::DEFAULT,
    );
    let (led, error) = e.round().await;
    assert!(led, "{error:?}");
    assert!(e.fence().allows(&Method::PATCH, Instant::now()));
    server.await.unwrap();
}

#[tokio::test]
async fn hand_over_after_a_lease_of_silence_and_a_lost_race_is_not_leadership() {
    let (api, mut handle) = api();
    let server = tokio::spawn(async move {
        // pod-a's lease, whatever its renewTime says, is followed until it
        // has stood still for a lease; then pod-b takes it over with a PUT
        // that carries the resourceVersion it read.
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!((req.method(), req.uri().path()), (&Method::GET, PATH));
        send.send_response(reply(
            200,
            serde_json::to_value(lease("pod-a", 980, 1)).unwrap(),
        ));
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

        // pod-c saw the same silent lease, but pod-b wrote first: 409.
        for _ in 0..2 {
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::GET);
            send.send_response(reply(
                200,
                serde_json::to_value(lease("pod-a", 980, 1)).unwrap(),
            ));
        }
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.method(), Method::PUT);
        send.send_response(reply(409, status(409, "Conflict")));
    });
    let args = ("keelson-controller", "keelson-system");
    let mut b = Elector::new(api.clone(), args.0, args.1, "pod-b", quick());
    let (led, _) = b.round().await;
    assert!(
        !led,
        "a lease just seen is followed, however old its renewTime"
    );
    // The record's own 15 s count: rather than sleep, date the first
    // sighting back by more than that.
    b.observed.at = Some(Instant::now() - Duration::from_secs(16));
    let (led, error) = b.round().await;
    assert!(led, "{error:?}");
    let mut c = Elector::new(api, args.0, args.1, "pod-c", quick());
    c.round().await;
    c.observed.at = Some(Instant::now() - Duration::from_secs(16));
    let (led, error) = c.round().await;
    assert!(!led && error.is_none(), "{error:?}");
    assert!(!c.fence().allows(&Method::PATCH, Instant::now()));
    server.await.unwrap();
}

/// A leader that cannot renew (API errors) leads on until its renew
/// deadline, then stops and its fence shuts; one that sees another
/// holder stops at once.
#[tokio::test]
async fn failed_renewals_end_leadership_at_the_renew_deadline() {
    let (api, mut handle) = api();
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(404, status(404, "NotFound")));
        let (req, send) = handle.next_request().await.unwrap();
        let body = body_json(req).await;
        send.send_response(reply(201, body));
        for _ in 0..2 {
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(reply(500, status(500, "InternalError")));
        }
        // Leading again, then someone else holds the Lease.
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(404, status(404, "NotFound")));
        let (req, send) = handle.next_request().await.unwrap();
        let body = body_json(req).await;
        send.send_response(reply(201, body));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(
            200,
            serde_json::to_value(lease("pod-b", 1, 1)).unwrap(),
        ));
    });
    let mut a = Elector::new(
        api,
        "keelson-controller",
        "keelson-system",
        "pod-a",
        quick(),
    );
    assert!(a.round().await.0);
    let fence = a.fence();
    let (led, error) = a.round().await;
    assert!(led && error.is_some(), "within the deadline: {error:?}");
    tokio::time::sleep(quick().renew_deadline).await;
    assert!(
        !fence.allows(&Method::PUT, Instant::now()),
        "the fence shuts on time, before the loop runs"
    );
    let (led, error) = a.round().await;
    assert!(!led && error.is_some(), "past the deadline");
    assert!(a.round().await.0);
    let (led, error) = a.round().await;
    assert!(!led && error.is_none(), "another holder: {error:?}");
    assert!(!fence.allows(&Method::PUT, Instant::now()));
    server.await.unwrap();
}

/// The reconcilers' client: writes refused by the fence never reach the
/// API server; reads do.
#[tokio::test]
async fn the_fenced_client_drops_writes_without_sending_them() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        let mut seen = vec![];
        while let Some((req, send)) = handle.next_request().await {
            seen.push(req.method().clone());
            send.send_response(reply(
                200,
                serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "x", "namespace": "default"}}),
            ));
        }
        seen
    });
    let fence = Arc::new(Fence::default());
    let fenced = fenced(client, fence.clone());
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::default_namespaced(fenced);
    let patch = kube::api::Patch::Merge(serde_json::json!({"data": {"a": "b"}}));
    let pp = kube::api::PatchParams::default();
    let err = api.patch("x", &pp, &patch).await.unwrap_err();
    assert!(err.to_string().contains("not the leader"), "{err}");
    api.get("x").await.unwrap();
    fence.grant(Instant::now() + secs(5));
    api.patch("x", &pp, &patch).await.unwrap();
    drop(api);
    assert_eq!(server.await.unwrap(), vec![Method::GET, Method::PATCH]);
}
