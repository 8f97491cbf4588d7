//! What OpenKruise's ImagePullJob webhook allows and refuses.

use super::*;

fn job(spec: &str) -> ImagePullJob {
    serde_saphyr::from_str(&format!(
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata: {{name: j, namespace: team}}\nspec:\n{spec}"
    ))
    .unwrap()
}

fn refusal(spec: &str) -> String {
    validate(&job(spec)).expect_err("refused")
}

#[test]
fn the_documented_examples_are_allowed() {
    for spec in [
        "  image: nginx:1.9.1\n  parallelism: 10\n  selector: {matchLabels: {node-type: xxx}}\n  completionPolicy: {type: Always, activeDeadlineSeconds: 1200, ttlSecondsAfterFinished: 300}\n  pullPolicy: {backoffLimit: 3, timeoutSeconds: 300}\n",
        "  image: nginx:1.9.1\n  selector: {names: [node-1, node-2]}\n  completionPolicy: {type: Never}\n",
        "  image: registry.example.com/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n  podSelector: {matchExpressions: [{key: app, operator: In, values: [web]}]}\n  completionPolicy: {}\n",
    ] {
        assert_eq!(validate(&job(spec)), Ok(()), "{spec}");
    }
}

#[test]
fn selectors_that_cannot_both_apply_are_refused() {
    assert_eq!(
        refusal(
            "  image: nginx\n  selector: {names: [a], matchLabels: {x: z}}\n  completionPolicy: {}\n"
        ),
        "can not set both names and labelSelector in this spec.selector"
    );
    assert_eq!(
        refusal(
            "  image: nginx\n  selector: {names: [a]}\n  podSelector: {matchLabels: {x: z}}\n  completionPolicy: {}\n"
        ),
        "can not set both selector and podSelector"
    );
    assert_eq!(
        refusal("  image: nginx\n  selector: {names: [a, b, a]}\n  completionPolicy: {}\n"),
        "duplicated name in selector names"
    );
}

#[test]
fn malformed_selectors_are_refused() {
    let e = refusal(
        "  image: nginx\n  selector: {matchExpressions: [{key: zone, operator: Near, values: [a]}]}\n  completionPolicy: {}\n",
    );
    assert!(
        e.starts_with("invalid selector: \"Near\" is not a valid"),
        "{e}"
    );
    let e = refusal(
        "  image: nginx\n  podSelector: {matchExpressions: [{key: app, operator: In}]}\n  completionPolicy: {}\n",
    );
    assert!(
        e.starts_with("invalid podSelector: for 'In', 'NotIn'"),
        "{e}"
    );
    let e = refusal(
        "  image: nginx\n  podSelector: {matchExpressions: [{key: app, operator: Exists, values: [x]}]}\n  completionPolicy: {}\n",
    );
    assert!(
        e.starts_with("invalid podSelector: values set must be empty"),
        "{e}"
    );
}

#[test]
fn images_must_be_references() {
    assert_eq!(
        refusal("  image: ''\n  completionPolicy: {}\n"),
        "image can not be empty"
    );
    let e = refusal("  image: 'Nginx:latest'\n  completionPolicy: {}\n");
    assert!(e.starts_with("invalid image Nginx:latest: "), "{e}");
}

#[test]
fn deadlines_follow_the_completion_policy() {
    // Shorter than the default 600 s pull timeout.
    assert_eq!(
        refusal("  image: nginx\n  completionPolicy: {type: Always, activeDeadlineSeconds: 300}\n"),
        "completionPolicy.activeDeadlineSeconds must be greater than pullPolicy.timeoutSeconds(default 600)"
    );
    assert_eq!(
        validate(&job(
            "  image: nginx\n  pullPolicy: {timeoutSeconds: 100}\n  completionPolicy: {type: Always, activeDeadlineSeconds: 300}\n"
        )),
        Ok(())
    );
    assert_eq!(
        refusal("  image: nginx\n  completionPolicy: {type: Never, ttlSecondsAfterFinished: 10}\n"),
        "activeDeadlineSeconds and ttlSecondsAfterFinished can only work with Always CompletionPolicyType"
    );
    assert_eq!(
        refusal("  image: nginx\n  completionPolicy: {type: Sometimes}\n"),
        "unknown type of completionPolicy: Sometimes"
    );
}

#[test]
fn defaults_fill_only_what_is_missing() {
    let bare = job("  image: nginx\n  completionPolicy: {}\n");
    let d = defaulted(&bare, true);
    let t = &d.spec.template;
    assert_eq!(t.completion_policy.type_.as_deref(), Some("Always"));
    let pull = t.pull_policy.as_ref().unwrap();
    assert_eq!(
        (pull.timeout_seconds, pull.backoff_limit),
        (Some(600), Some(3))
    );
    assert_eq!(t.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(
        d.metadata.finalizers,
        Some(vec!["apps.kruise.io/deletion-protection".to_string()])
    );
    // Set values stay; an update adds no finalizer; defaulting twice is a no-op.
    let set = job(
        "  image: nginx\n  imagePullPolicy: Always\n  pullPolicy: {timeoutSeconds: 30}\n  completionPolicy: {type: Never}\n",
    );
    let d = defaulted(&set, false);
    let t = &d.spec.template;
    assert_eq!(t.completion_policy.type_.as_deref(), Some("Never"));
    assert_eq!(t.pull_policy.as_ref().unwrap().timeout_seconds, Some(30));
    assert_eq!(t.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(d.metadata.finalizers, None);
    let twice = defaulted(&defaulted(&bare, true), true);
    assert_eq!(
        serde_json::to_value(&twice).unwrap(),
        serde_json::to_value(defaulted(&bare, true)).unwrap()
    );
}

fn request(operation: &str, object: serde_json::Value) -> AdmissionRequest<DynamicObject> {
    let review: kube::core::admission::AdmissionReview<DynamicObject> =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "operation": operation, "namespace": "team", "name": "j",
                "kind": {"group": "apps.kruise.io", "version": "v1alpha1", "kind": "ImagePullJob"},
                "resource": {"group": "apps.kruise.io", "version": "v1alpha1", "resource": "imagepulljobs"},
                "userInfo": {"username": "someone"}, "object": object}}))
        .unwrap();
    review.try_into().unwrap()
}

#[test]
fn the_mutating_answer_patches_the_stored_object_into_the_defaulted_one() {
    let object = serde_json::json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
        "metadata": {"name": "j", "namespace": "team"},
        "spec": {"image": "nginx", "completionPolicy": {}}});
    let resp = mutate_review(&request("CREATE", object.clone()), false);
    assert!(resp.allowed);
    let patch: json_patch::Patch =
        serde_json::from_slice(resp.patch.as_ref().expect("a patch")).unwrap();
    let mut stored = object;
    json_patch::patch(&mut stored, &patch).unwrap();
    assert_eq!(
        stored["spec"],
        serde_json::json!({"image": "nginx", "completionPolicy": {"type": "Always"},
            "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3},
            "imagePullPolicy": "IfNotPresent"})
    );
    assert_eq!(
        stored["metadata"]["finalizers"],
        serde_json::json!(["apps.kruise.io/deletion-protection"])
    );
    // Already defaulted: no patch.
    let resp = mutate_review(&request("UPDATE", stored), false);
    assert!(resp.allowed && resp.patch.is_none(), "{resp:?}");
}

fn list(spec: &str) -> ImageListPullJob {
    serde_saphyr::from_str(&format!(
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ImageListPullJob\nmetadata: {{name: l, namespace: team}}\nspec:\n{spec}"
    ))
    .unwrap()
}

#[test]
fn lists_are_checked_like_jobs_plus_their_images() {
    assert_eq!(
        validate_list(&list(
            "  images: [nginx:1.25, redis:7]\n  completionPolicy: {type: Always, activeDeadlineSeconds: 60}\n"
        )),
        Ok(()),
        "no deadline-versus-timeout rule for lists"
    );
    let refused = |spec: &str| validate_list(&list(spec)).expect_err("refused");
    assert_eq!(
        refused("  images: []\n  completionPolicy: {}\n"),
        "image can not be empty"
    );
    assert_eq!(
        refused("  images: [nginx, redis, nginx]\n  completionPolicy: {}\n"),
        "images cannot have duplicate values"
    );
    let many: Vec<String> = (0..256).map(|i| format!("img{i}")).collect();
    assert_eq!(
        refused(&format!(
            "  images: [{}]\n  completionPolicy: {{}}\n",
            many.join(", ")
        )),
        "the maximum number of images cannot > 255"
    );
    assert!(
        refused("  images: [nginx, 'Bad:x']\n  completionPolicy: {}\n")
            .starts_with("invalid image Bad:x: ")
    );
    assert_eq!(
        refused(
            "  images: [nginx]\n  selector: {names: [a]}\n  podSelector: {matchLabels: {x: z}}\n  completionPolicy: {}\n"
        ),
        "can not set both selector and podSelector"
    );
    assert_eq!(
        refused("  images: [nginx]\n  completionPolicy: {type: Never, activeDeadlineSeconds: 5}\n"),
        "activeDeadlineSeconds and ttlSecondsAfterFinished can only work with Always CompletionPolicyType"
    );
}

#[test]
fn list_defaults_leave_the_image_pull_policy_and_finalizers_alone() {
    let d = defaulted_list(&list("  images: [nginx]\n  completionPolicy: {}\n"));
    let t = &d.spec.template;
    assert_eq!(t.completion_policy.type_.as_deref(), Some("Always"));
    let pull = t.pull_policy.as_ref().unwrap();
    assert_eq!(
        (pull.timeout_seconds, pull.backoff_limit),
        (Some(600), Some(3))
    );
    assert_eq!(t.image_pull_policy, None);
    assert_eq!(d.metadata.finalizers, None);
}
