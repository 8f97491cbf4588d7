//! Test support shared by the reconcilers' tests: times, and kube's mock
//! service standing in for the API server.

use http::{Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::client::Body;

/// The mock API server's side: requests in, responses out.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// `s` seconds after the epoch.
pub fn at(s: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
}

/// A client talking to a mock API server.
pub fn mock_client() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// An API server answer with status `code` and JSON `body`.
pub fn reply(code: u16, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

/// A request's JSON body.
pub async fn body_json(req: Request<Body>) -> serde_json::Value {
    serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap()
}
