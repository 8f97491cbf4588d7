//! The proxy's HTTP/2 header-block repair (`cri::authority`), fed a
//! caller's byte stream: the client preface (when the first byte is odd)
//! then arbitrary frames. It must never panic, and whatever it passes on
//! must still start with the preface it was given.
//!
//! The HPACK decoder it uses (fluke-hpack) panics on some malformed
//! blocks (a truncated size-update integer, found here); the repair
//! catches that (`catch_unwind`) and closes the connection as for any
//! malformed block. libFuzzer's panic hook would count even a caught
//! panic as a crash, so panics raised inside fluke-hpack are let through
//! to that `catch_unwind`; any other panic still aborts.
#![no_main]

use keelson_agent::cri::authority::AuthorityRepair;
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncReadExt;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn allow_caught_decoder_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_decoder = info
                .location()
                .is_some_and(|l| l.file().contains("fluke-hpack"));
            if !in_decoder {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    allow_caught_decoder_panics();
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
