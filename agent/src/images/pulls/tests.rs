//! The engine against a CRI image service stand-in that checks
//! credentials like an htpasswd registry behind containerd: sharing of
//! identical pulls, and what credentials a shared pull may answer for.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use cri::image_service_server::{ImageService, ImageServiceServer};
use cri_proto as cri;

use super::*;

const HOST: &str = "reg.test:5000";
const USER: &str = "keelson";
const PASSWORD: &str = "s3cret";

/// A `.dockerconfigjson` with one `auth` entry for `host`.
fn secret(host: &str, user: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#)
}

/// The image service stand-in: a pull takes `delay` (so concurrent
/// requests overlap) and succeeds only with `USER`/`PASSWORD`, failing
/// as containerd does on a 401 otherwise; pulled images are present.
#[derive(Default)]
struct Runtime {
    delay: Duration,
    present: Mutex<HashSet<String>>,
    /// The password of every PullImage call ("" for anonymous).
    pulls: Mutex<Vec<String>>,
}

impl Runtime {
    fn pulls(&self) -> Vec<String> {
        self.pulls.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl ImageService for Runtime {
    async fn list_images(
        &self,
        _: tonic::Request<cri::ListImagesRequest>,
    ) -> Result<tonic::Response<cri::ListImagesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this stand-in"))
    }

    type StreamImagesStream =
        futures_util::stream::Empty<Result<cri::StreamImagesResponse, tonic::Status>>;

    async fn stream_images(
        &self,
        _: tonic::Request<cri::StreamImagesRequest>,
    ) -> Result<tonic::Response<Self::StreamImagesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this stand-in"))
    }

    async fn image_status(
        &self,
        request: tonic::Request<cri::ImageStatusRequest>,
    ) -> Result<tonic::Response<cri::ImageStatusResponse>, tonic::Status> {
        let image = request.into_inner().image.unwrap_or_default().image;
        let present = self.present.lock().unwrap().contains(&image);
        Ok(tonic::Response::new(cri::ImageStatusResponse {
            image: present.then(|| cri::Image {
                id: format!("sha256:id-of-{image}"),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn pull_image(
        &self,
        request: tonic::Request<cri::PullImageRequest>,
    ) -> Result<tonic::Response<cri::PullImageResponse>, tonic::Status> {
        let request = request.into_inner();
        let image = request.image.unwrap_or_default().image;
        let auth = request.auth.unwrap_or_default();
        self.pulls.lock().unwrap().push(auth.password.clone());
        tokio::time::sleep(self.delay).await;
        if auth.username != USER || auth.password != PASSWORD {
            return Err(tonic::Status::unknown(format!(
                "failed to pull and unpack image \"{image}\": 401 Unauthorized"
            )));
        }
        self.present.lock().unwrap().insert(image.clone());
        Ok(tonic::Response::new(cri::PullImageResponse {
            image_ref: format!("sha256:id-of-{image}"),
        }))
    }

    async fn remove_image(
        &self,
        _: tonic::Request<cri::RemoveImageRequest>,
    ) -> Result<tonic::Response<cri::RemoveImageResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this stand-in"))
    }

    async fn image_fs_info(
        &self,
        _: tonic::Request<cri::ImageFsInfoRequest>,
    ) -> Result<tonic::Response<cri::ImageFsInfoResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this stand-in"))
    }
}

struct Setup {
    runtime: Arc<Runtime>,
    engine: Arc<PullEngine>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The stand-in serving on a socket, and an engine (no credential
/// plugins) pulling through it.
fn setup(runtime: Runtime) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("runtime.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let runtime = Arc::new(runtime);
    let server = tokio::spawn({
        let service = ImageServiceServer::from_arc(runtime.clone());
        async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(service, incoming)
                .await;
        }
    });
    let store = Store::open(dir.path()).unwrap();
    let credentials = Arc::new(Credentials::new(vec![], Duration::from_secs(5), &store).unwrap());
    let engine = PullEngine::start(
        EngineConfig {
            runtime: crate::runtime_conn::RuntimeConn::new(&socket),
            parallelism: 4,
            backoff_base: Duration::from_millis(10),
            ttl: Duration::from_secs(3600),
        },
        credentials,
        &store,
    )
    .unwrap();
    Setup {
        runtime,
        engine,
        server,
        _dir: dir,
    }
}

fn spec(password: &str, policy: PullPolicy) -> PullSpec {
    let mut spec = PullSpec::new(&format!("{HOST}/private/app:1"));
    spec.secrets.push(secret(HOST, USER, password));
    spec.policy = policy;
    spec.backoff_limit = 0;
    spec
}

#[tokio::test]
async fn a_pull_is_not_shared_with_a_request_carrying_other_credentials() {
    let s = setup(Runtime {
        delay: Duration::from_millis(300),
        ..Default::default()
    });
    for first_right in [true, false] {
        s.runtime.pulls.lock().unwrap().clear();
        let (right, wrong) = (
            spec(PASSWORD, PullPolicy::Always),
            spec("wrong-password", PullPolicy::Always),
        );
        let (a, b) = if first_right {
            (right, wrong)
        } else {
            (wrong, right)
        };
        let a = s.engine.submit(a).await.unwrap();
        let b = s.engine.submit(b).await.unwrap();
        let (a, b) = (
            s.engine.wait(&a).await.unwrap(),
            s.engine.wait(&b).await.unwrap(),
        );
        let (right, wrong) = if first_right { (a, b) } else { (b, a) };
        assert_eq!(right.phase, Phase::Succeeded, "{}", right.message);
        assert_eq!(
            wrong.phase,
            Phase::Failed,
            "the wrong secret's request was answered by another pull: {}",
            wrong.message
        );
        assert!(
            wrong.message.contains("unauthorized") && !wrong.message.contains("wrong-password"),
            "{}",
            wrong.message
        );
        let mut pulls = s.runtime.pulls();
        pulls.sort();
        assert_eq!(
            pulls,
            ["", PASSWORD, "wrong-password"],
            "one pull with each secret (then anonymous for the wrong one)"
        );
    }
}

#[tokio::test]
async fn requests_with_the_same_credentials_still_share_one_pull() {
    let s = setup(Runtime {
        delay: Duration::from_millis(300),
        ..Default::default()
    });
    let mut other = spec(PASSWORD, PullPolicy::Always);
    // A secret for another registry does not change what is tried here.
    other.secrets.push(secret("elsewhere.test", "x", "y"));
    let ids = [
        s.engine
            .submit(spec(PASSWORD, PullPolicy::Always))
            .await
            .unwrap(),
        s.engine.submit(other).await.unwrap(),
        s.engine
            .submit(spec(PASSWORD, PullPolicy::Always))
            .await
            .unwrap(),
    ];
    for id in &ids {
        let st = s.engine.wait(id).await.unwrap();
        assert_eq!(st.phase, Phase::Succeeded, "{}", st.message);
    }
    assert_eq!(s.runtime.pulls(), [PASSWORD], "three requests, one pull");
}

#[tokio::test]
async fn a_present_image_is_used_without_credentials_unless_the_policy_is_always() {
    let s = setup(Runtime::default());
    let first = s
        .engine
        .submit(spec(PASSWORD, PullPolicy::Always))
        .await
        .unwrap();
    assert_eq!(s.engine.wait(&first).await.unwrap().phase, Phase::Succeeded);

    // kubelet's IfNotPresent: the image is on the node, nothing is pulled
    // and no credential is checked.
    let id = s
        .engine
        .submit(spec("wrong-password", PullPolicy::IfNotPresent))
        .await
        .unwrap();
    let st = s.engine.wait(&id).await.unwrap();
    assert_eq!(st.phase, Phase::Succeeded, "{}", st.message);
    assert_eq!(
        st.image_id.as_deref(),
        Some(format!("sha256:id-of-{HOST}/private/app:1").as_str())
    );
    assert_eq!(s.runtime.pulls(), [PASSWORD]);

    // Always pulls, so the wrong secret fails even though the image is here.
    let id = s
        .engine
        .submit(spec("wrong-password", PullPolicy::Always))
        .await
        .unwrap();
    let st = s.engine.wait(&id).await.unwrap();
    assert_eq!(st.phase, Phase::Failed, "{}", st.message);
}

#[test]
fn credential_identity_is_what_the_secrets_offer_for_the_image() {
    let with = |secrets: Vec<String>| {
        let mut s = PullSpec::new(&format!("{HOST}/private/app:1"));
        s.secrets = secrets;
        credential_identity(&s)
    };
    let right = with(vec![secret(HOST, USER, PASSWORD)]);
    // The same credential written as username/password, not `auth`.
    let spelled_out = with(vec![format!(
        r#"{{"auths":{{"https://{HOST}/v2/":{{"username":"{USER}","password":"{PASSWORD}"}}}}}}"#
    )]);
    assert!(right == spelled_out, "same credential, same identity");
    assert!(right != with(vec![secret(HOST, USER, "wrong-password")]));
    assert!(right != with(vec![secret(HOST, "someone-else", PASSWORD)]));
    assert!(right != with(vec![]), "a secret is not anonymous");
    assert!(
        with(vec![]) == with(vec![secret("elsewhere.test", USER, PASSWORD)]),
        "a secret for another registry offers nothing here"
    );
    // Field boundaries count: user "ab" + password "c" is not "a" + "bc".
    assert!(with(vec![secret(HOST, "ab", "c")]) != with(vec![secret(HOST, "a", "bc")]));
    assert!(
        with(vec!["not json".into()]) != with(vec!["not json either".into()]),
        "unparsable documents are told apart by their bytes"
    );
}

/// The journal holds a pull's secrets while it may still need them (a
/// crash resumes it with them) and drops them in the write that ends it,
/// succeeded or failed.
#[tokio::test]
async fn a_finished_pulls_secrets_leave_the_journal() {
    let s = setup(Runtime {
        delay: Duration::from_millis(300),
        ..Default::default()
    });
    let ok = s
        .engine
        .submit(spec(PASSWORD, PullPolicy::Always))
        .await
        .unwrap();
    let bad = s
        .engine
        .submit(spec("wrong-password", PullPolicy::Always))
        .await
        .unwrap();
    let held = s.engine.journal.get(&ok).unwrap().unwrap();
    assert_eq!(held.spec.secrets.len(), 1, "kept while unfinished");
    for id in [&ok, &bad] {
        s.engine.wait(id).await.unwrap();
        let r = s.engine.journal.get(id).unwrap().unwrap();
        assert!(
            matches!(r.status.phase, Phase::Succeeded | Phase::Failed),
            "{:?}",
            r.status
        );
        assert!(r.spec.secrets.is_empty(), "secrets gone once finished");
    }
}

#[tokio::test]
async fn a_keyed_pull_submitted_again_pulls_once() {
    let s = setup(Runtime::default());
    let mut keyed = spec(PASSWORD, PullPolicy::Always);
    keyed.key = Some("nodeimage/node-a/app:1/3".into());
    let first = s.engine.submit(keyed.clone()).await.unwrap();
    assert_eq!(first, id_for_key("nodeimage/node-a/app:1/3"));
    // Concurrent and later submissions of the key: the same pull.
    let (a, b) = tokio::join!(
        s.engine.submit(keyed.clone()),
        s.engine.submit(keyed.clone())
    );
    assert_eq!((a.unwrap(), b.unwrap()), (first.clone(), first.clone()));
    let done = s.engine.wait(&first).await.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.message);
    assert_eq!(s.engine.submit(keyed.clone()).await.unwrap(), first);
    assert_eq!(s.runtime.pulls(), [PASSWORD], "one key, one pull");
    // Another key pulls again; a bad key is refused.
    let mut other = keyed.clone();
    other.key = Some("nodeimage/node-a/app:1/4".into());
    let second = s.engine.submit(other).await.unwrap();
    assert_ne!(second, first);
    s.engine.wait(&second).await.unwrap();
    assert_eq!(s.runtime.pulls().len(), 2);
    keyed.key = Some("spaces are not allowed".into());
    assert!(matches!(
        s.engine.submit(keyed).await,
        Err(SubmitError::BadKey(_))
    ));
}
