//! Compiles `proto/runtime/v1/api.proto` with protox (no system protoc) and
//! generates prost messages plus tonic clients and servers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/runtime/v1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    // Every method's gRPC path, for callers that need the closed set
    // (e.g. a metrics label that must stay bounded).
    let mut paths = Vec::new();
    for file in &descriptors.file {
        for service in &file.service {
            for method in &service.method {
                paths.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("methods.rs");
    std::fs::write(
        out,
        format!(
            "/// Every CRI method's gRPC path (`/<package>.<service>/<method>`), in the proto's order.\npub const METHODS: &[&str] = &{paths:?};\n"
        ),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
