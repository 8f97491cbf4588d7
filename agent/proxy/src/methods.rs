//! Full gRPC paths of the CRI methods that hooks refer to.
//!
//! Only methods some feature or test names are listed; the proxy forwards
//! every other path (known or not) without needing an entry here.

macro_rules! paths {
    ($svc:literal: $($name:ident),* $(,)?) => {
        $(
            #[doc = concat!("`/", $svc, "/", stringify!($name), "`")]
            #[allow(non_upper_case_globals)]
            pub const $name: &str = concat!("/", $svc, "/", stringify!($name));
        )*
    };
}

/// `runtime.v1.RuntimeService` methods.
pub mod runtime {
    paths!("runtime.v1.RuntimeService":
        Version, RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus,
        ListPodSandbox, CreateContainer, StartContainer, StopContainer,
        RemoveContainer, ListContainers, ContainerStatus, ExecSync, Status,
        GetContainerEvents,
    );
}

/// `runtime.v1.ImageService` methods.
pub mod image {
    paths!("runtime.v1.ImageService":
        ListImages, ImageStatus, PullImage, RemoveImage, ImageFsInfo,
    );
}
