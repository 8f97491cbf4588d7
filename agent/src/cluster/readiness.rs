//! A pod's [`PodReport`] (what the node's launch gate needs of it) made
//! from the pod as the API server has it, for [`crate::readiness`].

use k8s_openapi::api::core::v1::Pod;

use crate::priority::SpecContainer;
use crate::readiness::{ContainerReadiness, PodReport};

/// The report of `pod` as the API server has it.
pub fn report_of(pod: &Pod) -> PodReport {
    let status = pod.status.clone().unwrap_or_default();
    let statuses = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .map(|c| {
            let id = c.container_id.as_deref().unwrap_or_default();
            let bare = id.split_once("://").map_or(id, |(_, b)| b);
            (
                c.name.clone(),
                ContainerReadiness {
                    ready: c.ready,
                    container_id: bare.to_string(),
                },
            )
        })
        .collect();
    PodReport {
        containers: spec_containers(pod),
        statuses,
    }
}

/// The spec's regular containers with their plain-value
/// `KRUISE_CONTAINER_PRIORITY` (a `valueFrom` is not resolvable here and
/// counts as unset, as kubelet would resolve it after the gate decided).
fn spec_containers(pod: &Pod) -> Vec<SpecContainer> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| SpecContainer {
            name: c.name.clone(),
            priority: c
                .env
                .iter()
                .flatten()
                .find(|e| e.name == crate::kruise::ENV_CONTAINER_PRIORITY)
                .and_then(|e| e.value.clone()),
            probed: c.readiness_probe.is_some() || c.startup_probe.is_some(),
            pre_stop_exec: c
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|h| h.exec.as_ref())
                .and_then(|e| e.command.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::Sandbox;
    use crate::pods::{PodBook, PodView};
    use crate::priority::Readiness;
    use crate::readiness::PodReadiness;
    use crate::store::Store;
    use std::collections::HashMap;

    #[test]
    fn readiness_comes_from_the_pod_status() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = PodReadiness::new(PodBook::open(&store).unwrap());
        let pod: Pod = serde_saphyr::from_str(
            r#"
metadata: {name: web-0, namespace: team, uid: uid-1}
status:
  initContainerStatuses:
  - {name: proxy, ready: true, restartCount: 0, image: i, imageID: x}
  containerStatuses:
  - {name: app, ready: false, restartCount: 0, image: i, imageID: x, containerID: "containerd://abc"}
"#,
        )
        .unwrap();
        let view = |uid: &str| PodView {
            sandbox: Sandbox {
                id: "sb".into(),
                uid: uid.into(),
                name: "web-0".into(),
                namespace: "team".into(),
                annotations: HashMap::new(),
            },
            containers: vec![],
            ever_started: vec![],
        };
        assert_eq!(r.ready(&view("uid-1"), "app"), None, "not seen yet");
        assert!(!r.knows_specs(), "no cluster side has reported");
        r.report("uid-1", report_of(&pod));
        assert!(r.knows_specs());
        // The same report through the admin API's JSON gives the same answers.
        let wire = serde_json::to_string(&report_of(&pod)).unwrap();
        let remote = PodReadiness::new(PodBook::open(&store).unwrap());
        remote.report("uid-1", serde_json::from_str(&wire).unwrap());
        for name in ["app", "proxy", "other"] {
            assert_eq!(
                remote.ready(&view("uid-1"), name),
                r.ready(&view("uid-1"), name)
            );
        }
        assert_eq!(remote.instance_ready("uid-1", "app", "abc"), Some(false));
        assert_eq!(r.ready(&view("uid-1"), "app"), Some(false));
        assert_eq!(r.ready(&view("uid-1"), "proxy"), Some(true));
        assert_eq!(r.ready(&view("uid-2"), "app"), None);
        assert_eq!(r.instance_ready("uid-1", "app", "abc"), Some(false));
        assert_eq!(
            r.instance_ready("uid-1", "app", "newer"),
            Some(false),
            "the status is about another instance"
        );
        assert_eq!(
            r.instance_ready("uid-9", "app", "abc"),
            None,
            "pod not seen"
        );
        r.forget("uid-1");
        assert_eq!(r.ready(&view("uid-1"), "app"), None);
    }

    #[test]
    fn the_spec_tells_siblings_and_which_readiness_needs_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = PodReadiness::new(PodBook::open(&store).unwrap());
        let pod: Pod = serde_saphyr::from_str(
            r#"
metadata: {name: web-0, namespace: team, uid: uid-1}
spec:
  initContainers:
  - {name: init, image: i, env: [{name: KRUISE_CONTAINER_PRIORITY, value: "99"}]}
  containers:
  - {name: low, image: i, env: [{name: KRUISE_CONTAINER_PRIORITY, value: "1"}]}
  - name: high
    image: i
    env: [{name: KRUISE_CONTAINER_PRIORITY, value: "10"}]
    readinessProbe: {exec: {command: ["true"]}}
status:
  containerStatuses:
  - {name: low, ready: false, restartCount: 0, image: i, imageID: x}
"#,
        )
        .unwrap();
        r.attach();
        assert!(r.knows_specs());
        assert_eq!(r.spec_containers("uid-1"), None);
        r.report("uid-1", report_of(&pod));
        let spec = r.spec_containers("uid-1").unwrap();
        assert_eq!(
            spec,
            vec![
                SpecContainer {
                    name: "low".into(),
                    priority: Some("1".into()),
                    probed: false,
                    pre_stop_exec: None,
                },
                SpecContainer {
                    name: "high".into(),
                    priority: Some("10".into()),
                    probed: true,
                    pre_stop_exec: None,
                },
            ],
            "regular containers only, in spec order"
        );
        let view = PodView {
            sandbox: Sandbox {
                id: "sb".into(),
                uid: "uid-1".into(),
                name: "web-0".into(),
                namespace: "team".into(),
                annotations: HashMap::new(),
            },
            containers: vec![],
            ever_started: vec![],
        };
        assert_eq!(r.ready(&view, "low"), None, "no probe: running is ready");
        assert_eq!(
            r.ready(&view, "high"),
            Some(false),
            "probed and not in the status yet"
        );
    }
}
