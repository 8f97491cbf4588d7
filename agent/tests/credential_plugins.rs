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

mod cache {
    use super::*;
    use keelson_agent::images::credentials::{Credentials, Source};
    use keelson_agent::images::secrets::Keyring;
    use keelson_agent::store::Store;

    /// A plugin that counts its runs in `<dir>/<name>.runs`.
    fn counting(
        dir: &Path,
        name: &str,
        key_type: &str,
        duration: Option<&str>,
        user: &str,
        delay: &str,
    ) {
        let dur = duration
            .map(|d| format!(",\"cacheDuration\":\"{d}\""))
            .unwrap_or_default();
        plugin(
            dir,
            name,
            &format!(
                r#"echo run >> {runs}; cat > /dev/null; sleep {delay}
echo '{{"apiVersion":"{V1}","kind":"CredentialProviderResponse","cacheKeyType":"{key_type}"{dur},"auth":{{"127.0.0.1:5000":{{"username":"{user}","password":"p"}},"*.example.com":{{"username":"{user}","password":"p"}}}}}}'"#,
                runs = dir.join(format!("{name}.runs")).display()
            ),
        );
    }

    fn runs(dir: &Path, name: &str) -> usize {
        std::fs::read_to_string(dir.join(format!("{name}.runs")))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn creds(dir: &Path, state: &Path, names: &[&str]) -> Credentials {
        let store = Store::open(state).unwrap();
        Credentials::new(config(dir, names), Duration::from_secs(10), &store).unwrap()
    }

    #[tokio::test]
    async fn cache_key_types_and_zero_duration() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        counting(dir.path(), "image", "Image", None, "u", "0");
        counting(dir.path(), "registry", "Registry", Some("1h"), "u", "0");
        counting(dir.path(), "global", "Global", None, "u", "0");
        counting(dir.path(), "nocache", "Image", Some("0s"), "u", "0");
        let none = Keyring::default();
        for (name, lookups, want_runs) in [
            (
                "image",
                &[
                    "127.0.0.1:5000/a:1",
                    "127.0.0.1:5000/a:2",
                    "127.0.0.1:5000/b:1",
                ][..],
                2,
            ),
            (
                "registry",
                &[
                    "127.0.0.1:5000/a:1",
                    "127.0.0.1:5000/b:1",
                    "x.example.com/c",
                ][..],
                2,
            ),
            (
                "global",
                &["127.0.0.1:5000/a:1", "x.example.com/c", "y.example.com/d"][..],
                1,
            ),
            (
                "nocache",
                &["127.0.0.1:5000/a:1", "127.0.0.1:5000/a:1"][..],
                2,
            ),
        ] {
            let c = creds(dir.path(), &state.path().join(name), &[name]);
            for image in lookups {
                let found = c.lookup(image, &none).await;
                assert!(found.errors.is_empty(), "{:?}", found.errors);
                assert_eq!(found.candidates.len(), 1, "{name} {image}");
            }
            assert_eq!(runs(dir.path(), name), want_runs, "{name}");
        }
    }

    /// Cached answers live in memory only: reused while the agent runs,
    /// gone with it (the plugin runs again after a restart), and the
    /// credentials never in the state directory.
    #[tokio::test]
    async fn cached_answers_stay_in_memory_and_never_reach_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        plugin(
            dir.path(),
            "image",
            &format!(
                r#"echo run >> {runs}; cat > /dev/null
echo '{{"apiVersion":"{V1}","kind":"CredentialProviderResponse","cacheKeyType":"Image","cacheDuration":"1h","auth":{{"127.0.0.1:5000":{{"username":"u","password":"never-on-disk-7f3a"}}}}}}'"#,
                runs = dir.path().join("image.runs").display()
            ),
        );
        {
            let c = creds(dir.path(), state.path(), &["image"]);
            for _ in 0..2 {
                let found = c.lookup("127.0.0.1:5000/a:1", &Keyring::default()).await;
                assert_eq!(found.candidates[0].1.password, "never-on-disk-7f3a");
            }
            assert_eq!(runs(dir.path(), "image"), 1, "cached while running");
        }
        let c = creds(dir.path(), state.path(), &["image"]);
        let found = c.lookup("127.0.0.1:5000/a:1", &Keyring::default()).await;
        assert_eq!(found.candidates.len(), 1);
        assert_eq!(runs(dir.path(), "image"), 2, "not cached across a restart");
        drop(c);
        for entry in walk(state.path()) {
            let bytes = std::fs::read(&entry).unwrap();
            assert!(
                !bytes.windows(18).any(|w| w == b"never-on-disk-7f3a"),
                "a credential in {}",
                entry.display()
            );
        }
    }

    /// Every file below `dir`.
    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = vec![];
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    /// A cache an earlier version left in sled is dropped on opening.
    #[tokio::test]
    async fn an_earlier_versions_on_disk_cache_is_dropped() {
        let state = tempfile::tempdir().unwrap();
        {
            let store = Store::open(state.path()).unwrap();
            let t = store
                .table::<String>("images.credential-cache", 10)
                .unwrap();
            t.put("image/127.0.0.1:5000/a", &"old".to_string())
                .await
                .unwrap();
        }
        let store = Store::open(state.path()).unwrap();
        Credentials::new(vec![], Duration::from_secs(10), &store).unwrap();
        let t = store
            .table::<String>("images.credential-cache", 10)
            .unwrap();
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn concurrent_lookups_run_the_plugin_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        counting(dir.path(), "slow", "Image", Some("0s"), "u", "0.3");
        let c = std::sync::Arc::new(creds(dir.path(), state.path(), &["slow"]));
        let mut tasks = vec![];
        for _ in 0..10 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                c.lookup("127.0.0.1:5000/a:1", &Keyring::default())
                    .await
                    .candidates
                    .len()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 1);
        }
        assert_eq!(runs(dir.path(), "slow"), 1);
    }

    #[tokio::test]
    async fn secrets_first_then_providers_in_config_order() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        counting(dir.path(), "first", "Image", None, "from-first", "0");
        counting(dir.path(), "second", "Image", None, "from-second", "0");
        let c = creds(dir.path(), state.path(), &["first", "second"]);
        let mut secrets = Keyring::default();
        secrets
            .add_dockerconfigjson(
                br#"{"auths":{"127.0.0.1:5000":{"username":"from-secret","password":"p"}}}"#,
            )
            .unwrap();
        let found = c.lookup("127.0.0.1:5000/a:1", &secrets).await;
        let order: Vec<(Source, &str)> = found
            .candidates
            .iter()
            .map(|(s, c)| (s.clone(), c.username.as_str()))
            .collect();
        assert_eq!(
            order,
            vec![
                (Source::PullSecret, "from-secret"),
                (Source::Provider("first".into()), "from-first"),
                (Source::Provider("second".into()), "from-second"),
            ]
        );
        let other = c.lookup("docker.io/library/busybox", &secrets).await;
        assert!(
            other.candidates.is_empty(),
            "no provider matches: anonymous"
        );
    }
}
