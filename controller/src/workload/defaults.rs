//! Pod-template defaulting as OpenKruise's workload webhooks do it (the
//! Kubernetes v1 pod defaults, except that regular containers without an
//! `imagePullPolicy` get `Always`): the stored template is what revisions
//! hash, so it must come out the same as upstream for the same manifest.

use serde_json::{Map, Value, json};

fn obj(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

/// Sets `key` to `value` unless it holds something (absent, null and ""
/// count as nothing).
pub(crate) fn default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key)
        .is_none_or(|v| v.is_null() || v.as_str() == Some(""))
    {
        m.insert(key.into(), value);
    }
}

/// Kubernetes' rule for init containers: `Always` for `:latest` or no tag,
/// else `IfNotPresent`.
fn pull_policy_for(image: &str) -> &'static str {
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn probe(p: &mut Value) {
    let Some(m) = obj(p) else { return };
    default(m, "timeoutSeconds", json!(1));
    default(m, "periodSeconds", json!(10));
    default(m, "successThreshold", json!(1));
    default(m, "failureThreshold", json!(3));
    if let Some(h) = m.get_mut("httpGet") {
        http_get(h);
    }
}

fn http_get(h: &mut Value) {
    let Some(m) = obj(h) else { return };
    default(m, "path", json!("/"));
    default(m, "scheme", json!("HTTP"));
}

/// Container defaults. `regular`: OpenKruise's pod-template rule (no
/// `imagePullPolicy` → `Always`); else Kubernetes' (by tag). `probes`: the
/// probe fields defaulted.
pub(crate) fn container_with(c: &mut Value, regular: bool, probes: &[&str]) {
    let Some(m) = obj(c) else { return };
    if regular {
        default(m, "imagePullPolicy", json!("Always"));
    } else {
        let image = m
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        default(m, "imagePullPolicy", json!(pull_policy_for(&image)));
    }
    default(m, "terminationMessagePath", json!("/dev/termination-log"));
    default(m, "terminationMessagePolicy", json!("File"));
    for p in m
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(p) = obj(p) {
            default(p, "protocol", json!("TCP"));
        }
    }
    for e in m
        .get_mut("env")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(f) = e.pointer_mut("/valueFrom/fieldRef").and_then(obj) {
            default(f, "apiVersion", json!("v1"));
        }
    }
    for key in probes {
        if let Some(p) = m.get_mut(*key) {
            probe(p);
        }
    }
    for key in ["postStart", "preStop"] {
        if let Some(h) = m
            .get_mut("lifecycle")
            .and_then(|l| l.get_mut(key))
            .and_then(|h| h.get_mut("httpGet"))
        {
            http_get(h);
        }
    }
}

fn container(c: &mut Value, regular: bool) {
    container_with(
        c,
        regular,
        &["livenessProbe", "readinessProbe", "startupProbe"],
    );
}

/// Volume defaults (`defaultMode`, hostPath `type`, ...), as Kubernetes'
/// `SetDefaults_Volume`.
pub(crate) fn volumes(vs: &mut Value) {
    for v in vs.as_array_mut().into_iter().flatten() {
        let Some(m) = obj(v) else { continue };
        for key in ["secret", "configMap", "downwardAPI", "projected"] {
            if let Some(s) = m.get_mut(key).and_then(obj) {
                default(s, "defaultMode", json!(420));
            }
        }
        const SOURCES: [&str; 30] = [
            "hostPath",
            "emptyDir",
            "gcePersistentDisk",
            "awsElasticBlockStore",
            "gitRepo",
            "secret",
            "nfs",
            "iscsi",
            "glusterfs",
            "persistentVolumeClaim",
            "rbd",
            "flexVolume",
            "cinder",
            "cephfs",
            "flocker",
            "downwardAPI",
            "fc",
            "azureFile",
            "configMap",
            "vsphereVolume",
            "quobyte",
            "azureDisk",
            "photonPersistentDisk",
            "projected",
            "portworxVolume",
            "scaleIO",
            "storageos",
            "csi",
            "ephemeral",
            "image",
        ];
        if !SOURCES
            .iter()
            .any(|k| m.get(*k).is_some_and(|v| !v.is_null()))
        {
            m.insert("emptyDir".into(), json!({}));
        }
        for src in m
            .get_mut("projected")
            .and_then(|p| p.get_mut("sources"))
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(t) = src.get_mut("serviceAccountToken").and_then(obj) {
                default(t, "expirationSeconds", json!(3600));
            }
            for i in src
                .pointer_mut("/downwardAPI/items")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(f) = i.get_mut("fieldRef").and_then(obj) {
                    default(f, "apiVersion", json!("v1"));
                }
            }
        }
        if let Some(h) = m.get_mut("hostPath").and_then(obj) {
            h.entry("type").or_insert(json!(""));
        }
        if let Some(items) = m
            .get_mut("downwardAPI")
            .and_then(|d| d.get_mut("items"))
            .and_then(Value::as_array_mut)
        {
            for i in items {
                if let Some(f) = i.get_mut("fieldRef").and_then(obj) {
                    default(f, "apiVersion", json!("v1"));
                }
            }
        }
    }
}

/// Defaults `template` (a `PodTemplateSpec` as JSON) in place.
pub fn default_pod_template(template: &mut Value) {
    let Some(t) = obj(template) else { return };
    let spec = t.entry("spec").or_insert_with(|| json!({}));
    let Some(s) = obj(spec) else { return };
    default(s, "dnsPolicy", json!("ClusterFirst"));
    default(s, "restartPolicy", json!("Always"));
    default(s, "terminationGracePeriodSeconds", json!(30));
    default(s, "schedulerName", json!("default-scheduler"));
    if s.get("securityContext").is_none_or(Value::is_null) {
        s.insert("securityContext".into(), json!({}));
    }
    if let Some(v) = s.get_mut("volumes") {
        volumes(v);
    }
    for c in s
        .get_mut("initContainers")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        container(c, false);
    }
    for c in s
        .get_mut("containers")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        container(c, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::revision::revision_data;

    /// The bytes Go produced for the same manifest: k8s.io/kubernetes
    /// v1.34's `SetDefaults_*` called in OpenKruise's `SetDefaultPodSpec`
    /// order, then the revision encoding (with v1.9's
    /// `creationTimestamp: null`).
    #[test]
    fn defaults_like_upstream() {
        let mut t: Value = serde_json::from_str(r#"{"metadata":{"labels":{"app":"sample"}},"spec":{"initContainers":[{"name":"a","image":"busybox:1.36"},{"name":"b","image":"busybox"}],"containers":[{"name":"m","image":"x:1","ports":[{"containerPort":80}],"env":[{"name":"C","valueFrom":{"fieldRef":{"fieldPath":"metadata.annotations['c']"}}}],"readinessProbe":{"httpGet":{"port":80}},"lifecycle":{"preStop":{"httpGet":{"port":81}}}}],"volumes":[{"name":"e"},{"name":"s","secret":{"secretName":"x"}},{"name":"c","configMap":{"name":"y"}},{"name":"h","hostPath":{"path":"/tmp"}},{"name":"p","projected":{"sources":[{"serviceAccountToken":{"path":"t"}},{"downwardAPI":{"items":[{"path":"l","fieldRef":{"fieldPath":"metadata.labels"}}]}}]}}]}}"#).unwrap();
        default_pod_template(&mut t);
        assert_eq!(
            revision_data(&t).unwrap(),
            r#"{"spec":{"template":{"$patch":"replace","metadata":{"creationTimestamp":null,"labels":{"app":"sample"}},"spec":{"containers":[{"env":[{"name":"C","valueFrom":{"fieldRef":{"apiVersion":"v1","fieldPath":"metadata.annotations['c']"}}}],"image":"x:1","imagePullPolicy":"Always","lifecycle":{"preStop":{"httpGet":{"path":"/","port":81,"scheme":"HTTP"}}},"name":"m","ports":[{"containerPort":80,"protocol":"TCP"}],"readinessProbe":{"failureThreshold":3,"httpGet":{"path":"/","port":80,"scheme":"HTTP"},"periodSeconds":10,"successThreshold":1,"timeoutSeconds":1},"resources":{},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File"}],"dnsPolicy":"ClusterFirst","initContainers":[{"image":"busybox:1.36","imagePullPolicy":"IfNotPresent","name":"a","resources":{},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File"},{"image":"busybox","imagePullPolicy":"Always","name":"b","resources":{},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File"}],"restartPolicy":"Always","schedulerName":"default-scheduler","securityContext":{},"terminationGracePeriodSeconds":30,"volumes":[{"emptyDir":{},"name":"e"},{"name":"s","secret":{"defaultMode":420,"secretName":"x"}},{"configMap":{"defaultMode":420,"name":"y"},"name":"c"},{"hostPath":{"path":"/tmp","type":""},"name":"h"},{"name":"p","projected":{"defaultMode":420,"sources":[{"serviceAccountToken":{"expirationSeconds":3600,"path":"t"}},{"downwardAPI":{"items":[{"fieldRef":{"apiVersion":"v1","fieldPath":"metadata.labels"},"path":"l"}]}}]}}]}}}}"#
        );
    }

    #[test]
    fn init_containers_keep_the_kubernetes_pull_rule_and_probes_get_defaults() {
        let mut t = json!({"spec": {
            "initContainers": [{"name": "a", "image": "busybox:1.36"}, {"name": "b", "image": "busybox"}],
            "containers": [{"name": "m", "image": "x:1", "imagePullPolicy": "IfNotPresent",
                "ports": [{"containerPort": 80}],
                "readinessProbe": {"httpGet": {"port": 80}}}]
        }});
        default_pod_template(&mut t);
        assert_eq!(
            t["spec"]["initContainers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(t["spec"]["initContainers"][1]["imagePullPolicy"], "Always");
        let m = &t["spec"]["containers"][0];
        assert_eq!(m["imagePullPolicy"], "IfNotPresent");
        assert_eq!(m["ports"][0]["protocol"], "TCP");
        assert_eq!(
            m["readinessProbe"]["httpGet"],
            json!({"port": 80, "path": "/", "scheme": "HTTP"})
        );
        assert_eq!(m["readinessProbe"]["failureThreshold"], 3);
    }
}
