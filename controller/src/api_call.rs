//! What the controllers' API sides share: the HTTP status of a failed
//! call, the merge patch that adds or drops one finalizer under the
//! object's resourceVersion (so a concurrent edit makes it a 409, not a
//! lost update), and the merge patch that replaces a status.

use kube::api::ObjectMeta;

/// The HTTP status code of an API server answer, if `e` is one.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Whether `meta` names `uid` as its controller.
pub fn controlled_by(meta: &kube::api::ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// The objects of `api` matching label query `labels` whose controller is
/// `uid`.
pub async fn list_controlled<K>(
    api: &kube::Api<K>,
    labels: &str,
    uid: &str,
) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = kube::api::ListParams::default();
    if !labels.is_empty() {
        params = params.labels(labels);
    }
    Ok(api
        .list(&params)
        .await?
        .items
        .into_iter()
        .filter(|o| controlled_by(o.meta(), uid))
        .collect())
}

/// The merge patch `{"status": new}` that also clears every field `old`
/// had and `new` omits (zero counters, emptied lists: serde skips them,
/// and a merge patch would leave them stale).
pub fn status_merge_patch(
    old: &impl serde::Serialize,
    new: &impl serde::Serialize,
) -> serde_json::Value {
    let mut body = serde_json::to_value(new).unwrap_or_default();
    if let (Some(n), Ok(serde_json::Value::Object(o))) =
        (body.as_object_mut(), serde_json::to_value(old))
    {
        for k in o.keys() {
            n.entry(k.clone()).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": body })
}

/// A merge patch giving `meta` its finalizers with `finalizer` added
/// (`add`) or removed, preconditioned on `meta`'s resourceVersion. Other
/// finalizers keep their order; `finalizer` is never listed twice.
pub fn finalizer_patch(meta: &ObjectMeta, finalizer: &str, add: bool) -> serde_json::Value {
    let mut list: Vec<&str> = meta
        .finalizers
        .iter()
        .flatten()
        .map(String::as_str)
        .filter(|f| *f != finalizer)
        .collect();
    if add {
        list.push(finalizer);
    }
    serde_json::json!({"metadata": {
        "finalizers": list,
        "resourceVersion": meta.resource_version,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(finalizers: &[&str]) -> ObjectMeta {
        ObjectMeta {
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
            resource_version: Some("7".into()),
            ..Default::default()
        }
    }

    #[test]
    fn adds_after_the_others_once() {
        assert_eq!(
            finalizer_patch(&meta(&["a", "x"]), "x", true),
            serde_json::json!({"metadata": {"finalizers": ["a", "x"], "resourceVersion": "7"}})
        );
        assert_eq!(
            finalizer_patch(&ObjectMeta::default(), "x", true),
            serde_json::json!({"metadata": {"finalizers": ["x"], "resourceVersion": null}})
        );
    }

    #[test]
    fn removes_only_its_own() {
        assert_eq!(
            finalizer_patch(&meta(&["a", "x", "b"]), "x", false),
            serde_json::json!({"metadata": {"finalizers": ["a", "b"], "resourceVersion": "7"}})
        );
    }

    #[test]
    fn reads_the_status_of_api_errors_only() {
        let api = kube::Error::Api(
            kube::core::Status::failure("taken", "Conflict")
                .with_code(409)
                .boxed(),
        );
        assert_eq!(status_code(&api), Some(409));
        assert_eq!(
            status_code(&kube::Error::LinesCodecMaxLineLengthExceeded),
            None
        );
    }
}
