//! The proxy's HTTP/2 header-block repair (`cri::authority`), fed a
//! caller's byte stream: the client preface (when the first byte is odd)
//! then arbitrary frames. It must never panic, and whatever it passes on
//! must still start with the preface it was given.
#![no_main]

use keelson_agent::cri::authority::AuthorityRepair;
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncReadExt;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut input = Vec::with_capacity(PREFACE.len() + rest.len());
    if first & 1 == 1 {
        input.extend_from_slice(PREFACE);
    }
    input.extend_from_slice(rest);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let out = rt.block_on(async {
        let mut repaired = AuthorityRepair::new(&input[..]);
        let mut out = Vec::new();
        let _ = repaired.read_to_end(&mut out).await;
        out
    });
    if first & 1 == 1 && !out.is_empty() {
        assert!(out.starts_with(&PREFACE[..out.len().min(PREFACE.len())]));
    }
});
