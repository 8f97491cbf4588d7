//! gRPC framing as the proxy reads it from either side: one
//! length-prefixed message out of a body, the declared length, the
//! percent-encoding of `grpc-message`, and the append of extra fields to
//! a reply. None may panic; a frame taken out must be as long as it said.
#![no_main]

use bytes::Bytes;
use keelson_agent::cri::{grpc, hook};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    if let Ok(message) = grpc::single_message(&body) {
        assert_eq!(grpc::declared_len(data), Some(message.len()));
        // Framing it again gives back the body.
        assert_eq!(grpc::frame(&message), body);
    }
    let _ = grpc::declared_len(data);
    let text = String::from_utf8_lossy(data);
    let decoded = grpc::percent_decode(&text);
    // Encoding is decodable back to the same text.
    assert_eq!(grpc::percent_decode(&grpc::percent_encode(&decoded)), decoded);
    let (a, b) = data.split_at(data.len() / 2);
    let _ = hook::append_fields(&Bytes::copy_from_slice(a), b);
});
