//! What the hooks decode from kubelet's calls and the runtime's replies,
//! and what they make of it: RunPodSandbox and CreateContainer requests
//! into the pod book's records, the launch priorities, the sidecar
//! terminator's plan and the env-from-metadata dependencies read from
//! them, StartContainer / ContainerStatus requests and replies. The first
//! byte picks the message; none of it may panic.
#![no_main]

use bytes::Bytes;
use cri_proto as cri;
use keelson_agent::config::RestartPolicy;
use keelson_agent::cri::hook::Call;
use keelson_agent::pods::{PodView, State, container_from, sandbox_from};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let call = Call::new("fuzz", http::HeaderMap::new(), Bytes::copy_from_slice(rest));
    match which % 4 {
        0 => {
            if let Ok(req) = call.decode::<cri::RunPodSandboxRequest>() {
                let config = req.config.unwrap_or_default();
                let sandbox = sandbox_from("sb".into(), &config);
                let _ = keelson_agent::envdeps::dependencies(&sandbox.annotations);
                let view = PodView {
                    sandbox,
                    containers: vec![],
                    ever_started: vec![],
                };
                let _ = keelson_agent::priority::priorities(&view);
            }
        }
        1 => {
            if let Ok(req) = call.decode::<cri::CreateContainerRequest>() {
                let config = req.config.unwrap_or_default();
                let sandbox_config = req.sandbox_config.unwrap_or_default();
                let sandbox = sandbox_from(req.pod_sandbox_id.clone(), &sandbox_config);
                let c = container_from(
                    "c1".into(),
                    req.pod_sandbox_id,
                    &config,
                    &sandbox_config.annotations,
                );
                let names = keelson_agent::envdeps::env_names(&sandbox.annotations, &c.name);
                let _ = names;
                let view = PodView {
                    sandbox,
                    containers: vec![(c.clone(), State::Running), (c, State::Exited(1))],
                    ever_started: vec![],
                };
                let _ = keelson_agent::priority::priorities(&view);
                let _ = keelson_agent::sidecar::plan(&view, RestartPolicy::Never);
                let _ = keelson_agent::sidecar::plan(&view, RestartPolicy::Always);
            }
        }
        2 => {
            let _ = call.decode::<cri::StartContainerRequest>();
            let _ = call.decode::<cri::ContainerStatusRequest>();
            let _ = call.decode::<cri::RemoveContainerRequest>();
        }
        _ => {
            if let Ok(reply) = call.decode::<cri::ContainerStatusResponse>() {
                if let Some(status) = reply.status {
                    let _ = status.id.len();
                }
                let _ = keelson_agent::pods::envs_from_verbose_info(&reply.info);
            }
            let _ = keelson_agent::priority::parse_priority(&String::from_utf8_lossy(rest));
        }
    }
});
