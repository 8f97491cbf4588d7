//! Image prefetch on the node. So far: how kubelet authenticates pulls —
//! pull secrets ([`secrets`]) and exec credential provider plugins
//! ([`provider`]), both matched by kubelet's rules ([`matching`]). The pull
//! engine, its sled journal and the admin API build on these.

pub mod credentials;
pub mod duration;
pub mod matching;
pub mod provider;
pub mod pulls;
pub mod reference;
pub mod secrets;
