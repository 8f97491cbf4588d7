//! Cluster mode, the part without I/O so far: how this node's NodeImage
//! maps to pulls and back to its status ([`nodeimage`]), and how a
//! ContainerRecreateRequest maps to a restart and back ([`crr`]). The
//! watches and status writes (kube client, `--kubeconfig`/in-cluster,
//! `--node-name`) come next; standalone mode does not depend on any of it.

pub mod crr;
pub mod nodeimage;
