//! The link order list `agent/build.rs` hands the linker
//! (`agent/link-order/symbols.txt`, written by `agent/link-order/refresh`).
//!
//! lld reads one symbol per line and ignores what it does not find, so a
//! malformed list would not fail the build: it would just leave the hot
//! code scattered again. These checks keep it a list lld can use.

use std::collections::HashSet;

const LIST: &str = include_str!("../link-order/symbols.txt");

#[test]
fn the_list_names_mangled_symbols_once_each() {
    let names: Vec<&str> = LIST.lines().collect();
    assert!(
        names.len() > 500,
        "only {} symbols listed; rerun agent/link-order/refresh",
        names.len()
    );
    let mut seen = HashSet::new();
    for name in &names {
        assert!(
            name.starts_with("_ZN") || name.starts_with("_R"),
            "not a mangled Rust symbol: {name:?}"
        );
        assert!(
            !name.contains(char::is_whitespace),
            "whitespace in {name:?}"
        );
        assert!(seen.insert(*name), "listed twice: {name}");
    }
}

#[test]
fn the_list_holds_the_cri_hot_path() {
    // The h2 frame codec runs on every call; a list without it was not
    // made from a run that served calls.
    assert!(
        LIST.lines().any(|n| n.contains("h25codec")),
        "no h2 codec function in the list; rerun agent/link-order/refresh"
    );
}
