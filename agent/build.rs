//! Link-time settings for the agent binary.
//!
//! A position-independent executable carries one relocation record per
//! pointer in its read-only data (vtables, string tables); the dynamic
//! loader reads all of them on every start. With packed relative
//! relocations (DT_RELR: glibc ≥ 2.36, GNU ld ≥ 2.38, lld) they shrink to a
//! bitmap a few KiB long, so the agent starts sooner and keeps fewer of its
//! file's pages resident, and stays a PIE (address-space randomisation is
//! kept for a process that runs as root). `KEELSON_NO_RELR=1` leaves it out
//! for a toolchain that lacks it.
//!
//! In a release build on x86_64 Linux, the functions the agent runs
//! (start-up, serving, the hooks: ~1,500 of ~15,000, 2.5 of 13.5 MB of
//! code) are placed together at the front of its code, hottest first, from
//! the list in `link-order/symbols.txt` (written by `link-order/refresh`).
//! The kernel maps a binary's file pages in 64 KiB windows around each one
//! touched, so code that runs scattered among code that never runs keeps
//! most of the file resident; packed, only its own windows. A listed
//! symbol the binary no longer has is skipped: a stale list costs memory,
//! never correctness. The option is lld's, Rust's default linker on x86_64
//! Linux (GNU ld has none): `KEELSON_NO_LINK_ORDER=1` leaves it out for a
//! build linked otherwise.
//!
//! A release build is stripped here rather than by the profile (see the
//! workspace `Cargo.toml`), so `KEELSON_KEEP_SYMBOLS=1` gives the same
//! build with its symbol table, whose names the list is made of.

use std::path::Path;

fn main() {
    for var in [
        "KEELSON_NO_RELR",
        "KEELSON_NO_LINK_ORDER",
        "KEELSON_KEEP_SYMBOLS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=link-order/symbols.txt");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let set = |name: &str| std::env::var_os(name).is_some();
    let linux = var("CARGO_CFG_TARGET_OS") == "linux";
    let linux_gnu = linux && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let release = var("PROFILE") == "release";
    if linux_gnu && !set("KEELSON_NO_RELR") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    if linux_gnu
        && release
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && !set("KEELSON_NO_LINK_ORDER")
    {
        let list = Path::new(&var("CARGO_MANIFEST_DIR")).join("link-order/symbols.txt");
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    if linux && release && !set("KEELSON_KEEP_SYMBOLS") {
        println!("cargo:rustc-link-arg-bins=-Wl,--strip-all");
    }
}
