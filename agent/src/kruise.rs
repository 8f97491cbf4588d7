//! The contracts Keelson honours, in one place: OpenKruise's env names and
//! annotations, Keelson's own stamps, and the kubelet labels and
//! annotations the agent reads from CRI requests.

/// OpenKruise launch priority of a container (env; integer, higher first).
/// Source: OpenKruise "Container Launch Priority" (apps.kruise.io).
pub const ENV_CONTAINER_PRIORITY: &str = "KRUISE_CONTAINER_PRIORITY";
/// Pod annotation: `Ordered` means launch in spec order.
pub const ANNOTATION_LAUNCH_PRIORITY: &str = "apps.kruise.io/container-launch-priority";
/// The value of [`ANNOTATION_LAUNCH_PRIORITY`] that asks for spec order.
pub const LAUNCH_PRIORITY_ORDERED: &str = "Ordered";
/// Smallest and largest priority OpenKruise accepts.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = -2_147_483_647..=2_147_483_647;

/// OpenKruise Job sidecar terminator: container env marking a sidecar.
pub const ENV_TERMINATE_SIDECAR: &str = "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT";
/// OpenKruise: the sidecar's own exit code must not decide the pod's phase.
pub const ENV_TERMINATE_SIDECAR_IGNORE_EXIT_CODE: &str =
    "KRUISE_TERMINATE_SIDECAR_IGNORE_EXIT_CODE";

/// Keelson pod annotation stamped by the controller's webhook: JSON map of
/// every container name to its launch priority.
pub const ANNOTATION_PRIORITIES: &str = "keelson.io/container-priorities";
/// Keelson pod annotation stamped by the controller's webhook: the pod's
/// restartPolicy (`Always`, `OnFailure`, `Never`), which CRI does not carry.
pub const ANNOTATION_RESTART_POLICY: &str = "keelson.io/restart-policy";

/// Keelson pod annotation stamped by the controller's webhook for pods
/// with Job sidecars: JSON list of the main containers' names (those
/// without [`ENV_TERMINATE_SIDECAR`]), so the terminator knows the mains
/// kubelet has not created yet.
pub const ANNOTATION_MAIN_CONTAINERS: &str = "keelson.io/main-containers";

/// Kubelet's CRI labels and annotations (pkg/kubelet/kuberuntime/labels.go
/// and pkg/kubelet/types/labels.go upstream).
pub mod kubelet {
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    pub const POD_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
}
