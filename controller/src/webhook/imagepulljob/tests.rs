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
