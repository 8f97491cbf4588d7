//! [`PodBookHook`]: the CRI calls kubelet makes (RunPodSandbox,
//! CreateContainer, the removals) recorded in the pod book as they
//! succeed, and the records built from their configs.

use std::collections::HashMap;
use std::sync::Arc;

use cri_proto as cri;

use super::{Container, PodBook, Sandbox, kept_annotation, kept_env};
use crate::cri::methods::runtime as m;
use crate::cri::{After, Call, Hook, HookError, HookFuture, Interest, Outcome};
use crate::kruise;
use crate::store::StoreError;

/// Keeps the book current from the CRI calls kubelet makes.
pub struct PodBookHook {
    book: Arc<PodBook>,
}

impl PodBookHook {
    pub fn new(book: Arc<PodBook>) -> Self {
        Self { book }
    }
}

impl Hook for PodBookHook {
    fn name(&self) -> &str {
        "pod-book"
    }

    fn interest(&self) -> Interest {
        Interest {
            before: vec![],
            after: vec![
                m::RunPodSandbox,
                m::CreateContainer,
                m::RemoveContainer,
                m::RemovePodSandbox,
            ],
        }
    }

    fn after<'a>(&'a self, call: &'a Call, outcome: &'a Outcome) -> HookFuture<'a, After> {
        Box::pin(async move {
            if outcome.status.code != 0 {
                return Ok(After::Keep);
            }
            let store = |e: StoreError| HookError::Internal(e.to_string());
            match call.method() {
                m::RunPodSandbox => {
                    let req: cri::RunPodSandboxRequest = call.decode()?;
                    let Some(reply) = outcome.decode::<cri::RunPodSandboxResponse>()? else {
                        return Ok(After::Keep);
                    };
                    let config = req.config.unwrap_or_default();
                    self.book
                        .add_sandbox(sandbox_from(reply.pod_sandbox_id, &config))
                        .await
                        .map_err(store)?;
                }
                m::CreateContainer => {
                    let req: cri::CreateContainerRequest = call.decode()?;
                    let Some(reply) = outcome.decode::<cri::CreateContainerResponse>()? else {
                        return Ok(After::Keep);
                    };
                    let config = req.config.unwrap_or_default();
                    let pod_annotations = req.sandbox_config.unwrap_or_default().annotations;
                    let c = container_from(
                        reply.container_id,
                        req.pod_sandbox_id,
                        &config,
                        &pod_annotations,
                    );
                    self.book.add_container(c).await.map_err(store)?;
                }
                m::RemoveContainer => {
                    let req: cri::RemoveContainerRequest = call.decode()?;
                    self.book
                        .remove_container(&req.container_id)
                        .await
                        .map_err(store)?;
                }
                m::RemovePodSandbox => {
                    let req: cri::RemovePodSandboxRequest = call.decode()?;
                    self.book
                        .remove_sandbox(&req.pod_sandbox_id)
                        .await
                        .map_err(store)?;
                }
                _ => {}
            }
            Ok(After::Keep)
        })
    }
}

/// A sandbox record from its config.
pub fn sandbox_from(id: String, config: &cri::PodSandboxConfig) -> Sandbox {
    let meta = config.metadata.clone().unwrap_or_default();
    Sandbox {
        id,
        uid: meta.uid,
        name: meta.name,
        namespace: meta.namespace,
        annotations: config
            .annotations
            .iter()
            .filter(|(k, _)| kept_annotation(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// A container record from its config; `pod_annotations` tells which env
/// vars read pod metadata (their values are kept too).
pub fn container_from(
    id: String,
    sandbox_id: String,
    config: &cri::ContainerConfig,
    pod_annotations: &HashMap<String, String>,
) -> Container {
    let meta = config.metadata.clone().unwrap_or_default();
    let from_metadata = crate::envdeps::env_names(pod_annotations, &meta.name);
    Container {
        id,
        sandbox_id,
        name: meta.name,
        attempt: meta.attempt,
        seq: 0,
        env: config
            .envs
            .iter()
            .filter(|kv| kept_env(&kv.key) || from_metadata.contains(&kv.key))
            .map(|kv| {
                (
                    kv.key.clone(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .collect(),
        grace_period_seconds: config
            .annotations
            .get(kruise::kubelet::POD_GRACE_PERIOD)
            .and_then(|v| v.parse().ok()),
        image: config
            .image
            .as_ref()
            .map(|i| {
                if i.user_specified_image.is_empty() {
                    i.image.clone()
                } else {
                    i.user_specified_image.clone()
                }
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_only_what_keelson_reads() {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "main".into(),
                attempt: 2,
            }),
            envs: vec![
                cri::KeyValue {
                    key: "SECRET".into(),
                    value: b"x".to_vec(),
                },
                cri::KeyValue {
                    key: kruise::ENV_CONTAINER_PRIORITY.into(),
                    value: b"5".to_vec(),
                },
            ],
            annotations: HashMap::from([(
                kruise::kubelet::POD_GRACE_PERIOD.to_string(),
                "7".to_string(),
            )]),
            ..Default::default()
        };
        let c = container_from("id".into(), "sb".into(), &config, &HashMap::new());
        assert_eq!(c.env.len(), 1, "other env values (secrets) are not stored");
        assert_eq!(c.env[kruise::ENV_CONTAINER_PRIORITY], "5");
        assert_eq!(
            (c.name.as_str(), c.attempt, c.grace_period_seconds),
            ("main", 2, Some(7))
        );
    }
}
