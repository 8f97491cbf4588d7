//! SidecarSet: which pods a SidecarSet selects ([`matching`]), its
//! defaults and hashes as OpenKruise's webhook writes them ([`defaults`],
//! [`hash`]), what injecting it into a new pod does ([`inject`]), and the
//! validation rules ([`validate`]).

pub mod controller;
pub mod defaults;
pub mod hash;
pub mod hotupgrade;
pub mod inject;
pub mod matching;
pub mod revision;
pub mod status;
pub mod update;
pub mod validate;
