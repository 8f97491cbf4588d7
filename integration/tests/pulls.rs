//! The agent's pull engine against a real containerd and a real registry
//! with htpasswd auth on 127.0.0.1: pull secrets, an exec credential
//! plugin, wrong credentials with retries, malformed references,
//! identical concurrent pulls collapsing into one, and concurrent pulls
//! with different secrets kept apart.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::*;
use keelson_agent::images::credentials::Credentials;
use keelson_agent::images::provider;
use keelson_agent::images::pulls::{EngineConfig, Phase, PullEngine, PullPolicy, PullSpec};
use keelson_agent::store::Store;
use keelson_integration::images::BUSYBOX;
use keelson_integration::registry::{Credentials as RegistryUser, Registry};

struct Setup {
    node: Node,
    registry: Registry,
    engine: Arc<PullEngine>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn secret(host: &str, user: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#)
}

/// Containerd, an auth registry with busybox pushed under `repos`, and an
/// engine whose only credential plugin answers for `plugin_repo` paths.
async fn setup(repos: &[&str]) -> Setup {
    let node = Node::start();
    let user = RegistryUser {
        username: "keelson".into(),
        password: "s3cret".into(),
    };
    let registry = Registry::start(Some(user)).unwrap();
    for r in repos {
        registry
            .push(&node.containerd.images().layout("busybox"), BUSYBOX, r)
            .unwrap();
    }
    let bin = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let host = registry.host();
    std::fs::write(
        bin.path().join("test-plugin"),
        format!(
            "#!/bin/sh\ncat > /dev/null\necho '{{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":\"CredentialProviderResponse\",\"cacheKeyType\":\"Registry\",\"auth\":{{\"{host}/via-plugin\":{{\"username\":\"keelson\",\"password\":\"s3cret\"}}}}}}'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.path().join("test-plugin"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        bin.path().join("config.yaml"),
        format!(
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n  - name: test-plugin\n    matchImages: [\"{host}/via-plugin\"]\n    defaultCacheDuration: 1m\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n"
        ),
    )
    .unwrap();
    let providers = provider::load(&bin.path().join("config.yaml"), bin.path()).unwrap();
    let store = Store::open(state.path()).unwrap();
    let creds = Arc::new(Credentials::new(providers, Duration::from_secs(10), &store).unwrap());
    let engine = PullEngine::start(
        EngineConfig {
            runtime: keelson_agent::runtime_conn::RuntimeConn::new(&node.containerd.socket()),
            parallelism: 4,
            backoff_base: Duration::from_millis(50),
            ttl: Duration::from_secs(3600),
        },
        creds,
        &store,
    )
    .unwrap();
    Setup {
        node,
        registry,
        engine,
        _dirs: (bin, state),
    }
}

#[tokio::test]
async fn pulls_with_a_secret_and_with_a_credential_plugin() {
    let s = setup(&["private/busybox:1", "via-plugin/busybox:1"]).await;
    let host = s.registry.host();
    let mut spec = PullSpec::new(&format!("{host}/private/busybox:1"));
    spec.secrets.push(secret(&host, "keelson", "s3cret"));
    let id = s.engine.submit(spec).await.unwrap();
    let done = s.engine.wait(&id).await.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.message);
    assert!(
        done.image_id
            .as_deref()
            .is_some_and(|i| i.starts_with("sha256:"))
    );
    assert_eq!(done.attempts, 1);

    let id = s
        .engine
        .submit(PullSpec::new(&format!("{host}/via-plugin/busybox:1")))
        .await
        .unwrap();
    let done = s.engine.wait(&id).await.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.message);
    let mut direct = s.node.direct().await;
    let listed = direct
        .images
        .list_images(cri_proto::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.images.iter().any(|i| {
        i.repo_tags
            .contains(&format!("{host}/via-plugin/busybox:1"))
    }));
    assert_eq!(s.engine.list().len(), 2);
}

#[tokio::test]
async fn wrong_credentials_fail_clearly_after_the_retries() {
    let s = setup(&["private/busybox:1"]).await;
    let host = s.registry.host();
    let mut spec = PullSpec::new(&format!("{host}/private/busybox:1"));
    spec.secrets
        .push(secret(&host, "keelson", "wrong-password"));
    spec.backoff_limit = 2;
    let id = s.engine.submit(spec).await.unwrap();
    let done = s.engine.wait(&id).await.unwrap();
    assert_eq!(done.phase, Phase::Failed);
    assert_eq!(done.attempts, 3, "1 + backoffLimit");
    assert!(
        done.message.contains("unauthorized") && done.message.contains("401"),
        "{}",
        done.message
    );
    assert!(
        done.message.contains("pull secret") && done.message.contains("anonymous"),
        "{}",
        done.message
    );
    assert!(
        !done.message.contains("wrong-password"),
        "no secret in status: {}",
        done.message
    );

    let err = s
        .engine
        .submit(PullSpec::new("Not A/Valid::ref"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid image reference"), "{err}");
    assert_eq!(
        s.engine.list().len(),
        1,
        "nothing queued for the bad reference"
    );
}

#[tokio::test]
async fn identical_concurrent_pulls_are_pulled_once() {
    let s = setup(&["once/busybox:1", "baseline/busybox:1"]).await;
    let host = s.registry.host();
    let manifests = |repo: &str| {
        s.registry
            .log_text()
            .lines()
            .filter(|l| l.contains(&format!("/v2/{repo}/manifests/")))
            .count()
    };
    let pull = |repo: &str| {
        let mut spec = PullSpec::new(&format!("{host}/{repo}/busybox:1"));
        spec.secrets.push(secret(&host, "keelson", "s3cret"));
        spec.policy = PullPolicy::Always;
        spec
    };
    let id = s.engine.submit(pull("baseline")).await.unwrap();
    assert_eq!(s.engine.wait(&id).await.unwrap().phase, Phase::Succeeded);
    let one_pull = manifests("baseline/busybox");
    assert!(one_pull > 0, "the registry logs manifest requests");

    let submits = (0..10).map(|_| s.engine.submit(pull("once")));
    let ids: Vec<String> = futures_util::future::join_all(submits)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for id in &ids {
        let st = s.engine.wait(id).await.unwrap();
        assert_eq!(st.phase, Phase::Succeeded, "{}", st.message);
    }
    assert_eq!(
        manifests("once/busybox"),
        one_pull,
        "ten requests, one pull's worth of manifest fetches"
    );
}

#[tokio::test]
async fn concurrent_pulls_with_different_secrets_are_not_shared() {
    let s = setup(&["shared/busybox:1"]).await;
    let host = s.registry.host();
    let pull = |password: &str| {
        let mut spec = PullSpec::new(&format!("{host}/shared/busybox:1"));
        spec.secrets.push(secret(&host, "keelson", password));
        spec.policy = PullPolicy::Always;
        spec.backoff_limit = 0;
        spec
    };
    // Both orders: whichever request comes first, the other one carries
    // different credentials and must get a pull (and an answer) of its own.
    for right_first in [true, false] {
        let (first, second) = if right_first {
            (pull("s3cret"), pull("wrong-password"))
        } else {
            (pull("wrong-password"), pull("s3cret"))
        };
        let (first, second) = tokio::join!(s.engine.submit(first), s.engine.submit(second));
        let (first, second) = (first.unwrap(), second.unwrap());
        let (first, second) = tokio::join!(s.engine.wait(&first), s.engine.wait(&second));
        let (first, second) = (first.unwrap(), second.unwrap());
        let (right, wrong) = if right_first {
            (first, second)
        } else {
            (second, first)
        };
        assert_eq!(
            right.phase,
            Phase::Succeeded,
            "right secret (right first: {right_first}): {}",
            right.message
        );
        assert!(
            right
                .image_id
                .as_deref()
                .is_some_and(|i| i.starts_with("sha256:"))
        );
        assert_eq!(
            wrong.phase,
            Phase::Failed,
            "wrong secret answered by another request's pull (right first: {right_first}): {}",
            wrong.message
        );
        assert!(
            wrong.message.contains("unauthorized") && wrong.message.contains("401"),
            "{}",
            wrong.message
        );
        assert!(
            !wrong.message.contains("wrong-password") && !right.message.contains("s3cret"),
            "no secret in status"
        );
    }
}
