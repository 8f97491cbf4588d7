//! The SidecarSet hashes OpenKruise's webhook writes into the SidecarSet's
//! `kruise.io/sidecarset-hash` and `kruise.io/sidecarset-hash-without-image`
//! annotations (and the pod webhook copies into each pod): SHA-256 of the
//! JSON `{"containers":[…]}` (plus `"initContainers":[…]`, all of them, when
//! one is a native sidecar), hex, then Kubernetes' safe encoding.
//!
//! The JSON must be byte for byte what Go's `encoding/json` writes for
//! OpenKruise's `[]SidecarContainer`: struct fields in declaration order,
//! `omitempty` zero values dropped, struct-typed fields always written, map
//! keys sorted. [`GO_FIELDS`] lists the Kubernetes v1.34 field order (read
//! off `k8s.io/api/core/v1` by reflection), [`SIDECAR_FIELDS`] OpenKruise's.
//! Quantities are written as stored (Go would canonicalise `0.5` to
//! `500m`; the API server does not for custom resources).

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::workload::revision::{go_json, safe_encode};

/// How Go writes a field: `z` dropped when zero or empty (`omitempty`),
/// `p` dropped when absent (`omitempty` pointer), and always written with
/// its zero value when absent: `S` `{}`, `Q` `"0"`, `I` `0`, `N` `null`,
/// `E` `""`, `F` `false`, `0` `0`.
type Field = (&'static str, u8, &'static str);

/// Go's field order of the `k8s.io/api/core/v1` types a container holds.
pub const GO_FIELDS: &[(&str, &[Field])] = &[
    (
        "AppArmorProfile",
        &[("type", b'E', ""), ("localhostProfile", b'p', "")],
    ),
    ("Capabilities", &[("add", b'z', ""), ("drop", b'z', "")]),
    (
        "ConfigMapEnvSource",
        &[("name", b'z', ""), ("optional", b'p', "")],
    ),
    (
        "ConfigMapKeySelector",
        &[
            ("name", b'z', ""),
            ("key", b'E', ""),
            ("optional", b'p', ""),
        ],
    ),
    (
        "Container",
        &[
            ("name", b'E', ""),
            ("image", b'z', ""),
            ("command", b'z', ""),
            ("args", b'z', ""),
            ("workingDir", b'z', ""),
            ("ports", b'z', "ContainerPort"),
            ("envFrom", b'z', "EnvFromSource"),
            ("env", b'z', "EnvVar"),
            ("resources", b'S', "ResourceRequirements"),
            ("resizePolicy", b'z', "ContainerResizePolicy"),
            ("restartPolicy", b'p', ""),
            ("restartPolicyRules", b'z', "ContainerRestartRule"),
            ("volumeMounts", b'z', "VolumeMount"),
            ("volumeDevices", b'z', "VolumeDevice"),
            ("livenessProbe", b'p', "Probe"),
            ("readinessProbe", b'p', "Probe"),
            ("startupProbe", b'p', "Probe"),
            ("lifecycle", b'p', "Lifecycle"),
            ("terminationMessagePath", b'z', ""),
            ("terminationMessagePolicy", b'z', ""),
            ("imagePullPolicy", b'z', ""),
            ("securityContext", b'p', "SecurityContext"),
            ("stdin", b'z', ""),
            ("stdinOnce", b'z', ""),
            ("tty", b'z', ""),
        ],
    ),
    (
        "ContainerPort",
        &[
            ("name", b'z', ""),
            ("hostPort", b'z', ""),
            ("containerPort", b'0', ""),
            ("protocol", b'z', ""),
            ("hostIP", b'z', ""),
        ],
    ),
    (
        "ContainerResizePolicy",
        &[("resourceName", b'E', ""), ("restartPolicy", b'E', "")],
    ),
    (
        "ContainerRestartRule",
        &[
            ("action", b'z', ""),
            ("exitCodes", b'p', "ContainerRestartRuleOnExitCodes"),
        ],
    ),
    (
        "ContainerRestartRuleOnExitCodes",
        &[("operator", b'z', ""), ("values", b'z', "")],
    ),
    (
        "EnvFromSource",
        &[
            ("prefix", b'z', ""),
            ("configMapRef", b'p', "ConfigMapEnvSource"),
            ("secretRef", b'p', "SecretEnvSource"),
        ],
    ),
    (
        "EnvVar",
        &[
            ("name", b'E', ""),
            ("value", b'z', ""),
            ("valueFrom", b'p', "EnvVarSource"),
        ],
    ),
    (
        "EnvVarSource",
        &[
            ("fieldRef", b'p', "ObjectFieldSelector"),
            ("resourceFieldRef", b'p', "ResourceFieldSelector"),
            ("configMapKeyRef", b'p', "ConfigMapKeySelector"),
            ("secretKeyRef", b'p', "SecretKeySelector"),
            ("fileKeyRef", b'p', "FileKeySelector"),
        ],
    ),
    ("ExecAction", &[("command", b'z', "")]),
    (
        "FileKeySelector",
        &[
            ("volumeName", b'E', ""),
            ("path", b'E', ""),
            ("key", b'E', ""),
            ("optional", b'p', ""),
        ],
    ),
    ("GRPCAction", &[("port", b'0', ""), ("service", b'N', "")]),
    (
        "HTTPGetAction",
        &[
            ("path", b'z', ""),
            ("port", b'I', ""),
            ("host", b'z', ""),
            ("scheme", b'z', ""),
            ("httpHeaders", b'z', "HTTPHeader"),
        ],
    ),
    ("HTTPHeader", &[("name", b'E', ""), ("value", b'E', "")]),
    (
        "Lifecycle",
        &[
            ("postStart", b'p', "LifecycleHandler"),
            ("preStop", b'p', "LifecycleHandler"),
            ("stopSignal", b'p', ""),
        ],
    ),
    (
        "LifecycleHandler",
        &[
            ("exec", b'p', "ExecAction"),
            ("httpGet", b'p', "HTTPGetAction"),
            ("tcpSocket", b'p', "TCPSocketAction"),
            ("sleep", b'p', "SleepAction"),
        ],
    ),
    (
        "ObjectFieldSelector",
        &[("apiVersion", b'z', ""), ("fieldPath", b'E', "")],
    ),
    (
        "Probe",
        &[
            ("exec", b'p', "ExecAction"),
            ("httpGet", b'p', "HTTPGetAction"),
            ("tcpSocket", b'p', "TCPSocketAction"),
            ("grpc", b'p', "GRPCAction"),
            ("initialDelaySeconds", b'z', ""),
            ("timeoutSeconds", b'z', ""),
            ("periodSeconds", b'z', ""),
            ("successThreshold", b'z', ""),
            ("failureThreshold", b'z', ""),
            ("terminationGracePeriodSeconds", b'p', ""),
        ],
    ),
    (
        "ResourceClaim",
        &[("name", b'E', ""), ("request", b'z', "")],
    ),
    (
        "ResourceFieldSelector",
        &[
            ("containerName", b'z', ""),
            ("resource", b'E', ""),
            ("divisor", b'Q', ""),
        ],
    ),
    (
        "ResourceRequirements",
        &[
            ("limits", b'z', ""),
            ("requests", b'z', ""),
            ("claims", b'z', "ResourceClaim"),
        ],
    ),
    (
        "SELinuxOptions",
        &[
            ("user", b'z', ""),
            ("role", b'z', ""),
            ("type", b'z', ""),
            ("level", b'z', ""),
        ],
    ),
    (
        "SeccompProfile",
        &[("type", b'E', ""), ("localhostProfile", b'p', "")],
    ),
    (
        "SecretEnvSource",
        &[("name", b'z', ""), ("optional", b'p', "")],
    ),
    (
        "SecretKeySelector",
        &[
            ("name", b'z', ""),
            ("key", b'E', ""),
            ("optional", b'p', ""),
        ],
    ),
    (
        "SecurityContext",
        &[
            ("capabilities", b'p', "Capabilities"),
            ("privileged", b'p', ""),
            ("seLinuxOptions", b'p', "SELinuxOptions"),
            ("windowsOptions", b'p', "WindowsSecurityContextOptions"),
            ("runAsUser", b'p', ""),
            ("runAsGroup", b'p', ""),
            ("runAsNonRoot", b'p', ""),
            ("readOnlyRootFilesystem", b'p', ""),
            ("allowPrivilegeEscalation", b'p', ""),
            ("procMount", b'p', ""),
            ("seccompProfile", b'p', "SeccompProfile"),
            ("appArmorProfile", b'p', "AppArmorProfile"),
        ],
    ),
    ("SleepAction", &[("seconds", b'0', "")]),
    ("TCPSocketAction", &[("port", b'I', ""), ("host", b'z', "")]),
    (
        "VolumeDevice",
        &[("name", b'E', ""), ("devicePath", b'E', "")],
    ),
    (
        "VolumeMount",
        &[
            ("name", b'E', ""),
            ("readOnly", b'z', ""),
            ("recursiveReadOnly", b'p', ""),
            ("mountPath", b'E', ""),
            ("subPath", b'z', ""),
            ("mountPropagation", b'p', ""),
            ("subPathExpr", b'z', ""),
        ],
    ),
    (
        "WindowsSecurityContextOptions",
        &[
            ("gmsaCredentialSpecName", b'p', ""),
            ("gmsaCredentialSpec", b'p', ""),
            ("runAsUserName", b'p', ""),
            ("hostProcess", b'p', ""),
        ],
    ),
];

/// OpenKruise's own types around a sidecar container (`apis/apps/v1beta1`).
pub const SIDECAR_FIELDS: &[(&str, &[Field])] = &[
    (
        "SidecarContainer",
        &[
            ("podInjectPolicy", b'z', ""),
            ("upgradeStrategy", b'S', "SidecarContainerUpgradeStrategy"),
            ("shareVolumePolicy", b'S', "ShareVolumePolicy"),
            ("shareVolumeDevicePolicy", b'p', "ShareVolumePolicy"),
            ("transferEnv", b'z', "TransferEnvVar"),
            ("resourcesPolicy", b'p', "ResourcesPolicy"),
        ],
    ),
    (
        "SidecarContainerUpgradeStrategy",
        &[
            ("upgradeType", b'z', ""),
            ("hotUpgradeEmptyImage", b'z', ""),
        ],
    ),
    ("ShareVolumePolicy", &[("type", b'z', "")]),
    (
        "TransferEnvVar",
        &[
            ("sourceContainerName", b'z', ""),
            ("sourceContainerNameFrom", b'p', "SourceContainerNameSource"),
            ("envName", b'z', ""),
            ("envNames", b'z', ""),
        ],
    ),
    (
        "SourceContainerNameSource",
        &[("fieldRef", b'p', "ObjectFieldSelector")],
    ),
    (
        "ResourcesPolicy",
        &[
            ("targetContainersMode", b'E', ""),
            ("targetContainersNameRegex", b'z', ""),
            ("resourcesExpr", b'S', "ResourcesExpr"),
        ],
    ),
    (
        "ResourcesExpr",
        &[
            ("limits", b'p', "ResourceExprCpuMemory"),
            ("requests", b'p', "ResourceExprCpuMemory"),
        ],
    ),
    (
        "ResourceExprCpuMemory",
        &[("cpu", b'z', ""), ("memory", b'z', "")],
    ),
];

fn fields(ty: &str) -> Option<&'static [Field]> {
    GO_FIELDS
        .iter()
        .chain(SIDECAR_FIELDS)
        .find(|(name, _)| *name == ty)
        .map(|(_, f)| *f)
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

/// `v` as Go writes the struct type `ty` (a name in the tables above; a
/// `SidecarContainer` is its `Container` fields, then its own).
pub fn go_struct_json(v: &Value, ty: &str, out: &mut String) {
    let Value::Object(m) = v else {
        out.push_str(&go_json(v));
        return;
    };
    let order: Vec<Field> = if ty == "SidecarContainer" {
        fields("Container")
            .into_iter()
            .flatten()
            .chain(fields("SidecarContainer").into_iter().flatten())
            .copied()
            .collect()
    } else {
        fields(ty).into_iter().flatten().copied().collect()
    };
    out.push('{');
    let mut first = true;
    for (name, flag, child) in order {
        let zero = match flag {
            b'S' => Value::Object(Default::default()),
            b'Q' => Value::String("0".into()),
            b'I' | b'0' => Value::from(0),
            b'N' => Value::Null,
            b'E' => Value::String(String::new()),
            b'F' => Value::Bool(false),
            _ => Value::Null,
        };
        let value = match (m.get(name), flag) {
            (None | Some(Value::Null), b'z' | b'p') => continue,
            (Some(v), b'z') if is_zero(v) => continue,
            (Some(Value::Null) | None, _) => &zero,
            (Some(v), _) => v,
        };
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&go_json(&Value::String(name.into())));
        out.push(':');
        go_value(value, child, out);
    }
    out.push('}');
}

/// A field's value: a struct, a list or map of structs, or a plain value.
fn go_value(v: &Value, child: &str, out: &mut String) {
    match v {
        Value::Array(items) if !child.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_struct_json(item, child, out);
            }
            out.push(']');
        }
        Value::Object(_) if !child.is_empty() => go_struct_json(v, child, out),
        other => out.push_str(&go_json(other)),
    }
}

/// The JSON OpenKruise hashes for a SidecarSet spec (`spec` as stored, i.e.
/// defaulted by the webhook).
pub fn hashed_json(spec: &Value) -> String {
    let empty = Vec::new();
    let list = |key: &str| spec.get(key).and_then(Value::as_array).unwrap_or(&empty);
    let containers = list("containers");
    let inits = list("initContainers");
    let native = inits
        .iter()
        .any(|c| c.get("restartPolicy").and_then(Value::as_str) == Some("Always"));
    let write_list = |items: &Vec<Value>, out: &mut String| {
        out.push('[');
        for (i, c) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            go_struct_json(c, "SidecarContainer", out);
        }
        out.push(']');
    };
    let mut out = String::from("{\"containers\":");
    if spec.get("containers").is_none_or(Value::is_null) {
        // Go marshals a nil slice as null.
        out.push_str("null");
    } else {
        write_list(containers, &mut out);
    }
    if native {
        out.push_str(",\"initContainers\":");
        write_list(inits, &mut out);
    }
    out.push('}');
    out
}

fn digest(json: &str) -> String {
    let sum = Sha256::digest(json.as_bytes());
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    safe_encode(&hex)
}

/// `kruise.io/sidecarset-hash` of a SidecarSet `spec`.
pub fn sidecarset_hash(spec: &Value) -> String {
    digest(&hashed_json(spec))
}

/// `kruise.io/sidecarset-hash-without-image`: the same with every
/// container's and init container's image blanked.
pub fn sidecarset_hash_without_image(spec: &Value) -> String {
    let mut spec = spec.clone();
    for key in ["containers", "initContainers"] {
        for c in spec
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(m) = c.as_object_mut() {
                m.insert("image".into(), Value::String(String::new()));
            }
        }
    }
    digest(&hashed_json(&spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from Go: OpenKruise v1.9's v1beta1 SidecarContainer over the
    // k8s.io/api v0.34 types, `json.Marshal` of the map and the hash as
    // `pkg/control/sidecarcontrol/hash.go` computes it.
    const SPEC_1: &str = r#"{"containers":[{"name":"envoy","image":"envoyproxy/envoy:v1.30.1","command":["envoy","-c","/etc/envoy.yaml"],"ports":[{"name":"proxy","containerPort":15001,"protocol":"TCP"}],"env":[{"name":"POD_IP","valueFrom":{"fieldRef":{"apiVersion":"v1","fieldPath":"status.podIP"}}},{"name":"A","value":"<b>&"}],"resources":{"limits":{"memory":"128Mi","cpu":"500m"},"requests":{"cpu":"100m"}},"volumeMounts":[{"name":"cfg","mountPath":"/etc/envoy","readOnly":true}],"readinessProbe":{"httpGet":{"path":"/ready","port":15021,"scheme":"HTTP"},"timeoutSeconds":1,"periodSeconds":10,"successThreshold":1,"failureThreshold":3},"lifecycle":{"preStop":{"exec":{"command":["sleep","5"]}}},"securityContext":{"privileged":false,"runAsUser":1337},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent","podInjectPolicy":"BeforeAppContainer","upgradeStrategy":{"upgradeType":"ColdUpgrade"},"shareVolumePolicy":{"type":"disabled"},"transferEnv":[{"sourceContainerName":"app","envName":"TZ"}]}],
"initContainers":[{"name":"log","image":"busybox:1.36","restartPolicy":"Always","stdin":false,"tty":true,"podInjectPolicy":"AfterAppContainer","upgradeStrategy":{},"shareVolumePolicy":{"type":"disabled"},"resourcesPolicy":{"targetContainersMode":"sum","resourcesExpr":{"limits":{"cpu":"cpu*50%"}}}},{"name":"init","image":"busybox"}]}"#;
    const GO_JSON_1: &str = r#"{"containers":[{"name":"envoy","image":"envoyproxy/envoy:v1.30.1","command":["envoy","-c","/etc/envoy.yaml"],"ports":[{"name":"proxy","containerPort":15001,"protocol":"TCP"}],"env":[{"name":"POD_IP","valueFrom":{"fieldRef":{"apiVersion":"v1","fieldPath":"status.podIP"}}},{"name":"A","value":"\u003cb\u003e\u0026"}],"resources":{"limits":{"cpu":"500m","memory":"128Mi"},"requests":{"cpu":"100m"}},"volumeMounts":[{"name":"cfg","readOnly":true,"mountPath":"/etc/envoy"}],"readinessProbe":{"httpGet":{"path":"/ready","port":15021,"scheme":"HTTP"},"timeoutSeconds":1,"periodSeconds":10,"successThreshold":1,"failureThreshold":3},"lifecycle":{"preStop":{"exec":{"command":["sleep","5"]}}},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent","securityContext":{"privileged":false,"runAsUser":1337},"podInjectPolicy":"BeforeAppContainer","upgradeStrategy":{"upgradeType":"ColdUpgrade"},"shareVolumePolicy":{"type":"disabled"},"transferEnv":[{"sourceContainerName":"app","envName":"TZ"}]}],"initContainers":[{"name":"log","image":"busybox:1.36","resources":{},"restartPolicy":"Always","tty":true,"podInjectPolicy":"AfterAppContainer","upgradeStrategy":{},"shareVolumePolicy":{"type":"disabled"},"resourcesPolicy":{"targetContainersMode":"sum","resourcesExpr":{"limits":{"cpu":"cpu*50%"}}}},{"name":"init","image":"busybox","resources":{},"upgradeStrategy":{},"shareVolumePolicy":{}}]}"#;
    const GO_HASH_1: &str = "x9f9fbf48242x2z8c2cw59w2b4545c8849d5x9bff6v548f49fx88w962v2485wf";
    const GO_HASH_WITHOUT_IMAGE_1: &str =
        "f8422c2z4vcx22c996d8d72d54vcfv454wwfxx55222z84b5www4bc74w4c8d47x";
    const SPEC_2: &str = r#"{"containers":[{"name":"sidecar1","image":"centos:6.7","command":["sleep","999d"],"podInjectPolicy":"BeforeAppContainer","shareVolumePolicy":{"type":"disabled"},"upgradeStrategy":{"upgradeType":"ColdUpgrade"},"imagePullPolicy":"IfNotPresent","terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","resources":{}}]}"#;
    const GO_HASH_2: &str = "2xd6x7272b8v26fc9fcc4zw47vwcvcv2fcd45d6xvb2w2cwdw9x4f74v495949z2";
    const GO_HASH_WITHOUT_IMAGE_2: &str =
        "4zv6464d6c4bb89d2298d2w2cww65d2d5f89bd72zcxw4dbcf85f44774f6c4794";

    #[test]
    fn json_and_hashes_match_go_with_a_native_sidecar() {
        let spec: Value = serde_json::from_str(SPEC_1).unwrap();
        assert_eq!(hashed_json(&spec), GO_JSON_1);
        assert_eq!(sidecarset_hash(&spec), GO_HASH_1);
        assert_eq!(
            sidecarset_hash_without_image(&spec),
            GO_HASH_WITHOUT_IMAGE_1
        );
    }

    #[test]
    fn hashes_match_go_for_a_plain_sidecar() {
        let spec: Value = serde_json::from_str(SPEC_2).unwrap();
        assert_eq!(sidecarset_hash(&spec), GO_HASH_2);
        assert_eq!(
            sidecarset_hash_without_image(&spec),
            GO_HASH_WITHOUT_IMAGE_2
        );
    }

    #[test]
    fn an_image_change_moves_only_the_full_hash() {
        let spec: Value = serde_json::from_str(SPEC_2).unwrap();
        let mut changed = spec.clone();
        changed["containers"][0]["image"] = "centos:7".into();
        assert_ne!(sidecarset_hash(&spec), sidecarset_hash(&changed));
        assert_eq!(
            sidecarset_hash_without_image(&spec),
            sidecarset_hash_without_image(&changed)
        );
    }
}
