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

fn main() {
    println!("cargo:rerun-if-env-changed=KEELSON_NO_RELR");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os == "linux" && target_env == "gnu" && std::env::var_os("KEELSON_NO_RELR").is_none()
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
