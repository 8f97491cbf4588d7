//! Pull-secret copies: the plan, and its API side against the mock server.

use super::*;
use crate::testing::{at, body_json, mock_client, reply};
use http::Method;
use k8s_openapi::ByteString;

fn job(name: &str, secrets: &[&str]) -> ImagePullJob {
    let mut j: ImagePullJob = serde_saphyr::from_str(&format!(
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata: {{name: {name}, namespace: team, uid: uid-{name}, resourceVersion: '3'}}\nspec:\n  image: nginx:1.9.1\n  completionPolicy: {{type: Always}}\n"
    ))
    .unwrap();
    j.spec.template.pull_secrets = secrets.iter().map(|s| s.to_string()).collect();
    j
}

fn source(name: &str, uid: &str, data: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team".into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            ByteString(data.as_bytes().to_vec()),
        )])),
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        ..Default::default()
    }
}

fn copy(name: &str, source_uid: &str, refs: &str, data: &str) -> Secret {
    let mut c = copy_of(&source("regcred", source_uid, data), refs);
    c.metadata.generate_name = None;
    c.metadata.name = Some(name.into());
    c.metadata.uid = Some(format!("uid-{name}"));
    c.metadata.resource_version = Some("17".into());
    c
}

fn sources(list: &[Secret]) -> BTreeMap<String, Secret> {
    list.iter()
        .map(|s| (s.metadata.name.clone().unwrap(), s.clone()))
        .collect()
}

fn annotation(s: &Secret, key: &str) -> String {
    s.metadata.annotations.as_ref().unwrap()[key].clone()
}

#[test]
fn a_first_job_creates_a_labelled_copy_and_a_missing_secret_is_reported() {
    let j = job("a", &["regcred", "nope"]);
    let p = plan(&j, &sources(&[source("regcred", "s1", "{}")]), &[]);
    assert_eq!(p.missing, ["nope"]);
    assert!(p.refs.is_empty(), "known once created");
    let [CopyWrite::Create { source, copy }] = p.writes.as_slice() else {
        panic!("{:?}", p.writes)
    };
    assert_eq!(source, "regcred");
    assert_eq!(
        copy.metadata.namespace.as_deref(),
        Some(DAEMON_CONFIG_NAMESPACE)
    );
    assert_eq!(copy.metadata.generate_name.as_deref(), Some("regcred-"));
    assert_eq!(
        copy.metadata.labels.as_ref().unwrap()[SOURCE_UID_LABEL],
        "s1"
    );
    assert_eq!(annotation(copy, SOURCE_KEY_ANNOTATION), "team/regcred");
    assert_eq!(annotation(copy, REFERENCES_ANNOTATION), "team/a");
    assert_eq!(copy.data, source_data("{}"));
    assert_eq!(
        copy.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
}

fn source_data(s: &str) -> Option<BTreeMap<String, ByteString>> {
    source("x", "x", s).data
}

#[test]
fn a_second_job_shares_the_copy_and_changed_data_follows_the_source() {
    let j = job("b", &["regcred"]);
    let existing = copy("regcred-x1", "s1", "team/a", "{}");
    let p = plan(
        &j,
        &sources(&[source("regcred", "s1", "{}")]),
        std::slice::from_ref(&existing),
    );
    assert_eq!(p.refs.len(), 1);
    assert_eq!(p.refs[0].name, "regcred-x1");
    let [CopyWrite::Replace(updated)] = p.writes.as_slice() else {
        panic!("{:?}", p.writes)
    };
    assert_eq!(annotation(updated, REFERENCES_ANNOTATION), "team/a,team/b");
    assert_eq!(updated.metadata.resource_version.as_deref(), Some("17"));

    // Already referenced and same data: nothing to write.
    let shared = copy("regcred-x1", "s1", "team/a,team/b", "{}");
    let p = plan(
        &j,
        &sources(&[source("regcred", "s1", "{}")]),
        std::slice::from_ref(&shared),
    );
    assert!(p.writes.is_empty(), "{:?}", p.writes);
    // The source changed: the copy follows.
    let p = plan(
        &j,
        &sources(&[source("regcred", "s1", "{\"auths\":{}}")]),
        &[shared],
    );
    let [CopyWrite::Replace(updated)] = p.writes.as_slice() else {
        panic!("{:?}", p.writes)
    };
    assert_eq!(updated.data, source_data("{\"auths\":{}}"));
}

#[test]
fn a_recreated_source_gets_a_new_copy_and_the_old_one_is_released() {
    let j = job("a", &["regcred"]);
    let old = copy("regcred-old", "s1", "team/a", "{}");
    let p = plan(&j, &sources(&[source("regcred", "s2", "{}")]), &[old]);
    assert!(matches!(&p.writes[0], CopyWrite::Create { .. }));
    assert!(
        matches!(&p.writes[1], CopyWrite::Delete { name, uid, resource_version } if name == "regcred-old" && uid.as_deref() == Some("uid-regcred-old") && resource_version.as_deref() == Some("17"))
    );
}

#[test]
fn finishing_releases_copies_deleting_only_unshared_ones() {
    let mut j = job("a", &["regcred"]);
    j.status = Some(Default::default());
    j.status.as_mut().unwrap().completion_time = Some(at(100));
    assert!(!is_running(&j) && !wants_finalizer(&j));
    let own = copy("regcred-own", "s1", "team/a", "{}");
    let shared = copy("regcred-shared", "s9", "team/a,team/z", "{}");
    let other = copy("regcred-other", "s9", "team/z", "{}");
    let p = plan(&j, &BTreeMap::new(), &[own, shared, other]);
    assert!(p.refs.is_empty());
    assert_eq!(p.writes.len(), 2, "{:?}", p.writes);
    assert!(matches!(&p.writes[0], CopyWrite::Delete { name, .. } if name == "regcred-own"));
    let CopyWrite::Replace(kept) = &p.writes[1] else {
        panic!("{:?}", p.writes)
    };
    assert_eq!(kept.metadata.name.as_deref(), Some("regcred-shared"));
    assert_eq!(annotation(kept, REFERENCES_ANNOTATION), "team/z");
}

#[test]
fn a_job_in_the_daemon_namespace_uses_its_secrets_in_place() {
    let mut j = job("a", &["regcred"]);
    j.metadata.namespace = Some(DAEMON_CONFIG_NAMESPACE.into());
    assert!(!wants_finalizer(&j));
    let p = plan(&j, &BTreeMap::new(), &[]);
    assert!(p.writes.is_empty());
    assert_eq!(p.refs[0].namespace, DAEMON_CONFIG_NAMESPACE);
    assert_eq!(p.refs[0].name, "regcred");
}

const COPIES: &str = "/api/v1/namespaces/kruise-daemon-config/secrets";
const JOB: &str = "/apis/apps.kruise.io/v1alpha1/namespaces/team/imagepulljobs/a";

fn source_json() -> serde_json::Value {
    serde_json::to_value(source("regcred", "s1", "{}")).unwrap()
}

#[tokio::test]
async fn sync_adds_the_finalizer_then_copies_and_returns_the_copy() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        let mut seen = vec![];
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let uri = req.uri().to_string();
            let path = req.uri().path().to_string();
            let answer = match (&method, path.as_str()) {
                (&Method::PATCH, JOB) => {
                    let body = body_json(req).await;
                    seen.push(("patch job", body.clone()));
                    reply(200, serde_json::to_value(job("a", &["regcred"])).unwrap())
                }
                (&Method::GET, "/api/v1/namespaces/team/secrets/regcred") => {
                    reply(200, source_json())
                }
                (&Method::GET, COPIES) => {
                    seen.push(("list", serde_json::json!(uri)));
                    reply(
                        200,
                        serde_json::json!({"apiVersion": "v1", "kind": "SecretList", "metadata": {}, "items": []}),
                    )
                }
                (&Method::POST, COPIES) => {
                    let mut body = body_json(req).await;
                    seen.push(("create", body.clone()));
                    body["metadata"]["name"] = "regcred-abcde".into();
                    reply(201, body)
                }
                other => panic!("unexpected request {other:?}"),
            };
            send.send_response(answer);
        }
        seen
    });
    let Synced::Refs(refs) = sync(&client, &job("a", &["regcred"])).await.unwrap() else {
        panic!("conflict")
    };
    drop(client);
    assert_eq!(refs.len(), 1);
    assert_eq!(
        (refs[0].namespace.as_str(), refs[0].name.as_str()),
        (DAEMON_CONFIG_NAMESPACE, "regcred-abcde")
    );
    let seen = server.await.unwrap();
    let steps: Vec<&str> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, ["patch job", "list", "create"]);
    assert_eq!(
        seen[0].1,
        serde_json::json!({"metadata": {"finalizers": [PROTECTION_FINALIZER], "resourceVersion": "3"}})
    );
    assert!(
        seen[1]
            .1
            .as_str()
            .unwrap()
            .contains("labelSelector=imagepulljobs.kruise.io%2Fsource-uid"),
        "{}",
        seen[1].1
    );
    assert_eq!(seen[2].1["metadata"]["generateName"], "regcred-");
    assert_eq!(
        seen[2].1["metadata"]["annotations"][REFERENCES_ANNOTATION],
        "team/a"
    );
}

#[tokio::test]
async fn a_deleted_job_releases_its_copy_then_drops_the_finalizer() {
    let mut j = job("a", &["regcred"]);
    j.metadata.finalizers = Some(vec!["other/keep".into(), PROTECTION_FINALIZER.into()]);
    j.metadata.deletion_timestamp = Some(at(50));
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        let mut seen = vec![];
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            let answer = match (&method, path.as_str()) {
                (&Method::GET, COPIES) => reply(
                    200,
                    serde_json::json!({"apiVersion": "v1", "kind": "SecretList", "metadata": {},
                        "items": [serde_json::to_value(copy("regcred-x1", "s1", "team/a", "{}")).unwrap()]}),
                ),
                (&Method::DELETE, p) if p == format!("{COPIES}/regcred-x1") => {
                    seen.push(("delete", body_json(req).await));
                    reply(
                        200,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                    )
                }
                (&Method::PATCH, JOB) => {
                    seen.push(("patch job", body_json(req).await));
                    reply(200, serde_json::to_value(job("a", &["regcred"])).unwrap())
                }
                other => panic!("unexpected request {other:?}"),
            };
            send.send_response(answer);
        }
        seen
    });
    let Synced::Refs(refs) = sync(&client, &j).await.unwrap() else {
        panic!("conflict")
    };
    drop(client);
    assert!(refs.is_empty());
    let seen = server.await.unwrap();
    assert_eq!(seen[0].0, "delete");
    assert_eq!(seen[0].1["preconditions"]["uid"], "uid-regcred-x1");
    assert_eq!(seen[0].1["preconditions"]["resourceVersion"], "17");
    assert_eq!(
        seen[1],
        (
            "patch job",
            serde_json::json!({"metadata": {"finalizers": ["other/keep"], "resourceVersion": "3"}})
        )
    );
}

#[tokio::test]
async fn a_conflict_on_a_shared_copy_means_reconcile_again() {
    let (client, mut handle) = mock_client();
    let mut j = job("b", &["regcred"]);
    j.metadata.finalizers = Some(vec![PROTECTION_FINALIZER.into()]);
    let server = tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            let answer = match (&method, path.as_str()) {
                (&Method::GET, "/api/v1/namespaces/team/secrets/regcred") => {
                    reply(200, source_json())
                }
                (&Method::GET, COPIES) => reply(
                    200,
                    serde_json::json!({"apiVersion": "v1", "kind": "SecretList", "metadata": {},
                        "items": [serde_json::to_value(copy("regcred-x1", "s1", "team/a", "{}")).unwrap()]}),
                ),
                (&Method::PUT, p) if p == format!("{COPIES}/regcred-x1") => {
                    let body = body_json(req).await;
                    assert_eq!(body["metadata"]["resourceVersion"], "17");
                    assert_eq!(
                        body["metadata"]["annotations"][REFERENCES_ANNOTATION],
                        "team/a,team/b"
                    );
                    reply(
                        409,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "Conflict", "code": 409, "message": "modified"}),
                    )
                }
                other => panic!("unexpected request {other:?}"),
            };
            send.send_response(answer);
        }
    });
    assert!(matches!(sync(&client, &j).await.unwrap(), Synced::Conflict));
    drop(client);
    server.await.unwrap();
}
