//! Real exec credential provider plugins (shell scripts speaking kubelet's
//! protocol) run through the agent's plugin runner: the request they get,
//! a good answer, and every way a plugin can misbehave.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use keelson_agent::images::provider::{self, CacheKeyType, PluginError};

const V1: &str = "credentialprovider.kubelet.k8s.io/v1";

fn plugin(dir: &Path, name: &str, script: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn config(dir: &Path, names: &[&str]) -> Vec<provider::Provider> {
    let mut yaml = String::from(
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n",
    );
    for n in names {
        yaml.push_str(&format!(
            "  - name: {n}\n    matchImages: [\"127.0.0.1:5000\", \"*.example.com\"]\n    defaultCacheDuration: 10m\n    apiVersion: {V1}\n    args: [get-credentials, --verbose]\n    env:\n      - name: PLUGIN_GREETING\n        value: hello\n"
        ));
    }
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    provider::load(&cfg, dir).unwrap()
}

#[tokio::test]
async fn a_good_plugin_gets_kubelets_request_and_its_answer_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    plugin(
        dir.path(),
        "good",
        &format!(
            r#"cat > {seen}.req; echo "$@ $PLUGIN_GREETING" > {seen}.args
echo '{{"apiVersion":"{V1}","kind":"CredentialProviderResponse","cacheKeyType":"Registry","cacheDuration":"5m","auth":{{"127.0.0.1:5000":{{"username":"keelson","password":"s3cret"}},"*.example.com":{{"username":"wild","password":"x"}}}}}}'"#,
            seen = seen.display()
        ),
    );
    let p = &config(dir.path(), &["good"])[0];
    let image = "127.0.0.1:5000/private/busybox:1";
    let r = provider::run(p, image, Duration::from_secs(10))
        .await
        .unwrap();
    let req: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}.req", seen.display())).unwrap())
            .unwrap();
    assert_eq!(req["apiVersion"], V1);
    assert_eq!(req["kind"], "CredentialProviderRequest");
    assert_eq!(req["image"], image);
    assert_eq!(
        std::fs::read_to_string(format!("{}.args", seen.display()))
            .unwrap()
            .trim(),
        "get-credentials --verbose hello"
    );
    assert_eq!(r.cache_key_type, CacheKeyType::Registry);
    assert_eq!(r.cache_duration, Some(Duration::from_secs(300)));
    let creds = r.lookup(image);
    assert_eq!(creds.len(), 1);
    assert_eq!(
        (creds[0].username.as_str(), creds[0].password.as_str()),
        ("keelson", "s3cret")
    );
    assert_eq!(r.lookup("a.example.com/x")[0].username, "wild");
}

#[tokio::test]
async fn misbehaving_plugins_give_clear_errors_and_never_hang() {
    let dir = tempfile::tempdir().unwrap();
    plugin(dir.path(), "hangs", "exec sleep 30");
    plugin(dir.path(), "crashes", "echo 'token=s3cret' ; exit 3");
    plugin(dir.path(), "garbage", "echo 'password: s3cret, not json'");
    plugin(
        dir.path(),
        "old",
        r#"echo '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","kind":"CredentialProviderResponse","cacheKeyType":"Image","auth":{}}'"#,
    );
    let providers = config(dir.path(), &["hangs", "crashes", "garbage", "old"]);
    let image = "127.0.0.1:5000/a:1";

    let t = Instant::now();
    let err = provider::run(&providers[0], image, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Timeout { .. }), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "killed at the timeout"
    );
    assert!(
        err.to_string().contains("\"hangs\"") && err.to_string().contains(image),
        "{err}"
    );

    for (p, want) in [
        (&providers[1], "exited with"),
        (&providers[2], "invalid JSON"),
        (&providers[3], "apiVersion"),
    ] {
        let err = provider::run(p, image, Duration::from_secs(10))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err}");
        assert!(
            !err.contains("s3cret"),
            "plugin output never reaches errors: {err}"
        );
    }
}
